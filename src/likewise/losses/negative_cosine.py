"""Negative cosine similarity: BYOL's and SimSiam's prediction loss.

Formula (Grill et al. 2020, BYOL; Chen & He 2021, SimSiam), for predictions ``p`` and
targets ``z``::

    L = -1/B sum_i  <p_i, z_i> / (|p_i| |z_i|)

BYOL writes it as ``2 - 2 cos``, the same up to a constant and a factor 2. The
methods symmetrise it and stop the gradient of the target (``z.detach()``, or a
momentum teacher); the loss itself differentiates both inputs.

Shapes: ``p [B, D]``, ``z [B, D]``; returns a scalar in ``[-1, 1]``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from likewise.losses.two_view import TwoViewLoss, check_views


def negative_cosine_loss(p: Tensor, z: Tensor, eps: float = 1e-8) -> Tensor:
    """``-mean_i cos(p_i, z_i)``."""
    p, z = check_views(p, z)
    return -F.cosine_similarity(p, z, dim=1, eps=eps).mean()


class NegativeCosineLoss(TwoViewLoss):
    """``loss(p, z) = -mean_i cos(p_i, z_i)`` (BYOL, SimSiam); see the module docstring."""

    def __init__(self, eps: float = 1e-8, *, fast: bool = True) -> None:
        super().__init__(fast=fast)
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps!r}")
        self.eps = float(eps)

    def forward(self, z_a: Tensor, z_b: Tensor) -> Tensor:
        return negative_cosine_loss(z_a, z_b, self.eps)


__all__ = ["NegativeCosineLoss", "negative_cosine_loss"]
