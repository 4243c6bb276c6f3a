"""VICReg: variance, invariance and covariance regularisation of two views.

Formula (Bardes, Ponce & LeCun 2022, "VICReg")::

    inv(a, b) = 1/(B D) sum_{i,d} (a_id - b_id)^2                     (mean squared error)
    var(z)    = 1/D sum_d max(0, gamma - sqrt(Var_d(z) + eps))         (Var with 1/(B-1))
    cov(z)    = 1/D sum_{d != e} Cov(z)_de^2                           (Cov with 1/(B-1))
    L = lambda * inv(z_a, z_b) + mu * (var(z_a) + var(z_b)) / 2 + nu * (cov(z_a) + cov(z_b))

with the paper's ``lambda = mu = 25``, ``nu = 1``, ``gamma = 1``, ``eps = 1e-4``. The
variance terms are averaged over the two views as in the authors' released training code
(``main_vicreg.py``, with which the paper's numbers were obtained; lightly does the same);
the paper's pseudo-code sums them, i.e. doubles ``mu``. The
variance hinge keeps every dimension spread (no collapse), the covariance term
decorrelates them. The statistics are over the batch: under multi-process training
pass the gathered global batch.

Shapes: ``z_a [B, D]``, ``z_b [B, D]`` with ``B >= 2``; returns a scalar.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from likewise.losses.two_view import TwoViewLoss, check_views


def _variance_term(z: Tensor, gamma: float, eps: float) -> Tensor:
    return F.relu(gamma - torch.sqrt(z.var(0) + eps)).mean()


def _covariance_term(z: Tensor) -> Tensor:
    b, d = z.shape
    c = z - z.mean(0)
    cov = c.T @ c / (b - 1)
    return (cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum()) / d


def vicreg_loss(
    z_a: Tensor,
    z_b: Tensor,
    lambda_: float = 25.0,
    mu: float = 25.0,
    nu: float = 1.0,
    gamma: float = 1.0,
    eps: float = 1e-4,
) -> Tensor:
    """VICReg loss of two views (module docstring)."""
    z_a, z_b = check_views(z_a, z_b, min_rows=2)
    inv = F.mse_loss(z_a, z_b)
    var = 0.5 * (_variance_term(z_a, gamma, eps) + _variance_term(z_b, gamma, eps))
    cov = _covariance_term(z_a) + _covariance_term(z_b)
    return lambda_ * inv + mu * var + nu * cov


class VICRegLoss(TwoViewLoss):
    """VICReg (Bardes et al. 2022): ``lambda_`` invariance, ``mu`` variance, ``nu`` covariance."""

    def __init__(
        self,
        lambda_: float = 25.0,
        mu: float = 25.0,
        nu: float = 1.0,
        gamma: float = 1.0,
        eps: float = 1e-4,
        *,
        fast: bool = True,
    ) -> None:
        super().__init__(fast=fast)
        if min(lambda_, mu, nu) < 0 or not gamma > 0 or not eps > 0:
            raise ValueError("need lambda_, mu, nu >= 0 and gamma, eps > 0")
        self.lambda_, self.mu, self.nu = float(lambda_), float(mu), float(nu)
        self.gamma, self.eps = float(gamma), float(eps)

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        return vicreg_loss(z_a, z_b, self.lambda_, self.mu, self.nu, self.gamma, self.eps)


__all__ = ["VICRegLoss", "vicreg_loss"]
