"""Ranking losses: a differentiable average precision (FastAP, Cakir et al., 2019).

Average precision of one query's ranking of its references (the area under the
precision-recall curve) depends on a sort, which has no useful gradient. FastAP
("Deep Metric Learning to Rank", Cakir, He, Xia, Kulis, Sclaroff, CVPR 2019)
quantises the distance axis into bins and replaces the sort by soft histograms:
each distance ``d`` votes into the bins of the two nearest centres with
triangular weights, so precision and recall at every bin edge become smooth
functions of the distances.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from likewise.losses.base import Batch, MetricLoss, zero_loss
from likewise.losses.fused import needs_grad, with_gradient
from likewise.losses.pair import distance_matrix
from likewise.losses.positives import fast_pairs
from likewise.normalize import l2_normalize
from likewise.similarity import squared_euclidean


class _SoftHistogram(torch.autograd.Function):
    """Triangular-kernel histograms of ``dist`` per row, split by two disjoint masks.

    ``h_pos[i, e] = sum_j pos[i, j] * relu(1 - |dist[i, j] - c_e| / delta)`` (and
    ``h_neg`` with ``neg``). A distance in ``[c_k, c_k+1]`` has a non-zero weight
    only at those two centres, so each entry is scattered into two bins: time
    ``O(B N)`` whatever the number of bins, and memory ``O(B N)`` (not
    ``O(B N bins)``), forward and backward. The derivative of the kernel is taken
    as 0 at its kinks (the centres), as autograd's ``relu``/``abs`` do.
    """

    @staticmethod
    def _columns(dist: Tensor, neg: Tensor, num_centres: int, delta: float) -> tuple[Tensor, Tensor]:
        """Lower bin ``k`` ``[B, N]`` and its column in the stacked ``[B, 2 E]`` (pos | neg) histogram."""
        k = torch.floor(dist / delta).clamp_(0, num_centres - 2).long()
        return k, k + num_centres * neg.long()

    @staticmethod
    def forward(ctx: Any, dist: Tensor, pos: Tensor, neg: Tensor, centres: Tensor, delta: float):
        e = centres.numel()
        valid = (pos | neg).to(dist.dtype)
        k, col = _SoftHistogram._columns(dist, neg, e, delta)
        hist = dist.new_zeros(dist.shape[0], 2 * e)
        for shift in (0, 1):
            weight = torch.relu(1 - torch.abs(dist - centres[k + shift]) / delta)
            hist.scatter_add_(1, col + shift, weight * valid)
        ctx.save_for_backward(dist, pos, neg, centres)
        ctx.delta = delta
        return hist[:, :e], hist[:, e:]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g_pos: Tensor, g_neg: Tensor):
        dist, pos, neg, centres = ctx.saved_tensors
        delta = ctx.delta
        e = centres.numel()
        valid = (pos | neg).to(dist.dtype)
        k, col = _SoftHistogram._columns(dist, neg, e, delta)
        upstream_hist = torch.cat([g_pos, g_neg], dim=1)  # [B, 2 E]
        grad = torch.zeros_like(dist)
        for shift in (0, 1):
            offset = dist - centres[k + shift]
            inside = (1 - torch.abs(offset) / delta) > 0
            slope = torch.where(inside, -torch.sign(offset) / delta, torch.zeros_like(offset))
            grad += slope * upstream_hist.gather(1, col + shift) * valid
        return grad, None, None, None, None


def soft_histograms(
    dist: Tensor, pos: Tensor, neg: Tensor, num_bins: int, max_dist: float = 4.0
) -> tuple[Tensor, Tensor]:
    """Per-row soft histograms ``[B, num_bins + 1]`` of ``dist [B, N]`` over ``pos`` / ``neg``.

    Centres ``c_e = e * max_dist / num_bins`` for ``e = 0..num_bins`` (the bin
    edges of Cakir et al.), kernel width ``delta = max_dist / num_bins``.
    """
    centres = torch.linspace(0.0, max_dist, steps=num_bins + 1, device=dist.device, dtype=dist.dtype)
    delta = max_dist / num_bins
    return _SoftHistogram.apply(dist, pos.bool(), neg.bool(), centres, delta)


def fast_ap_from_histograms(h_pos: Tensor, h_neg: Tensor, n_pos: Tensor) -> Tensor:
    """FastAP of each query ``[B]`` from its soft histograms ``[B, E]`` and positive count ``[B]``.

    ``FastAP_i = 1/N+_i sum_e h+_e H+_e / H_e`` with ``H`` the cumulative sums and
    ``h = h+ + h-``; terms with ``h+_e H+_e = 0`` or ``H_e = 0`` are skipped.
    """
    cum_pos = torch.cumsum(h_pos, dim=1)
    cum_all = torch.cumsum(h_pos + h_neg, dim=1)
    num = h_pos * cum_pos
    safe = (num > 0) & (cum_all > 0)
    terms = torch.where(
        safe, num / torch.where(safe, cum_all, torch.ones_like(cum_all)), torch.zeros_like(num)
    )
    return terms.sum(1) / n_pos.to(h_pos.dtype).clamp_min(1)


def fast_ap_per_row(
    dist: Tensor, pos: Tensor, neg: Tensor, num_bins: int = 10, max_dist: float = 4.0
) -> Tensor:
    """FastAP of each query ``[B]`` (0 for rows without positives).

    With soft histograms ``h+_e`` (positives) and ``h_e = h+_e + h-_e`` (all
    references) and their cumulative sums ``H+_e``, ``H_e``::

        FastAP_i = 1/N+_i sum_e h+_e H+_e / H_e        (terms with h+_e H+_e = 0 or H_e = 0 skipped)

    ``N+_i`` = number of positives of row ``i``. Shapes: ``dist [B, N]``, masks bool ``[B, N]``.
    """
    h_pos, h_neg = soft_histograms(dist, pos, neg, num_bins, max_dist)
    return fast_ap_from_histograms(h_pos, h_neg, pos.sum(1))


def _fast_ap_of_class_ids(
    dist: Tensor,
    pairs: tuple[Tensor, Tensor],
    selves: tuple[Tensor, Tensor],
    num_bins: int,
    max_dist: float = 4.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """``1 - FastAP`` (mean over queries with a positive) of class-id labels, without masks.

    Every entry of ``dist [B, N]`` sits between centres ``k = floor(q)`` and ``k + 1``
    (``q = d / delta``) with the fraction ``f = q - k``: it adds ``1 - f`` to bin ``k`` and
    ``f`` to bin ``k + 1``. With the flat bin number ``row (E + 1) + k`` as ``int32``, two
    ``bincount`` calls (the count and the sum of ``f`` per bin) give the histogram of all
    entries; the self pairs are taken out and the positive pairs moved to their own
    histogram from the index lists. The AP is differentiated on the ``[B, E]`` histograms,
    and ``dL/dd = (g_{k+1} - g_k) / delta`` (``g`` of the entry's histogram) is one
    ``index_select`` of that flat table. (``int64`` indices, ``scatter_add_`` and ``gather``
    over ``[B, N]`` cost several times more on a CPU.) Column ``E`` of each row is an
    overflow bin that is dropped: it receives the ``f`` of entries in ``(max_dist,
    max_dist + delta)``, exactly as the kernel has no centre there; ``q`` is capped at
    ``num_bins + 1/2`` (squared distances of unit vectors exceed ``max_dist`` only by
    rounding). At a centre exactly the slope is the one-sided one from above (autograd's
    kernel takes 0 at its kinks). Returns the loss (with its gradient attached), FastAP per
    query ``[B]`` and the mask of queries with a positive ``[B]``.
    """
    b = dist.shape[0]
    e = num_bins + 1
    width = e + 1  # bins 0..E-1 and the overflow bin E
    delta = max_dist / num_bins
    pr, pc = pairs
    want = needs_grad(dist)
    with torch.no_grad():
        frac = torch.div(dist, delta).clamp_(max=num_bins + 0.5)
        low = frac.to(torch.int32)  # truncation = floor for d >= 0
        frac.sub_(low)  # weight of bin k + 1
        offsets = torch.arange(0, b * width, width, device=dist.device, dtype=torch.int32).unsqueeze(1)
        flat = low.add_(offsets).view(-1)  # row * (E + 1) + k
        count = torch.bincount(flat, minlength=b * width).view(b, width).to(dist.dtype)
        upper = torch.bincount(flat, weights=frac.view(-1), minlength=b * width).view(b, width)
        hist = count - upper  # the 1 - f votes of bin k
        hist[:, 1:] += upper[:, :-1]  # the f votes of bin k + 1
        k_pos, f_pos = (flat.view(b, -1)[pairs] % width).long(), frac[pairs]
        k_self, f_self = (flat.view(b, -1)[selves] % width).long(), frac[selves]
        h_pos = _two_bin_votes(dist.new_zeros(b, width + 1), pr, k_pos, f_pos)[:, :e]
        h_self = _two_bin_votes(dist.new_zeros(b, width + 1), selves[0], k_self, f_self)[:, :e]
        h_neg = hist[:, :e] - h_pos - h_self
        n_pos = torch.bincount(pr, minlength=b)
        has_pos = n_pos > 0
        with torch.enable_grad():  # differentiate the AP on the [B, E] histograms
            hp, hn = h_pos.requires_grad_(True), h_neg.requires_grad_(True)
            ap = fast_ap_from_histograms(hp, hn, n_pos)
            loss = (1 - ap[has_pos]).mean()
            g_pos, g_neg = torch.autograd.grad(loss, (hp, hn)) if want else (None, None)
        grad = None
        if want:
            # slope of bin k's entries: (g_{k+1} - g_k) / delta, g = 0 past bin E - 1
            zeros = g_neg.new_zeros(b, 2)
            slope_neg = torch.diff(torch.cat([g_neg, zeros], 1), dim=1).div_(delta)  # [B, E + 1]
            slope_pos = torch.diff(torch.cat([g_pos, zeros], 1), dim=1).div_(delta)
            grad = torch.index_select(slope_neg.view(-1), 0, flat, out=frac.view(-1)).view(b, -1)
            grad[selves] = 0
            grad[pr, pc] = slope_pos[pr, k_pos]
    return with_gradient(dist, loss.detach(), grad), ap.detach(), has_pos


def _two_bin_votes(hist: Tensor, rows: Tensor, k: Tensor, frac: Tensor) -> Tensor:
    """Add the votes ``1 - f`` to bin ``k`` and ``f`` to ``k + 1`` of a few entries
    ``rows, k, frac [P]`` to ``hist [B, E']``."""
    hist.index_put_((rows, k), 1 - frac, accumulate=True)
    hist.index_put_((rows, k + 1), frac, accumulate=True)
    return hist


def fast_ap_loss(dist: Tensor, pos: Tensor, neg: Tensor, num_bins: int = 10, max_dist: float = 4.0) -> Tensor:
    """FastAP loss: ``mean over queries with a positive of (1 - FastAP_i)``; 0 (in the graph) if none.

    ``dist [B, N]`` distances in ``[0, max_dist]`` (squared Euclidean between unit
    vectors: ``max_dist = 4``), masks bool ``[B, N]`` (disjoint). See :func:`fast_ap_per_row`.
    """
    has_pos = pos.any(1)
    if not bool(has_pos.any()):
        return zero_loss(dist)
    ap = fast_ap_per_row(dist, pos, neg, num_bins, max_dist)
    return (1 - ap[has_pos]).mean()


class FastAPLoss(MetricLoss):
    """FastAP (Cakir et al., 2019): ``1 - `` a histogram-binned, differentiable average precision.

    Distances are squared Euclidean between L2-normalised embeddings (in ``[0, 4]``),
    as in pytorch-metric-learning's ``FastAPLoss`` (``LpDistance(power=2)``), whose
    value and gradients it reproduces for the same ``num_bins``. Each query ranks
    its references (the batch, self excluded; or ``ref_emb`` — an extension:
    pytorch-metric-learning refuses ``ref_emb`` here); queries without a positive
    are left out of the mean. See :func:`fast_ap_per_row` for the formula.

    Shapes: ``embeddings [B, D]``, ``labels [B]`` (or multi-label ``[B, C]``, or
    ``relevance [B, N]``). Time and memory ``O(B N)`` (plus ``O(B num_bins)``): each
    distance is scattered into its two nearest bins, forward and backward. No ``miner=``: AP is a
    listwise quantity over all references. Stats: ``fast_ap`` (mean over queries
    with a positive), ``queries_with_pos`` (fraction).
    """

    def __init__(self, num_bins: int = 10) -> None:
        super().__init__()
        if isinstance(num_bins, bool) or int(num_bins) != num_bins or int(num_bins) < 1:
            raise ValueError(f"num_bins must be a positive integer, got {num_bins!r}")
        self.num_bins = int(num_bins)

    def compute(self, batch: Batch) -> Tensor:
        x = l2_normalize(batch.embeddings, dim=1)
        y = x if batch.same_set else l2_normalize(batch.ref_emb, dim=1)
        fast = fast_pairs(batch, None)
        if fast is not None:
            dist = distance_matrix(x, y, "squared_euclidean")
            loss, ap, has_pos = _fast_ap_of_class_ids(dist, *fast, self.num_bins)
        else:
            pos, neg = batch.masks()
            has_pos = pos.any(1)
            if bool(has_pos.any()):
                ap = fast_ap_per_row(squared_euclidean(x, y), pos, neg, self.num_bins)
                loss = (1 - ap[has_pos]).mean()
        if not bool(has_pos.any()):
            self._record(fast_ap=0.0, queries_with_pos=0.0)
            return zero_loss(batch.embeddings, batch.ref_emb)
        self._record(fast_ap=ap[has_pos].detach().mean(), queries_with_pos=has_pos.float().mean())
        return loss


__all__ = ["FastAPLoss", "fast_ap_from_histograms", "fast_ap_loss", "fast_ap_per_row", "soft_histograms"]
