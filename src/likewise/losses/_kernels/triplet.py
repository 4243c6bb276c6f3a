"""Fast kernels of the triplet margin loss (:mod:`likewise.losses.triplet_margin`).

Each kernel computes what :func:`~likewise.losses.triplet_margin.triplet_margin_loss` (the plain
specification) computes for the calls its eligibility function admits; eligibility looks at
settings, label kinds and devices only, never at tensor values.

* :func:`all_triplets_of_class_ids` (hinge, no swap, class ids, no miner, CPU): slot ``j`` holds
  every anchor's ``j``-th positive; one ``[B, N]`` pass per slot sums ``[d_ap_j + m - d_an]_+``
  over all references, zeroed at the positive and self pairs, and counts the gradient in the
  same passes: ``O(k_max B N)`` time, ``O(B N)`` memory, nothing recorded for autograd.
* :func:`sorted_hinge` / :func:`listed_sorted_hinge` (hinge, no swap, masks or given pair
  counts): each anchor's negative distances sorted once; for a positive with ``t = d_ap + m``
  the active negatives are the ``k`` with ``d_an < t`` (``searchsorted``) and their sum is
  ``k t - cumsum_k``: ``O(B N log N)``, autograd through ``sort`` / ``gather``.
* :func:`gathered_triplets` (given triplets, no swap): the gradient written into one ``[B, N]``
  buffer (``+w`` at ``(a, p)``, ``-w`` at ``(a, n)``).
* :func:`mine_on_loss_matrix` (a miner with ``mine_class_ids`` of the loss's own distance):
  the miner searches the loss's distance matrix, so the batch costs one GEMM and no masks.

Host synchronisation: none in Python. Index lists of class-id positives and the slot count
(``bincount``'s output length) have data-dependent sizes, a synchronisation on a GPU: the
kernels that use them are eligible on the CPU only, and a GPU takes the mask path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from likewise import entries
from likewise.losses._kernels.fused import needs_grad, with_gradient
from likewise.losses._kernels.positives import batch_pairs, index_lists_eligible, pair_means
from likewise.losses.base import Batch
from likewise.mined import Mined
from likewise.mining import largest_count
from likewise.similarity import is_similarity

if TYPE_CHECKING:
    from likewise.losses.triplet_margin import TripletMarginLoss

#: most positives per anchor for the slotted all-triplet pass (beyond it: the sorted search)
SLOTS_MAX = 16


def class_ids_eligible(batch: Batch, loss: TripletMarginLoss) -> bool:
    """All triplets, hinge, no swap, no miner, class ids, on the CPU."""
    hinge_all = loss.triplets_per_anchor == "all" and not (loss.swap or loss.smooth_loss)
    return hinge_all and index_lists_eligible(batch, loss.miner)


def all_triplets_of_class_ids(
    dist: Tensor, batch: Batch, margin: float, sign: float, unit: str
) -> tuple[Tensor, dict[str, Any]] | None:
    """The hinge loss over all triplets of class-id labels and its statistics (``None``: more than
    ``SLOTS_MAX`` positives for some anchor, where the sorted search is cheaper).

    Slot ``j`` has threshold ``t_j = d_ap_j + m`` (``-inf`` for an anchor with fewer positives);
    one comparison pass per slot, as 0/1 floats zeroed at the positive and self pairs, gives
    ``c_an = #{j : d_an < t_j}`` and the slot's active count ``k_aj``; its hinge sum is one more
    pass in the same buffer. The gradient of the sum: ``d/d d_an = -c_an``, ``d/d d_ap_j = k_aj``.
    """
    (pr, pc), selves = batch_pairs(batch)
    b, n = dist.shape
    counts = torch.bincount(pr, minlength=b)
    k_max = largest_count(counts)
    if k_max > SLOTS_MAX:
        return None
    xr, xc = torch.cat([pr, selves[0]]), torch.cat([pc, selves[1]])
    k = max(k_max, 1)
    with torch.no_grad():
        first = torch.cumsum(counts, 0) - counts  # each anchor's first pair
        slot = torch.arange(pr.shape[0], device=pr.device) - first.index_select(0, pr)  # rank in row
        threshold = dist.new_full((b, k), float("-inf"))
        entries.put_(threshold, pr, slot, entries.take(dist, pr, pc) + margin)
        active = dist.new_zeros(b, k)  # k_aj
        c = dist.new_empty(dist.shape)
        one = dist.new_empty(dist.shape) if k > 1 else c
        total = torch.zeros((), dtype=torch.float64, device=dist.device)
        for j in range(k):
            out = c if j == 0 else one
            t_j = threshold[:, j : j + 1]
            hinge = torch.sub(t_j, dist, out=out).clamp_min_(0)
            entries.fill_(hinge, xr, xc, 0.0)
            total += hinge.sum()
            torch.lt(dist, t_j, out=out)
            entries.fill_(out, xr, xc, 0.0)
            active[:, j] = out.sum(1)
            if j:
                c.add_(one)
        count = active.sum()
        scale = 1.0 / count.clamp_min(1)
        grad = c.mul_(-scale)
        entries.put_(grad, pr, pc, entries.take(active, pr, slot) * scale)
        n_self = torch.bincount(selves[0], minlength=b)
        n_triplets = (counts * (n - counts - n_self)).sum()
    loss = with_gradient(dist, (total * scale).to(dist.dtype), grad)
    # the pair means now, as tensors (no host wait): a lazy statistic would keep the [B, N]
    # distances alive until the next call, and the allocator could not reuse their memory
    with torch.no_grad():
        mean_pos, mean_neg = pair_means(dist.detach(), (pr, pc), selves)
    stats = {
        "num_triplets": n_triplets,
        "active_fraction": lambda: count.double() / n_triplets.clamp_min(1),
        f"mean_pos_{unit}": sign * mean_pos,
        f"mean_neg_{unit}": sign * mean_neg,
    }
    return loss, stats


def sorted_eligible(loss: TripletMarginLoss) -> bool:
    """The sorted searches: the hinge without swap (any device)."""
    return not (loss.swap or loss.smooth_loss)


def sorted_hinge(dist: Tensor, pos: Tensor, neg: Tensor, margin: float) -> tuple[Tensor, Tensor]:
    """Sum over all ``(a, p, n)`` with ``pos[a, p]``, ``neg[a, n]`` of ``[d_ap - d_an + m]_+``
    and the count of its non-zero terms; each anchor's positives packed into ``k_max`` slots.
    Off the CPU (the slot count would synchronise) every column is a candidate positive."""
    if dist.device.type != "cpu":
        return listed_sorted_hinge(dist, pos.to(dist.dtype), neg.to(dist.dtype), margin)
    counts = pos.sum(1)
    k_max = largest_count(counts)
    if k_max == 0:
        return dist.sum() * 0, counts.sum()
    # each anchor's negatives, ascending; +inf past the last (their cumsum is never read)
    srt, _ = dist.masked_fill(~neg, float("inf")).sort(dim=1)
    csum = torch.cat([srt.new_zeros(srt.shape[0], 1), srt.cumsum(dim=1)], dim=1)  # [B, N + 1]
    cols = pos.to(torch.uint8).topk(k_max, dim=1, sorted=True).indices
    valid = torch.arange(k_max, device=pos.device).unsqueeze(0) < counts.unsqueeze(1)
    t = dist.gather(1, cols) + margin  # [B, k_max]
    k = torch.searchsorted(srt.detach().contiguous(), t.detach().contiguous())  # #{n : d_an < t}
    k = k.masked_fill(~valid, 0)
    return (k.to(t.dtype) * t - csum.gather(1, k)).sum(), k.sum()


def listed_sorted_hinge(dist: Tensor, pos_w: Tensor, neg_w: Tensor, margin: float) -> tuple[Tensor, Tensor]:
    """The weighted sum over all ``(a, p, n)`` of ``pos_w[a, p] neg_w[a, n] [d_ap - d_an + m]_+``
    and the weighted count of its non-zero terms (float weights ``[B, N]``).

    Per anchor the weighted negatives are sorted once (the others last, as ``+inf``); every
    column ``p`` is a candidate with ``t = d_ap + m``, ``k = #{n : d_an < t}``, and with the
    cumulative weights ``W_k`` and weighted distances ``S_k`` its sum is ``t W_k - S_k``.
    """
    listed = neg_w > 0
    srt, order = dist.detach().masked_fill(~listed, float("inf")).sort(dim=1)
    w = neg_w.gather(1, order)
    d_sorted = dist.gather(1, order)  # finite, differentiable (weight 0 past the listed ones)
    zeros = dist.new_zeros(dist.shape[0], 1)
    cum_w = torch.cat([zeros, w.cumsum(dim=1)], dim=1)  # [B, N + 1]
    cum_wd = torch.cat([zeros, (w * d_sorted).cumsum(dim=1)], dim=1)
    t = dist + margin
    k = torch.searchsorted(srt.contiguous(), t.detach().contiguous())
    count_ap = cum_w.gather(1, k)
    return (pos_w * (t * count_ap - cum_wd.gather(1, k))).sum(), (pos_w * count_ap).sum()


def gathered_eligible(loss: TripletMarginLoss) -> bool:
    """Given triplets without swap (any device)."""
    return not loss.swap


def gathered_triplets(
    dist: Tensor, a: Tensor, p: Tensor, n: Tensor, margin: float, smooth: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """``(loss, d_ap, d_an)``: the mean loss of the triplets ``(a, p, n) [T]`` over the non-zero
    ones, with ``dL/d dist`` attached: ``+w`` at ``(a, p)``, ``-w`` at ``(a, n)``, ``w`` the term's
    slope over the count (1 for the hinge, ``sigmoid(v)`` for the softplus, linear above 20 as
    ``F.softplus``)."""
    want = needs_grad(dist)  # (False inside no_grad)
    with torch.no_grad():
        d_ap, d_an = entries.take(dist, a, p), entries.take(dist, a, n)
        v = d_ap - d_an + margin
        losses = F.softplus(v) if smooth else F.relu(v)
        active = losses > 0
        count = active.sum().clamp_min(1)
        loss = torch.where(active, losses, 0.0).sum() / count
        grad = None
        if want:
            slope = torch.where(v > 20, 1.0, torch.sigmoid(v)) if smooth else 1.0
            w = active.to(dist.dtype).mul_(slope).div_(count)
            grad = dist.new_zeros(dist.shape)
            entries.add_(grad, a, p, w)
            entries.add_(grad, a, n, -w)
    return with_gradient(dist, loss, grad), d_ap, d_an


def mine_on_loss_matrix_eligible(batch: Batch, loss: TripletMarginLoss) -> bool:
    """All triplets, a miner with ``mine_class_ids`` of the loss's (Euclidean) distance, class
    ids, on the CPU."""
    miner = loss.miner
    return (
        loss.triplets_per_anchor == "all"
        and hasattr(miner, "mine_class_ids")
        and getattr(miner, "distance", None) == loss.distance
        and getattr(miner, "normalize_embeddings", None) == loss.normalize_embeddings
        and not is_similarity(loss.distance)
        and index_lists_eligible(batch, None)  # the miner searches the class-id lists itself
    )


def mine_on_loss_matrix(miner: Any, dist: Tensor, batch: Batch) -> Mined | None:
    """The miner's selection from the loss's distance matrix (:meth:`likewise.mining.Miner.
    mine_class_ids`; ``None`` where the miner declines)."""
    return miner.mine_class_ids(dist.detach(), *batch_pairs(batch))


__all__ = [
    "SLOTS_MAX",
    "all_triplets_of_class_ids",
    "class_ids_eligible",
    "gathered_eligible",
    "gathered_triplets",
    "listed_sorted_hinge",
    "mine_on_loss_matrix",
    "mine_on_loss_matrix_eligible",
    "sorted_eligible",
    "sorted_hinge",
]
