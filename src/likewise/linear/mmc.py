"""MMC: Mahalanobis Metric for Clustering (Xing, Ng, Jordan & Russell 2003).

Xing et al. minimise the summed squared distances of the similar pairs S while the dissimilar
pairs D stay apart:

    min_{M >= 0}  sum_{(i,j) in S} d_M(x_i, x_j)^2   s.t.  sum_{(k,l) in D} d_M(x_k, x_l) >= 1.

The problem is convex; with ``v = x_i - x_j`` and ``d_M^2 = v^T M v`` it is solved here in the
equivalent form they give for the diagonal case (the constraint enters as a log barrier, the two
problems have the same minimisers up to scale):

    min_{M >= 0}  h(M) = <M, S_S> - log sum_{v in D} sqrt(v^T M v),   S_S = sum_{v in S} v v^T,

by spectral projected gradient (:mod:`likewise.linear.projected_gradient`: Barzilai-Borwein
steps, one projection per iteration, onto the PSD cone by clipping the eigenvalues; for
``diagonal=True`` onto ``M = diag(m)``, ``m >= 0``), from the best multiple of the identity.

Xing's minimiser is typically of low rank (about the number of classes - 1 on digits), which
throws away the directions a nearest-neighbour rule still needs. ``barrier`` (likewise's
addition, not in the paper) adds the log-barrier of the PSD cone, ``- barrier / (2 D) log det M``:
the minimiser stays full rank and, in directions no dissimilar pair favours, reduces to whitening
by the similar-pair scatter. ``barrier=0`` is exactly Xing et al.'s problem. With ``barrier > 0`` the
iterates stay inside the cone (the line search refuses steps where ``M`` has no Cholesky factor),
so no projection is needed and an iteration costs two ``[P_D, D] x [D, D]`` products and one
Cholesky factorisation. The solution is rescaled so that the dissimilar constraint is tight,
``sum_D d_M = 1``. Shapes: ``X`` ``[N, D]``, ``M``
``[D, D]``, ``components_`` ``[n_components, D]``.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from contextlib import nullcontext

import numpy as np
from scipy.linalg import solve_triangular

from likewise.linear.base import MahalanobisTransformer, components_from_metric, one_blas_thread, span_basis
from likewise.linear.pairs import check_pairs, label_pairs
from likewise.linear.projected_gradient import projected_gradient


def _psd_project(A: np.ndarray) -> np.ndarray:
    A = (A + A.T) / 2.0
    w, U = np.linalg.eigh(A)
    return (U * np.clip(w, 0.0, None)) @ U.T


def _identity(A: np.ndarray) -> np.ndarray:
    return A


def mmc_objective(M: np.ndarray, VS: np.ndarray, VD: np.ndarray, eps: float = 0.0) -> float:
    """``h(M)`` for a full ``M`` ``[D, D]`` (or a diagonal given as ``[D]``); ``VS``/``VD``: ``[P, D]``."""
    if M.ndim == 1:
        M = np.diag(M)
    s = np.einsum("pi,ij,pj->", VS, M, VS)
    d = np.einsum("pi,ij,pj->p", VD, M, VD)
    return float(s - np.log(np.sqrt(np.clip(d, 0, None) + eps).sum()))


def mmc_problem(
    VS: np.ndarray, VD: np.ndarray, barrier: float, diagonal: bool, ridge: float = 0.0, eps: float = 0.0
) -> tuple[Callable, Callable, np.ndarray]:
    """What MMC's solver minimises: ``(fun_grad, project, x0)``; ``VS`` ``[P_S, D]``, ``VD`` ``[P_D, D]``.

    ``fun_grad(M) -> (f, grad)`` with ``f = h(M) + ridge tr(M) - lam log det M`` (``h``:
    :func:`mmc_objective` with ``eps``; ``lam = barrier / (2 D)``; a diagonal ``M`` is given as its
    ``[D]`` diagonal) and ``f = inf`` outside the barrier's domain. ``x0`` is the best multiple of
    the identity: ``h + barrier`` along ``t I`` is ``t tr(S_S) - log t / 2 - lam D log t + const``.
    """
    D = VS.shape[1]
    lam = float(barrier) / (2 * D)
    if diagonal:
        SS = np.einsum("pi,pi->i", VS, VS) + ridge
        VD2 = VD * VD

        def fun_grad(m):
            if lam > 0 and m.min() <= 0:  # outside the barrier's domain
                return np.inf, None
            d = np.sqrt(np.clip(VD2 @ m, 0.0, None) + eps)
            G = d.sum()
            f, g = float(SS @ m - np.log(G)), SS - (VD2.T @ (0.5 / d)) / G
            if lam > 0:
                f, g = f - lam * np.log(m).sum(), g - lam / m
            return f, g

        def project(m):
            return np.clip(m, 0.0, None)

        return fun_grad, project, np.ones(D) * (0.5 + lam * D) / SS.sum()

    SS = VS.T @ VS + ridge * np.eye(D)

    def fun_grad(M):
        if lam > 0:
            try:
                C = np.linalg.cholesky(M)
            except np.linalg.LinAlgError:  # outside the barrier's domain
                return np.inf, None
        d = np.sqrt(np.clip(np.einsum("pi,pi->p", VD @ M, VD), 0.0, None) + eps)
        G = d.sum()
        grad = SS - (VD.T @ (VD * (0.5 / d)[:, None])) / G
        f = float(np.vdot(SS, M) - np.log(G))
        if lam > 0:
            f -= 2.0 * lam * np.log(np.diag(C)).sum()  # log det M
            Ci = solve_triangular(C, np.eye(D), lower=True)
            grad -= lam * (Ci.T @ Ci)  # M^-1
        return f, (grad + grad.T) / 2

    # with the barrier the minimiser is interior and a step that leaves the cone is refused by the
    # line search (f = inf there): no projection (no eigendecomposition) needed
    project = _psd_project if lam == 0 else _identity
    return fun_grad, project, np.eye(D) * (0.5 + lam * D) / np.trace(SS)


class MMC(MahalanobisTransformer):
    """Xing et al. (2003) metric learning from similar / dissimilar pairs (full or diagonal ``M``).

    Parameters
    ----------
    diagonal : learn a diagonal ``M`` (feature weights) instead of a full one.
    barrier : weight of the log-det barrier (0: Xing et al.'s problem exactly; 1: equal weight).
    n_neighbors, n_anchors : for ``fit(X, y)``, the pairs are each of ``n_anchors`` anchor points
        (spread evenly over the classes; ``None``: every point) with its ``n_neighbors`` nearest
        same-class points (S) and nearest other-class points (D), :func:`~likewise.linear.pairs.label_pairs`.
        ``"auto"`` (default): 128 anchors for a diagonal ``M`` (``D`` unknowns: about 12 pairs per
        unknown for ``D <= 64``), 256 for a full one. The search costs ``n_anchors x N`` distances;
        with every point (``N^2``) it took longer than the solve on mnist5k (3,500 points), and the
        1-NN accuracy was no better (digits, mnist5k, wine, breast cancer: within 0.01 either way).
    max_iter, tol : projected-gradient iterations and relative decrease of ``h`` to stop at.
    n_components : keep the top eigen-directions of ``M`` (``None``: all).
    """

    def __init__(
        self,
        diagonal: bool = False,
        n_neighbors: int = 3,
        n_anchors="auto",
        barrier: float = 1.0,
        max_iter: int = 1000,
        tol: float = 1e-5,
        n_components: int | None = None,
    ):
        self.diagonal = diagonal
        self.barrier = barrier
        self.n_neighbors = n_neighbors
        self.n_anchors = n_anchors
        self.max_iter = max_iter
        self.tol = tol
        self.n_components = n_components

    def _fit(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        anchors = self.n_anchors
        if isinstance(anchors, str):
            if anchors != "auto":
                raise ValueError(f"n_anchors must be 'auto', a positive int or None, got {anchors!r}")
            anchors = 128 if self.diagonal else 256
        a, b, sign = label_pairs(X, y, self.n_neighbors, anchors)
        return self._fit_constraints(X, a, b, sign)

    def fit_pairs(self, X, pairs, y_pairs) -> MMC:
        """Weak supervision: ``pairs`` ``[P, 2]`` index pairs into ``X`` ``[N, D]``, ``y_pairs`` ``[P]``
        in ``{+1 (similar, S), -1 (dissimilar, D)}``; both kinds are needed."""
        X = self._validate_X(X, reset=True)
        a, b, sign = check_pairs(pairs, y_pairs, X.shape[0])
        self._set_components(self._unscaled(self._fit_constraints(self._scaled(X), a, b, sign)))
        return self

    def _fit_constraints(self, X: np.ndarray, a: np.ndarray, b: np.ndarray, sign: np.ndarray) -> np.ndarray:
        if not isinstance(self.max_iter, numbers.Integral) or self.max_iter < 1:
            raise ValueError(f"max_iter must be a positive int, got {self.max_iter!r}")
        if not isinstance(self.barrier, numbers.Real) or not self.barrier >= 0:
            raise ValueError(f"barrier must be a non-negative number, got {self.barrier!r}")
        n_comp = self._check_n_components(X.shape[1])
        S, Dm = sign > 0, sign < 0
        VS, VD = X[a[S]] - X[b[S]], X[a[Dm]] - X[b[Dm]]
        if len(VS) == 0 or len(VD) == 0:
            raise ValueError(
                f"MMC needs both similar (+1) and dissimilar (-1) pairs; got {len(VS)} similar "
                f"and {len(VD)} dissimilar"
            )
        VD = VD[VD.any(1)]  # identical points carry no information
        if len(VD) == 0:
            raise ValueError("every dissimilar pair joins two identical points: no metric can separate them")
        # solve in the span of the pair differences: constant, duplicated or rank-deficient features
        # get M = 0 in the directions no pair sees
        if self.diagonal:  # keep M diagonal: drop the features no pair varies in (no product needed)
            keep = np.flatnonzero(VS.any(0) | VD.any(0))
            if len(keep) < X.shape[1]:
                VS, VD = VS[:, keep], VD[:, keep]
        else:
            B = span_basis(np.vstack([VS, VD]))
            VS, VD = VS @ B, VD @ B
        D = VS.shape[1]
        scale = (np.einsum("pi,pi->", VS, VS) / len(VS) + np.einsum("pi,pi->", VD, VD) / len(VD)) / D
        ridge = 1e-8 * scale * len(VS)  # keeps h bounded below along directions no similar pair spans
        eps = 1e-12 * scale  # smooths sqrt at 0
        fun_grad, project, x0 = mmc_problem(VS, VD, float(self.barrier), self.diagonal, ridge, eps)
        with one_blas_thread() if D <= 256 else nullcontext():  # small products
            x, _, self.n_iter_ = projected_gradient(
                fun_grad, x0, project, int(self.max_iter), float(self.tol)
            )
        if self.diagonal:  # M = diag(m): L's rows are sqrt(m_i) e_i, largest first
            m = np.zeros(X.shape[1])
            m[keep] = x / np.sqrt(np.clip((VD * VD) @ x, 0, None)).sum() ** 2  # sum_D d_M = 1
            top = np.argsort(-m, kind="stable")[:n_comp]
            return np.sqrt(m[top])[:, None] * np.eye(X.shape[1])[top]
        M = x / np.sqrt(np.clip(np.einsum("pi,pi->p", VD @ x, VD), 0, None)).sum() ** 2  # sum_D d_M = 1
        return components_from_metric(B @ M @ B.T, n_comp)
