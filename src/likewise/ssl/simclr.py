"""SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations").

Two views ``x_a, x_b`` of ``B`` inputs go through the encoder and a projection MLP
(``encoder_dim -> hidden_dim -> out_dim``, the paper's ``2048 -> 128`` for a ResNet-50;
``hidden_dim`` defaults to ``encoder_dim``); NT-Xent (:class:`likewise.losses.NTXentLoss`,
temperature 0.5 as the paper's CIFAR-10 setting) scores each projection against its
other view (positive) and the ``2(B - 1)`` other projections (negatives)::

    z = [g(f(x_a)); g(f(x_b))]  [2B, d],  labels = [0..B-1, 0..B-1]
    L = NTXent(z, labels)

Under multi-process training both views are gathered (gradient-correct) first, so the
negatives are the global batch. The projection head is thrown away after training.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from likewise.distributed import gather_with_grad
from likewise.losses import NTXentLoss
from likewise.ssl.base import SSLMethod, check_two_views
from likewise.ssl.heads import mlp


class SimCLR(SSLMethod):
    def __init__(
        self,
        encoder: nn.Module,
        encoder_dim: int,
        *,
        hidden_dim: int | None = None,
        out_dim: int = 128,
        temperature: float = 0.5,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(encoder, encoder_dim)
        self.projector = mlp([encoder_dim, hidden_dim or encoder_dim, out_dim], batch_norm=batch_norm)
        self.criterion = NTXentLoss(temperature=temperature)

    def forward(self, *views: Tensor) -> Tensor:
        x_a, x_b = check_two_views(views)
        z_a, z_b = (gather_with_grad(z) for z in self.project_views(x_a, x_b))
        n = z_a.shape[0]
        labels = torch.arange(n, device=z_a.device).repeat(2)
        return self.criterion(torch.cat([z_a, z_b]), labels)


__all__ = ["SimCLR"]
