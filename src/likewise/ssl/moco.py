"""MoCo: contrast a query with a momentum encoder's keys (He et al. 2020; Chen et al. 2020, v2; 2021, v3).

The key encoder (encoder + projector) is an exponential moving average of the query
encoder (:class:`~likewise.ssl.momentum.MomentumUpdater`, ``m = 0.99 -> 1`` on a cosine
schedule; MoCo v2 keeps ``0.999``). Projector ``encoder_dim -> hidden_dim -> out_dim``
(v2: ``2048 -> 128``), InfoNCE (:class:`likewise.losses.InfoNCELoss`, temperature 0.2).

* ``queue_size > 0`` (**v2**): negatives are the current keys and a FIFO queue of
  past keys (:class:`likewise.memory.MemoryQueue`, 65,536 in the paper; part of the
  state dict, so checkpoints carry it). For query ``q_i``::

      L = InfoNCE(q, k, negatives=queue)
        = NTXent(q, labels=arange(B), ref_emb=[k; queue], ref_labels=[arange(B); -1...])

  i.e. ``k_i`` is the positive, the other keys and the queue the negatives; both view
  orders are used (symmetrised) and the keys of both views are enqueued.
* ``queue_size = 0`` (**v3-style**): a prediction MLP on the query side and the
  symmetric loss ``InfoNCE(p(x_a), k(x_b)) + InfoNCE(p(x_b), k(x_a))`` with the batch's
  other keys as negatives.

Keys and queries are gathered across processes (keys without gradient). MoCo's
shuffled batch norm is not reproduced.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from likewise.distributed import gather_labels, gather_with_grad
from likewise.losses import InfoNCELoss
from likewise.memory import MemoryQueue
from likewise.ssl.base import SSLMethod, check_two_views, encode_views
from likewise.ssl.heads import mlp
from likewise.ssl.momentum import MomentumUpdater, momentum_copy


class MoCo(SSLMethod):
    def __init__(
        self,
        encoder: nn.Module,
        encoder_dim: int,
        *,
        hidden_dim: int = 2048,
        out_dim: int = 128,
        temperature: float = 0.2,
        queue_size: int = 65536,
        momentum: float = 0.99,
        final_momentum: float = 1.0,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(encoder, encoder_dim)
        self.projector = mlp([encoder_dim, hidden_dim, out_dim], batch_norm=batch_norm)
        self.predictor = None if queue_size else mlp([out_dim, hidden_dim, out_dim], batch_norm=batch_norm)
        self.teacher_encoder = momentum_copy(encoder)
        self.teacher_projector = momentum_copy(self.projector)
        self.queue = MemoryQueue(queue_size, out_dim) if queue_size else None
        self.criterion = InfoNCELoss(temperature=temperature)
        self.momentum = MomentumUpdater(momentum, final_momentum)

    @torch.no_grad()
    def _keys(self, *views: Tensor) -> list[Tensor]:
        """The teacher's projections of the views, gathered across processes (no gradient)."""
        return [gather_labels(self.teacher_projector(f)) for f in encode_views(self.teacher_encoder, views)]

    def _queries(self, *views: Tensor) -> list[Tensor]:
        zs = self.project_views(*views)
        return [gather_with_grad(self.predictor(z) if self.predictor is not None else z) for z in zs]

    def _contrast(self, q: Tensor, k: Tensor) -> Tensor:
        past = self.queue.embeddings if self.queue is not None and len(self.queue) else None
        return self.criterion(q, k, past)

    def forward(self, *views: Tensor) -> Tensor:
        x_a, x_b = check_two_views(views)
        q_a, q_b = self._queries(x_a, x_b)
        k_a, k_b = self._keys(x_a, x_b)
        loss = 0.5 * (self._contrast(q_a, k_b) + self._contrast(q_b, k_a))
        if self.queue is not None and self.training:
            keys = torch.cat([k_a, k_b])
            self.queue.enqueue(keys, torch.zeros(keys.shape[0], dtype=torch.long, device=keys.device))
        return loss

    def update(self, step: int, total_steps: int) -> None:
        self.momentum.update(self.encoder, self.teacher_encoder, step, total_steps)
        self.momentum.update(self.projector, self.teacher_projector, step, total_steps)


__all__ = ["MoCo"]
