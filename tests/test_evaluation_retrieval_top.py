"""The default retrieval path (top-K ranks): a plain NumPy ranking, the full-ranking path, ties,
lone queries, the threshold fallbacks, and huge or tiny values."""

import numpy as np
import pytest
import torch

from likewise.evaluation import retrieval_metrics
from likewise.evaluation._top import candidates, top_relevant_ranks

#: the top-K metrics and MRR (the default leaves MRR out): the top-K path with its count beyond K
TOP_K_METRICS = ("precision_at_1", "r_precision", "map_at_r", "mrr", "recall_at_k")


def plain(q, ql, r, rl, loo, ks, metric):
    """Every query ranks every reference: np.lexsort by (score descending, index ascending)."""
    q, r = np.asarray(q, np.float64), np.asarray(r, np.float64)
    if metric == "dot":
        S = q @ r.T
    elif metric == "cosine":
        S = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (r / np.linalg.norm(r, axis=1, keepdims=True)).T
    else:
        d2 = ((q[:, None, :] - r[None, :, :]) ** 2).sum(-1)
        S = -(np.sqrt(d2) if metric == "euclidean" else d2)
    per = {n: [] for n in ("precision_at_1", "r_precision", "map_at_r", "mrr")}
    per.update({f"recall_at_{k}": [] for k in ks})
    cols = np.arange(len(r))
    for i in range(len(q)):
        keep = cols != i if loo else np.ones(len(r), bool)
        order = cols[keep][np.lexsort((cols[keep], -S[i, keep]))]
        rel = np.asarray(rl)[order] == ql[i]
        R = int(rel.sum())
        if R == 0:
            continue
        ranks = np.flatnonzero(rel) + 1
        within = ranks[ranks <= R]
        per["precision_at_1"].append(float(rel[0]))
        per["r_precision"].append(len(within) / R)
        per["map_at_r"].append(float(np.sum(np.arange(1, len(within) + 1) / within)) / R)
        per["mrr"].append(1.0 / ranks[0])
        for k in ks:
            per[f"recall_at_{k}"].append(float(ranks[0] <= k))
    return {n: float(np.mean(v)) for n, v in per.items()}, len(per["mrr"])


def integer_data(n, d, sizes, seed, sort=True):
    """Small-integer embeddings (exact, heavily tied scores) of classes of the given sizes."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(len(sizes)), sizes)
    if not sort:
        y = rng.permutation(y)
    centers = rng.integers(-3, 4, size=(len(sizes), d))
    x = centers[y] + rng.integers(-2, 3, size=(len(y), d))
    return x.astype(np.float32), y


def check(got, want, n_eval):
    assert "map" not in got
    assert got["n_queries"] == n_eval
    for name, v in want.items():
        assert got[name] == pytest.approx(v, abs=1e-12), name


@pytest.mark.parametrize("metric", ["dot", "squared_euclidean", "euclidean"])
def test_leave_one_out_with_ties_and_lone_classes_equals_plain_ranking(metric):
    # sorted labels: the prefix sample holds the first classes' neighbours, so their tight
    # thresholds leave too few candidates and the exact K-th score is used
    sizes = [1, 40, 3, 1, 25, 60, 2, 1] + [12] * 150
    x, y = integer_data(sum(sizes), 5, sizes, seed=0)
    ks = (1, 4, 30)
    got = retrieval_metrics(x, y, metric=metric, k=ks, include=TOP_K_METRICS)
    want, n_eval = plain(x, y, x, y, True, ks, metric)
    check(got, want, n_eval)
    assert got["n_queries_without_relevant"] == 3  # the three classes of one
    full = retrieval_metrics(x, y, metric=metric, k=ks, include="all")
    assert got == {k: v for k, v in full.items() if k != "map"}


def test_separate_references_random_order_float64_and_small_k():
    sizes = [30] * 40 + [1] * 5
    r, rl = integer_data(sum(sizes), 4, sizes, seed=1, sort=False)
    q, ql = integer_data(300, 4, [300], seed=2)
    ql = np.random.default_rng(3).integers(0, 45, 300)
    ql[:4] = 77  # nothing to find
    for dtype in (np.float32, np.float64):  # float64 scores take the stable-sort branch
        got = retrieval_metrics(
            q.astype(dtype), ql, r.astype(dtype), rl, metric="dot", k=(1,), include=TOP_K_METRICS
        )
        want, n_eval = plain(q, ql, r, rl, False, (1,), "dot")
        check(got, want, n_eval)
        assert got["n_queries_without_relevant"] == 4


def test_mrr_of_queries_whose_relevant_items_are_all_far():
    # random labels, many classes: R is small and the first relevant item is usually far below
    # the top K (its rank is counted on the whole row)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2500, 6)).astype(np.float32)
    y = rng.integers(0, 600, 2500)
    got = retrieval_metrics(x, y, k=(1, 2), batch_size=333, include=TOP_K_METRICS)
    want, n_eval = plain(x, y, x, y, True, (1, 2), "cosine")
    check(got, want, n_eval)
    assert want["mrr"] < 0.05


@pytest.mark.parametrize("metric", ["dot", "squared_euclidean"])
def test_mrr_beyond_the_top_k_counted_by_tiles_and_near_ties_on_whole_rows(metric, monkeypatch):
    # a sixth exact small-integer vectors (many exact ties with the best relevant score: those
    # rows are counted on their whole row), the rest continuous (counted tile by tile); small
    # tiles so every row crosses many of them and its own column lies inside one
    import likewise.evaluation.retrieval as R

    rng = np.random.default_rng(6)
    x = np.concatenate([rng.integers(-2, 3, size=(500, 4)), rng.normal(size=(2500, 4))]).astype(np.float32)
    y = rng.integers(0, 900, 3000)
    far, whole = [], []
    first_ranks, whole_row = R._FaissTopRanks._first_ranks, R.first_relevant_rank
    monkeypatch.setattr(R, "_TILE_ENTRIES", 1 << 14)
    monkeypatch.setattr(
        R._FaissTopRanks, "_first_ranks", lambda s, rows: far.append(rows.numel()) or first_ranks(s, rows)
    )
    monkeypatch.setattr(
        R, "first_relevant_rank", lambda S, i, v: whole.append(S.shape[0]) or whole_row(S, i, v)
    )
    got = retrieval_metrics(x, y, metric=metric, k=(1,), include=TOP_K_METRICS)
    want, n_eval = plain(x, y, x, y, True, (1,), metric)
    check(got, want, n_eval)
    assert 0 < sum(whole) < sum(far) / 2


@pytest.mark.parametrize("metric", ["dot", "squared_euclidean"])
def test_faiss_scores_off_by_their_rounding_bound_still_give_the_exact_ranking(metric, monkeypatch):
    # FAISS's scores may differ from torch's by up to eps (rounding); here they are perturbed by
    # half that bound and re-sorted, so exact ties (integer data) come back in a random order: a
    # row whose relevant candidate is that close to another must be re-scored, not trusted
    import likewise.evaluation.retrieval as R

    x, y = integer_data(1200, 4, [12] * 100, seed=7, sort=False)
    rng = np.random.default_rng(8)
    init = R._FaissTopRanks.__init__

    class Perturbed:
        def __init__(self, ranks):
            self.ranks, self.index = ranks, ranks.index

        def search(self, q, k):
            dist, ids = self.index.search(q, k)
            half = 0.5 * self.ranks._eps(torch.from_numpy(q)).numpy()[:, None]
            dist = dist + rng.uniform(-1, 1, dist.shape) * half
            order = np.argsort(dist if self.ranks.l2 else -dist, axis=1, kind="stable")
            return np.take_along_axis(dist, order, 1).astype(np.float32), np.take_along_axis(ids, order, 1)

    def patched(self, *args):
        init(self, *args)
        self.index = Perturbed(self)

    monkeypatch.setattr(R._FaissTopRanks, "__init__", patched)
    got = retrieval_metrics(x, y, metric=metric, k=(1, 5), include=TOP_K_METRICS)
    want, n_eval = plain(x, y, x, y, True, (1, 5), metric)
    check(got, want, n_eval)


def test_candidates_cover_the_top_k_and_fall_back_to_the_exact_kth_score():
    # row 0: its largest scores all sit in the sample (first 64 columns): the tight threshold
    # leaves fewer than K = 50 candidates, and the row falls back to its exact 50th score
    rng = np.random.default_rng(5)
    S = torch.from_numpy(rng.normal(size=(3, 4096)).astype(np.float32))
    S[0, :64] += 10.0
    S[2, 100:120] = 7.0  # ties at the top
    k = torch.tensor([50, 5, 30])
    tight = torch.tensor([3, 1, 2])
    row, col, score, t = candidates(S, k, tight, 64)
    counts = torch.bincount(row, minlength=3)
    assert bool((counts >= k).all())
    assert t[0] == torch.sort(S[0], descending=True).values[49]  # exact 50th score
    for i in range(3):
        want = torch.nonzero(S[i] >= t[i]).squeeze(1)
        assert torch.equal(col[row == i], want)
        assert torch.equal(score[row == i], S[i, want])
    # ranks from the candidates equal the ranks of a full stable sort
    codes = torch.from_numpy(rng.integers(0, 40, 4096))
    rows_codes = torch.tensor([3, 7, 11])
    ranks, found = top_relevant_ranks(row, col, score, 3, int(k.max()), rows_codes, codes, 200)
    for i in range(3):
        order = torch.sort(S[i], descending=True, stable=True).indices
        rel = torch.nonzero(codes[order] == rows_codes[i]).squeeze(1) + 1
        want = rel[rel <= 50].double()
        assert torch.equal(ranks[i, : want.numel()], want)
        assert bool(torch.isinf(ranks[i, want.numel() :]).all())
        assert bool(found[i]) == (want.numel() > 0)


@pytest.mark.parametrize("scale", [2.0**100, 2.0**-100])  # about 1.3e30 and 7.9e-31
@pytest.mark.parametrize("metric", ["euclidean", "squared_euclidean", "dot", "cosine"])
def test_huge_or_tiny_values_give_the_ranking_of_exact_arithmetic(scale, metric):
    sizes = [20] * 15
    x, y = integer_data(sum(sizes), 4, sizes, seed=6, sort=False)
    big = x.astype(np.float32) * np.float32(scale)  # exact: x times a power of two
    assert np.isfinite(big).all() and (big != 0).sum() == (x != 0).sum()
    got = retrieval_metrics(big, y, metric=metric, include="all")
    ref = retrieval_metrics(x, y, metric=metric, include="all")  # same ranking, ordinary range
    assert got == ref
    if metric != "cosine":  # integer data: exact scores in float32 and float64 alike
        want, _ = plain(x, y, x, y, True, (1, 5, 10), metric)
        for name, v in want.items():
            assert got[name] == pytest.approx(v, abs=1e-12), name


def test_huge_values_with_separate_references_and_faiss():
    sizes = [20] * 10
    x, y = integer_data(sum(sizes), 3, sizes, seed=7, sort=False)
    big = x * np.float32(2.0**98)
    got = retrieval_metrics(big[:50], y[:50], big, y, metric="euclidean", include=TOP_K_METRICS)
    want, _ = plain(x[:50], y[:50], x, y, False, (1, 5, 10), "euclidean")
    for name, v in want.items():
        assert got[name] == pytest.approx(v, abs=1e-12), name
    f = retrieval_metrics(big, y, metric="euclidean", backend="faiss", include=TOP_K_METRICS)
    assert all(np.isfinite(v) for v in f.values())
