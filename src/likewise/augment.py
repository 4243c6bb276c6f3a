"""View pipelines on image tensors ``[B, C, H, W]`` in [0, 1], built on kornia.

* ``"light"`` — small random affine jitter (rotation, scale, translation): for digits,
  characters and other small grey images, where flips and colour changes would
  change the class.
* ``"simclr"`` — the augmentation family of SimCLR (Chen et al. 2020): random
  resized crop, horizontal flip, colour jitter, grey-scale and blur.

:class:`TwoViews` draws two independent views of each image (self-supervised
methods, or SupCon with augmented positives).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

AUGMENTATIONS = ("none", "light", "simclr")


def build_augmentation(kind: str = "light", image_size: tuple[int, int] | None = None) -> nn.Module:
    """A kornia pipeline (an ``nn.Module``) for ``kind`` in ``AUGMENTATIONS``."""
    if kind not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {kind!r}; expected one of {', '.join(AUGMENTATIONS)}")
    if kind == "none":
        return nn.Identity()
    import kornia.augmentation as K

    if kind == "light":
        return K.AugmentationSequential(
            K.RandomAffine(degrees=15.0, translate=(0.1, 0.1), scale=(0.85, 1.15), p=1.0)
        )
    if image_size is None:
        raise ValueError("the simclr augmentation needs image_size=(H, W)")
    return K.AugmentationSequential(
        K.RandomResizedCrop(image_size, scale=(0.2, 1.0)),
        K.RandomHorizontalFlip(),
        K.ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8),
        K.RandomGrayscale(p=0.2),
        K.RandomGaussianBlur((3, 3), (0.1, 2.0), p=0.5),
    )


class TwoViews(nn.Module):
    """``x [B, ...] -> cat(aug(x), aug(x)) [2B, ...]`` (two independent draws)."""

    def __init__(self, augmentation: nn.Module) -> None:
        super().__init__()
        self.augmentation = augmentation

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.augmentation(x), self.augmentation(x)], dim=0)
