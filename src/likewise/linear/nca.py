"""NCA: Neighbourhood Components Analysis (Goldberger, Roweis, Hinton & Salakhutdinov 2004).

With ``z = L x`` every point picks a neighbour stochastically,
``p_ij = exp(-||z_i - z_j||^2) / sum_{k != i} exp(-||z_i - z_k||^2)`` (``p_ii = 0``); NCA maximises
the expected number of correctly classified points

    f(L) = sum_i p_i,   p_i = sum_{j : y_j = y_i} p_ij.

Gradient (derived for the vectorised form): with ``D_ij = ||z_i - z_j||^2`` and ``m_ij = [y_i = y_j]``,
``d(-f)/dD_ij = p_ij (m_ij - p_i)``, and ``d/dZ`` of ``sum W_ij D_ij`` is ``2 Lap(W) Z``. L-BFGS on ``L``
(``[d, D]``); ``X`` ``[N, D]``; the ``[N, N]`` work runs in torch on ``device``.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

from likewise.linear.base import MahalanobisTransformer, resolve_device
from likewise.linear.init import initial_components
from likewise.linear.lbfgs import laplacian_grad, minimize_on_L, sq_distances


def nca_objective(Z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(-sum_i p_i, d/dZ)`` for embedded points ``Z`` ``[N, d]`` and labels ``y`` ``[N]``."""
    D = sq_distances(Z)
    D.fill_diagonal_(float("inf"))
    P = torch.softmax(-D, dim=1)
    m = (y[:, None] == y[None, :]).to(Z.dtype)
    m.fill_diagonal_(0.0)
    p = (P * m).sum(1)
    W = P * (m - p[:, None])
    return -p.sum(), laplacian_grad(W, Z)


class NCA(MahalanobisTransformer):
    """Goldberger et al. (2004) neighbourhood components analysis, L-BFGS on ``L``.

    Parameters
    ----------
    n_components : output dimension ``d`` (``None``: ``D``).
    init : ``"auto"``, ``"identity"``, ``"pca"``, ``"random"`` or an array ``[d, D]``.
    max_iter, tol : L-BFGS iterations and gradient tolerance.
    device : torch device for the ``[N, N]`` work (``None``: CPU); e.g. ``"cuda"``.
    random_state : seed for ``init="random"``.
    """

    def __init__(
        self,
        n_components: int | None = None,
        init="auto",
        max_iter: int = 100,
        tol: float = 1e-5,
        device=None,
        random_state=None,
    ):
        self.n_components = n_components
        self.init = init
        self.max_iter = max_iter
        self.tol = tol
        self.device = device
        self.random_state = random_state

    def _fit(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        if not isinstance(self.max_iter, numbers.Integral) or self.max_iter < 1:
            raise ValueError(f"max_iter must be a positive int, got {self.max_iter!r}")
        dev = resolve_device(self.device)
        L0 = initial_components(self.init, X, self._check_n_components(X.shape[1]), self.random_state)
        Xt = torch.tensor(X, dtype=torch.float64, device=dev)
        yt = torch.as_tensor(y, device=dev)
        L, self.objective_, self.n_iter_ = minimize_on_L(
            lambda Z: nca_objective(Z, yt), Xt, L0, self.max_iter, self.tol
        )
        return L
