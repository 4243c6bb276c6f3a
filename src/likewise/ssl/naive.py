"""Naive similarity maximisation: the objective that collapses.

Maximise the cosine similarity of two views' outputs and nothing else (the lecture
notes' "trivial solution"): ``L = NegCos(g(f(x_a)), g(f(x_b)))`` with gradients through
both sides, no negatives, no predictor, no stop-gradient, no teacher. A constant
output minimises it, and training finds that: the per-dimension standard deviation of
the normalised outputs goes to 0 and the effective rank to 1. It exists to show and test
collapse (``likewise.train.monitor``), not to be used.
"""

from __future__ import annotations

from torch import Tensor, nn

from likewise.losses import NegativeCosineLoss
from likewise.ssl.base import SSLMethod, check_two_views
from likewise.ssl.heads import mlp


class Naive(SSLMethod):
    def __init__(
        self,
        encoder: nn.Module,
        encoder_dim: int,
        *,
        hidden_dim: int | None = None,
        out_dim: int = 128,
        batch_norm: bool = False,
    ) -> None:
        super().__init__(encoder, encoder_dim)
        self.projector = mlp([encoder_dim, hidden_dim or encoder_dim, out_dim], batch_norm=batch_norm)
        self.criterion = NegativeCosineLoss()

    def forward(self, *views: Tensor) -> Tensor:
        x_a, x_b = check_two_views(views)
        return self.criterion(*self.project_views(x_a, x_b))


__all__ = ["Naive"]
