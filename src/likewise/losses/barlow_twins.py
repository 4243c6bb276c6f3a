"""Barlow Twins: make the cross-correlation of two views the identity.

Formula (Zbontar et al. 2021, "Barlow Twins: Self-Supervised Learning via Redundancy
Reduction"): standardise each dimension over the batch,
``a = (z_a - mean) / std`` (std without Bessel's correction, as batch norm), same for
``b``; the cross-correlation ``C = a^T b / B`` is ``[D, D]``, and::

    L = sum_i (1 - C_ii)^2  +  lambda * sum_{i != j} C_ij^2

with ``lambda = 5.1e-3`` (the paper's value for D = 8192; ``1/D`` is a common choice
for small ``D``). The invariance term pulls matching dimensions together, the
redundancy term decorrelates the others. The statistics are over the batch: under
multi-process training pass the gathered global batch.

Shapes: ``z_a [B, D]``, ``z_b [B, D]`` with ``B >= 2``; returns a scalar.
"""

from __future__ import annotations

import torch
from torch import Tensor

from likewise.losses.two_view import TwoViewLoss, check_views


def _standardise(z: Tensor, eps: float) -> Tensor:
    return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + eps)


def barlow_twins_loss(z_a: Tensor, z_b: Tensor, lambda_: float = 5.1e-3, eps: float = 1e-5) -> Tensor:
    """Barlow Twins loss of two views (module docstring)."""
    z_a, z_b = check_views(z_a, z_b, min_rows=2)
    a, b = _standardise(z_a, eps), _standardise(z_b, eps)
    c = a.T @ b / z_a.shape[0]
    diag = torch.diagonal(c)
    on = (1 - diag).pow(2).sum()
    off = c.pow(2).sum() - diag.pow(2).sum()
    return on + lambda_ * off


class BarlowTwinsLoss(TwoViewLoss):
    """Barlow Twins (Zbontar et al. 2021); ``lambda_`` weighs the off-diagonal term."""

    def __init__(self, lambda_: float = 5.1e-3, eps: float = 1e-5, *, fast: bool = True) -> None:
        super().__init__(fast=fast)
        if not lambda_ >= 0 or not eps > 0:
            raise ValueError(f"need lambda_ >= 0 and eps > 0, got {lambda_!r}, {eps!r}")
        self.lambda_, self.eps = float(lambda_), float(eps)

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        return barlow_twins_loss(z_a, z_b, self.lambda_, self.eps)


__all__ = ["BarlowTwinsLoss", "barlow_twins_loss"]
