"""Bad arguments to the evaluation functions: a clear TypeError / ValueError naming the argument;
huge or tiny (finite) embeddings: the result of exact arithmetic, or a clear error."""

import re

import numpy as np
import pytest
import torch

from likewise.evaluation import (
    clustering_scores,
    knn_accuracy,
    knn_predict,
    linear_probe,
    retrieval_metrics,
    verification_metrics,
    verification_pairs,
)


def data(n=40, d=4, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.integers(-3, 4, size=(classes, d))[y] + rng.integers(-1, 2, size=(n, d))
    return x.astype(np.float32), y


X, Y = data()

BAD_K = "k must be a positive integer or a sequence of positive integers"


@pytest.mark.parametrize("k", [2.5, True, "5", b"5", [1, 2.0], (3, "x"), [None], object()])
def test_retrieval_k_of_the_wrong_type(k):
    with pytest.raises(TypeError, match=re.escape(BAD_K)):
        retrieval_metrics(X, Y, k=k)


@pytest.mark.parametrize("k", [0, -3, [1, 0], np.int64(-1)])
def test_retrieval_k_not_positive(k):
    with pytest.raises(ValueError, match="k must be positive integers"):
        retrieval_metrics(X, Y, k=k)


def test_retrieval_k_empty_or_beyond_the_gallery():
    with pytest.raises(ValueError, match="k must name at least one cut-off"):
        retrieval_metrics(X, Y, k=())
    msg = "k=40 is larger than the number of references a query can retrieve (39, leave-one-out)"
    with pytest.raises(ValueError, match=re.escape(msg)):
        retrieval_metrics(X, Y, k=(1, 40))
    with pytest.raises(
        ValueError, match=re.escape("k=11 is larger than the number of references a query can")
    ):
        retrieval_metrics(X, Y, X[:10], Y[:10], k=11)
    # the default cut-offs (1, 5, 10) keep those within a small gallery
    got = retrieval_metrics(X[:8], Y[:8])
    assert [n for n in got if n.startswith("recall")] == ["recall_at_1", "recall_at_5"]
    # the whole gallery is a valid cut-off
    assert retrieval_metrics(X, Y, k=39)["recall_at_39"] == 1.0
    assert retrieval_metrics(X, Y, k=np.int32(5))["recall_at_5"] >= 0.0


def test_retrieval_include():
    with pytest.raises(ValueError, match="unknown metric 'maps' in include"):
        retrieval_metrics(X, Y, include="maps")
    with pytest.raises(
        ValueError, match=r"unknown metric 'recall_at_5' in include \(the recall cut-offs are given by k\)"
    ):
        retrieval_metrics(X, Y, include=["recall_at_5"])
    with pytest.raises(TypeError, match="include must be metric names"):
        retrieval_metrics(X, Y, include=[1])
    with pytest.raises(TypeError, match="include must be metric names or 'all'"):
        retrieval_metrics(X, Y, include=3)
    with pytest.raises(ValueError, match="include must name at least one metric"):
        retrieval_metrics(X, Y, include=())
    got = retrieval_metrics(X, Y, include=("map_at_r",))
    assert set(got) == {"map_at_r", "n_queries", "n_queries_without_relevant"}
    assert set(retrieval_metrics(X, Y, include="all")) >= {"map", "mrr", "recall_at_10"}


@pytest.mark.parametrize(
    "kwargs,exc,msg",
    [
        ({"bootstrap": 1.5}, TypeError, "bootstrap must be a non-negative integer, got 1.5"),
        ({"bootstrap": -1}, ValueError, "bootstrap must be a non-negative integer, got -1"),
        ({"ci": "0.9"}, TypeError, "ci must be a number in (0, 1), got '0.9'"),
        ({"ci": 1.5}, ValueError, "ci must be in (0, 1), got 1.5"),
        ({"seed": "a"}, TypeError, "seed must be an integer, got 'a'"),
        ({"batch_size": 2.5}, TypeError, "batch_size must be a positive integer or None, got 2.5"),
        ({"batch_size": 0}, ValueError, "batch_size must be a positive integer or None, got 0"),
        (
            {"memory_budget": 1e6},
            TypeError,
            "memory_budget must be a positive integer (bytes), got 1000000.0",
        ),
        ({"memory_budget": 0}, ValueError, "memory_budget must be a positive number of bytes, got 0"),
        ({"per_class": "yes"}, TypeError, "per_class must be True or False, got 'yes'"),
        ({"metric": 3}, TypeError, "metric must be a string, got int"),
    ],
)
def test_retrieval_options(kwargs, exc, msg):
    with pytest.raises(exc, match=re.escape(msg)):
        retrieval_metrics(X, Y, **kwargs)


CALLS = {
    "retrieval_metrics": lambda dev: retrieval_metrics(X, Y, device=dev),
    "knn_predict": lambda dev: knn_predict(X, Y, X, k=3, device=dev),
    "knn_accuracy": lambda dev: knn_accuracy(X, Y, X, Y, k=3, device=dev),
    "verification_pairs": lambda dev: verification_pairs(X, Y, device=dev),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_device_that_does_not_exist(name):
    call = CALLS[name]
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=re.escape("device='cuda' requested but CUDA is not available")):
            call("cuda")
        with pytest.raises(
            ValueError, match=re.escape("device='cuda:1' requested but CUDA is not available")
        ):
            call("cuda:1")
    else:
        with pytest.raises(ValueError, match="CUDA device"):
            call(f"cuda:{torch.cuda.device_count()}")
    with pytest.raises(ValueError, match=re.escape("device='banana' is not a torch device")):
        call("banana")
    with pytest.raises(ValueError, match=re.escape("device='meta' is not supported for evaluation")):
        call("meta")
    with pytest.raises(TypeError, match="device must be a string such as 'cpu' or 'cuda', got float"):
        call(1.5)
    call("cpu")
    call(torch.device("cpu"))


@pytest.mark.parametrize(
    "kwargs,exc,msg",
    [
        ({"k": 2.5}, TypeError, "k must be a positive integer, got 2.5"),
        ({"k": True}, TypeError, "k must be a positive integer, got True"),
        ({"k": "3"}, TypeError, "k must be a positive integer, got '3'"),
        ({"k": 0}, ValueError, "k must be a positive integer, got 0"),
        ({"k": 41}, ValueError, "k=41 is larger than the number of training embeddings (40)"),
        ({"batch_size": 0}, ValueError, "batch_size must be a positive integer or None, got 0"),
        ({"batch_size": 1.5}, TypeError, "batch_size must be a positive integer or None, got 1.5"),
        ({"temperature": "hot"}, TypeError, "temperature must be a positive number or None, got 'hot'"),
        ({"temperature": -1.0}, ValueError, "temperature must be positive, got -1.0"),
        ({"weighted": "yes"}, TypeError, "weighted must be True or False, got 'yes'"),
    ],
)
def test_knn_options(kwargs, exc, msg):
    for fn in (lambda: knn_predict(X, Y, X, **kwargs), lambda: knn_accuracy(X, Y, X, Y, **kwargs)):
        with pytest.raises(exc, match=re.escape(msg)):
            fn()


@pytest.mark.parametrize(
    "kwargs,exc,msg",
    [
        ({"max_pairs": 2.5}, TypeError, "max_pairs must be a positive integer or None, got 2.5"),
        ({"max_pairs": 0}, ValueError, "max_pairs must be a positive integer or None, got 0"),
        ({"balanced": "no"}, TypeError, "balanced must be True or False, got 'no'"),
        ({"metric": "manhattan"}, ValueError, "unknown metric 'manhattan'"),
    ],
)
def test_verification_pairs_options(kwargs, exc, msg):
    with pytest.raises(exc, match=re.escape(msg)):
        verification_pairs(X, Y, **kwargs)


@pytest.mark.parametrize(
    "kwargs,exc,msg",
    [
        ({"far_targets": 0.01}, None, None),
        (
            {"far_targets": "0.1"},
            TypeError,
            "far_targets must be a number or a sequence of numbers in [0, 1]",
        ),
        ({"far_targets": ("a",)}, TypeError, "far_targets must be numbers in [0, 1], got 'a'"),
        ({"far_targets": (0.1, 2.0)}, ValueError, "far_targets must lie in [0, 1], got 2.0"),
        ({"max_curve_points": 2.5}, TypeError, "max_curve_points must be an integer >= 2 or None, got 2.5"),
        ({"max_curve_points": 1}, ValueError, "max_curve_points must be an integer >= 2 or None, got 1"),
    ],
)
def test_verification_metrics_options(kwargs, exc, msg):
    scores = np.array([0.9, 0.8, 0.3, 0.1])
    same = np.array([1, 0, 1, 0])
    if exc is None:
        assert verification_metrics(scores, same, **kwargs)["tar_at_far_1e-02"] == 0.5
        return
    with pytest.raises(exc, match=re.escape(msg)):
        verification_metrics(scores, same, **kwargs)


@pytest.mark.parametrize(
    "kwargs,exc,msg",
    [
        ({"n_clusters": 2.5}, TypeError, "n_clusters must be a positive integer, got 2.5"),
        ({"n_clusters": 0}, ValueError, "n_clusters must be a positive integer, got 0"),
        ({"n_init": 0}, ValueError, "n_init must be a positive integer, got 0"),
        ({"n_init": "3"}, TypeError, "n_init must be a positive integer, got '3'"),
        ({"seed": 1.5}, TypeError, "seed must be an integer, got 1.5"),
        ({"metric": 3}, TypeError, "metric must be a string, got int"),
        ({"metric": "dot"}, ValueError, "metric must be 'cosine' or 'euclidean' for k-means, got 'dot'"),
    ],
)
def test_clustering_options(kwargs, exc, msg):
    with pytest.raises(exc, match=re.escape(msg)):
        clustering_scores(X, Y, **kwargs)


@pytest.mark.parametrize(
    "kwargs,exc,msg",
    [
        ({"C": "1"}, TypeError, "C must be a positive number, got '1'"),
        ({"C": 0.0}, ValueError, "C must be positive, got 0.0"),
        ({"max_iter": 0}, ValueError, "max_iter must be a positive integer, got 0"),
        ({"max_iter": 10.5}, TypeError, "max_iter must be a positive integer, got 10.5"),
    ],
)
def test_linear_probe_options(kwargs, exc, msg):
    with pytest.raises(exc, match=re.escape(msg)):
        linear_probe(X, Y, X, Y, **kwargs)


# huge or tiny values: x times a power of two is exact, so exact arithmetic ranks, votes and
# clusters exactly as for x itself


@pytest.mark.parametrize("scale", [2.0**100, 2.0**-100])
@pytest.mark.parametrize("metric", ["euclidean", "squared_euclidean", "cosine", "dot"])
def test_knn_on_huge_or_tiny_values(scale, metric):
    big = X * np.float32(scale)
    for weighted in (False, True):
        if weighted and metric == "dot":
            continue
        want = knn_predict(X, Y, X[:15], k=5, metric=metric, weighted=weighted)
        got = knn_predict(big, Y, big[:15], k=5, metric=metric, weighted=weighted)
        np.testing.assert_array_equal(got, want)


def test_knn_temperature_weights_on_huge_values():
    # exp weights use the similarity values themselves: computed in float64 when float32
    # would overflow; past float64's range a clear error
    big = X * np.float32(2.0**60)
    got = knn_predict(big, Y, big[:15], k=5, metric="dot", temperature=0.1)
    s = big[:15].astype(np.float64) @ big.astype(np.float64).T
    top = np.argsort(-s, axis=1, kind="stable")[:, :1]
    np.testing.assert_array_equal(got, Y[top[:, 0]])  # weights differ by huge factors: the nearest wins
    huge = X.astype(np.float64) * 2.0**600
    with pytest.raises(ValueError, match="too large or too small for temperature weights"):
        knn_predict(huge, Y, huge[:5], k=3, metric="dot", temperature=0.1)


@pytest.mark.parametrize("metric", ["dot", "euclidean", "squared_euclidean", "cosine"])
def test_verification_pairs_on_huge_values(metric):
    big = X * np.float32(2.0**100)  # float32 squares and products overflow; float64 ones do not
    scores, same = verification_pairs(big, Y, metric=metric)
    assert np.isfinite(scores).all()
    i, j = np.triu_indices(len(X), 1)
    a, b = big[i].astype(np.float64), big[j].astype(np.float64)
    if metric == "dot":
        want = (a * b).sum(1)
    elif metric == "cosine":
        want = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    else:
        d2 = ((a - b) ** 2).sum(1)
        want = -(np.sqrt(d2) if metric == "euclidean" else d2)
    np.testing.assert_allclose(scores, want, rtol=1e-6, atol=1e-6 if metric == "cosine" else 0.0)
    np.testing.assert_array_equal(same, Y[i] == Y[j])
    huge = X.astype(np.float64) * 2.0**600
    with pytest.raises(ValueError, match="too large or too small for dot scores"):
        verification_pairs(huge, Y, metric="dot")
    assert np.isfinite(verification_pairs(huge, Y, metric="cosine")[0]).all()


def test_clustering_and_linear_probe_on_huge_values():
    huge = X.astype(np.float64) * 2.0**600  # squares overflow float64
    for metric in ("cosine", "euclidean"):
        assert clustering_scores(huge, Y, metric=metric) == clustering_scores(X, Y, metric=metric)
    assert linear_probe(huge, Y, huge, Y) == linear_probe(X, Y, X, Y)
