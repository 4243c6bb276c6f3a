"""Triplet margin loss over all triplets of a batch, without building them.

For an anchor ``a`` (a query), a positive ``p`` and a negative ``n`` (references)
with distances ``d`` (Schroff, Kalenichenko & Philbin 2015, FaceNet)::

    l_apn = [d_ap - d_an + m]_+            (hinge)
    l_apn = log(1 + exp(d_ap - d_an + m))  (smooth_loss=True: softplus "soft margin",
                                            Hermans, Beyer & Leibe 2017)

averaged over the triplets with ``l > 0`` (pytorch-metric-learning's
``AvgNonZeroReducer``). With ``swap=True`` (Balntas et al. 2016) ``d_an`` is replaced
by ``min(d_an, d_pn)``. With a similarity (``distance="cosine"``/``"dot"``) the
distance is ``-s``, i.e. ``l = [s_an - s_ap + m]_+`` (PML's ``CosineSimilarity`` form).

How all ``sum_a |P(a)| |N(a)|`` triplets are summed in ``O(B * N)`` memory:

* hinge, no swap, class-id labels, no miner, at most ``SLOTS_MAX`` positives per anchor
  (the common P x K batch): slot ``j`` holds every anchor's ``j``-th positive and one
  ``[B, N]`` pass per slot sums ``[d_ap_j + m - d_an]_+`` over all references, zeroed at
  the positive and self pairs; the gradient is counted in the same passes (no mask, no
  sort, nothing recorded for autograd): ``O(k_max B N)`` time, ``O(B N)`` memory.
* hinge, no swap otherwise: per anchor the negative distances are sorted once; for a positive
  with ``t = d_ap + m`` the active negatives are those with ``d_an < t``, found by
  ``searchsorted`` (count ``k``), and their sum is ``k t - cumsum_k``:
  ``O(B N log N)`` time, autograd through ``sort``/``gather``.
* softplus or swap (no such shortcut): the positive pairs are processed in blocks of
  ``block_elements // N`` pairs, each block a ``[pairs, N]`` tensor under activation
  checkpointing (recomputed in backward), so memory stays at one block; time is
  ``O(|P| N)``, cubic in ``B`` in the worst case.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from likewise import entries
from likewise.losses._kernels.euclidean import distance_matrix
from likewise.losses._kernels.fused import needs_grad, with_gradient
from likewise.losses._kernels.positives import fast_pairs, pair_means
from likewise.losses.base import Batch, MetricLoss, check_number, masked_mean, prepare, zero_loss
from likewise.mined import PairMask, Triplets, to_pair_mask
from likewise.normalize import l2_normalize
from likewise.similarity import check_metric, is_similarity, pairwise_similarity

SwapDist = Tensor | Callable[[Tensor], Tensor] | None
#: most positives per anchor for the slotted all-triplet pass (beyond it: sorted search)
SLOTS_MAX = 16


def distance_like(x: Tensor, y: Tensor, metric: str) -> Tensor:
    """``[B, N]`` distances (``-similarity`` for cosine / dot): smaller = closer."""
    if is_similarity(metric):
        return -pairwise_similarity(x, y, metric)
    return distance_matrix(x, y, metric)


def rowwise_distance_like(u: Tensor, v: Tensor, metric: str) -> Tensor:
    """``[T]`` distances between matching rows of ``u, v [T, D]`` (same convention)."""
    if metric == "cosine":
        return -(l2_normalize(u, dim=1) * l2_normalize(v, dim=1)).sum(1)
    if metric == "dot":
        return -(u * v).sum(1)
    d2 = (u - v).pow(2).sum(1)
    if metric == "squared_euclidean":
        return d2
    positive = d2 > 0
    return torch.where(positive, d2.clamp_min(torch.finfo(d2.dtype).tiny).sqrt(), d2 * 0)


def _sorted_hinge(dist: Tensor, pos: Tensor, neg: Tensor, margin: float) -> tuple[Tensor, Tensor]:
    """Sum over all (a, p, n) of ``[d_ap - d_an + m]_+`` and the count of non-zero terms."""
    counts = pos.sum(1)
    k_max = int(counts.max()) if counts.numel() else 0
    if k_max == 0:
        return dist.sum() * 0, counts.sum()
    # each anchor's negatives, ascending; +inf past the last (their cumsum is never read)
    srt, _ = dist.masked_fill(~neg, float("inf")).sort(dim=1)
    csum = torch.cat([srt.new_zeros(srt.shape[0], 1), srt.cumsum(dim=1)], dim=1)  # [B, N + 1]
    # each anchor's positives, packed into k_max slots
    cols = pos.to(torch.uint8).topk(k_max, dim=1, sorted=True).indices
    valid = torch.arange(k_max, device=pos.device).unsqueeze(0) < counts.unsqueeze(1)
    t = dist.gather(1, cols) + margin  # [B, k_max]
    k = torch.searchsorted(srt.detach().contiguous(), t.detach().contiguous())  # #{n : d_an < t}
    k = k.masked_fill(~valid, 0)
    per_pair = k.to(t.dtype) * t - csum.gather(1, k)
    return per_pair.sum(), k.sum()


def _slotted_hinge(
    dist: Tensor,
    pos_pairs: tuple[Tensor, Tensor],
    self_pairs: tuple[Tensor, Tensor],
    margin: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """All-triplet hinge mean over the non-zero terms, their count and ``d mean / d dist``
    (class ids).

    For anchors with few positives: slot ``j`` holds each anchor's ``j``-th positive with
    threshold ``t_j = d_ap_j + m`` (``-inf`` for an anchor with fewer), and the term
    ``[t_j - d_an]_+`` is non-zero exactly where ``d_an < t_j``. One comparison pass per
    slot, written as 0/1 floats (a float output costs a sixth of a boolean one on CPU) and
    zeroed at the positive and self pairs, gives the count ``c_an = #{j : d_an < t_j}`` and
    each slot's active count ``k_aj``; the slot's hinge sum is one more pass in the same
    buffer. The gradient of the sum::

        d sum / d d_an = -c_an,   d sum / d d_ap_j = k_aj

    Nothing is recorded for autograd; ``O(k_max * B * N)`` time, two ``[B, N]`` buffers.
    """
    pr, pc = pos_pairs
    xr, xc = torch.cat([pr, self_pairs[0]]), torch.cat([pc, self_pairs[1]])
    b = dist.shape[0]
    with torch.no_grad():
        counts = torch.bincount(pr, minlength=b)
        first = torch.cumsum(counts, 0) - counts
        slot = torch.arange(pr.numel(), device=pr.device) - first.index_select(0, pr)  # rank in row
        k_max = max(int(counts.max()) if b else 0, 1)
        threshold = dist.new_full((b, k_max), float("-inf"))
        entries.put_(threshold, pr, slot, entries.take(dist, pr, pc) + margin)
        active = dist.new_zeros(b, k_max)  # k_aj
        c = dist.new_empty(dist.shape)
        one = dist.new_empty(dist.shape) if k_max > 1 else c
        total = 0.0
        for j in range(k_max):
            out = c if j == 0 else one
            t_j = threshold[:, j : j + 1]
            hinge = torch.sub(t_j, dist, out=out).clamp_min_(0)
            entries.fill_(hinge, xr, xc, 0.0)
            total += float(hinge.sum())
            torch.lt(dist, t_j, out=out)
            entries.fill_(out, xr, xc, 0.0)
            active[:, j] = out.sum(1)
            if j:
                c.add_(one)
        count = active.sum()
        scale = 1.0 / max(float(count), 1.0)
        grad = c.mul_(-scale)
        entries.put_(grad, pr, pc, entries.take(active, pr, slot) * scale)
    return dist.new_tensor(total * scale), count, grad


def _blocked(
    dist: Tensor,
    pos: Tensor,
    neg: Tensor,
    margin: float,
    smooth: bool,
    swap_rows: Callable[[Tensor], Tensor] | None,
    block_elements: int,
) -> tuple[Tensor, Tensor]:
    """Same sum and count, over blocks of positive pairs (softplus and/or swap)."""
    a_idx, p_idx = pos.nonzero(as_tuple=True)
    per_block = max(1, block_elements // max(1, dist.shape[1]))

    def block(d: Tensor, a: Tensor, p: Tensor) -> Tensor:
        an = d[a]
        if swap_rows is not None:
            an = torch.minimum(an, swap_rows(p))
        v = d[a, p].unsqueeze(1) - an + margin
        losses = F.softplus(v) if smooth else F.relu(v)
        keep = neg[a] & (losses > 0)
        return torch.stack(
            [torch.where(keep, losses, torch.zeros_like(losses)).sum(), keep.sum().to(d.dtype)]
        )

    n_blocks = -(-a_idx.numel() // per_block)
    use_ckpt = n_blocks > 1 and torch.is_grad_enabled()
    out = dist.new_zeros(2)
    for s in range(0, a_idx.numel(), per_block):
        a, p = a_idx[s : s + per_block], p_idx[s : s + per_block]
        out = out + (checkpoint(block, dist, a, p, use_reentrant=False) if use_ckpt else block(dist, a, p))
    return out[0], out[1].detach().round().long()


def _triplet_sum(
    dist: Tensor,
    pos: Tensor,
    neg: Tensor,
    margin: float,
    smooth: bool,
    swap_dist: SwapDist,
    block_elements: int,
) -> tuple[Tensor, Tensor]:
    if swap_dist is None and not smooth:
        return _sorted_hinge(dist, pos, neg, margin)
    swap_rows = swap_dist
    if isinstance(swap_dist, Tensor):
        table = swap_dist

        def swap_rows(p: Tensor) -> Tensor:
            return table[p]

    return _blocked(dist, pos, neg, margin, smooth, swap_rows, block_elements)


def _listed_sorted_hinge(dist: Tensor, pos_w: Tensor, neg_w: Tensor, margin: float) -> tuple[Tensor, Tensor]:
    """Weighted sum over all (a, p, n) of ``pos_w[a, p] neg_w[a, n] [d_ap - d_an + m]_+`` and the
    weighted count of its non-zero terms (listed pairs, ``indices_tuple``).

    Per anchor the listed negatives are sorted once (unlisted ones go last as ``+inf``); for
    every column ``p`` of the row, ``t = d_ap + m``, ``k = #{n : d_an < t}`` by ``searchsorted``
    and, with the cumulative weights ``W_k`` and weighted distances ``S_k``, the sum over the
    negatives is ``t W_k - S_k``. Columns with ``pos_w = 0`` get weight 0. ``O(B N log N)``
    time, ``O(B N)`` memory, no host synchronisation, autograd through ``sort``/``gather``.
    """
    listed = neg_w > 0
    key = dist.detach().masked_fill(~listed, float("inf"))
    srt, order = key.sort(dim=1)
    w = neg_w.gather(1, order)
    d_sorted = dist.gather(1, order)  # finite, differentiable (weight 0 past the listed ones)
    zeros = dist.new_zeros(dist.shape[0], 1)
    cum_w = torch.cat([zeros, w.cumsum(dim=1)], dim=1)  # [B, N + 1]
    cum_wd = torch.cat([zeros, (w * d_sorted).cumsum(dim=1)], dim=1)
    t = dist + margin  # every column as a candidate positive
    k = torch.searchsorted(srt.contiguous(), t.detach().contiguous())  # #{listed n : d_an < t}
    count_ap = cum_w.gather(1, k)
    sum_ap = t * count_ap - cum_wd.gather(1, k)
    return (pos_w * sum_ap).sum(), (pos_w * count_ap).sum()


def _listed_blocked(
    dist: Tensor,
    pos_w: Tensor,
    neg_w: Tensor,
    margin: float,
    smooth: bool,
    swap_rows: Callable[[Tensor], Tensor] | None,
    block_elements: int,
) -> tuple[Tensor, Tensor]:
    """The same weighted sum and count for softplus and/or swap, over blocks of listed positive
    pairs (``[pairs, N]`` each, checkpointed). Finding the listed pairs reads their number."""
    a_idx, p_idx = (pos_w > 0).nonzero(as_tuple=True)
    w_ap = pos_w[a_idx, p_idx]
    per_block = max(1, block_elements // max(1, dist.shape[1]))

    def block(d: Tensor, a: Tensor, p: Tensor, wp: Tensor) -> Tensor:
        an = d[a]
        if swap_rows is not None:
            an = torch.minimum(an, swap_rows(p))
        v = d[a, p].unsqueeze(1) - an + margin
        losses = F.softplus(v) if smooth else F.relu(v)
        weight = torch.where(losses > 0, neg_w[a] * wp.unsqueeze(1), 0.0)
        return torch.stack([(weight * losses).sum(), weight.sum()])

    use_ckpt = a_idx.numel() > per_block and torch.is_grad_enabled()
    out = dist.new_zeros(2)
    for s in range(0, a_idx.numel(), per_block):
        args = (dist, a_idx[s : s + per_block], p_idx[s : s + per_block], w_ap[s : s + per_block])
        out = out + (checkpoint(block, *args, use_reentrant=False) if use_ckpt else block(*args))
    return out[0], out[1].detach()


def triplet_margin_loss(
    dist: Tensor,
    pos: Tensor,
    neg: Tensor,
    margin: float = 0.05,
    *,
    smooth_loss: bool = False,
    swap_dist: SwapDist = None,
    block_elements: int = 1 << 22,
) -> Tensor:
    """Triplet margin loss over every triplet ``(a, p, n)`` with ``pos[a, p]`` and ``neg[a, n]``.

    ``dist [B, N]`` query-reference distances (pass ``-s`` for similarities), ``pos,
    neg`` bool ``[B, N]``. ``swap_dist``: reference-reference distances for the swap,
    either an ``[N, N]`` tensor or a function ``p_idx [c] -> [c, N]``. Formula, the
    average over non-zero terms and the memory bound: see the module docstring.
    Returns a scalar (0, in the graph, when no term is non-zero).
    """
    total, active = _triplet_sum(dist, pos, neg, margin, smooth_loss, swap_dist, block_elements)
    return total / active.clamp_min(1).to(total.dtype)


def triplet_margin_loss_from_triplets(
    d_ap: Tensor, d_an: Tensor, margin: float = 0.05, *, smooth_loss: bool = False
) -> Tensor:
    """The same loss on given triplets: ``d_ap, d_an [T]`` (``d_an`` already swapped if wanted)."""
    v = d_ap - d_an + margin
    losses = F.softplus(v) if smooth_loss else F.relu(v)
    return masked_mean(losses, losses > 0)


def sample_triplets(
    pos: Tensor, neg: Tensor, per_anchor: int, generator: torch.Generator | None = None
) -> Triplets:
    """``per_anchor`` random triplets for every anchor with a positive and a negative.

    Positive and negative drawn uniformly and independently, with replacement.
    """
    anchors = (pos.any(1) & neg.any(1)).nonzero().squeeze(1)
    if anchors.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long, device=pos.device)
        return Triplets(empty, empty, empty)
    p = torch.multinomial(pos[anchors].float(), per_anchor, replacement=True, generator=generator)
    n = torch.multinomial(neg[anchors].float(), per_anchor, replacement=True, generator=generator)
    return Triplets(anchors.repeat_interleave(per_anchor), p.reshape(-1), n.reshape(-1))


def _check_triplets(t: Triplets, b: int, n: int) -> Triplets:
    if len(t) == 0:
        return t
    for name, idx, bound in (
        ("anchor", t.anchor, b),
        ("positive", t.positive, n),
        ("negative", t.negative, n),
    ):
        if idx.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"mined {name} indices must be integer tensors, got {idx.dtype}")
        if int(idx.min()) < 0 or int(idx.max()) >= bound:
            raise ValueError(f"mined {name} indices must lie in [0, {bound - 1}]")
    return t


class TripletMarginLoss(MetricLoss):
    """Triplet margin loss (Schroff et al. 2015), a drop-in for PML's ``TripletMarginLoss``.

    Same keywords and defaults as PML: ``margin=0.05``, ``swap=False``,
    ``smooth_loss=False``, ``triplets_per_anchor="all"``, Euclidean distance between
    L2-normalised embeddings, average over non-zero triplet losses. Forms: plain
    (``distance="euclidean"``) or squared (``"squared_euclidean"``) distances, cosine
    (``"cosine"``: ``s_an - s_ap + m``), softplus soft margin (``smooth_loss=True``).

    Triplets: all of them (dense, see the module docstring), ``triplets_per_anchor=k``
    random ones per anchor (not PML's random draws), or a miner's: ``Triplets`` are
    gathered as given; a ``PairMask`` gives every ``(a, p, n)`` with ``pos[a, p]`` and
    ``neg[a, n]`` (dense). With ``swap=True`` the positive-negative distance is taken
    between the references (PML indexes its query-reference matrix instead, which
    only means the same thing without ``ref_emb``).

    ``indices_tuple=`` (PML's, labels then optional): triplets ``(a, p, n)`` are used as
    given; pairs ``(a1, p, a2, n)`` give every ``(a1[i], p[i], n[j])`` with ``a2[j] == a1[i]``,
    duplicates counted (PML's conversion), summed densely without listing them.
    ``triplets_per_anchor`` does not apply then (as in PML).

    Shapes: ``embeddings [B, D]``, ``labels [B]``, optional ``ref_emb [N, D]``,
    ``ref_labels [N]``. ``stats``: ``num_triplets``, ``active_fraction`` (triplets with
    a non-zero loss), ``mean_pos_<unit>``, ``mean_neg_<unit>``.
    """

    def __init__(
        self,
        margin: float = 0.05,
        swap: bool = False,
        smooth_loss: bool = False,
        triplets_per_anchor: int | Literal["all"] = "all",
        distance: str = "euclidean",
        normalize_embeddings: bool = True,
        miner: Any = None,
        block_elements: int = 1 << 22,
        *,
        fast: bool = True,
    ) -> None:
        super().__init__(miner=miner, fast=fast)
        self.margin = check_number(margin, "margin")
        self.swap = bool(swap)
        self.smooth_loss = bool(smooth_loss)
        if triplets_per_anchor != "all" and (
            isinstance(triplets_per_anchor, bool)
            or not isinstance(triplets_per_anchor, int)
            or triplets_per_anchor < 1
        ):
            raise ValueError(
                f"triplets_per_anchor must be 'all' or a positive int, got {triplets_per_anchor!r}"
            )
        self.triplets_per_anchor = triplets_per_anchor
        self.distance = check_metric(distance)
        self.normalize_embeddings = bool(normalize_embeddings)
        if isinstance(block_elements, bool) or not isinstance(block_elements, int) or block_elements < 1:
            raise ValueError(f"block_elements must be a positive int, got {block_elements!r}")
        self.block_elements = block_elements

    accepts_indices_tuple = True

    def compute(self, batch: Batch) -> Tensor:
        x = prepare(batch.embeddings, self.distance, self.normalize_embeddings)
        y = x if batch.same_set else prepare(batch.ref_emb, self.distance, self.normalize_embeddings)
        b, n = x.shape[0], y.shape[0]
        if batch.given is not None:
            return self._compute_listed(batch, x, y)
        hinge_all = self.triplets_per_anchor == "all" and not (self.swap or self.smooth_loss)
        fast = fast_pairs(batch, self.miner) if hinge_all else None
        if fast is not None:
            loss = self._all_triplets_of_class_ids(batch, x, y, *fast)
            if loss is not None:
                return loss
        if self.miner is not None and self.triplets_per_anchor == "all":
            loss = self._mined_on_one_matrix(batch, x, y)
            if loss is not None:
                return loss
        mined = self.mine(batch)
        triplets = None
        if isinstance(mined, Triplets):
            triplets = _check_triplets(mined, b, n)
        else:
            pos, neg = batch.masks()
            if mined is not None:
                m = to_pair_mask(mined, (b, n), pos.device)
                assert isinstance(m, PairMask)
                pos, neg = pos & m.pos, neg & m.neg
            if self.triplets_per_anchor != "all":
                triplets = sample_triplets(pos, neg, int(self.triplets_per_anchor))

        if triplets is not None:
            return self._from_triplets(batch, distance_like(x, y, self.distance), y, triplets)
        n_triplets = int((pos.sum(1) * neg.sum(1)).sum())
        if n_triplets == 0:
            self._record(num_triplets=0, active_fraction=0.0)
            return zero_loss(batch.embeddings, batch.ref_emb)
        dist = distance_like(x, y, self.distance)
        swap = None
        if self.swap:

            def swap(p: Tensor) -> Tensor:
                return distance_like(y[p], y, self.distance)

        total, active = _triplet_sum(dist, pos, neg, self.margin, self.smooth_loss, swap, self.block_elements)
        self._record_stats(dist, pos, neg, n_triplets, int(active))
        return total / active.clamp_min(1).to(total.dtype)

    def _compute_listed(self, batch: Batch, x: Tensor, y: Tensor) -> Tensor:
        """Given pairs or triplets (``indices_tuple``); a miner picks within their relation."""
        given = batch.given
        assert given is not None
        dist = distance_like(x, y, self.distance)
        mined = self.mine(batch)
        if isinstance(mined, Triplets):
            return self._from_triplets(batch, dist, y, _check_triplets(mined, x.shape[0], y.shape[0]))
        if mined is None and given.triplets is not None:
            return self._given_triplets(dist, y, given.triplets)
        pos_w, neg_w = given.pos_w, given.neg_w
        if mined is not None:
            m = to_pair_mask(mined, tuple(dist.shape), dist.device)
            pos_w, neg_w = pos_w * m.pos, neg_w * m.neg
        if self.swap or self.smooth_loss:
            swap = None
            if self.swap:

                def swap(p: Tensor) -> Tensor:
                    return distance_like(y[p], y, self.distance)

            total, count = _listed_blocked(
                dist, pos_w, neg_w, self.margin, self.smooth_loss, swap, self.block_elements
            )
        else:
            total, count = _listed_sorted_hinge(dist, pos_w, neg_w, self.margin)
        n_triplets = (pos_w.sum(1) * neg_w.sum(1)).sum()
        self._record(num_triplets=n_triplets, active_fraction=lambda: count / n_triplets.clamp_min(1))
        return total / count.clamp_min(1)

    def _given_triplets(self, dist: Tensor, y: Tensor, t: Triplets) -> Tensor:
        """The loss of the caller's triplets, averaged over the non-zero terms (PML's reducer);
        plain autograd on gathered distances, no host synchronisation."""
        a, p, n = t.anchor, t.positive, t.negative
        d_ap, d_an = dist[a, p], dist[a, n]
        if self.swap:
            d_an = torch.minimum(d_an, rowwise_distance_like(y[p], y[n], self.distance))
        v = d_ap - d_an + self.margin
        losses = F.softplus(v) if self.smooth_loss else F.relu(v)
        active = losses > 0
        self._record(num_triplets=len(t), active_fraction=lambda: active.float().mean())
        return masked_mean(losses, active)

    def _all_triplets_of_class_ids(
        self, batch: Batch, x: Tensor, y: Tensor, pairs: tuple[Tensor, Tensor], selves: tuple[Tensor, Tensor]
    ) -> Tensor | None:
        """Hinge loss over all triplets of class-id labels, no masks (``None``: too many positives)."""
        b, n = x.shape[0], y.shape[0]
        counts = torch.bincount(pairs[0], minlength=b)
        if counts.numel() and int(counts.max()) > SLOTS_MAX:
            return None  # many positives per anchor: the sorted search is cheaper
        n_self = torch.bincount(selves[0], minlength=b)
        n_triplets = int((counts * (n - counts - n_self)).sum())
        if n_triplets == 0:
            self._record(num_triplets=0, active_fraction=0.0)
            return zero_loss(batch.embeddings, batch.ref_emb)
        dist = distance_like(x, y, self.distance)
        mean, active, grad = _slotted_hinge(dist, pairs, selves, self.margin)
        loss = with_gradient(dist, mean, grad)
        sign = -1.0 if is_similarity(self.distance) else 1.0
        unit = "similarity" if sign < 0 else "distance"
        with torch.no_grad():
            mean_pos, mean_neg = pair_means(dist, pairs, selves)
            self._record(
                num_triplets=n_triplets,
                active_fraction=float(active) / n_triplets,
                **{f"mean_pos_{unit}": sign * mean_pos, f"mean_neg_{unit}": sign * mean_neg},
            )
        return loss

    def _mined_on_one_matrix(self, batch: Batch, x: Tensor, y: Tensor) -> Tensor | None:
        """Class ids and a miner of the same Euclidean distance: the miner searches the loss's
        own distance matrix (:meth:`likewise.mining.Miner.mine_class_ids`), so the batch costs
        one GEMM and no masks. ``None`` where that does not apply."""
        miner = self.miner
        same_distance = (
            getattr(miner, "distance", None) == self.distance
            and getattr(miner, "normalize_embeddings", None) == self.normalize_embeddings
            and not is_similarity(self.distance)
        )
        fast = fast_pairs(batch, None) if same_distance and hasattr(miner, "mine_class_ids") else None
        if fast is None:
            return None
        dist = distance_like(x, y, self.distance)
        mined = miner.mine_class_ids(dist.detach(), *fast)
        if mined is None:
            return None
        return self._from_triplets(batch, dist, y, _check_triplets(mined, x.shape[0], y.shape[0]))

    def _from_triplets(self, batch: Batch, dist: Tensor, y: Tensor, t: Triplets) -> Tensor:
        """The loss of given triplets on the distance matrix ``dist [B, N]``."""
        if len(t) == 0:
            self._record(num_triplets=0, active_fraction=0.0)
            return zero_loss(batch.embeddings, batch.ref_emb)
        a, p, n = t.anchor.long(), t.positive.long(), t.negative.long()
        if self.swap:
            d_ap, d_an = dist[a, p], dist[a, n]
            d_an = torch.minimum(d_an, rowwise_distance_like(y[p], y[n], self.distance))
            v = d_ap - d_an + self.margin
            losses = F.softplus(v) if self.smooth_loss else F.relu(v)
            active = losses > 0
            loss = masked_mean(losses, active)
        else:  # the gradient written into one [B, N] buffer, nothing recorded for autograd
            loss, active, d_ap, d_an = self._gathered_triplets(dist, a, p, n)
        sign = -1.0 if is_similarity(self.distance) else 1.0
        unit = "similarity" if sign < 0 else "distance"
        self._record(
            num_triplets=len(t),
            active_fraction=float(active.sum()) / len(t),
            **{
                f"mean_pos_{unit}": sign * float(d_ap.detach().mean()),
                f"mean_neg_{unit}": sign * float(d_an.detach().mean()),
            },
        )
        return loss

    def _gathered_triplets(
        self, dist: Tensor, a: Tensor, p: Tensor, n: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Mean loss of the triplets ``(a, p, n) [T]`` over the non-zero ones, with ``dL/d dist``
        attached: ``+w`` at ``(a, p)``, ``-w`` at ``(a, n)``, ``w`` the term's slope over the count
        (1 for the hinge, ``sigmoid(v)`` for the softplus, linear above 20 as ``F.softplus``)."""
        want = needs_grad(dist)  # (False inside no_grad)
        with torch.no_grad():
            d_ap, d_an = entries.take(dist, a, p), entries.take(dist, a, n)
            v = d_ap - d_an + self.margin
            losses = F.softplus(v) if self.smooth_loss else F.relu(v)
            active = losses > 0
            count = max(int(active.sum()), 1)
            loss = torch.where(active, losses, 0.0).sum() / count
            grad = None
            if want:
                slope = torch.where(v > 20, 1.0, torch.sigmoid(v)) if self.smooth_loss else 1.0
                w = active.to(dist.dtype).mul_(slope).div_(count)
                grad = dist.new_zeros(dist.shape)
                entries.add_(grad, a, p, w)
                entries.add_(grad, a, n, -w)
        return with_gradient(dist, loss, grad), active, d_ap, d_an

    def _record_stats(self, dist: Tensor, pos: Tensor, neg: Tensor, n_triplets: int, active: int) -> None:
        sign = -1.0 if is_similarity(self.distance) else 1.0
        unit = "similarity" if sign < 0 else "distance"
        with torch.no_grad():
            self._record(
                num_triplets=n_triplets,
                active_fraction=active / n_triplets,
                **{
                    f"mean_pos_{unit}": sign * float(masked_mean(dist, pos)),
                    f"mean_neg_{unit}": sign * float(masked_mean(dist, neg)),
                },
            )


__all__ = ["TripletMarginLoss", "triplet_margin_loss", "triplet_margin_loss_from_triplets", "sample_triplets"]
