"""SwAV (Caron et al. 2020): swapped prediction of Sinkhorn-Knopp cluster codes.

Encoder -> projector (``encoder_dim -> 2048 -> 128``) -> L2 normalisation -> cosine
scores against ``n_prototypes`` unit prototypes (3,000 in the paper; a bias-free layer
whose rows are normalised in the forward pass). :class:`likewise.losses.SwAVLoss`
(temperature 0.1, Sinkhorn ``epsilon = 0.05``, 3 iterations) computes equal-partition
codes of each view and lets each view predict the other's.

* ``queue_size > 0``: the projections of the last ``queue_size`` inputs of each view
  (:class:`likewise.memory.MemoryQueue`, saved in checkpoints) join the Sinkhorn input
  once the queue is full, for small batches (the paper uses 3,840 with batch 256).
  Under multi-process training the queue holds the gathered rows (the same on every
  rank, as DistributedDataParallel's buffer broadcast expects) and each rank passes its
  own share of it to the all-reduced Sinkhorn, so every row counts once.
* ``freeze_prototypes_steps``: the prototypes get no update during the first steps
  (the paper freezes them for the first epoch); decided on the device from a step
  counter kept in the state dict.

Multi-process training: the Sinkhorn sums are all-reduced (codes of the global batch),
each rank's loss is the mean over its own rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from likewise.distributed import gather_labels, rank, world_size
from likewise.losses import SwAVLoss
from likewise.memory import MemoryQueue
from likewise.ssl.base import SSLMethod, check_two_views
from likewise.ssl.heads import NormalizedLinear, mlp


class SwAV(SSLMethod):
    def __init__(
        self,
        encoder: nn.Module,
        encoder_dim: int,
        *,
        hidden_dim: int = 2048,
        out_dim: int = 128,
        n_prototypes: int = 3000,
        temperature: float = 0.1,
        epsilon: float = 0.05,
        sinkhorn_iterations: int = 3,
        queue_size: int = 0,
        freeze_prototypes_steps: int = 0,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(encoder, encoder_dim)
        self.projector = mlp([encoder_dim, hidden_dim, out_dim], batch_norm=batch_norm)
        self.prototypes = NormalizedLinear(out_dim, n_prototypes)
        self.criterion = SwAVLoss(temperature, epsilon, sinkhorn_iterations)
        self.queues = (
            nn.ModuleList([MemoryQueue(queue_size, out_dim) for _ in range(2)]) if queue_size else None
        )
        self.freeze_prototypes_steps = int(freeze_prototypes_steps)
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))

    def _unit_prototypes(self) -> Tensor:
        """``[K, D]`` unit prototypes (normalised once per step, for both views)."""
        w = F.normalize(self.prototypes.weight, dim=1)
        if self.freeze_prototypes_steps <= 0:
            return w
        frozen = (self.steps_done < self.freeze_prototypes_steps).to(w.dtype)
        return frozen * w.detach() + (1 - frozen) * w  # no update while frozen; no host synchronisation

    def forward(self, *views: Tensor) -> Tensor:
        x_a, x_b = check_two_views(views)
        z_a, z_b = (F.normalize(z, dim=1) for z in self.project_views(x_a, x_b))
        w = self._unit_prototypes()
        s_a, s_b = z_a @ w.T, z_b @ w.T
        past: list[Tensor | None] = [None, None]
        if self.queues is not None:
            for i, queue in enumerate(self.queues):
                if len(queue) == queue.size:
                    rows = queue.embeddings.tensor_split(world_size())[rank()]  # this rank's share
                    with torch.no_grad():
                        past[i] = rows.to(z_a.dtype) @ w.detach().T
        loss = self.criterion(s_a, s_b, past[0], past[1])
        if self.queues is not None and self.training:
            for queue, z in zip(self.queues, (z_a, z_b)):
                rows = gather_labels(z.detach())  # every rank's rows, no gradient
                queue.enqueue(rows, torch.zeros(rows.shape[0], dtype=torch.long, device=z.device))
        return loss

    def update(self, step: int, total_steps: int) -> None:
        self.steps_done.fill_(step)


__all__ = ["SwAV"]
