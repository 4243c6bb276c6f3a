"""Heads on pooled features ``[B, F]``.

* :class:`EmbeddingHead` — ``Linear(F, D)`` then optional L2 normalisation
  (embeddings on the unit sphere, as cosine-based losses expect).
* :class:`ProjectionHead` — the MLP projection of SimCLR (Chen et al. 2020):
  ``Linear -> BatchNorm -> ReLU -> Linear``; used by self-supervised methods, the
  representation *before* it is kept for downstream use.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class EmbeddingHead(nn.Module):
    def __init__(self, in_features: int, embedding_dim: int, *, normalize: bool = True) -> None:
        super().__init__()
        if embedding_dim < 1:
            raise ValueError(f"embedding_dim must be >= 1, got {embedding_dim}")
        self.linear = nn.Linear(in_features, embedding_dim)
        self.normalize = normalize

    def forward(self, x: Tensor) -> Tensor:
        z = self.linear(x)
        return F.normalize(z, dim=1) if self.normalize else z


class ProjectionHead(nn.Module):
    def __init__(self, in_features: int, hidden: int = 512, out_features: int = 128) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Linear(in_features, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, out_features),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layers(x)
