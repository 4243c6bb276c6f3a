"""retrieval_metrics: a plain-loop reference, PML's AccuracyCalculator, ties, errors."""

import math

import numpy as np
import pytest
import torch
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

from likewise.evaluation import retrieval_metrics as _retrieval_metrics

#: the top-K metrics and MRR: the top-K path with MRR's count beyond each query's top K
TOP_K_METRICS = ("precision_at_1", "r_precision", "map_at_r", "mrr", "recall_at_k")


def _without(result, prefix):
    return {k: v for k, v in result.items() if not k.startswith(prefix) or k.startswith("map_at_r")}


def retrieval_metrics(*args, **kwargs):
    """Every exact path: the default (top-K ranks, no ``mrr``/``map``), the top-K path with
    ``mrr`` and ``include="all"`` (full ranking).

    The top-K paths must give exactly the full ranking's values for every metric they
    report; returns the full result.
    """
    if "include" in kwargs or kwargs.get("backend") == "faiss":
        return _retrieval_metrics(*args, **kwargs)
    default = _retrieval_metrics(*args, **kwargs)
    top = _retrieval_metrics(*args, include=TOP_K_METRICS, **kwargs)
    full = _retrieval_metrics(*args, include="all", **kwargs)
    assert "map" not in top and not any(k.startswith("map_ci") for k in top)
    assert top == _without(full, "map")
    assert "mrr" not in default and default == _without(top, "mrr")
    return full


def naive_metrics(q, ql, r, rl, loo, ks, sim):
    """One query at a time: rank every reference by (score desc, index asc), then count."""
    per = {name: [] for name in ("precision_at_1", "r_precision", "map_at_r", "map", "mrr")}
    for k in ks:
        per[f"recall_at_{k}"] = []
    skipped = 0
    for i in range(len(q)):
        cand = [m for m in range(len(r)) if not (loo and m == i)]
        scores = {m: sim(q[i], r[m]) for m in cand}
        order = sorted(cand, key=lambda m: (-scores[m], m))
        rel = [rl[m] == ql[i] for m in order]
        R = sum(rel)
        if R == 0:
            skipped += 1
            continue
        hits, ap, ap_r = 0, 0.0, 0.0
        first = None
        for pos, is_rel in enumerate(rel, start=1):
            if is_rel:
                hits += 1
                ap += hits / pos
                if pos <= R:
                    ap_r += hits / pos
                if first is None:
                    first = pos
        per["precision_at_1"].append(1.0 if rel[0] else 0.0)
        per["r_precision"].append(sum(rel[:R]) / R)
        per["map_at_r"].append(ap_r / R)
        per["map"].append(ap / R)
        per["mrr"].append(1.0 / first)
        for k in ks:
            per[f"recall_at_{k}"].append(1.0 if any(rel[:k]) else 0.0)
    return per, skipped


def mean_of(per, labels=None):
    if labels is None:
        return {k: float(np.mean(v)) for k, v in per.items()}
    out = {}
    for k, v in per.items():
        v = np.asarray(v)
        out[k] = float(np.mean([v[labels == c].mean() for c in np.unique(labels)]))
    return out


def dot(a, b):
    return float(sum(x * y for x, y in zip(a, b)))


def cosine(a, b):
    return dot(a, b) / math.sqrt(dot(a, a) * dot(b, b))


def neg_euclidean(a, b):
    return -math.sqrt(sum((x - y) ** 2 for x, y in zip(a, b)))


def blobs(n, d, n_classes, spread, seed, dtype=np.float64):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, d))
    y = rng.integers(0, n_classes, n)
    return (centers[y] + spread * rng.normal(size=(n, d))).astype(dtype), y


KS = (1, 3, 10)


@pytest.mark.parametrize("metric,sim", [("cosine", cosine), ("euclidean", neg_euclidean), ("dot", dot)])
def test_leave_one_out_equals_naive(metric, sim):
    x, y = blobs(150, 6, 8, 1.0, seed=1)
    got = retrieval_metrics(x, y, metric=metric, k=KS, batch_size=37)
    per, skipped = naive_metrics(x.tolist(), y.tolist(), x.tolist(), y.tolist(), True, KS, sim)
    want = mean_of(per)
    for name, v in want.items():
        assert got[name] == pytest.approx(v, abs=1e-12), name
    assert got["n_queries"] == 150 and got["n_queries_without_relevant"] == skipped == 0


def test_separate_references_with_lone_queries_equals_naive():
    q, ql = blobs(60, 5, 6, 1.2, seed=2)
    r, rl = blobs(120, 5, 6, 1.2, seed=3)
    ql = ql.copy()
    ql[:7] = 99  # a label absent from the references: these queries have nothing to find
    got = retrieval_metrics(q, ql, r, rl, k=KS, batch_size=16)
    per, skipped = naive_metrics(q.tolist(), ql.tolist(), r.tolist(), rl.tolist(), False, KS, cosine)
    assert skipped == 7
    assert got["n_queries_without_relevant"] == 7 and got["n_queries"] == 53
    for name, v in mean_of(per).items():
        assert got[name] == pytest.approx(v, abs=1e-12), name


def test_ties_follow_reference_index():
    # integer embeddings + dot similarity: exact, heavily tied scores
    rng = np.random.default_rng(4)
    x = rng.integers(-1, 2, size=(90, 3)).astype(np.float32)
    y = rng.integers(0, 4, 90)
    got = retrieval_metrics(x, y, metric="dot", k=KS, batch_size=20)
    per, _ = naive_metrics(x.tolist(), y.tolist(), x.tolist(), y.tolist(), True, KS, dot)
    for name, v in mean_of(per).items():
        assert got[name] == pytest.approx(v, abs=1e-12), name


def test_all_identical_embeddings_rank_by_index():
    # every score ties: the ranking is the reference order (query itself removed)
    x = np.ones((5, 2))
    y = np.array([0, 1, 0, 1, 1])
    got = retrieval_metrics(x, y, k=(1,))
    # query 0: order 1,2,3,4 -> relevant item 2 at rank 2 ; query 1: order 0,2,3,4 -> rel at 3,4
    # query 2: order 0,1,3,4 -> rel 0 at rank 1 ; query 3: order 0,1,2,4 -> rel at 2,4
    # query 4: order 0,1,2,3 -> rel at 2,4
    p1 = [0, 0, 1, 0, 0]
    ap = [1 / 2, (1 / 3 + 2 / 4) / 2, 1.0, (1 / 2 + 2 / 4) / 2, (1 / 2 + 2 / 4) / 2]
    assert got["precision_at_1"] == pytest.approx(np.mean(p1))
    assert got["map"] == pytest.approx(np.mean(ap))


def test_many_references_random_labels():
    # few queries, many references, random labels: relevant items spread over the whole ranking,
    # many buckets hold several relevant items
    n_refs = 2548
    rng = np.random.default_rng(5)
    q = rng.normal(size=(12, 4))
    r = rng.normal(size=(n_refs, 4))
    ql = np.arange(12) % 3
    rl = rng.integers(0, 3, n_refs)
    rl[:5] = 7  # references no query wants
    got = retrieval_metrics(q, ql, r, rl, k=(1, 100), batch_size=5)
    per, _ = naive_metrics(q.tolist(), ql.tolist(), r.tolist(), rl.tolist(), False, (1, 100), cosine)
    for name, v in mean_of(per).items():
        assert got[name] == pytest.approx(v, abs=1e-12), name


def test_result_independent_of_block_size_budget_and_input_type():
    x, y = blobs(300, 8, 10, 1.5, seed=6, dtype=np.float32)
    a = retrieval_metrics(x, y)
    b = retrieval_metrics(torch.from_numpy(x), torch.from_numpy(y), memory_budget=20_000)
    c = retrieval_metrics(x, y.astype(str), batch_size=1)
    assert a == b == c


def test_per_class_is_the_mean_of_class_means():
    x, y = blobs(160, 5, 7, 1.3, seed=7)
    got = retrieval_metrics(x, y, k=KS, per_class=True)
    per, _ = naive_metrics(x.tolist(), y.tolist(), x.tolist(), y.tolist(), True, KS, cosine)
    for name, v in mean_of(per, labels=y).items():
        assert got[name] == pytest.approx(v, abs=1e-12), name


def pml(query, ql, ref=None, rl=None, avg_of_avgs=False):
    calc = AccuracyCalculator(
        include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
        k="max_bin_count",
        avg_of_avgs=avg_of_avgs,
        device=torch.device("cpu"),
    )
    if ref is None:
        return calc.get_accuracy(query, ql, query, ql, ref_includes_query=True)
    return calc.get_accuracy(query, ql, ref, rl, ref_includes_query=False)


def unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("avg_of_avgs", [False, True])
def test_leave_one_out_equals_pml(avg_of_avgs):
    x, y = blobs(1500, 16, 40, 1.0, seed=8, dtype=np.float32)
    ours = retrieval_metrics(x, y, per_class=avg_of_avgs)
    theirs = pml(unit(x), y, avg_of_avgs=avg_of_avgs)  # PML ranks by L2 = cosine on unit vectors
    assert ours["precision_at_1"] == pytest.approx(theirs["precision_at_1"], abs=1e-6)
    assert ours["r_precision"] == pytest.approx(theirs["r_precision"], abs=1e-6)
    assert ours["map_at_r"] == pytest.approx(theirs["mean_average_precision_at_r"], abs=1e-6)
    assert 0.1 < ours["map_at_r"] < 0.95  # a non-trivial case


def test_separate_references_equal_pml_euclidean():
    q, ql = blobs(400, 12, 20, 1.2, seed=9, dtype=np.float32)
    r, rl = blobs(900, 12, 20, 1.2, seed=9 + 1, dtype=np.float32)
    ql = ql.copy()
    ql[:5] = 123  # lone queries: PML leaves them out too
    ours = retrieval_metrics(q, ql, r, rl, metric="euclidean")
    theirs = pml(q, ql, r, rl)
    assert ours["n_queries_without_relevant"] == 5
    assert ours["precision_at_1"] == pytest.approx(theirs["precision_at_1"], abs=1e-6)
    assert ours["r_precision"] == pytest.approx(theirs["r_precision"], abs=1e-6)
    assert ours["map_at_r"] == pytest.approx(theirs["mean_average_precision_at_r"], abs=1e-6)


def test_faiss_backend_matches_torch_on_top_k_metrics():
    x, y = blobs(800, 16, 20, 1.4, seed=10, dtype=np.float32)
    t = retrieval_metrics(x, y, k=(1, 5, 50))
    f = retrieval_metrics(x, y, k=(1, 5, 50), backend="faiss", batch_size=100, include="all")
    for name in ("precision_at_1", "r_precision", "map_at_r", "recall_at_1", "recall_at_5", "recall_at_50"):
        assert f[name] == pytest.approx(t[name], abs=1e-6), name
    assert math.isnan(f["map"])
    assert f["mrr"] <= t["mrr"] + 1e-12


def test_bootstrap_interval():
    x, y = blobs(200, 6, 8, 1.5, seed=11)
    a = retrieval_metrics(x, y, bootstrap=200, seed=3)
    b = retrieval_metrics(x, y, bootstrap=200, seed=3)
    c = retrieval_metrics(x, y, bootstrap=200, seed=4)
    assert a == b and a != c
    for name in ("precision_at_1", "map", "recall_at_5"):
        assert a[f"{name}_ci_low"] < a[name] < a[f"{name}_ci_high"]
    # same resamples, recomputed here: percentiles of resampled means of the per-query values
    per, _ = naive_metrics(x.tolist(), y.tolist(), x.tolist(), y.tolist(), True, (1,), cosine)
    v = np.asarray(per["precision_at_1"])
    rng = np.random.default_rng(3)
    means = [v[rng.integers(0, v.size, v.size)].mean() for _ in range(200)]
    assert a["precision_at_1_ci_low"] == pytest.approx(np.percentile(means, 2.5))
    assert a["precision_at_1_ci_high"] == pytest.approx(np.percentile(means, 97.5))


def test_duplicate_of_query_is_retrieved_but_query_itself_is_not():
    x = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    y = np.array([0, 1, 1, 0])
    got = retrieval_metrics(x, y, k=(1,))
    # query 0: nearest other is its duplicate 1 (wrong class) -> P@1 = 0; same for the others
    assert got["precision_at_1"] == 0.0
    assert got["recall_at_1"] == 0.0


def test_errors():
    x, y = blobs(20, 3, 2, 1.0, seed=0)
    with pytest.raises(ValueError, match="no query has a relevant reference"):
        retrieval_metrics(x, np.arange(20))
    with pytest.raises(ValueError, match="pass both ref_embeddings and ref_labels"):
        retrieval_metrics(x, y, x)
    with pytest.raises(ValueError, match="ref_embeddings have 4 dimensions but embeddings have 3"):
        retrieval_metrics(x, y, np.zeros((5, 4)), np.zeros(5))
    with pytest.raises(ValueError, match="labels has 19 entries but there are 20 embeddings"):
        retrieval_metrics(x, y[:19])
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="embeddings contains NaN"):
        retrieval_metrics(bad, y)
    with pytest.raises(ValueError, match="must be a 2-D array"):
        retrieval_metrics(x[0], y)
    with pytest.raises(ValueError, match="unknown metric 'manhattan'"):
        retrieval_metrics(x, y, metric="manhattan")
    with pytest.raises(ValueError, match="k must be positive integers"):
        retrieval_metrics(x, y, k=(0, 5))
    with pytest.raises(ValueError, match="backend must be"):
        retrieval_metrics(x, y, backend="annoy")
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        retrieval_metrics(x, y, batch_size=0)
    with pytest.raises(ValueError, match="non-integral floats"):
        retrieval_metrics(x, y + 0.5)
    with pytest.raises(TypeError, match="NumPy array or a torch tensor"):
        retrieval_metrics("x.npy", y)


def test_a_metric_left_out_by_default_says_how_to_include_it():
    x, y = blobs(60, 4, 5, 1.0, seed=2)
    got = _retrieval_metrics(x, y)
    assert "mrr" not in got and "map" not in got and "map_at_r" in got
    with pytest.raises(KeyError, match=r"'mrr' was not computed: retrieval_metrics\(\.\.\., include="):
        got["mrr"]
    with pytest.raises(KeyError, match="'map_ci_low' was not computed"):
        got["map_ci_low"]
    with pytest.raises(KeyError, match="^'nonsense'$"):
        got["nonsense"]
    assert got.get("mrr") is None and got == dict(got)
