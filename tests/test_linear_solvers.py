"""The solver pieces of likewise.linear against plain loops: the impostor and pair searches, LMNN's
active set and start scale, ITML's BLAS projections and visiting order, MMC's diagonal metric and
NCA's precomputed class blocks."""

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info

import likewise.linear.impostors as impostors
import likewise.linear.pairs as pairs_mod
from likewise.linear import LMNN, MMC
from likewise.linear.base import one_blas_thread, scale_exponent
from likewise.linear.impostors import candidate_impostors, target_neighbors
from likewise.linear.itml import interleave, itml_bregman
from likewise.linear.lmnn import SparseLMNN, _all_in, lmnn_objective, margin_scale
from likewise.linear.nca import class_blocks, nca_objective
from likewise.linear.pairs import label_pairs


def sq_dist(Z):
    return ((Z[:, None, :] - Z[None, :, :]) ** 2).sum(-1)


def brute_impostors(Z, y, targets, valid, margin, slack):
    D = sq_dist(Z)
    want, tight = set(), set()
    for i in range(len(Z)):
        ts = [D[i, j] for j, v in zip(targets[i], valid[i]) if v]
        if not ts:
            continue
        bound = margin + max(ts)
        for l in range(len(Z)):
            if y[l] != y[i] and D[i, l] < (1 + slack) * bound:
                want.add((i, l))
                if D[i, l] < bound:
                    tight.add((i, l))
    return want, tight


@pytest.fixture
def labelled():
    rng = np.random.default_rng(11)
    y = rng.integers(0, 4, size=40)
    y[:3] = [0, 1, 2]
    y[3] = 5  # a singleton class: no targets of its own, still an impostor to others
    X = rng.normal(size=(40, 3)) + 0.8 * np.eye(6, 3)[y]
    return X, y


@pytest.mark.parametrize("slack", [0.0, 0.4])
@pytest.mark.parametrize("budget", [None, 40 * 7])  # one block / blocks of 7 rows (classes span blocks)
def test_candidate_impostors_match_brute_force(labelled, slack, budget, monkeypatch):
    X, y = labelled
    if budget is not None:
        rb = impostors.row_blocks
        monkeypatch.setattr(impostors, "row_blocks", lambda N, b=budget: rb(N, b))
    Xt, yt = torch.tensor(X), torch.tensor(y)
    idx, valid = target_neighbors(Xt, yt, 2)
    Z = Xt @ torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 0.2]], dtype=torch.float64).T
    # unsorted labels (the function sorts and maps back), then class-sorted input
    ii, ll, ok = candidate_impostors(Z, yt, idx, valid, margin=1.5, slack=slack, tight=True)
    want, tight = brute_impostors(Z.numpy(), y, idx.numpy(), valid.numpy(), 1.5, slack)
    got = list(zip(ii.tolist(), ll.tolist()))
    assert set(got) == want and len(got) == len(want)
    assert {p for p, t in zip(got, ok.tolist()) if t} == tight
    keys = ii * len(y) + ll
    assert bool((keys[1:] > keys[:-1]).all())  # sorted by (i, l)
    order = np.argsort(y, kind="stable")
    inv = np.empty_like(order)
    inv[order] = np.arange(len(order))
    o = torch.tensor(order)
    ii2, ll2 = candidate_impostors(Z[o], yt[o], torch.tensor(inv)[idx[o]], valid[o], 1.5, slack)
    assert {(int(order[i]), int(order[l])) for i, l in zip(ii2, ll2)} == want


def test_sparse_lmnn_does_not_depend_on_the_impostor_order(labelled):
    X, y = labelled
    Xt, yt = torch.tensor(X), torch.tensor(y)
    idx, valid = target_neighbors(Xt, yt, 3)
    Z = Xt * 0.7
    ii, ll = candidate_impostors(Z, yt, idx, valid, slack=0.5)
    perm = torch.randperm(len(ii), generator=torch.Generator().manual_seed(0))
    a = SparseLMNN(idx, valid, (ii, ll), 0.4)(Z)
    b = SparseLMNN(idx, valid, (ii[perm], ll[perm]), 0.4)(Z)
    assert float(a[0]) == pytest.approx(float(b[0]), rel=1e-12)
    torch.testing.assert_close(a[1], b[1])
    # and the wide list gives the exact objective (every pair that can be active is in it)
    exact = lmnn_objective(Z, yt, idx, valid, 0.4)
    assert float(a[0]) == pytest.approx(float(exact[0]), rel=1e-12)
    torch.testing.assert_close(a[1], exact[1])


def test_all_in():
    b = torch.tensor([2, 5, 9, 11])
    assert _all_in(torch.tensor([5, 11, 2]), b)
    assert not _all_in(torch.tensor([5, 12]), b)
    assert not _all_in(torch.tensor([0]), b)
    assert _all_in(torch.tensor([], dtype=torch.int64), b)
    assert not _all_in(torch.tensor([1]), torch.tensor([], dtype=torch.int64))


def test_margin_scale_puts_the_median_target_distance_at_the_margin(labelled):
    X, y = labelled
    Xt, yt = torch.tensor(X), torch.tensor(y)
    idx, valid = target_neighbors(Xt, yt, 3)
    s = margin_scale(Xt * 3.0, idx, valid, margin=2.0)
    D = sq_dist(X * 3.0 * s)
    t = [D[i, j] for i in range(len(X)) for j, v in zip(idx[i].tolist(), valid[i].tolist()) if v]
    assert np.median(t) == pytest.approx(2.0, rel=1e-9)
    assert margin_scale(torch.zeros(4, 2, dtype=torch.float64), idx[:4] % 4, valid[:4]) == 1.0


def test_lmnn_named_start_is_scaled_array_start_is_not(monkeypatch):
    import likewise.linear.lmnn as lmnn

    seen = []
    real = lmnn.lbfgs

    def spy(fun, x0, *args, **kw):
        seen.append(np.array(x0))
        return real(fun, x0, *args, **kw)

    monkeypatch.setattr(lmnn, "lbfgs", spy)
    rng = np.random.default_rng(2)
    y = np.repeat(np.arange(3), 15)
    X = 10.0 * (rng.normal(size=(45, 4)) + np.eye(3, 4)[y])
    LMNN(init="identity", max_iter=2, dtype="float64").fit(X, y)
    LMNN(init=np.eye(4), max_iter=2, dtype="float64").fit(X, y)
    Xc = torch.tensor(X - X.mean(0))
    o = np.argsort(y, kind="stable")
    idx, valid = target_neighbors(Xc[o], torch.tensor(y[o]), 3)
    s = margin_scale(Xc[o], idx, valid)
    # the solver works on X / 2^e (scale_exponent), where the same map is 2^e L
    e = scale_exponent(X)
    assert 2.0**e <= np.abs(X - X.mean(0)).max() < 2.0 ** (e + 1)
    np.testing.assert_allclose(seen[0], 2.0**e * s * np.eye(4), rtol=1e-9)
    np.testing.assert_allclose(seen[1], 2.0**e * np.eye(4))


def brute_label_pairs(X, y, k, anchors):
    D = sq_dist(X)
    S, Dp = set(), set()
    for a in anchors:
        for sign, out in ((True, S), (False, Dp)):
            cand = [j for j in range(len(X)) if j != a and (y[j] == y[a]) == sign]
            for j in sorted(cand, key=lambda j: D[a, j])[:k]:
                out.add((min(a, j), max(a, j)))
    return S, Dp


@pytest.mark.parametrize("n_anchors", [None, 9, 25])
@pytest.mark.parametrize("block", [None, 40 * 4])  # one block / blocks of 4 anchors
def test_label_pairs_with_anchors_match_brute_force(labelled, n_anchors, block, monkeypatch):
    X, y = labelled
    if block is not None:
        monkeypatch.setattr(pairs_mod, "BLOCK_ENTRIES", block)
    a, b, s = label_pairs(X, y, 2, n_anchors)
    # the anchors: evenly spaced positions in the class-sorted order
    order = np.argsort(y, kind="stable")
    pos = np.arange(len(y)) if n_anchors is None else np.linspace(0, len(y) - 1, n_anchors).round()
    anchors = order[pos.astype(int)]
    if n_anchors is not None:  # spread over the classes: each class larger than the spacing has one
        spacing = (len(y) - 1) / (n_anchors - 1)
        assert set(y[anchors]) >= {c for c in set(y) if (y == c).sum() > spacing}
    S, Dp = brute_label_pairs(X, y, 2, anchors)
    got = list(zip(a.tolist(), b.tolist(), s.tolist()))
    assert {(i, j) for i, j, t in got if t > 0} == S
    assert {(i, j) for i, j, t in got if t < 0} == Dp
    assert len(got) == len(S) + len(Dp)
    with pytest.raises(ValueError, match="n_anchors must be a positive int or None"):
        label_pairs(X, y, 2, 0)


def plain_itml(V, sign, bounds, M0, gamma, sweeps):
    """Davis et al.'s Algorithm 1 as written (full M, NumPy products)."""
    M, lam, xi = M0.copy(), np.zeros(len(V)), bounds.astype(float).copy()
    gp = gamma / (gamma + 1.0)
    for _ in range(sweeps):
        for c, v in enumerate(V):
            p = v @ M @ v
            alpha = min(lam[c], sign[c] * gp * (1 / p - 1 / xi[c]))
            beta = sign[c] * alpha / (1 - sign[c] * alpha * p)
            xi[c] = 1 / (1 / xi[c] + sign[c] * alpha / gamma)
            lam[c] -= alpha
            M = M + beta * np.outer(M @ v, M @ v)
    return M


def test_itml_bregman_matches_the_plain_algorithm():
    rng = np.random.default_rng(3)
    V = rng.normal(size=(30, 5))
    sign = np.where(rng.random(30) < 0.5, 1.0, -1.0)
    d0 = np.einsum("pi,pi->p", V, V)
    bounds = np.where(sign > 0, np.percentile(d0, 20), np.percentile(d0, 80))
    A = rng.normal(size=(5, 5))
    M0 = A @ A.T / 5 + np.eye(5)
    M, sweeps = itml_bregman(V, sign, bounds, M0, 1.0, 7, 0.0)
    assert sweeps == 7
    np.testing.assert_allclose(M, plain_itml(V, sign, bounds, M0, 1.0, 7), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(M, M.T)


def test_interleave_alternates_the_two_kinds():
    sign = np.array([1, 1, 1, 1, -1, -1, -1, -1])
    order = interleave(sign)
    assert sorted(order.tolist()) == list(range(8))
    assert sign[order].tolist() == [1, -1] * 4
    assert order[sign[order] > 0].tolist() == [0, 1, 2, 3]  # each kind keeps its own order
    sign = np.array([-1, 1, 1, 1, 1, 1, -1])  # 5 S, 2 D: the D constraints spread among the S
    s = sign[interleave(sign)]
    assert s.tolist().count(-1) == 2 and s[0] == 1 and s[-1] == 1
    assert not ((s[1:] < 0) & (s[:-1] < 0)).any()  # never two D in a row


def test_mmc_diagonal_components_are_weighted_axes():
    rng = np.random.default_rng(5)
    y = np.repeat(np.arange(3), 20)
    X = rng.normal(size=(60, 5)) * np.array([1.0, 4.0, 0.5, 2.0, 1.0]) + 2.0 * np.eye(3, 5)[y]
    X[:, 4] = 0.0  # a constant feature: weight 0
    est = MMC(diagonal=True).fit(X, y)
    M = est.get_mahalanobis_matrix()
    np.testing.assert_allclose(M, np.diag(np.diag(M)), atol=1e-15)
    w = np.diag(M)
    assert w[4] == 0 and (w[:4] > 0).all()
    L = est.components_
    assert (np.diff(np.linalg.norm(L, axis=1)) <= 0).all()  # rows sorted by weight
    top2 = MMC(diagonal=True, n_components=2).fit(X, y).components_
    np.testing.assert_allclose(top2, L[:2])


def test_nca_objective_with_precomputed_blocks():
    rng = np.random.default_rng(6)
    y = np.sort(rng.integers(0, 3, size=25))
    Z = torch.tensor(rng.normal(size=(25, 4)))
    yt = torch.tensor(y)
    blocks = class_blocks(np.bincount(y).tolist(), budget=25 * 4)
    a, b = nca_objective(Z, yt), nca_objective(Z, yt, blocks)
    assert float(a[0]) == pytest.approx(float(b[0]), rel=1e-12)
    torch.testing.assert_close(a[1], b[1])


def test_one_blas_thread():
    blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
    with one_blas_thread():
        assert all(i["num_threads"] == 1 for i in threadpool_info() if i["user_api"] == "blas")
    after = [i for i in threadpool_info() if i["user_api"] == "blas"]
    assert [i["num_threads"] for i in after] == [i["num_threads"] for i in blas]


def test_mmc_anchors_auto_depends_on_the_unknowns(monkeypatch):
    import likewise.linear.mmc as mmc

    seen = []
    real = mmc.label_pairs

    def spy(X, y, k, n_anchors=None):
        seen.append(n_anchors)
        return real(X, y, k, n_anchors)

    monkeypatch.setattr(mmc, "label_pairs", spy)
    rng = np.random.default_rng(7)
    y = np.repeat(np.arange(3), 20)
    X = rng.normal(size=(60, 4)) + 2.0 * np.eye(3, 4)[y]
    MMC(diagonal=True, max_iter=20).fit(X, y)
    MMC(max_iter=20).fit(X, y)
    MMC(n_anchors=None, max_iter=20).fit(X, y)
    MMC(n_anchors=7, max_iter=20).fit(X, y)
    assert seen == [128, 256, None, 7]
    with pytest.raises(ValueError, match="n_anchors must be 'auto', a positive int or None"):
        MMC(n_anchors="many").fit(X, y)
