"""kNN vs scikit-learn's KNeighborsClassifier, linear probe, clustering scores."""

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score, normalized_mutual_info_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from likewise.evaluation import clustering_scores, knn_accuracy, knn_predict, linear_probe


def blobs(n, d, c, spread, seed):
    """Gaussian blobs around class centres that depend only on (c, d): train and test share them."""
    centers = np.random.default_rng(1000 + 10 * c + d).normal(size=(c, d)) * 2
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    return centers[y] + spread * rng.normal(size=(n, d)), y


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("k", [1, 7])
def test_knn_equals_sklearn(metric, weighted, k):
    xtr, ytr = blobs(400, 6, 5, 2.0, seed=0)
    xte, yte = blobs(150, 6, 5, 2.0, seed=1)
    ref = KNeighborsClassifier(
        n_neighbors=k, weights="distance" if weighted else "uniform", metric=metric, algorithm="brute"
    ).fit(xtr, ytr)
    got = knn_predict(xtr, ytr, xte, k=k, weighted=weighted, metric=metric, batch_size=33)
    assert np.array_equal(got, ref.predict(xte))
    acc = knn_accuracy(torch.from_numpy(xtr), ytr, xte, yte, k=k, weighted=weighted, metric=metric)
    assert acc == pytest.approx(ref.score(xte, yte))
    assert 0.3 < acc < 1.0


def test_knn_temperature_weights_equal_loop():
    xtr, ytr = blobs(200, 5, 4, 2.0, seed=2)
    xte, _ = blobs(40, 5, 4, 2.0, seed=3)
    got = knn_predict(xtr, ytr, xte, k=10, temperature=0.1)
    un = lambda v: v / np.linalg.norm(v)  # noqa: E731
    for row, pred in zip(xte, got):
        sims = [float(un(row) @ un(t)) for t in xtr]
        top = sorted(range(len(xtr)), key=lambda m: -sims[m])[:10]
        votes = {}
        for m in top:
            votes[ytr[m]] = votes.get(ytr[m], 0.0) + np.exp(sims[m] / 0.1)
        assert pred == max(sorted(votes), key=lambda c: votes[c])


def test_knn_majority_tie_goes_to_smallest_label_and_string_labels():
    xtr = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    ytr = np.array(["b", "b", "a", "a"])
    assert knn_predict(xtr, ytr, np.array([[1.0, 1.0]]), k=4)[0] == "a"
    assert knn_predict(xtr, ytr, np.array([[1.0, 0.05]]), k=1)[0] == "b"


def test_knn_errors():
    x, y = blobs(10, 3, 2, 1.0, seed=0)
    with pytest.raises(ValueError, match="k=11 is larger than the number of training embeddings"):
        knn_predict(x, y, x, k=11)
    with pytest.raises(ValueError, match="not both"):
        knn_predict(x, y, x, weighted=True, temperature=0.1, k=3)
    with pytest.raises(ValueError, match="metric='dot' has none"):
        knn_predict(x, y, x, weighted=True, metric="dot", k=3)
    with pytest.raises(ValueError, match="test_emb have 2 dimensions but train_emb have 3"):
        knn_predict(x, y, x[:, :2], k=3)
    with pytest.raises(ValueError, match="test_labels has 3 entries but there are 10 embeddings"):
        knn_accuracy(x, y, x, y[:3], k=3)


def test_linear_probe_equals_sklearn_pipeline():
    xtr, ytr = blobs(300, 8, 4, 3.0, seed=4)
    xte, yte = blobs(100, 8, 4, 3.0, seed=5)
    got = linear_probe(torch.from_numpy(xtr), ytr, xte, yte, C=0.5)
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=0.5, max_iter=1000, random_state=0))
    ref.fit(xtr, ytr)
    assert got["accuracy"] == pytest.approx(ref.score(xte, yte))
    assert got["train_accuracy"] == pytest.approx(ref.score(xtr, ytr))
    assert 0.4 < got["accuracy"] < 1.0


def test_linear_probe_separable_and_errors():
    xtr, ytr = blobs(200, 8, 3, 0.05, seed=6)
    assert linear_probe(xtr, ytr, xtr, ytr)["accuracy"] == 1.0
    with pytest.raises(ValueError, match="at least two classes"):
        linear_probe(xtr, np.zeros(200), xtr, ytr)
    with pytest.raises(ValueError, match="C must be positive"):
        linear_probe(xtr, ytr, xtr, ytr, C=0)


def test_clustering_scores_equal_sklearn():
    x, y = blobs(300, 5, 6, 1.5, seed=7)
    got = clustering_scores(x, y, metric="euclidean", seed=3)
    pred = KMeans(n_clusters=6, n_init=3, random_state=3).fit_predict(x)
    assert got["nmi"] == pytest.approx(normalized_mutual_info_score(y, pred))
    assert got["ami"] == pytest.approx(adjusted_mutual_info_score(y, pred))
    assert got["ari"] == pytest.approx(adjusted_rand_score(y, pred))
    assert got["n_clusters"] == 6
    # cosine: k-means of the L2-normalised rows
    got = clustering_scores(torch.from_numpy(x), y, n_clusters=4)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    pred = KMeans(n_clusters=4, n_init=3, random_state=0).fit_predict(xn)
    assert got["ari"] == pytest.approx(adjusted_rand_score(y, pred))


def test_clustering_perfect_and_errors():
    x, y = blobs(200, 5, 4, 0.01, seed=8)
    got = clustering_scores(x, y, metric="euclidean")
    assert got["nmi"] == pytest.approx(1.0) and got["ari"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="n_clusters=500 exceeds"):
        clustering_scores(x, y, n_clusters=500)
    with pytest.raises(ValueError, match="metric must be 'cosine' or 'euclidean'"):
        clustering_scores(x, y, metric="dot")
