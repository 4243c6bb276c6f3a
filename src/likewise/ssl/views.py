"""Augmentation presets for self-supervised views, on batched tensors.

* ``"signal"`` — 1-D signals ``[B, L]`` or ``[B, C, L]``, the MNIST-1D recipe of
  Greydanus' self-supervised notebook (:class:`SignalAugment`): remove each signal's
  mean and linear trend, shift it circularly by 0 to ``max_shift`` samples, then add a
  random linear trend (slope ~ N(0, ``slope_std``) per sample index, centred) and a random
  offset ~ N(0, ``offset_std``). Plain torch.
* ``"grey"`` — small grey images ``[B, 1, H, W]`` (digits, characters): kornia random
  resized crop (scale 0.6-1, aspect 3/4-4/3) and affine jitter (±10 degrees, 10 %
  translation); no flips or colour changes, which would change what a digit is.
* ``"rgb"`` — photographs ``[B, 3, H, W]``: SimCLR's family (random resized crop,
  horizontal flip, colour jitter, grey-scale, blur), :func:`likewise.augment.build_augmentation`.
* ``"none"`` — the identity.

:class:`MultiCrop` draws the two global views plus ``n_local`` smaller local crops
(DINO's multi-crop; the local crops are resized back to the input size so any encoder
takes them). Randomness comes from torch's global generator, which the trainer
checkpoints: a resumed run draws the same views.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PRESETS = ("signal", "grey", "rgb", "none")


def detrend(x: Tensor) -> Tensor:
    """Subtract each signal's least-squares line ``a + b t`` (over its last dimension)."""
    n = x.shape[-1]
    t = torch.arange(n, dtype=x.dtype, device=x.device) - (n - 1) / 2
    mean = x.mean(-1, keepdim=True)
    slope = (x * t).sum(-1, keepdim=True) / t.pow(2).sum().clamp_min(1e-12)
    return x - mean - slope * t


def circular_shift(x: Tensor, shifts: Tensor) -> Tensor:
    """Roll each signal ``x[i]`` (last dimension) right by ``shifts[i]`` samples."""
    n = x.shape[-1]
    index = (torch.arange(n, device=x.device) - shifts.view(-1, *([1] * (x.dim() - 1)))) % n
    return x.gather(-1, index.expand_as(x))


class SignalAugment(nn.Module):
    """The MNIST-1D view recipe (module docstring); ``[B, L]`` or ``[B, C, L]`` in and out."""

    def __init__(self, max_shift: int = 9, slope_std: float = 0.04, offset_std: float = 0.3) -> None:
        super().__init__()
        if isinstance(max_shift, bool) or not isinstance(max_shift, int) or max_shift < 0:
            raise ValueError(f"max_shift must be a non-negative integer, got {max_shift!r}")
        if slope_std < 0 or offset_std < 0:
            raise ValueError(f"slope_std and offset_std must be >= 0, got {slope_std!r}, {offset_std!r}")
        self.max_shift, self.slope_std, self.offset_std = max_shift, float(slope_std), float(offset_std)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() not in (2, 3) or not x.is_floating_point():
            raise ValueError(
                f"signal views need float signals [B, L] or [B, C, L], got shape {tuple(x.shape)}"
            )
        b, n = x.shape[0], x.shape[-1]
        shape = (b, *([1] * (x.dim() - 1)))
        shifts = torch.randint(0, self.max_shift + 1, (b,), device=x.device)
        y = circular_shift(detrend(x), shifts)
        t = torch.arange(n, dtype=x.dtype, device=x.device) - (n - 1) / 2
        slope = torch.randn(shape, dtype=x.dtype, device=x.device) * self.slope_std
        offset = torch.randn(shape, dtype=x.dtype, device=x.device) * self.offset_std
        return y + slope * t + offset


def build_views(preset: str, input_shape: tuple[int, ...]) -> nn.Module:
    """The augmentation module of ``preset`` (one of ``PRESETS``) for inputs of ``input_shape``."""
    if preset not in PRESETS:
        raise ValueError(f"unknown view preset {preset!r}; expected one of {', '.join(PRESETS)}")
    if preset == "none":
        return nn.Identity()
    if preset == "signal":
        if len(input_shape) not in (1, 2):
            raise ValueError(f"the signal preset needs 1-D inputs (L,) or (C, L), got {tuple(input_shape)}")
        return SignalAugment()
    if len(input_shape) != 3:
        raise ValueError(f"the {preset} preset needs image inputs (C, H, W), got {tuple(input_shape)}")
    import kornia.augmentation as K

    size = (int(input_shape[1]), int(input_shape[2]))
    if preset == "grey":
        return K.AugmentationSequential(
            K.RandomResizedCrop(size, scale=(0.6, 1.0), ratio=(0.75, 4 / 3)),
            K.RandomAffine(degrees=10.0, translate=(0.1, 0.1), p=1.0),
        )
    from likewise.augment import build_augmentation

    return build_augmentation("simclr", size)


class MultiCrop(nn.Module):
    """``x -> [global(x), global(x), local(x) * n_local]``; local crops cover ``scale`` of the input.

    Local crops of signals ``[B, L]`` / ``[B, C, L]``: a random window of ``scale`` of the
    length, linearly resized back to ``L``. Of images: kornia's random resized crop with
    ``scale`` (area fraction), resized back to ``H x W``. Each crop then goes through
    ``augmentation``.
    """

    def __init__(
        self, augmentation: nn.Module, n_local: int = 4, scale: tuple[float, float] = (0.3, 0.6)
    ) -> None:
        super().__init__()
        if isinstance(n_local, bool) or not isinstance(n_local, int) or n_local < 0:
            raise ValueError(f"n_local must be a non-negative integer, got {n_local!r}")
        if not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(f"scale must satisfy 0 < low <= high <= 1, got {scale!r}")
        self.augmentation, self.n_local, self.scale = (
            augmentation,
            n_local,
            (float(scale[0]), float(scale[1])),
        )

    def _local_signal(self, x: Tensor) -> Tensor:
        b, n = x.shape[0], x.shape[-1]
        frac = torch.empty(b, device=x.device).uniform_(*self.scale)
        start = torch.rand(b, device=x.device) * (1 - frac)
        pos = start[:, None] + frac[:, None] * torch.linspace(0, 1, n, device=x.device)  # [B, n] in [0, 1]
        grid = torch.stack([pos * 2 - 1, torch.zeros_like(pos)], -1)[:, None]  # [B, 1, n, 2]
        signal = x if x.dim() == 3 else x[:, None]
        out = F.grid_sample(signal[:, :, None], grid.to(x.dtype), align_corners=True)[:, :, 0]
        return out if x.dim() == 3 else out[:, 0]

    def _local_image(self, x: Tensor) -> Tensor:
        import kornia.augmentation as K

        return K.RandomResizedCrop(tuple(x.shape[-2:]), scale=self.scale)(x)

    def forward(self, x: Tensor) -> list[Tensor]:
        views = [self.augmentation(x), self.augmentation(x)]
        local = self._local_image if x.dim() == 4 else self._local_signal
        views += [self.augmentation(local(x)) for _ in range(self.n_local)]
        return views


__all__ = ["PRESETS", "MultiCrop", "SignalAugment", "build_views", "circular_shift", "detrend"]
