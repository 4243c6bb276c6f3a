"""BYOL (Grill et al. 2020, "Bootstrap Your Own Latent").

Online network: encoder -> projector (``encoder_dim -> 4096 -> 256``) -> predictor
(``256 -> 4096 -> 256``); target network: an exponential moving average of encoder and
projector (``m = 0.996 -> 1`` on a cosine schedule). The loss is the symmetrised
negative cosine similarity (:class:`likewise.losses.NegativeCosineLoss`; BYOL's
``2 - 2 cos`` up to constants) between the online prediction of one view and the target
projection of the other::

    L = 1/2 (NegCos(q(x_a), t(x_b)) + NegCos(q(x_b), t(x_a)))

No negatives: the predictor and the slowly moving target avoid collapse. Per-sample
terms: under multi-process training each rank evaluates its own rows.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from likewise.losses import NegativeCosineLoss
from likewise.ssl.base import SSLMethod, check_two_views, encode_views
from likewise.ssl.heads import mlp
from likewise.ssl.momentum import MomentumUpdater, momentum_copy


class BYOL(SSLMethod):
    def __init__(
        self,
        encoder: nn.Module,
        encoder_dim: int,
        *,
        hidden_dim: int = 4096,
        out_dim: int = 256,
        momentum: float = 0.996,
        final_momentum: float = 1.0,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(encoder, encoder_dim)
        self.projector = mlp([encoder_dim, hidden_dim, out_dim], batch_norm=batch_norm)
        self.predictor = mlp([out_dim, hidden_dim, out_dim], batch_norm=batch_norm)
        self.teacher_encoder = momentum_copy(encoder)
        self.teacher_projector = momentum_copy(self.projector)
        self.criterion = NegativeCosineLoss()
        self.momentum = MomentumUpdater(momentum, final_momentum)

    @torch.no_grad()
    def _targets(self, *views: Tensor) -> list[Tensor]:
        return [self.teacher_projector(f) for f in encode_views(self.teacher_encoder, views)]

    def forward(self, *views: Tensor) -> Tensor:
        x_a, x_b = check_two_views(views)
        p_a, p_b = (self.predictor(z) for z in self.project_views(x_a, x_b))
        t_a, t_b = self._targets(x_a, x_b)
        return 0.5 * (self.criterion(p_a, t_b) + self.criterion(p_b, t_a))

    def update(self, step: int, total_steps: int) -> None:
        self.momentum.update(self.encoder, self.teacher_encoder, step, total_steps)
        self.momentum.update(self.projector, self.teacher_projector, step, total_steps)


__all__ = ["BYOL"]
