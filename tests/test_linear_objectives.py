"""The vectorised objectives and gradients of likewise.linear against plain loop implementations."""

import numpy as np
import pytest
import torch

from likewise.linear.itml import itml_bregman
from likewise.linear.lmnn import lmnn_objective, target_neighbors
from likewise.linear.mmc import mmc_objective
from likewise.linear.nca import nca_objective
from likewise.linear.pairs import label_pairs


def naive_nca(L, X, y):
    N = len(X)
    Z = X @ L.T
    total = 0.0
    for i in range(N):
        w = np.array([0.0 if j == i else np.exp(-np.sum((Z[i] - Z[j]) ** 2)) for j in range(N)])
        p = w / w.sum()
        total += sum(p[j] for j in range(N) if y[j] == y[i] and j != i)
    return -total


def naive_lmnn(L, X, y, targets, mu, margin=1.0):
    Z = X @ L.T
    d = lambda i, j: float(np.sum((Z[i] - Z[j]) ** 2))  # noqa: E731
    total = 0.0
    for i in range(len(X)):
        for j in targets[i]:
            total += (1 - mu) * d(i, j)
            for l in range(len(X)):
                if y[l] != y[i]:
                    total += mu * max(0.0, margin + d(i, j) - d(i, l))
    return total


def numeric_grad(f, L, h=1e-6):
    g = np.zeros_like(L)
    for idx in np.ndindex(*L.shape):
        e = np.zeros_like(L)
        e[idx] = h
        g[idx] = (f(L + e) - f(L - e)) / (2 * h)
    return g


def vectorised(objective, L, X):
    Xt = torch.tensor(X)
    f, gZ = objective(Xt @ torch.tensor(L).T)
    return float(f), (gZ.T @ Xt).numpy()


@pytest.fixture
def small():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(9, 4))
    y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    L = rng.normal(size=(3, 4)) * 0.7
    return X, y, L


def test_nca_objective_and_gradient_match_loops(small):
    X, y, L = small
    f, g = vectorised(lambda Z: nca_objective(Z, torch.tensor(y)), L, X)
    assert f == pytest.approx(naive_nca(L, X, y), rel=1e-10)
    np.testing.assert_allclose(g, numeric_grad(lambda A: naive_nca(A, X, y), L), rtol=1e-5, atol=1e-7)


def test_lmnn_objective_and_gradient_match_loops(small):
    X, y, L = small
    idx, valid = target_neighbors(torch.tensor(X), torch.tensor(y), 2)
    targets = [[int(j) for j, v in zip(r, m) if v] for r, m in zip(idx, valid)]
    # the targets are the 2 nearest same-class points, found by brute force here
    for i, t in enumerate(targets):
        same = [j for j in range(len(X)) if y[j] == y[i] and j != i]
        assert sorted(t) == sorted(sorted(same, key=lambda j: np.sum((X[i] - X[j]) ** 2))[:2])
    f, g = vectorised(lambda Z: lmnn_objective(Z, torch.tensor(y), idx, valid, 0.3), L, X)
    assert f == pytest.approx(naive_lmnn(L, X, y, targets, 0.3), rel=1e-10)
    np.testing.assert_allclose(
        g, numeric_grad(lambda A: naive_lmnn(A, X, y, targets, 0.3), L), rtol=1e-5, atol=1e-6
    )


def test_lmnn_singleton_class_has_no_targets():
    X = np.arange(10.0).reshape(5, 2)
    y = torch.tensor([0, 0, 0, 1, 2])
    idx, valid = target_neighbors(torch.tensor(X), y, 3)
    assert valid.sum(1).tolist() == [2, 2, 2, 0, 0]


def test_mmc_objective_matches_loops():
    rng = np.random.default_rng(2)
    VS, VD = rng.normal(size=(5, 3)), rng.normal(size=(6, 3))
    A = rng.normal(size=(3, 3))
    M = A @ A.T
    s = sum(v @ M @ v for v in VS)
    g = sum(np.sqrt(v @ M @ v) for v in VD)
    assert mmc_objective(M, VS, VD) == pytest.approx(s - np.log(g), rel=1e-12)
    m = np.abs(rng.normal(size=3))
    assert mmc_objective(m, VS, VD) == pytest.approx(mmc_objective(np.diag(m), VS, VD), rel=1e-12)


def test_label_pairs_are_nearest_same_and_other_class():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(12, 3))
    y = np.repeat([0, 1, 2], 4)
    a, b, s = label_pairs(X, y, 2)
    got = {(int(i), int(j), int(t)) for i, j, t in zip(a, b, s)}
    want = set()
    for i in range(12):
        order = sorted((j for j in range(12) if j != i), key=lambda j: np.sum((X[i] - X[j]) ** 2))
        for j in [j for j in order if y[j] == y[i]][:2]:
            want.add((min(i, j), max(i, j), 1))
        for j in [j for j in order if y[j] != y[i]][:2]:
            want.add((min(i, j), max(i, j), -1))
    assert got == want


def test_itml_bregman_keeps_prior_without_violations_and_meets_bounds():
    rng = np.random.default_rng(4)
    V = rng.normal(size=(20, 4))
    sign = np.where(np.arange(20) < 10, 1.0, -1.0)
    d0 = np.einsum("pi,pi->p", V, V)
    # bounds every constraint already meets: nothing to project, M stays the prior
    M, _ = itml_bregman(V, sign, np.where(sign > 0, d0.max() + 1, d0.min() / 2), np.eye(4), 1.0, 50, 1e-9)
    np.testing.assert_allclose(M, np.eye(4), atol=1e-12)
    # feasible but violated bounds (similar pairs differ along axis 0, dissimilar ones along axis 1)
    # and a large gamma (little slack): the learned distances satisfy them closely
    V = rng.normal(size=(20, 4)) * 0.05
    V[:10, 0] += 3 + rng.random(10)
    V[10:, 1] += 0.5 + rng.random(10)
    u, l = 1.0, 4.0
    M, _ = itml_bregman(V, sign, np.where(sign > 0, u, l), np.eye(4), 1e4, 2000, 1e-10)
    d = np.einsum("pi,ij,pj->p", V, M, V)
    assert np.all(d[sign > 0] <= u * 1.01) and np.all(d[sign < 0] >= l * 0.99)
    assert np.linalg.eigvalsh(M).min() > 0
