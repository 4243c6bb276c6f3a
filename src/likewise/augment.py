"""View pipelines on image tensors ``[B, C, H, W]`` in [0, 1], built on kornia.

* ``"light"`` — random affine jitter, each image its own draw: rotation uniform in
  ``±degrees``, isotropic scale in ``1 ± scale``, translation up to ``translate`` of the
  image size per axis, zeros outside the image. For digits, characters and other small
  grey images, where flips and colour changes would change the class.
* ``"simclr"`` — the augmentation family of SimCLR (Chen et al. 2020): random
  resized crop, horizontal flip, colour jitter, grey-scale and blur.

:class:`Views` stacks independent views of each image (self-supervised methods, or
SupCon with augmented positives). Randomness comes from torch's global generator, so a
seeded run, and a resumed one (the trainer checkpoints the generator), draws the same views.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

AUGMENTATIONS = ("none", "light", "simclr")


def build_augmentation(
    kind: str = "light",
    image_size: tuple[int, int] | None = None,
    *,
    degrees: float = 15.0,
    scale: float = 0.15,
    translate: float = 0.1,
) -> nn.Module:
    """A kornia pipeline (an ``nn.Module``) for ``kind`` in ``AUGMENTATIONS``.

    ``degrees``, ``scale`` and ``translate`` set the ``"light"`` affine jitter.
    """
    if kind not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {kind!r}; expected one of {', '.join(AUGMENTATIONS)}")
    if not (0 <= degrees <= 180 and 0 <= scale < 1 and 0 <= translate < 1):
        raise ValueError(
            "need 0 <= degrees <= 180, 0 <= scale < 1, 0 <= translate < 1; "
            f"got {degrees}, {scale}, {translate}"
        )
    if kind == "none":
        return nn.Identity()
    import kornia.augmentation as K

    if kind == "light":
        return K.AugmentationSequential(
            K.RandomAffine(
                degrees=float(degrees), translate=(translate, translate), scale=(1 - scale, 1 + scale), p=1.0
            )
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


class Views(nn.Module):
    """``x [B, ...] -> cat(aug(x), ..., aug(x)) [views * B, ...]`` (independent draws).

    The labels of the stacked batch are ``labels.repeat(views)``.
    """

    def __init__(self, augmentation: nn.Module, views: int = 2) -> None:
        super().__init__()
        if isinstance(views, bool) or not isinstance(views, int) or views < 1:
            raise ValueError(f"views must be a positive integer, got {views!r}")
        self.augmentation = augmentation
        self.views = views

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4:
            raise ValueError(f"augmentation needs image batches [B, C, H, W], got shape {tuple(x.shape)}")
        return torch.cat([self.augmentation(x) for _ in range(self.views)], dim=0)
