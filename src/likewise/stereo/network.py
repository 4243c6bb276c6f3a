"""The patch-embedding network: MC-CNN "fast" (Zbontar & LeCun 2016, JMLR 17).

Four 3x3 convolutions with ReLU between them (none after the last), no pooling, and the
output L2-normalised, so the similarity of two pixels is the dot product of their
features::

    f(x) = normalize(conv4(relu(conv3(relu(conv2(relu(conv1(x))))))))

Trained on 9x9 patches without padding, each patch gives one ``features``-d vector
(``[B, C, 9, 9] -> [B, F]``). At inference the whole image goes through at once
(:meth:`PatchNet.dense`): the input is reflection-padded by the receptive radius (4), so
every pixel's feature is the network applied to the 9x9 patch around it, as in training.
Inputs are standardised per image and channel (:func:`standardize`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: side of the training patch = receptive field of 4 stacked 3x3 convolutions
PATCH = 9
RADIUS = PATCH // 2


class PatchNet(nn.Module):
    """MC-CNN fast: ``[B, C, 9, 9] -> [B, F]`` unit vectors (``dense``: ``[C, H, W] -> [F, H, W]``)."""

    def __init__(self, in_channels: int = 3, hidden: int = 64, features: int = 64) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("hidden", hidden), ("features", features)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.in_channels, self.hidden, self.features = in_channels, hidden, features
        widths = (in_channels, hidden, hidden, hidden, features)
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3) for a, b in zip(widths[:-1], widths[1:]))

    def _trunk(self, x: Tensor) -> Tensor:
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < len(self.convs) - 1:
                x = F.relu(x)
        return F.normalize(x, dim=1)

    def forward(self, patches: Tensor) -> Tensor:
        """``[B, C, 9, 9]`` standardised patches -> ``[B, F]`` unit features."""
        if patches.dim() != 4 or patches.shape[1] != self.in_channels or patches.shape[-2:] != (PATCH, PATCH):
            raise ValueError(
                f"PatchNet takes [B, {self.in_channels}, {PATCH}, {PATCH}] patches, "
                f"got {tuple(patches.shape)}"
            )
        return self._trunk(patches).flatten(1)

    @torch.no_grad()
    def dense(self, image: Tensor) -> Tensor:
        """``[C, H, W]`` standardised image -> ``[F, H, W]`` unit features of every pixel."""
        if image.dim() != 3 or image.shape[0] != self.in_channels:
            raise ValueError(
                f"PatchNet.dense takes a [{self.in_channels}, H, W] image, got {tuple(image.shape)}"
            )
        x = F.pad(image[None].float(), (RADIUS,) * 4, mode="reflect")
        x = x.contiguous(memory_format=torch.channels_last)
        return self._trunk(x)[0].contiguous()


def standardize(image: np.ndarray | Tensor) -> Tensor:
    """``[H, W]`` / ``[H, W, C]`` image -> float ``[C, H, W]``, zero mean and unit variance per channel."""
    x = torch.as_tensor(np.asarray(image), dtype=torch.float32)
    if x.dim() == 2:
        x = x[..., None]
    if x.dim() != 3:
        raise ValueError(f"an image is [H, W] or [H, W, C], got shape {tuple(x.shape)}")
    x = x.permute(2, 0, 1)
    mean = x.mean(dim=(1, 2), keepdim=True)
    std = x.std(dim=(1, 2), keepdim=True).clamp_min(1e-6)
    return ((x - mean) / std).contiguous()


__all__ = ["PATCH", "PatchNet", "standardize"]
