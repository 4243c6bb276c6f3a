"""VICReg (Bardes, Ponce & LeCun 2022): variance, invariance, covariance of two views' expansions.

Encoder -> expander (3 layers, ``encoder_dim -> 8192 -> 8192 -> 8192`` in the paper,
batch norm and ReLU between) -> :class:`likewise.losses.VICRegLoss`
(``lambda = mu = 25``, ``nu = 1``). Variance and covariance are batch statistics: under
multi-process training both views are gathered (gradient-correct) first.
"""

from __future__ import annotations

from torch import Tensor, nn

from likewise.distributed import gather_with_grad
from likewise.losses import VICRegLoss
from likewise.ssl.base import SSLMethod, check_two_views
from likewise.ssl.heads import mlp


class VICReg(SSLMethod):
    def __init__(
        self,
        encoder: nn.Module,
        encoder_dim: int,
        *,
        hidden_dim: int = 8192,
        out_dim: int = 8192,
        lambda_: float = 25.0,
        mu: float = 25.0,
        nu: float = 1.0,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(encoder, encoder_dim)
        self.projector = mlp([encoder_dim, hidden_dim, hidden_dim, out_dim], batch_norm=batch_norm)
        self.criterion = VICRegLoss(lambda_=lambda_, mu=mu, nu=nu)

    def forward(self, *views: Tensor) -> Tensor:
        x_a, x_b = check_two_views(views)
        z_a, z_b = self.project_views(x_a, x_b)
        return self.criterion(gather_with_grad(z_a), gather_with_grad(z_b))


__all__ = ["VICReg"]
