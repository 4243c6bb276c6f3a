"""Gradient-correct gathering across processes, so batch losses see the *global* batch.

Losses that compare samples with each other (NT-Xent, SupCon, triplet with batch-hard
mining, multi-similarity, a cross-batch memory) change meaning when each process only
sees its own shard of the batch. :func:`gather_with_grad` concatenates every rank's
embeddings along dimension 0 and passes gradients back to their owners:

* forward: ``all_gather`` (shards may have different lengths: they are padded to the
  longest, gathered, and unpadded);
* backward: the incoming gradient of the gathered tensor is summed over ranks
  (``all_reduce(SUM)``) and each rank keeps the rows of its own shard.

Why the sum: every rank computes a loss that depends on the whole gathered batch,
so the gradient for rank ``r``'s rows is the sum of the contributions of all ranks'
losses. DistributedDataParallel then *averages* parameter gradients over ranks.

:func:`distributed_loss` turns one local batch into the loss of the global batch, in
one of two modes — both give, after DDP's averaging, exactly the loss value and the
parameter gradients of one process on the concatenated batch:

* ``"global"`` (default): every rank evaluates ``loss(global_emb, global_labels)``,
  the very computation a single process would do. Exact for *every* loss, however
  it reduces (mean over anchors, over pairs, over non-zero terms) and for stateful
  wrappers such as a cross-batch memory (each rank's queue receives the same global
  batch). Each rank's summed gradient is ``world_size`` times the single-process
  one; DDP's average divides it back.
* ``"local"``: each rank evaluates ``loss(local_emb, local_labels, ref_emb=global_emb,
  ref_labels=global_labels, ref_self_index=offset + arange(B))`` — its own queries
  against all references (``B x N`` instead of ``N x N``), as pytorch-metric-learning
  does. Exact only for losses that average one term per query over the queries
  (SupCon, batch-hard triplet, multi-similarity, when every query has a positive);
  the rank's loss is scaled by ``world_size * B_rank / N`` so that unequal shards
  still average right. NT-Xent averages over positive *pairs* (as
  pytorch-metric-learning does), so "local" is exact for it only when every rank
  holds the same number of positive pairs (e.g. two views per sample, equal shards);
  use "global" otherwise.

When ``torch.distributed`` is not initialised or has one process, everything is the
identity and the loss is called on the local batch as usual.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.distributed as dist
from torch import Tensor

Mode = Literal["global", "local"]
MODES: tuple[str, ...] = ("global", "local")


def is_distributed() -> bool:
    """True when ``torch.distributed`` is initialised with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def _shard_sizes(n: int, device: torch.device) -> list[int]:
    """The first-dimension length of every rank's shard."""
    local = torch.tensor([n], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(local) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, local)
    return [int(s.item()) for s in sizes]


def _padded_gather(x: Tensor, sizes: list[int]) -> Tensor:
    """All-gather ``x`` (shards of ``sizes`` rows) into one tensor ``[sum(sizes), ...]``."""
    longest = max(sizes)
    if x.shape[0] < longest:
        pad = x.new_zeros((longest - x.shape[0], *x.shape[1:]))
        x = torch.cat([x, pad])
    parts = [torch.empty_like(x) for _ in sizes]
    dist.all_gather(parts, x.contiguous())
    return torch.cat([p[:s] for p, s in zip(parts, sizes)])


class _GatherWithGrad(torch.autograd.Function):
    """all_gather forward; all_reduce(SUM) of the incoming gradient, own rows backward."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, sizes: list[int]) -> Tensor:  # type: ignore[override]
        ctx.sizes = sizes
        ctx.rank = dist.get_rank()
        return _padded_gather(x, sizes)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        sizes: list[int] = ctx.sizes
        longest = max(sizes)
        stacked = grad.new_zeros((len(sizes), longest, *grad.shape[1:]))
        start = 0
        for r, s in enumerate(sizes):
            stacked[r, :s] = grad[start : start + s]
            start += s
        dist.all_reduce(stacked, op=dist.ReduceOp.SUM)
        return stacked[ctx.rank, : sizes[ctx.rank]].clone(), None


def gather_with_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` from every rank along dim 0 (rank order); gradients flow back.

    Shards may differ in length along dim 0 (other dimensions must agree). The
    identity when not distributed.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"gather_with_grad needs a torch.Tensor, got {type(x).__name__}")
    if not is_distributed():
        return x
    sizes = _shard_sizes(x.shape[0], x.device)
    return _GatherWithGrad.apply(x, sizes)


def gather_labels(labels: Tensor) -> Tensor:
    """Concatenate ``labels`` (any shape ``[B, ...]``) from every rank; no gradient."""
    if not isinstance(labels, Tensor):
        raise TypeError(f"gather_labels needs a torch.Tensor, got {type(labels).__name__}")
    if not is_distributed():
        return labels
    sizes = _shard_sizes(labels.shape[0], labels.device)
    return _padded_gather(labels.detach(), sizes)


def gather_batch(embeddings: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Gather a batch: ``(global_emb, global_labels, own_rows)``.

    ``own_rows`` is the long ``[B]`` index of this rank's rows in the global batch
    (``offset + arange(B)``) — the ``ref_self_index`` of a local-queries loss call.
    """
    if embeddings.shape[0] != labels.shape[0]:
        raise ValueError(f"{embeddings.shape[0]} embeddings but {labels.shape[0]} labels")
    b = embeddings.shape[0]
    if not is_distributed():
        return embeddings, labels, torch.arange(b, device=embeddings.device)
    sizes = _shard_sizes(b, embeddings.device)
    offset = sum(sizes[: dist.get_rank()])
    global_emb = _GatherWithGrad.apply(embeddings, sizes)
    global_labels = _padded_gather(labels.detach().to(embeddings.device), sizes)
    return global_emb, global_labels, offset + torch.arange(b, device=embeddings.device)


def distributed_loss(
    loss: Callable[..., Tensor],
    embeddings: Tensor,
    labels: Tensor,
    *,
    mode: Mode = "global",
) -> Tensor:
    """``loss`` of the global batch, computed from this rank's ``embeddings`` / ``labels``.

    See the module docstring for the two modes. Back-propagate the result on every
    rank and let DistributedDataParallel average the parameter gradients: they then
    equal those of one process calling ``loss`` on the concatenated batch.
    Without distribution this is ``loss(embeddings, labels)``.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
    if not is_distributed():
        return loss(embeddings, labels)
    global_emb, global_labels, own = gather_batch(embeddings, labels)
    if mode == "global":
        return loss(global_emb, global_labels)
    value = loss(embeddings, labels, ref_emb=global_emb, ref_labels=global_labels, ref_self_index=own)
    scale = dist.get_world_size() * embeddings.shape[0] / global_emb.shape[0]
    return value * scale


def all_reduce_mean(value: Tensor) -> Tensor:
    """Mean of a (detached) tensor over ranks — for logging a ``"local"`` mode loss."""
    if not is_distributed():
        return value.detach()
    out = value.detach().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


__all__ = [
    "MODES",
    "all_reduce_mean",
    "distributed_loss",
    "gather_batch",
    "gather_labels",
    "gather_with_grad",
    "is_distributed",
    "rank",
    "world_size",
]
