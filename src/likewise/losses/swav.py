"""SwAV: swapped prediction of equal-partition cluster codes (Sinkhorn-Knopp).

Formula (Caron et al. 2020, "Unsupervised Learning of Visual Features by Contrasting
Cluster Assignments"). ``s_a, s_b [B, K]`` are the scores of two views against ``K``
prototypes (cosine similarities of L2-normalised outputs and prototypes). Codes
``q = sinkhorn(s)`` are soft assignments, computed without gradient, whose columns
(prototypes) are used equally over the batch; each view then predicts the other
view's code::

    p_a = softmax(s_a / t),   p_b = softmax(s_b / t)
    L = -1/(2B) sum_i sum_k ( q_b[i,k] log p_a[i,k] + q_a[i,k] log p_b[i,k] )

with ``t = 0.1``. Sinkhorn-Knopp (``epsilon = 0.05``, 3 iterations) on
``Q = exp(s / epsilon)^T [K, B]``: normalise ``Q`` to sum 1, then alternately make every
row (prototype) sum to ``1/K`` and every column (sample) sum to ``1/B``; the codes are
``B * Q^T`` (each row sums to 1). Under multi-process training the sums over samples
(and ``B``) are all-reduced, so the codes equal those of one process on the global
batch while each rank keeps only its own ``[B, K]`` scores; each rank's loss is then
the mean over its own rows (DistributedDataParallel's average over equal shards is the
global mean).

An optional queue (``queue_a``, ``queue_b``: detached scores of past batches) joins the
Sinkhorn input for small batches; only the current rows' codes are used.

Shapes: ``s_a [B, K]``, ``s_b [B, K]``, queues ``[Q, K]``; returns a scalar.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from likewise.distributed import is_distributed
from likewise.losses.two_view import TwoViewLoss, check_view, check_views


@torch.no_grad()
def sinkhorn(scores: Tensor, epsilon: float = 0.05, iterations: int = 3) -> Tensor:
    """Equal-partition soft codes ``[B, K]`` of ``scores [B, K]`` (rows sum to 1), over all ranks."""
    logits = scores.detach() / epsilon
    shift = logits.max()
    count = torch.tensor(float(logits.shape[0]), dtype=logits.dtype, device=logits.device)
    if is_distributed():
        dist.all_reduce(shift, op=dist.ReduceOp.MAX)
        dist.all_reduce(count)
    q = torch.exp(logits - shift).T  # [K, B]
    k = q.shape[0]

    def reduce(t: Tensor) -> Tensor:
        if is_distributed():
            dist.all_reduce(t)
        return t

    q = q / reduce(q.sum())
    for _ in range(iterations):
        q = q / reduce(q.sum(dim=1, keepdim=True)) / k  # every prototype gets 1/K of the mass
        q = q / q.sum(dim=0, keepdim=True) / count  # every sample 1/B
    return (q * count).T


def swav_loss(
    s_a: Tensor,
    s_b: Tensor,
    temperature: float = 0.1,
    epsilon: float = 0.05,
    iterations: int = 3,
    queue_a: Tensor | None = None,
    queue_b: Tensor | None = None,
) -> Tensor:
    """Swapped-prediction loss of two views' prototype scores (module docstring)."""
    s_a, s_b = check_views(s_a, s_b)
    b = s_a.shape[0]
    codes = []
    for s, queue in ((s_a, queue_a), (s_b, queue_b)):
        if queue is not None:
            queue = check_view(queue, "queue")
            if queue.shape[1] != s.shape[1]:
                raise ValueError(f"queue has {queue.shape[1]} prototypes' scores, the views {s.shape[1]}")
            s = torch.cat([s, queue.to(s.dtype)])
        codes.append(sinkhorn(s, epsilon, iterations)[:b])
    return swapped_prediction(s_a, s_b, codes[0], codes[1], temperature)


def swapped_prediction(s_a: Tensor, s_b: Tensor, q_a: Tensor, q_b: Tensor, temperature: float) -> Tensor:
    """``-1/(2B) sum_i (q_b . log softmax(s_a / t) + q_a . log softmax(s_b / t))`` for given codes."""
    log_p_a = torch.log_softmax(s_a / temperature, dim=1)
    log_p_b = torch.log_softmax(s_b / temperature, dim=1)
    return -0.5 * ((q_b * log_p_a).sum(1) + (q_a * log_p_b).sum(1)).mean()


class SwAVLoss(TwoViewLoss):
    """SwAV (Caron et al. 2020): ``loss(s_a, s_b, queue_a=None, queue_b=None)``; module docstring."""

    exact_gradient = False  # the Sinkhorn codes are targets (no gradient)

    def __init__(
        self,
        temperature: float = 0.1,
        epsilon: float = 0.05,
        sinkhorn_iterations: int = 3,
        *,
        fast: bool = True,
    ) -> None:
        super().__init__(fast=fast)
        if not temperature > 0 or not epsilon > 0:
            raise ValueError(f"temperature and epsilon must be positive, got {temperature!r}, {epsilon!r}")
        if (
            isinstance(sinkhorn_iterations, bool)
            or not isinstance(sinkhorn_iterations, int)
            or sinkhorn_iterations < 1
        ):
            raise ValueError(f"sinkhorn_iterations must be a positive integer, got {sinkhorn_iterations!r}")
        self.temperature, self.epsilon = float(temperature), float(epsilon)
        self.sinkhorn_iterations = sinkhorn_iterations

    def forward(
        self, z_a: Tensor, z_b: Tensor, queue_a: Tensor | None = None, queue_b: Tensor | None = None
    ) -> Tensor:
        return swav_loss(z_a, z_b, self.temperature, self.epsilon, self.sinkhorn_iterations, queue_a, queue_b)


__all__ = ["SwAVLoss", "sinkhorn", "swapped_prediction", "swav_loss"]
