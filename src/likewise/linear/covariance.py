"""Unsupervised baselines: the plain Mahalanobis distance and PCA whitening.

``Covariance``: ``M = Sigma^+`` (pseudo-inverse of the sample covariance ``Sigma``, ``[D, D]``), the
classical distance of Mahalanobis (1936), ``d_M(x, z)^2 = (x - z)^T Sigma^{-1} (x - z)``;
``components_ = Sigma^{+1/2}`` (the symmetric, "ZCA" root). Directions of zero variance (constant
or duplicated features, rank-deficient data) get weight 0 instead of an infinite one.

``Whitening``: PCA whitening, ``L = diag(w_k + s)^{-1/2} U_k^T`` for the top ``d`` eigenpairs
``(w_k, U_k)`` of ``Sigma`` and shrinkage ``s = shrinkage * tr(Sigma) / D`` (Ledoit & Wolf 2004 style
regularisation towards a multiple of the identity); zero-variance directions get a zero row.
Both ignore ``y``.
"""

from __future__ import annotations

import numbers

import numpy as np

from likewise.linear.base import MahalanobisTransformer


def _eig_cov(X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    Xc = X - X.mean(0)
    C = Xc.T @ Xc / max(X.shape[0] - 1, 1)
    w, U = np.linalg.eigh(C)
    order = np.argsort(w)[::-1]
    w, U = np.clip(w[order], 0.0, None), U[:, order]
    keep = w > 1e-10 * max(w[0], 1e-300)
    return w, U, keep


class _Unsupervised(MahalanobisTransformer):
    _requires_y = False

    def fit(self, X, y=None):
        """Learn ``L`` from ``X`` ``[N, D]`` (``y`` is ignored)."""
        X = self._validate_X(X, reset=True)
        self._set_components(self._unscaled(self._fit(self._scaled(X), None)))
        return self


class Covariance(_Unsupervised):
    """Mahalanobis distance of the data: ``M`` = pseudo-inverse of the covariance of ``X``.

    ``n_components``: keep the ``d`` highest-variance directions (PCA-whitened form), ``None``: all.
    """

    def __init__(self, n_components: int | None = None):
        self.n_components = n_components

    def _fit(self, X: np.ndarray, y) -> np.ndarray:
        d = self._check_n_components(X.shape[1])
        w, U, keep = _eig_cov(X)
        inv_sqrt = np.where(keep, 1.0 / np.sqrt(np.where(keep, w, 1.0)), 0.0)
        if self.n_components is None:
            return (U * inv_sqrt) @ U.T
        return inv_sqrt[:d, None] * U[:, :d].T


class Whitening(_Unsupervised):
    """PCA whitening with optional shrinkage: ``transform(X)`` has (about) identity covariance.

    ``n_components``: output dimension ``d`` (``None``: ``D``); ``shrinkage`` in ``[0, 1]``.
    """

    def __init__(self, n_components: int | None = None, shrinkage: float = 0.0):
        self.n_components = n_components
        self.shrinkage = shrinkage

    def _fit(self, X: np.ndarray, y) -> np.ndarray:
        if not isinstance(self.shrinkage, numbers.Real) or not 0.0 <= self.shrinkage <= 1.0:
            raise ValueError(f"shrinkage must be in [0, 1], got {self.shrinkage!r}")
        d = self._check_n_components(X.shape[1])
        w, U, keep = _eig_cov(X)
        s = float(self.shrinkage) * w.sum() / X.shape[1]
        ws = (1.0 - float(self.shrinkage)) * w + s
        scale = np.where(keep | (s > 0), 1.0 / np.sqrt(np.where(ws > 0, ws, 1.0)), 0.0)
        return scale[:d, None] * U[:, :d].T
