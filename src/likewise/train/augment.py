"""Random affine augmentation of image batches, in plain torch (runs on the training device).

Each image gets its own rotation (uniform in ``±degrees``), isotropic scale
(``1 ± scale``) and translation (``±translate`` of the half-size, per axis), applied
with ``affine_grid`` / ``grid_sample`` (zeros outside the image). Randomness comes
from torch's global generator, whose state is saved in every checkpoint, so a
resumed run draws the same augmentations. ``views > 1`` stacks several augmented
views of the batch (their labels repeated), as supervised contrastive learning does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def random_affine(x: Tensor, *, degrees: float, scale: float, translate: float) -> Tensor:
    """``[B, C, H, W]`` -> the same shape, each image with its own random affine transform."""
    if x.dim() != 4:
        raise ValueError(f"augmentation needs image batches [B, C, H, W], got shape {tuple(x.shape)}")
    b = x.shape[0]
    opts = {"device": x.device, "dtype": x.dtype}
    angle = (torch.rand(b, **opts) * 2 - 1) * math.radians(degrees)
    factor = 1 + (torch.rand(b, **opts) * 2 - 1) * scale
    shift = (torch.rand(b, 2, **opts) * 2 - 1) * translate
    cos, sin = torch.cos(angle) / factor, torch.sin(angle) / factor
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, align_corners=False)


def augmented_views(
    x: Tensor, y: Tensor, *, views: int, degrees: float, scale: float, translate: float
) -> tuple[Tensor, Tensor]:
    """``views`` augmented copies of the batch stacked along dim 0, labels repeated."""
    xs = [random_affine(x, degrees=degrees, scale=scale, translate=translate) for _ in range(views)]
    return torch.cat(xs), y.repeat(views)


__all__ = ["augmented_views", "random_affine"]
