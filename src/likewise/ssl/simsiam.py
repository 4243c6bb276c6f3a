"""SimSiam (Chen & He 2021, "Exploring Simple Siamese Representation Learning").

Encoder -> projector (3 layers ``encoder_dim -> 2048 -> 2048 -> 2048``, batch norm on
every layer, the last without affine parameters) -> predictor (bottleneck
``2048 -> 512 -> 2048``). No momentum teacher: the stop-gradient on the other view's
projection is what prevents collapse::

    L = 1/2 (NegCos(p(z_a), sg(z_b)) + NegCos(p(z_b), sg(z_a)))

(:class:`likewise.losses.NegativeCosineLoss`). Per-sample terms: under multi-process
training each rank evaluates its own rows.
"""

from __future__ import annotations

from torch import Tensor, nn

from likewise.losses import NegativeCosineLoss
from likewise.ssl.base import SSLMethod, check_two_views
from likewise.ssl.heads import mlp


class SimSiam(SSLMethod):
    def __init__(
        self,
        encoder: nn.Module,
        encoder_dim: int,
        *,
        hidden_dim: int = 2048,
        out_dim: int = 2048,
        predictor_dim: int = 512,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(encoder, encoder_dim)
        self.projector = mlp(
            [encoder_dim, hidden_dim, hidden_dim, out_dim], batch_norm=batch_norm, last_batch_norm=True
        )
        self.predictor = mlp([out_dim, predictor_dim, out_dim], batch_norm=batch_norm)
        self.criterion = NegativeCosineLoss()

    def forward(self, *views: Tensor) -> Tensor:
        x_a, x_b = check_two_views(views)
        z_a, z_b = self.project_views(x_a, x_b)
        p_a, p_b = self.predictor(z_a), self.predictor(z_b)
        return 0.5 * (self.criterion(p_a, z_b.detach()) + self.criterion(p_b, z_a.detach()))


__all__ = ["SimSiam"]
