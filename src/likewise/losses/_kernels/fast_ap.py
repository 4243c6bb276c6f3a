"""FastAP's fast paths: soft histograms scattered into two bins per distance, and, for class ids
on a CPU, the whole loss with its gradient written out on the histograms.

The plain formula is :mod:`likewise.losses.fast_ap` (dense triangular kernels, autograd); these
kernels give the same values and gradients. Each distance ``d`` has a non-zero triangular weight
at its two nearest centres only, so each entry is scattered into two bins: time and memory
``O(B N)`` whatever the number of bins, forward and backward.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from likewise.losses._kernels.euclidean import euclidean_backward
from likewise.losses.base import Batch


def histograms_eligible(dist: Tensor) -> bool:
    """:func:`soft_histograms_fused`: always (any device, fixed-size scatters)."""
    return True


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


def soft_histograms_fused(
    dist: Tensor, pos: Tensor, neg: Tensor, num_bins: int, max_dist: float = 4.0
) -> tuple[Tensor, Tensor]:
    """:func:`likewise.losses.fast_ap.soft_histograms` in ``O(B N)`` time and memory."""
    centres = torch.linspace(0.0, max_dist, steps=num_bins + 1, device=dist.device, dtype=dist.dtype)
    return _SoftHistogram.apply(dist, pos.bool(), neg.bool(), centres, max_dist / num_bins)


def fast_ap_loss_and_gradient(
    h_pos: Tensor, h_neg: Tensor, n_pos: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``L = mean over queries with a positive of (1 - FastAP_i)`` with its gradient, written out.

    Returns ``L`` (scalar), ``FastAP [B]`` and ``dL/dh+``, ``dL/dh- [B, E]`` for the histograms
    of :func:`fast_ap_from_histograms`. With ``t_e = h+_e H+_e / H_e`` (0 where skipped) and
    ``c_i = 1 / (|queries with a positive| N+_i)``::

        dL/dh+_j = -c (H+_j / H_j + sum_{e >= j} (h+_e - t_e) / H_e)
        dL/dh-_j =  c  sum_{e >= j} t_e / H_e

    (the sums over ``e >= j`` because ``H_e``, ``H+_e`` are cumulative; skipped terms add
    nothing, as the ``where`` of :func:`fast_ap_from_histograms` gives under autograd). Ten
    ``[B, E]`` ops instead of the thirty autograd records and replays.
    """
    cum_pos = torch.cumsum(h_pos, dim=1)
    cum_all = torch.cumsum(h_pos + h_neg, dim=1)
    num = h_pos * cum_pos
    safe = (num > 0) & (cum_all > 0)
    inv = torch.where(safe, cum_all, torch.ones_like(cum_all)).reciprocal_().mul_(safe)  # 1/H_e or 0
    terms = num * inv  # t_e
    ap = terms.sum(1) / n_pos.to(h_pos.dtype).clamp_min(1)
    has_pos = n_pos > 0
    loss = ((1 - ap) * has_pos).sum() / has_pos.sum().clamp_min(1)
    c = has_pos.to(h_pos.dtype) / (n_pos.to(h_pos.dtype).clamp_min(1) * has_pos.sum().clamp_min(1))
    t_over = terms * inv  # t_e / H_e
    tail = torch.flip(torch.cumsum(torch.flip(t_over, [1]), 1), [1])  # sum_{e >= j} t_e / H_e
    tail_pos = torch.flip(torch.cumsum(torch.flip(h_pos * inv, [1]), 1), [1])
    c = c.unsqueeze(1)
    g_pos = (cum_pos * inv).add_(tail_pos).sub_(tail).mul_(-c)
    g_neg = tail.mul_(c)
    return loss, ap, g_pos, g_neg


def class_ids_eligible(batch: Batch) -> bool:
    """:func:`fast_ap_of_class_ids`: class-id labels ``[B]`` (no relevance matrix, no given pairs),
    on a CPU (the positive pairs are an index list whose length depends on the labels: on a GPU
    building it waits for the device)."""
    labels = batch.labels
    return (
        batch.embeddings.device.type == "cpu"
        and batch.given is None
        and batch.relevance is None
        and labels is not None
        and labels.dim() == 1
    )


class _SquaredDistanceGradient(torch.autograd.Function):
    """``value`` in the graph of ``x [B, D]``, ``y [N, D]`` with ``dvalue/dd = grad [B, N]`` for
    ``d = |x_i - y_j|^2``: backward is the two GEMMs of
    :func:`~likewise.losses._kernels.euclidean.euclidean_backward` (norm terms included)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, y: Tensor, value: Tensor, grad: Tensor) -> Tensor:
        ctx.save_for_backward(x, y, grad)
        return value.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        x, y, grad = ctx.saved_tensors
        gx, gy = euclidean_backward(x, y, grad, 2.0, ctx.needs_input_grad[:2])
        # grad_out scales the [B, D] results (a tensor: the host does not wait for the device)
        gx = None if gx is None else gx.mul_(grad_out.to(gx.dtype))
        gy = None if gy is None else gy.mul_(grad_out.to(gy.dtype))
        return gx, gy, None, None


def fast_ap_of_class_ids(
    x: Tensor,
    y: Tensor,
    pairs: tuple[Tensor, Tensor],
    selves: tuple[Tensor, Tensor],
    num_bins: int,
    max_dist: float = 4.0,
) -> tuple[Tensor, Tensor, Tensor]:
    """``1 - FastAP`` (mean over queries with a positive) of class-id labels, without masks.

    Distances are squared Euclidean between the rows of ``x [B, D]`` and ``y [N, D]``,
    ``d = |x|^2 + |y|^2 - 2 x.y``; backward is two GEMMs (:class:`_SquaredDistanceGradient`). Every
    distance, in bin units ``q = d / delta``, sits between centres ``k = floor(q)`` and
    ``k + 1`` with the fraction ``f = q - k``: it adds ``1 - f`` to bin ``k`` and ``f`` to bin
    ``k + 1``. Two ``scatter_add_`` along the rows with ``k`` as an ``int64`` index (the count
    and the sum of ``f`` per bin) give the histogram of all entries; the self pairs are taken
    out and the positive pairs moved to their own histogram from the index lists. The AP
    and its gradient are written out on the ``[B, E]`` histograms
    (:func:`fast_ap_loss_and_gradient`), and ``dL/dd = (g_{k+1} - g_k) / delta`` (``g`` of
    the entry's histogram) is one ``gather`` from that table. Two ``[B, N]`` buffers in all
    (``q``, which becomes ``f`` and then the gradient; the bin numbers). (``bincount`` and a
    1-D ``index_select`` run on one thread; ``scatter_add_`` and ``gather`` convert an
    ``int32`` index to ``int64`` on every call.)
    Column ``E`` of each row is an overflow bin that is dropped: it receives the ``f`` of
    entries in ``(max_dist, max_dist + delta)``, exactly as the kernel has no centre there;
    ``q`` is capped at ``num_bins + 1/2`` (squared distances of unit vectors exceed
    ``max_dist`` only by rounding). At a centre exactly the slope is the one-sided one from
    above (autograd's kernel takes 0 at its kinks). Returns the loss (with its gradient
    attached), FastAP per query ``[B]`` and the mask of queries with a positive ``[B]``.
    """
    b, n = x.shape[0], y.shape[0]
    e = num_bins + 1
    width = e + 1  # bins 0..E-1 and the overflow bin E
    delta = max_dist / num_bins
    pr, pc = pairs
    want = torch.is_grad_enabled() and (x.requires_grad or y.requires_grad)
    with torch.no_grad():
        # q = d / delta, d = |x|^2 + |y|^2 - 2 x.y
        frac = torch.addmm(x.pow(2).sum(1, keepdim=True), x, y.T, beta=1 / delta, alpha=-2 / delta)
        frac.add_(y.pow(2).sum(1).div_(delta)).clamp_(0, num_bins + 0.5)
        low = frac.to(torch.int64)  # k: truncation = floor for q >= 0
        frac.frac_()  # f = q - k: the weight of bin k + 1
        ones = frac.new_ones(1, 1).expand(b, n)
        count = frac.new_zeros(b, width).scatter_add_(1, low, ones)
        upper = frac.new_zeros(b, width).scatter_add_(1, low, frac)
        hist = count.sub_(upper)  # the 1 - f votes of bin k
        hist[:, 1:] += upper[:, :-1]  # the f votes of bin k + 1
        at_pos, at_self = pr * n + pc, selves[0] * n + selves[1]  # flat [B, N] positions
        k_pos, f_pos = low.view(-1).index_select(0, at_pos), frac.view(-1).index_select(0, at_pos)
        k_self, f_self = low.view(-1).index_select(0, at_self), frac.view(-1).index_select(0, at_self)
        # the votes of the positive pairs (table 0) and of the self pairs (table 1)
        bins = torch.cat([pr * width + k_pos, (selves[0] + b) * width + k_self])
        votes = _two_bin_votes(bins, torch.cat([f_pos, f_self]), 2 * b * width).to(frac.dtype)
        h_pos, h_self = votes.view(2, b, width)[:, :, :e]
        h_neg = hist[:, :e] - h_pos - h_self
        n_pos = torch.bincount(pr, minlength=b)
        loss, ap, g_pos, g_neg = fast_ap_loss_and_gradient(h_pos, h_neg, n_pos)
        has_pos = n_pos > 0
        grad = None
        if want:
            # dL/dd of bin k's entries: (g_{k+1} - g_k) / delta, g = 0 past bin E - 1
            zeros = g_neg.new_zeros(b, 2)
            slope_neg = torch.diff(torch.cat([g_neg, zeros], 1), dim=1).div_(delta)  # [B, E + 1]
            slope_pos = torch.diff(torch.cat([g_pos, zeros], 1), dim=1).div_(delta)
            grad = torch.gather(slope_neg, 1, low, out=frac)
            flat_grad = grad.view(-1)
            flat_grad.index_fill_(0, at_self, 0.0)
            flat_grad.index_copy_(0, at_pos, slope_pos.view(-1).index_select(0, pr * (e + 1) + k_pos))
    if grad is None:
        return loss, ap, has_pos
    return _SquaredDistanceGradient.apply(x, y, loss, grad), ap, has_pos


def _two_bin_votes(flat: Tensor, frac: Tensor, size: int) -> Tensor:
    """A flat histogram ``[size]`` of a few entries at flat bins ``flat [P]`` with fractions
    ``frac [P]``: ``1 - f`` to bin ``flat``, ``f`` to ``flat + 1``."""
    return torch.bincount(torch.cat([flat, flat + 1]), torch.cat([1 - frac, frac]), minlength=size)


__all__ = [
    "class_ids_eligible",
    "fast_ap_loss_and_gradient",
    "fast_ap_of_class_ids",
    "histograms_eligible",
    "soft_histograms_fused",
]
