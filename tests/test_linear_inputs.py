"""Bad and extreme input to the linear learners: a clear error with its reason, or a correct fit.

Families: labels that give no same-class pair (every label distinct, one class), samples that are
all the same point, NaN / inf, constant features, and data whose squared distances overflow or
underflow (entries near 1e150 or 1e-150), for ``fit`` and ``fit_pairs``.
"""

import re
import warnings

import numpy as np
import pytest
from sklearn.neighbors import KNeighborsClassifier

from likewise.linear import ITML, LMNN, MMC, NCA, Covariance, Whitening
from likewise.linear.base import scale_exponent

MAKE = {
    "MMC": lambda **kw: MMC(max_iter=40, **kw),
    "MMC-diag": lambda **kw: MMC(diagonal=True, max_iter=40, **kw),
    "ITML": lambda **kw: ITML(max_iter=10, **kw),
    "LMNN": lambda **kw: LMNN(max_iter=15, **kw),
    "NCA": lambda **kw: NCA(max_iter=15, **kw),
}
ALL = {**MAKE, "Covariance": lambda **kw: Covariance(**kw), "Whitening": lambda **kw: Whitening(**kw)}


def blobs(n=60, d=5, seed=0):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(3), n // 3)
    X = rng.normal(size=(n, d)) + 2.0 * np.eye(3, d)[y]
    return X, y


def pairs_of(y, n=120, seed=1):
    rng = np.random.default_rng(seed)
    p = rng.integers(0, len(y), size=(n, 2))
    p = p[p[:, 0] != p[:, 1]]
    return p, np.where(y[p[:, 0]] == y[p[:, 1]], 1, -1)


@pytest.mark.parametrize("name", list(MAKE))
def test_every_label_distinct_is_refused(name):
    X, _ = blobs(n=30)
    cls = type(MAKE[name]()).__name__
    msg = (
        f"every label in y is distinct (30 samples, 30 classes): {cls} learns from samples of the same "
        "class (similar pairs, target neighbours) and needs at least one class with two samples or more"
    )
    with warnings.catch_warnings():  # sklearn: "number of unique classes > 50% of the samples"
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(ValueError, match=re.escape(msg)):
            MAKE[name]().fit(X, np.arange(30))
        with pytest.raises(ValueError, match="every label in y is distinct"):
            MAKE[name]().fit(X[:4], ["a", "b", "c", "d"])
    # one class of two among singletons is enough: a correct, finite fit
    est = MAKE[name]().fit(X[:6], [0, 0, 1, 2, 3, 4])
    assert np.isfinite(est.components_).all()


@pytest.mark.parametrize("name", list(MAKE))
def test_single_class_is_refused(name):
    X, _ = blobs()
    with pytest.raises(ValueError, match=r"y has only one class \('a'\); metric learning needs at least two"):
        MAKE[name]().fit(X, ["a"] * len(X))


@pytest.mark.parametrize("name", list(MAKE))
def test_all_samples_the_same_point_is_refused(name):
    X = np.full((12, 3), 2.5)
    y = np.repeat([0, 1], 6)
    cls = type(MAKE[name]()).__name__
    msg = f"every sample in X is the same point (12 identical points): {cls} has no distance to learn from"
    with pytest.raises(ValueError, match=re.escape(msg)):
        MAKE[name]().fit(X, y)
    if name in ("MMC", "ITML"):
        with pytest.raises(ValueError, match=re.escape(msg)):
            MAKE[name]().fit_pairs(X, np.array([[0, 1], [0, 7]]), [1, -1])


@pytest.mark.parametrize("name", list(ALL))
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_is_refused(name, bad):
    X, y = blobs()
    X[5, 2] = bad
    what = "NaN" if np.isnan(bad) else "infinity"
    with pytest.raises(ValueError, match=f"Input X contains {what}"):
        ALL[name]().fit(X, y)
    if name in ("MMC", "ITML"):
        with pytest.raises(ValueError, match=f"Input X contains {what}"):
            ALL[name]().fit_pairs(X, *pairs_of(y))


@pytest.mark.parametrize("name", list(ALL))
def test_fit_is_exactly_scale_equivariant(name):
    """fit(2^k X) is fit(X) / 2^k bit for bit, far beyond where squared distances overflow (k = 600:
    entries near 1e181, squares near 1e362) or underflow (k = -600)."""
    X, y = blobs()
    ref = ALL[name]().fit(X, y)
    for k in (600, -600, 3):
        est = ALL[name]().fit(np.ldexp(X, k), y)
        np.testing.assert_array_equal(np.ldexp(est.components_, k), ref.components_)
        np.testing.assert_array_equal(est.transform(np.ldexp(X, k)), ref.transform(X))
    if name in ("MMC", "ITML"):
        p, s = pairs_of(y)
        ref = ALL[name]().fit_pairs(X, p, s)
        est = ALL[name]().fit_pairs(np.ldexp(X, -700), p, s)
        np.testing.assert_array_equal(np.ldexp(est.components_, -700), ref.components_)


@pytest.mark.parametrize("name", list(MAKE))
@pytest.mark.parametrize("scale", [1e150, 1e-150, 3e300])
def test_extreme_scales_fit_like_the_unscaled_data(name, scale):
    """Not a power of two: the fit sees X rounded once, and classifies about as well as on the
    unscaled data (NCA's objective is not scale-invariant, so its path may differ), with no
    overflow or invalid-value warning anywhere."""
    X, y = blobs(n=90, d=6, seed=3)
    tr, te = np.arange(90) % 3 != 0, np.arange(90) % 3 == 0
    ref = MAKE[name]().fit(X[tr], y[tr])
    ref_acc = KNeighborsClassifier(1).fit(ref.transform(X[tr]), y[tr]).score(ref.transform(X[te]), y[te])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        est = MAKE[name]().fit(X[tr] * scale, y[tr])
        Ztr, Zte = est.transform(X[tr] * scale), est.transform(X[te] * scale)
    assert np.isfinite(Ztr).all() and np.isfinite(Zte).all() and np.abs(Ztr).max() > 0
    assert KNeighborsClassifier(1).fit(Ztr, y[tr]).score(Zte, y[te]) >= ref_acc - 0.05


@pytest.mark.parametrize("name", ["LMNN", "NCA"])
def test_init_array_too_large_for_the_data_scale(name):
    X, y = blobs(d=4)
    e = scale_exponent(np.ldexp(X, 600))
    assert e == 600 + scale_exponent(X) and 1.0 <= np.abs(np.ldexp(X - X.mean(0), 600 - e)).max() < 2.0
    msg = (
        f"the given array is too large for the scale of X (X is divided by 2^{e} for the fit, the array "
        "multiplied by it): rescale X or the array"
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        MAKE[name](init=1e300 * np.eye(4)).fit(np.ldexp(X, 600), y)
    # an init array is in input units: the same start on 2^k X is init / 2^k
    a = MAKE[name](init=np.eye(4)).fit(X, y).components_
    b = MAKE[name](init=np.ldexp(np.eye(4), -40)).fit(np.ldexp(X, 40), y).components_
    np.testing.assert_array_equal(np.ldexp(b, 40), a)


def test_itml_prior_array_is_in_input_units():
    X, y = blobs(d=4)
    M0 = np.diag([1.0, 2.0, 3.0, 4.0])
    a = ITML(prior=M0, max_iter=5).fit(X, y).components_
    b = ITML(prior=np.ldexp(M0, -80), max_iter=5).fit(np.ldexp(X, 40), y).components_
    np.testing.assert_array_equal(np.ldexp(b, 40), a)
    with pytest.raises(ValueError, match="the given array is too large for the scale of X"):
        ITML(prior=1e300 * np.eye(4)).fit(np.ldexp(X, 400), y)


@pytest.mark.parametrize("name", list(MAKE))
def test_constant_features_get_no_weight_in_distances(name):
    """A constant column changes no distance: the learned distances equal those of a fit on data
    where that column is all zeros."""
    X, y = blobs(d=4)
    Xc = np.hstack([X, np.full((len(X), 1), 7.0)])
    X0 = np.hstack([X, np.zeros((len(X), 1))])
    est = MAKE[name]().fit(Xc, y)
    assert np.isfinite(est.components_).all()
    d_c = est.pair_distance(Xc[:30], Xc[30:])
    d_0 = MAKE[name]().fit(X0, y).pair_distance(X0[:30], X0[30:])
    np.testing.assert_allclose(d_c, d_0, rtol=1e-6)
    if name in ("MMC", "ITML"):
        p, s = pairs_of(y)
        d_c = MAKE[name]().fit_pairs(Xc, p, s).pair_distance(Xc[:30], Xc[30:])
        d_0 = MAKE[name]().fit_pairs(X0, p, s).pair_distance(X0[:30], X0[30:])
        np.testing.assert_allclose(d_c, d_0, rtol=1e-6)
