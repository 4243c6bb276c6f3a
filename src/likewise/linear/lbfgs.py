"""L-BFGS on the linear map ``L`` (``[d, D]``) for objectives written in torch.

The objective returns ``(f, dfdZ)`` for ``Z = X L^T``; the chain rule ``df/dL = dfdZ^T X`` is done
here, so the per-method code only works with the embedded points. scipy's L-BFGS-B drives it (the
parameters are small, the work is in the ``[N, N]`` torch ops, on the chosen device).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy.optimize import minimize


def sq_distances(Z: torch.Tensor) -> torch.Tensor:
    """``[N, d] -> [N, N]`` squared Euclidean distances (clamped at 0), by one GEMM."""
    sq = (Z * Z).sum(1)
    return (sq[:, None] + sq[None, :] - 2.0 * (Z @ Z.T)).clamp_min_(0.0)


def laplacian_grad(W: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
    """Gradient w.r.t. ``Z`` of ``sum_ij W_ij ||z_i - z_j||^2``: ``2 (diag(W 1 + W^T 1) - W - W^T) Z``."""
    deg = W.sum(1) + W.sum(0)
    return 2.0 * (deg[:, None] * Z - W @ Z - W.T @ Z)


def minimize_on_L(
    objective: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    X: torch.Tensor,
    L0: np.ndarray,
    max_iter: int,
    tol: float,
) -> tuple[np.ndarray, float, int]:
    """Minimise ``objective(X @ L.T)`` over ``L`` from ``L0``; returns ``(L, f, n_iter)``."""
    shape = L0.shape

    def fun(flat: np.ndarray) -> tuple[float, np.ndarray]:
        L = torch.as_tensor(flat.reshape(shape), dtype=X.dtype, device=X.device)
        f, gZ = objective(X @ L.T)
        gL = gZ.T @ X
        return float(f), gL.detach().cpu().numpy().astype(np.float64).ravel()

    res = minimize(
        fun,
        L0.ravel(),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": int(max_iter), "gtol": float(tol), "ftol": 1e-12},
    )
    return res.x.reshape(shape), float(res.fun), int(res.nit)
