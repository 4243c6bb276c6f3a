"""scikit-learn's estimator contract for likewise.linear (``parametrize_with_checks``)."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from likewise.linear import ITML, LMNN, MMC, NCA, Covariance, Whitening

ESTIMATORS = [
    MMC(max_iter=30),
    MMC(diagonal=True, max_iter=30),
    ITML(max_iter=5),
    LMNN(max_iter=10),
    NCA(max_iter=10),
    Covariance(),
    Whitening(),
]


@parametrize_with_checks(ESTIMATORS)
def test_sklearn_compatible(estimator, check):
    check(estimator)
