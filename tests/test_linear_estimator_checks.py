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


# The 7 skipped checks are scikit-learn's own array-API checks (check_array_api_input), which skip
# themselves with "SCIPY_ARRAY_API is not set: not checking array_api input": that switch must be set
# before SciPy is imported and would change SciPy for the whole test session.
@parametrize_with_checks(ESTIMATORS)
def test_sklearn_compatible(estimator, check):
    check(estimator)
