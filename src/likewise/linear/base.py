"""Shared base of the linear (Mahalanobis) metric learners.

A Mahalanobis metric is a positive semi-definite matrix ``M`` (``[D, D]``); its squared distance is

    d_M(x, z)^2 = (x - z)^T M (x - z) = ||L x - L z||^2,   M = L^T L,

so learning ``M`` is learning the linear map ``f(x) = L x`` (``L``: ``[d, D]``, ``d <= D``) followed
by the Euclidean distance. Every estimator here stores ``L`` as ``components_`` (the scikit-learn
convention of ``NeighborhoodComponentsAnalysis``), ``transform(X) = X @ L.T`` and
``get_mahalanobis_matrix() = L.T @ L``.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassNamePrefixFeaturesOutMixin, TransformerMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted
from threadpoolctl import ThreadpoolController

from likewise.devices import resolve_device  # noqa: F401 - the estimators import it from here

try:  # scikit-learn >= 1.6
    from sklearn.utils.validation import validate_data as _validate_data
except ImportError:  # pragma: no cover - older scikit-learn

    def _validate_data(est, X="no_validation", y="no_validation", reset=True, **kw):
        return est._validate_data(X, y, reset=reset, **kw)


def components_from_metric(M: np.ndarray, n_components: int | None = None) -> np.ndarray:
    """Factor a symmetric ``M`` ``[D, D]`` as ``L^T L``, ``L`` ``[d, D]`` (top ``d`` eigen-directions).

    Negative eigenvalues (round-off) are clipped to 0, so ``L^T L`` is the nearest PSD matrix.
    """
    M = (M + M.T) / 2.0
    w, U = np.linalg.eigh(M)
    order = np.argsort(w)[::-1]
    w, U = np.clip(w[order], 0.0, None), U[:, order]
    d = M.shape[0] if n_components is None else n_components
    return np.sqrt(w[:d])[:, None] * U[:, :d].T


def span_basis(V: np.ndarray, rtol: float = 1e-10) -> np.ndarray:
    """Orthonormal basis ``[D, r]`` of the row space of ``V`` ``[P, D]`` (directions the data varies in)."""
    w, U = np.linalg.eigh(V.T @ V)
    keep = w > rtol * max(w.max(), 1e-300)
    return U[:, keep]


def scale_exponent(X: np.ndarray) -> int:
    """``e`` such that ``X * 2^-e`` (``[N, D]``, finite) has its largest centred entry,
    ``max |x - mean|``, in ``[1, 2)`` (0 when every row is the same).

    The estimators fit on ``X * 2^-e`` and return ``L * 2^-e``: multiplying by a power of two is exact
    in floating point, so a fit is exactly scale-equivariant (``fit(2^k X)`` gives ``L / 2^k`` bit for
    bit), and data near 1e150 or 1e-150 neither overflow nor underflow in the squared distances (nor
    in the float32 work of LMNN and NCA). Found in float64 without overflow: ``X`` is first brought
    into ``[-1, 1]`` by its largest absolute entry.
    """
    top = float(np.abs(X).max(initial=0.0))
    if not top > 0:
        return 0
    b = int(np.frexp(top)[1])  # top = m 2^b, m in [0.5, 1)
    Xb = np.ldexp(X, -b)
    spread = float(np.abs(Xb - Xb.mean(0)).max())
    return b + int(np.frexp(spread)[1]) - 1 if spread > 0 else 0


_BLAS_CONTROLLER: ThreadpoolController | None = None


def one_blas_thread():
    """Context manager: BLAS on one thread, for loops of small products (ITML's rank-one updates,
    MMC's ``[P, D] x [D, D]`` products), where threads only add overhead.

    ``threadpool_limits`` scans the loaded libraries on every call (1-4 ms, as long as MMC's whole
    diagonal solve); the scan is done once here, on first use, after NumPy, SciPy and torch loaded.
    """
    global _BLAS_CONTROLLER
    if _BLAS_CONTROLLER is None:
        _BLAS_CONTROLLER = ThreadpoolController()
    return _BLAS_CONTROLLER.limit(limits=1, user_api="blas")


class MahalanobisTransformer(ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator):
    """Base class: a learned linear map ``L`` (``components_``, ``[n_components, n_features_in_]``).

    Subclasses implement ``_fit(X, y) -> L`` on validated float64 ``X`` ``[N, D]`` and integer-coded
    ``y`` ``[N]`` (at least two classes, one of them with two samples or more). ``X`` there is the
    input times ``2^-self._scale_exp`` (:func:`scale_exponent`: centred entries of at most 2 in
    absolute value), and the ``L`` returned is for that ``X``; an array given in input units (an
    ``init``, a ``prior``) is converted by the subclass. The base class maps ``L`` back.
    """

    _scale_exp = 0  # X was divided by 2**_scale_exp for _fit (set by fit / fit_pairs)

    _requires_y = True

    # ---------------------------------------------------------------- validation helpers
    def _check_n_components(self, n_features: int) -> int:
        n = getattr(self, "n_components", None)
        if n is None:
            return n_features
        if not isinstance(n, numbers.Integral) or isinstance(n, bool):
            raise TypeError(f"n_components must be an int or None, got {type(n).__name__}")
        if not 1 <= n <= n_features:
            raise ValueError(f"n_components={n} must be between 1 and n_features={n_features}")
        return int(n)

    def _validate_X(self, X, reset: bool) -> np.ndarray:
        X = _validate_data(self, X, reset=reset, dtype=[np.float64, np.float32], ensure_min_samples=2)
        return np.asarray(X, dtype=np.float64)

    def _scaled(self, X: np.ndarray) -> np.ndarray:
        """``X * 2^-e`` for the fit (:func:`scale_exponent`; ``e`` kept in ``_scale_exp``); a
        ValueError when every sample is the same point (no distance to learn from)."""
        self._scale_exp = scale_exponent(X)
        if self._requires_y and not (X != X[0]).any():
            raise ValueError(
                f"every sample in X is the same point ({X.shape[0]} identical points): {type(self).__name__} "
                "has no distance to learn from"
            )
        return np.ldexp(X, -self._scale_exp)

    def _unscaled(self, L: np.ndarray) -> np.ndarray:
        """``L`` learned on the scaled ``X`` -> ``L`` for the input ``X``."""
        return np.ldexp(np.asarray(L, dtype=np.float64), -self._scale_exp)

    def _in_fit_units(self, A: np.ndarray, power: int = 1) -> np.ndarray:
        """An array given in input units (``init`` ``L``: ``power=1``; a ``prior`` ``M``: 2) in the
        units of the scaled ``X`` (a ValueError if that overflows)."""
        with np.errstate(over="ignore"):
            out = np.ldexp(A, power * self._scale_exp)
        if not np.isfinite(out).all():
            raise ValueError(
                f"the given array is too large for the scale of X (X is divided by 2^{self._scale_exp} "
                "for the fit, the array multiplied by it): rescale X or the array"
            )
        return out

    def _validate_Xy(self, X, y) -> tuple[np.ndarray, np.ndarray]:
        if y is None:
            raise ValueError(
                f"{type(self).__name__} requires y to be passed, but the target y is None: give class labels"
                " to fit(X, y) (or pairs to fit_pairs where the estimator has it)"
            )
        X, y = _validate_data(self, X, y, reset=True, dtype=[np.float64, np.float32], ensure_min_samples=2)
        check_classification_targets(y)
        self.classes_, y_int = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"y has only one class ({self.classes_[:1].tolist()[0]!r}); metric learning needs at least "
                "two classes"
            )
        if len(self.classes_) == len(y):
            raise ValueError(
                f"every label in y is distinct ({len(y)} samples, {len(y)} classes): {type(self).__name__} "
                "learns from samples of the same class (similar pairs, target neighbours) and needs "
                "at least one class with two samples or more"
            )
        return np.asarray(X, dtype=np.float64), y_int.astype(np.int64)

    # ---------------------------------------------------------------- fitting
    def fit(self, X, y=None):
        """Learn ``L`` from ``X`` ``[N, D]`` and class labels ``y`` ``[N]``."""
        X, y = self._validate_Xy(X, y)
        self._set_components(self._unscaled(self._fit(self._scaled(X), y)))
        return self

    def _fit(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _set_components(self, L: np.ndarray) -> None:
        L = np.asarray(L, dtype=np.float64)
        if not np.isfinite(L).all():
            raise FloatingPointError(f"{type(self).__name__} produced a non-finite metric")
        self.components_ = L
        self._n_features_out = L.shape[0]

    # ---------------------------------------------------------------- using the metric
    def transform(self, X) -> np.ndarray:
        """``X @ L.T``: ``[N, D] -> [N, n_components]``; Euclidean distance there is ``d_M``."""
        check_is_fitted(self, "components_")
        X = _validate_data(self, X, reset=False, dtype=[np.float64, np.float32])
        return np.asarray(X, dtype=np.float64) @ self.components_.T

    def get_mahalanobis_matrix(self) -> np.ndarray:
        """``M = L^T L`` (``[D, D]``, positive semi-definite)."""
        check_is_fitted(self, "components_")
        return self.components_.T @ self.components_

    def _pair_arrays(self, a, b) -> tuple[np.ndarray, np.ndarray]:
        check_is_fitted(self, "components_")
        a = np.atleast_2d(np.asarray(a, dtype=np.float64))
        b = np.atleast_2d(np.asarray(b, dtype=np.float64))
        D = self.components_.shape[1]
        if a.shape != b.shape or a.ndim != 2 or a.shape[1] != D:
            raise ValueError(
                f"pair_distance expects a and b of the same shape [n, {D}], got {a.shape} and {b.shape}"
            )
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            raise ValueError("pair_distance input contains NaN or infinity")
        return a, b

    def pair_distance(self, a, b) -> np.ndarray:
        """Row-wise learned distance ``sqrt((a_i - b_i)^T M (a_i - b_i))``: ``[n, D], [n, D] -> [n]``."""
        a, b = self._pair_arrays(a, b)
        diff = (a - b) @ self.components_.T
        return np.sqrt(np.einsum("ij,ij->i", diff, diff))

    def pair_score(self, a, b) -> np.ndarray:
        """Similarity score of each pair (higher = more similar): ``-pair_distance(a, b)``."""
        return -self.pair_distance(a, b)

    def as_module(self, dtype: torch.dtype = torch.float32) -> torch.nn.Linear:
        """The learned map as ``torch.nn.Linear(n_features_in_, n_components, bias=False)``.

        ``module(x)`` equals ``transform(x)``: the map can serve as the first layer or the head of a
        deep model.
        """
        check_is_fitted(self, "components_")
        d, D = self.components_.shape
        layer = torch.nn.Linear(D, d, bias=False, dtype=dtype)
        with torch.no_grad():
            layer.weight.copy_(torch.as_tensor(self.components_, dtype=dtype))
        return layer

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = self._requires_y
        return tags
