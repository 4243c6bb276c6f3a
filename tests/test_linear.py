"""Behaviour of likewise.linear estimators: the metric contract, numerics, weak supervision, pipelines."""

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from likewise.linear import ITML, LMNN, MMC, NCA, Covariance, Whitening

FAST = {
    "MMC": lambda **kw: MMC(max_iter=60, **kw),
    "MMC-diag": lambda **kw: MMC(diagonal=True, max_iter=60, **kw),
    "ITML": lambda **kw: ITML(max_iter=10, **kw),
    "LMNN": lambda **kw: LMNN(max_iter=20, **kw),
    "NCA": lambda **kw: NCA(max_iter=100, **kw),
    "Covariance": lambda **kw: Covariance(**kw),
    "Whitening": lambda **kw: Whitening(**kw),
}
SUPERVISED = ["MMC", "MMC-diag", "ITML", "LMNN", "NCA"]


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    idx = np.random.default_rng(0).permutation(len(X))[:300]
    return StandardScaler().fit_transform(X[idx]), y[idx]


def noisy(n=160):
    """2 informative features + 8 loud noise features: a learned metric must down-weight the noise."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), n // 4)
    X = np.hstack([np.eye(4, 2)[y] * 3 + rng.normal(size=(n, 2)) * 0.5, rng.normal(size=(n, 8)) * 3])
    return X, y


def blobs(n=60, d=5, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n // 3)
    X = rng.normal(size=(n, d)) + 2.0 * np.eye(3, d)[y]
    return X, y


@pytest.mark.parametrize("name", list(FAST))
def test_metric_contract(name):
    X, y = blobs()
    est = FAST[name]().fit(X, y)
    L = est.components_
    M = est.get_mahalanobis_matrix()
    np.testing.assert_allclose(M, L.T @ L)
    assert np.linalg.eigvalsh(M).min() >= -1e-10 * max(1.0, np.abs(M).max())
    np.testing.assert_allclose(est.transform(X), X @ L.T)
    a, b = X[:10], X[10:20]
    naive = np.array([np.sqrt((u - v) @ M @ (u - v)) for u, v in zip(a, b)])
    np.testing.assert_allclose(est.pair_distance(a, b), naive, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(est.pair_score(a, b), -naive, rtol=1e-9, atol=1e-12)
    layer = est.as_module(dtype=torch.float64)
    assert isinstance(layer, torch.nn.Linear) and layer.bias is None
    out = layer(torch.tensor(X)).detach().numpy()
    np.testing.assert_allclose(out, est.transform(X), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(FAST))
def test_n_components_reduces_dimension(name):
    X, y = blobs(d=6)
    est = FAST[name](n_components=2).fit(X, y)
    assert est.components_.shape == (2, 6) and est.transform(X).shape == (60, 2)
    assert np.linalg.matrix_rank(est.get_mahalanobis_matrix()) <= 2
    with pytest.raises(ValueError, match="n_components=7 must be between 1 and n_features=6"):
        FAST[name](n_components=7).fit(X, y)


@pytest.mark.parametrize("name", SUPERVISED)
def test_learned_metric_beats_euclidean_on_noisy_features(name):
    X, y = noisy()
    tr, te = np.arange(160) % 2 == 0, np.arange(160) % 2 == 1
    base = KNeighborsClassifier(1).fit(X[tr], y[tr]).score(X[te], y[te])
    est = FAST[name]().fit(X[tr], y[tr])
    acc = KNeighborsClassifier(1).fit(est.transform(X[tr]), y[tr]).score(est.transform(X[te]), y[te])
    assert acc > base + 0.1, (acc, base)


def test_covariance_is_inverse_covariance():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 4)) @ rng.normal(size=(4, 4))
    est = Covariance().fit(X)
    np.testing.assert_allclose(
        est.get_mahalanobis_matrix(), np.linalg.inv(np.cov(X, rowvar=False)), rtol=1e-8
    )
    Z = Whitening().fit(X).transform(X)
    np.testing.assert_allclose(np.cov(Z, rowvar=False), np.eye(4), atol=1e-8)


@pytest.mark.parametrize("name", list(FAST))
def test_degenerate_data_stays_finite(name, digits):
    X, y = digits  # standardised digits already has constant (all-zero) columns
    X = X[:150].copy()
    y = y[:150].copy()
    X = np.hstack([X, X[:, :3], np.zeros((150, 1))])  # duplicated and constant features
    y[0] = 99  # a class with a single sample
    est = FAST[name]().fit(X, y)
    assert np.isfinite(est.components_).all()
    assert np.isfinite(est.transform(X)).all()
    # rank-deficient data (more features than samples, 30 samples in 67 dims), float32 input
    est = FAST[name]().fit(X[:30].astype(np.float32), y[:30])
    assert np.isfinite(est.transform(X[:30].astype(np.float32))).all()


@pytest.mark.parametrize("name", SUPERVISED)
def test_bad_input_errors(name):
    X, y = blobs()
    Xn = X.copy()
    Xn[3, 1] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        FAST[name]().fit(Xn, y)
    with pytest.raises(ValueError, match="y has only one class"):
        FAST[name]().fit(X, np.zeros(len(X)))
    with pytest.raises(ValueError, match="requires y to be passed"):
        FAST[name]().fit(X)
    est = FAST[name]().fit(X, y)
    with pytest.raises(ValueError, match="same shape"):
        est.pair_distance(X[:3], X[:4])


@pytest.mark.parametrize("cls", [MMC, ITML])
def test_fit_pairs_weak_supervision(cls):
    X, y = noisy(n=92)
    rng = np.random.default_rng(0)
    pairs = rng.integers(0, len(X), size=(400, 2))
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    y_pairs = np.where(y[pairs[:, 0]] == y[pairs[:, 1]], 1, -1)
    est = cls(max_iter=50).fit_pairs(X, pairs, y_pairs)
    d = est.pair_distance(X[pairs[:, 0]], X[pairs[:, 1]])
    # similar pairs end up closer, relative to dissimilar ones, than in the Euclidean metric
    e = np.linalg.norm(X[pairs[:, 0]] - X[pairs[:, 1]], axis=1)
    ratio = lambda v: v[y_pairs > 0].mean() / v[y_pairs < 0].mean()  # noqa: E731
    assert ratio(d) < 0.75 * ratio(e), (ratio(d), ratio(e))
    with pytest.raises(ValueError, match=r"pairs index outside X: indices must be in \[0, 91\]"):
        cls().fit_pairs(X, np.array([[0, 92]]), [1])
    with pytest.raises(ValueError, match="pairs index outside X"):
        cls().fit_pairs(X, np.array([[-1, 3]]), [1])
    with pytest.raises(ValueError, match=r"shape \[n_pairs, 2\]"):
        cls().fit_pairs(X, np.array([0, 1, 2]), [1])
    with pytest.raises(TypeError, match="integer indices"):
        cls().fit_pairs(X, np.array([[0.0, 1.0]]), [1])
    with pytest.raises(ValueError, match=r"\+1 \(similar\) or -1"):
        cls().fit_pairs(X, np.array([[0, 1]]), [0])


def test_mmc_needs_both_kinds_of_pairs():
    X, _ = blobs()
    with pytest.raises(ValueError, match="both similar"):
        MMC().fit_pairs(X, np.array([[0, 1], [2, 3]]), [1, 1])


def test_mmc_barrier_zero_is_xing_low_rank_and_constraint_tight():
    X, y = blobs(n=90, d=6)
    est = MMC(barrier=0.0, max_iter=500).fit(X, y)
    from likewise.linear.pairs import label_pairs

    a, b, s = label_pairs(X, y, 3)
    d = est.pair_distance(X[a], X[b])
    assert d[s < 0].sum() == pytest.approx(1.0, rel=1e-6)  # sum_D d_M = 1 (the constraint, tight)
    w = np.linalg.eigvalsh(est.get_mahalanobis_matrix())
    assert (w > 1e-6 * w.max()).sum() < 6  # Xing's minimiser is rank-deficient; the barrier's is not
    w = np.linalg.eigvalsh(MMC(max_iter=500).fit(X, y).get_mahalanobis_matrix())
    assert (w > 1e-6 * w.max()).sum() == 6


def test_itml_prior_and_bounds_validation():
    X, y = blobs()
    with pytest.raises(ValueError, match="positive-definite"):
        ITML(prior=-np.eye(5)).fit(X, y)
    with pytest.raises(ValueError, match=r"shape \[5, 5\]"):
        ITML(prior=np.eye(3)).fit(X, y)
    with pytest.raises(ValueError, match="0 < u <= l"):
        ITML(bounds=(5.0, 1.0)).fit(X, y)
    est = ITML(prior="covariance", bounds=(1.0, 10.0), max_iter=5).fit(X, y)
    assert est.bounds_ == (1.0, 10.0)


def test_nca_matches_sklearn_objective_improvement(digits):
    from sklearn.neighbors import NeighborhoodComponentsAnalysis

    X, y = digits
    ours = NCA(max_iter=30).fit(X, y)
    ref = NeighborhoodComponentsAnalysis(max_iter=30, init="identity").fit(X, y)
    # both maximise the same objective from the same start: ours reaches at least sklearn's value * 0.99
    from likewise.linear.nca import nca_objective

    def value(L):
        Xt = torch.tensor(X)
        return -float(nca_objective(Xt @ torch.tensor(L).T, torch.tensor(y))[0])

    assert value(ours.components_) >= 0.99 * value(ref.components_)
    assert value(ours.components_) > value(np.eye(X.shape[1]))


def test_pipeline_and_grid_search(digits):
    X, y = digits
    pipe = Pipeline([("metric", LMNN(max_iter=10)), ("knn", KNeighborsClassifier(1))])
    search = GridSearchCV(pipe, {"metric__n_neighbors": [1, 3]}, cv=2).fit(X, y)
    assert search.best_params_["metric__n_neighbors"] in (1, 3)
    assert search.score(X, y) > 0.9
    pipe = Pipeline([("metric", MMC(diagonal=True, max_iter=30)), ("knn", KNeighborsClassifier(1))])
    assert GridSearchCV(pipe, {"metric__barrier": [0.5, 1.0]}, cv=2).fit(X, y).best_score_ > 0.8


def test_device_argument():
    X, y = blobs()
    with pytest.raises(ValueError, match="not a torch device"):
        NCA(device="nonsense").fit(X, y)
    a = NCA(max_iter=5, device="cpu").fit(X, y).components_
    np.testing.assert_allclose(a, NCA(max_iter=5).fit(X, y).components_)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    X, y = blobs()
    for cls in (NCA, LMNN):  # float64: float32 sums in another order differ by more than 1e-6
        a = cls(max_iter=5, device="cuda", dtype="float64").fit(X, y).components_
        b = cls(max_iter=5, dtype="float64").fit(X, y).components_
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)


def test_itml_automatic_bounds_need_a_positive_distance():
    from likewise.linear.itml import auto_bounds

    with pytest.raises(ValueError, match="every squared distance between the constrained points is zero"):
        auto_bounds(np.ones((6, 3)) * 7.0, np.eye(3))
    u, l = auto_bounds(np.arange(12.0).reshape(4, 3), np.eye(3))
    assert 0 < u <= l
    # identical points everywhere: a clear error, not a NumPy one
    X = np.ones((10, 3))
    with pytest.raises(ValueError, match="identical points"):
        ITML().fit(X, np.repeat([0, 1], 5))
    # explicit bounds do not need the data's scale
    pairs = np.array([[0, 1], [2, 3]])
    X2 = np.vstack([np.ones((2, 3)), np.eye(2, 3)])
    est = ITML(bounds=(0.5, 2.0), max_iter=5).fit_pairs(X2, pairs, [1, -1])
    assert np.isfinite(est.components_).all()


@pytest.mark.parametrize("cls", [NCA, LMNN])
def test_dtype_option(cls):
    X, y = blobs()
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'"):
        cls(dtype="float16").fit(X, y)
    a = cls(max_iter=5, dtype="float32").fit(X, y)
    b = cls(max_iter=5, dtype="float64").fit(X, y)
    ka = KNeighborsClassifier(1).fit(a.transform(X), y).score(a.transform(X), y)
    kb = KNeighborsClassifier(1).fit(b.transform(X), y).score(b.transform(X), y)
    assert abs(ka - kb) <= 0.05


@pytest.mark.parametrize("cls", [NCA, LMNN])
def test_init_options(cls):
    X, y = blobs(d=4)
    for init in ("auto", "lda", "identity", "pca", "random", 0.5 * np.eye(4)):
        est = cls(init=init, max_iter=3, random_state=0).fit(X, y)
        assert est.components_.shape == (4, 4) and np.isfinite(est.components_).all()
    with pytest.raises(ValueError, match="init must be one of"):
        cls(init="nope").fit(X, y)
    with pytest.raises(ValueError, match=r"init array must have shape \[4, 4\]"):
        cls(init=np.eye(3)).fit(X, y)
