"""Global pooling of a feature map ``[B, C, h, w] -> [B, C]``.

* ``max``  — max over positions (R-MAC's MAC descriptor);
* ``avg``  — mean over positions (``sum`` is the same up to the constant h*w: SPoC);
* ``sum``  — sum over positions;
* ``gem``  — generalised mean (Radenović et al. 2018): ``(mean x^p)^(1/p)`` with a
  learnable ``p`` (p=1 is average, p -> inf approaches max); inputs are clamped at ``eps``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

POOLINGS = ("avg", "max", "sum", "gem")


class GeM(nn.Module):
    def __init__(self, p: float = 3.0, eps: float = 1e-6, learnable: bool = True) -> None:
        super().__init__()
        if p <= 0:
            raise ValueError(f"GeM needs p > 0, got {p}")
        self.p = nn.Parameter(torch.tensor(float(p)), requires_grad=learnable)
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return x.clamp_min(self.eps).pow(self.p).mean(dim=(2, 3)).pow(1.0 / self.p)


class GlobalPool(nn.Module):
    """``[B, C, h, w] -> [B, C]`` by ``kind`` in avg / max / sum / gem; 2-D inputs pass through."""

    def __init__(self, kind: str = "avg") -> None:
        super().__init__()
        if kind not in POOLINGS:
            raise ValueError(f"unknown pooling {kind!r}; expected one of {', '.join(POOLINGS)}")
        self.kind = kind
        self.gem = GeM() if kind == "gem" else None

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 2:
            return x
        if x.dim() != 4:
            raise ValueError(f"pooling expects [B, C, h, w] feature maps, got shape {tuple(x.shape)}")
        if self.kind == "avg":
            return x.mean(dim=(2, 3))
        if self.kind == "max":
            return x.amax(dim=(2, 3))
        if self.kind == "sum":
            return x.sum(dim=(2, 3))
        return self.gem(x)
