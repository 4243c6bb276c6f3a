"""The vectorised objectives and gradients of likewise.linear against plain loop implementations."""

import numpy as np
import pytest
import torch

from likewise.linear import LMNN
from likewise.linear.init import lda_components
from likewise.linear.itml import itml_bregman
from likewise.linear.lbfgs import lbfgs
from likewise.linear.lmnn import SparseLMNN, candidate_impostors, lmnn_objective, target_neighbors
from likewise.linear.mmc import mmc_objective, mmc_problem
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


@pytest.mark.parametrize("sort", [True, False])
def test_target_neighbors_match_brute_force(sort):
    """The k nearest same-class points, nearest first, for class-sorted labels (slices) and for
    shuffled labels (index lists); a class of 2 has one valid target."""
    rng = np.random.default_rng(4)
    y = np.r_[np.repeat([0, 1, 2], [9, 2, 7]), 3]
    X = rng.normal(size=(len(y), 3))
    if not sort:
        p = rng.permutation(len(y))
        X, y = X[p], y[p]
    idx, valid = target_neighbors(torch.tensor(X), torch.tensor(y), 3)
    D = ((X[:, None] - X[None]) ** 2).sum(2)
    for i in range(len(y)):
        same = [j for j in np.argsort(D[i], kind="stable") if j != i and y[j] == y[i]][:3]
        assert idx[i][valid[i]].tolist() == same
        assert (idx[i][~valid[i]] == i).all()


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


@pytest.mark.parametrize("diagonal", [False, True])
@pytest.mark.parametrize("barrier", [0.0, 1.0])
def test_mmc_solver_objective_and_gradient(diagonal, barrier):
    """The closure MMC's solver minimises: h (the loop reference above) + ridge tr(M) - lam log det M,
    its gradient against central differences (symmetric directions for a full M), f = inf outside
    the barrier's domain, and x0 the best multiple of the identity."""
    rng = np.random.default_rng(5)
    VS, VD = rng.normal(size=(7, 4)), rng.normal(size=(9, 4))
    ridge, eps = 1e-3, 1e-9
    fun_grad, project, x0 = mmc_problem(VS, VD, barrier, diagonal, ridge, eps)
    lam = barrier / (2 * 4)
    A = rng.normal(size=(4, 4))
    M = np.abs(rng.normal(size=4)) + 0.5 if diagonal else A @ A.T + 0.5 * np.eye(4)
    Mf = np.diag(M) if diagonal else M
    f, g = fun_grad(M)
    want = mmc_objective(Mf, VS, VD, eps) + ridge * np.trace(Mf) - lam * np.linalg.slogdet(Mf)[1]
    assert f == pytest.approx(want, rel=1e-12)
    h = 1e-6
    if diagonal:
        dirs = [np.eye(4)[i] for i in range(4)]
        slopes = [g[i] for i in range(4)]
    else:
        dirs, slopes = [], []
        for i in range(4):
            for j in range(i, 4):
                E = np.zeros((4, 4))
                E[i, j] = E[j, i] = 1.0
                dirs.append(E)
                slopes.append(float(np.vdot(g, E)))
        np.testing.assert_allclose(g, g.T)
    fd = [(fun_grad(M + h * E)[0] - fun_grad(M - h * E)[0]) / (2 * h) for E in dirs]
    np.testing.assert_allclose(slopes, fd, rtol=1e-6, atol=1e-8)
    # x0 minimises f along t * I (t > 0)
    ts = np.linspace(0.8, 1.2, 5)
    vals = [fun_grad(t * x0)[0] for t in ts]
    assert int(np.argmin(vals)) == 2
    # outside the PSD cone: the barrier's f is infinite; Xing's problem (barrier 0) projects back
    bad = -np.ones(4) if diagonal else np.diag([1.0, -1.0, -2.0, 0.5])
    if barrier > 0:
        assert fun_grad(bad)[0] == np.inf
    else:
        P = project(bad)
        np.testing.assert_allclose(
            P, np.clip(bad, 0, None) if diagonal else np.diag([1.0, 0, 0, 0.5]), atol=1e-12
        )


def test_lmnn_objective_with_missing_targets_matches_loops():
    """A class with fewer than k + 1 points has invalid target slots: they carry no pull and no hinge."""
    rng = np.random.default_rng(6)
    X = rng.normal(size=(8, 3))
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2])  # classes 1 and 2 have one target each, k = 2
    L = rng.normal(size=(2, 3))
    idx, valid = target_neighbors(torch.tensor(X), torch.tensor(y), 2)
    assert valid.sum(1).tolist() == [2, 2, 2, 2, 1, 1, 1, 1]
    targets = [[int(j) for j, v in zip(r, m) if v] for r, m in zip(idx, valid)]
    f, g = vectorised(lambda Z: lmnn_objective(Z, torch.tensor(y), idx, valid, 0.4), L, X)
    assert f == pytest.approx(naive_lmnn(L, X, y, targets, 0.4), rel=1e-10)
    np.testing.assert_allclose(
        g, numeric_grad(lambda A: naive_lmnn(A, X, y, targets, 0.4), L), rtol=1e-5, atol=1e-6
    )


def test_lmnn_sparse_list_superset_gives_the_same_value(small):
    """On any impostor list that holds every pair that can be active, f and df/dZ are exact; a list
    missing an active pair gives less."""
    X, y, L = small
    Z, yt = torch.tensor(X) @ torch.tensor(L).T, torch.tensor(y)
    idx, valid = target_neighbors(torch.tensor(X), yt, 2)
    exact = lmnn_objective(Z, yt, idx, valid, 0.5)
    wide = candidate_impostors(Z, yt, idx, valid, slack=10.0)
    tight = candidate_impostors(Z, yt, idx, valid)
    assert len(wide[0]) > len(tight[0]) > 0
    f, G = SparseLMNN(idx, valid, wide, 0.5)(Z)
    assert float(f) == pytest.approx(float(exact[0]), rel=1e-12)
    torch.testing.assert_close(G, exact[1])
    f_short, _ = SparseLMNN(idx, valid, (tight[0][1:], tight[1][1:]), 0.5)(Z)
    assert float(f_short) < float(exact[0])


def test_lmnn_fit_ends_on_the_exact_objective():
    """The active set is confirmed before stopping: objective_ is f at the solution, all pairs counted."""
    rng = np.random.default_rng(7)
    y = np.repeat(np.arange(3), 20)
    X = rng.normal(size=(60, 4)) + 1.5 * np.eye(3, 4)[y]
    est = LMNN(dtype="float64", tol=1e-6).fit(X, y)
    Xt, yt = torch.tensor(X - X.mean(0)), torch.tensor(y)
    idx, valid = target_neighbors(Xt, yt, 3)
    f, _ = lmnn_objective(Xt @ torch.tensor(est.components_).T, yt, idx, valid, 0.5)
    assert est.objective_ == pytest.approx(float(f), rel=1e-9)
    assert est.n_refreshes_ >= 2


def test_nca_float32_matches_float64(small):
    X, y, L = small
    yt = torch.tensor(y)
    f64, g64 = vectorised(lambda Z: nca_objective(Z, yt), L, X)
    Z32 = torch.tensor(X, dtype=torch.float32) @ torch.tensor(L, dtype=torch.float32).T
    f32, g32 = nca_objective(Z32, yt)
    assert float(f32) == pytest.approx(f64, rel=1e-5)
    np.testing.assert_allclose(
        (g32.T @ torch.tensor(X, dtype=torch.float32)).numpy(), g64, rtol=1e-4, atol=1e-5
    )


def test_lda_init_whitens_the_within_class_scatter():
    rng = np.random.default_rng(8)
    y = np.repeat(np.arange(3), 30)
    X = rng.normal(size=(90, 5)) * np.array([5.0, 1.0, 0.2, 3.0, 1.0]) + 4.0 * np.eye(3, 5)[y]
    L = lda_components(X, y, 5, ridge=0.0)
    R = X - np.array([X[y == c].mean(0) for c in range(3)])[y]
    np.testing.assert_allclose(L @ (R.T @ R / len(X)) @ L.T, np.eye(5), atol=1e-9)
    # the first directions are the between-class ones (Fisher): 2 for 3 classes
    Lk = lda_components(X, y, 2, ridge=0.0)
    Zm = np.array([X[y == c].mean(0) for c in range(3)]) @ L.T
    spread = Zm.var(0)
    assert set(np.argsort(spread)[-2:]) == {0, 1}
    np.testing.assert_allclose(np.abs(Lk), np.abs(L[:2]), atol=1e-9)


def test_lbfgs_minimises_a_quadratic():
    A = np.array([[3.0, 1.0], [1.0, 2.0]])
    b = np.array([1.0, -1.0])

    def fun(x):
        return 0.5 * x @ A @ x - b @ x, A @ x - b

    x, f, n = lbfgs(fun, np.zeros(2), 50, 1e-12)
    np.testing.assert_allclose(x, np.linalg.solve(A, b), rtol=1e-8)
    assert 1 <= n <= 10


def test_nca_objective_in_row_blocks(small, monkeypatch):
    """Blocks smaller than a class (a class split across blocks, blocks holding several classes) give
    the same value and gradient as one block; so does unsorted input."""
    import likewise.linear.nca as nca

    X, y, L = small
    yt = torch.tensor(y)
    whole = vectorised(lambda Z: nca_objective(Z, yt), L, X)
    perm = np.random.default_rng(9).permutation(len(y))
    shuffled = vectorised(lambda Z: nca_objective(Z, yt[perm]), L, X[perm])
    assert shuffled[0] == pytest.approx(whole[0], rel=1e-12)
    np.testing.assert_allclose(shuffled[1], whole[1], rtol=1e-10, atol=1e-12)
    orig = nca.class_blocks
    for budget in (9 * 2, 9 * 4):  # 2 rows (splits classes of 3) and 4 rows (spans classes) per block
        blocks = orig([3, 3, 3], budget)
        assert [e - s for s, e, _ in blocks] == ([2, 2, 2, 2, 1] if budget == 18 else [4, 4, 1])
        monkeypatch.setattr(nca, "class_blocks", lambda counts, b=budget: orig(counts, b))
        got = vectorised(lambda Z: nca.nca_objective(Z, yt), L, X)
        assert got[0] == pytest.approx(whole[0], rel=1e-12)
        np.testing.assert_allclose(got[1], whole[1], rtol=1e-10, atol=1e-12)
