"""Softmax-family losses of class-id labels in one ``[B, N]`` buffer, no masks.

The general path of :mod:`likewise.losses.softmax` builds boolean masks, masked
``logsumexp`` and lets autograd record each step: a dozen ``[B, N]`` passes. For the
common case (class ids, no miner, no chunking) the positives are a short index list
(:func:`likewise.losses._kernels.positives.positive_pairs`) and every other non-self pair is a
negative, so each loss here is:

1. ``L = Xa Ya^T`` (one GEMM; the temperature and, for squared Euclidean, the norms
   are folded into the factors ``Xa, Ya``),
2. the self pairs set to ``-inf``, the row maximum ``m``, ``E = exp(L - m)`` in place,
3. row sums of ``E`` and sums over the positive list, the loss, and the gradient
   ``G = dLoss/dL`` written into the same buffer (the softmax weights, scaled per row,
   corrected at the positive pairs),

and backward is the two GEMMs ``G Ya`` and ``G^T Xa``. The values equal those of the
general path (tests compare them); the formulas are in the docstrings of
:mod:`likewise.losses.softmax` and :mod:`likewise.losses.pair` (multi-similarity).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from likewise import entries
from likewise.losses._kernels.fused import exp_
from likewise.losses._kernels.positives import pair_means

# kernel(logits [B, N] (owned, may be overwritten), pairs, selves) -> (loss, grad [B, N] | None, stats)
Kernel = Callable[[Tensor, tuple[Tensor, Tensor], tuple[Tensor, Tensor], bool], tuple[Tensor, Any, dict]]


class _GemmLoss(torch.autograd.Function):
    """``loss = kernel(Xa Ya^T)``; backward ``dXa = G Ya``, ``dYa = G^T Xa``."""

    @staticmethod
    def forward(ctx: Any, xa: Tensor, ya: Tensor, kernel: Kernel, pairs: Any, selves: Any) -> Tensor:
        with torch.no_grad():
            logits = xa @ ya.T
            want = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
            loss, grad, _ = kernel(logits, pairs, selves, want)
        ctx.save_for_backward(xa, ya, grad if grad is not None else logits.new_zeros(0))
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, None, None, None]:
        xa, ya, g = ctx.saved_tensors
        g = g * grad_out
        gx = g @ ya if ctx.needs_input_grad[0] else None
        gy = g.T @ xa if ctx.needs_input_grad[1] else None
        return gx, gy, None, None, None


def gemm_loss(
    xa: Tensor, ya: Tensor, kernel: Kernel, pairs: tuple[Tensor, Tensor], selves: tuple[Tensor, Tensor]
) -> tuple[Tensor, dict[str, Any]]:
    """The loss of ``kernel`` on ``Xa Ya^T`` and its statistics (tensors, read lazily)."""
    stats: dict[str, Any] = {}

    def keep(logits: Tensor, p: Any, s: Any, want: bool) -> tuple[Tensor, Any, dict]:
        loss, grad, st = kernel(logits, p, s, want)
        stats.update(st)
        return loss, grad, st

    loss = _GemmLoss.apply(xa, ya, keep, pairs, selves)
    return loss, stats


# --------------------------------------------------------------------------- shared steps


def _exp_rows(logits: Tensor, excluded: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Row max ``m [B]`` over all but the ``excluded`` pairs (0 for an empty row) and
    ``E = exp(L - m)`` in place, 0 at the excluded pairs."""
    entries.fill_(logits, *excluded, float("-inf"))
    m = logits.amax(1)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = exp_(logits.sub_(m.unsqueeze(1)))
    entries.fill_(e, *excluded, 0.0)  # exp_ clamps -inf to a tiny normal number
    return e, m


def _positives_and_stats(
    matrix: Tensor, pairs: tuple[Tensor, Tensor], selves: tuple[Tensor, Tensor], scale: float
) -> tuple[Tensor, dict[str, Any]]:
    """The positive entries of ``matrix`` and the pair statistics (before it is overwritten;
    tensors and functions, read lazily: :mod:`likewise.lazy_stats`)."""
    mean_pos, mean_neg = pair_means(matrix, pairs, selves)
    return entries.take(matrix, *pairs), {
        "pos_pairs": float(pairs[0].numel()),
        "anchors_with_pos": lambda rows=pairs[0], b=matrix.shape[0]: torch.unique(rows).numel() / b,
        "mean_pos_similarity": mean_pos * scale,
        "mean_neg_similarity": mean_neg * scale,
    }


def _row_sum(values: Tensor, rows: Tensor, b: int) -> Tensor:
    return values.new_zeros(b).index_add_(0, rows, values)


def group_logsumexp(values: Tensor, groups: Tensor, num_groups: int) -> Tensor:
    """``log sum_{x : groups[x] = g} exp(values[x])`` per group ``[num_groups]`` (``-inf``: none).

    ``values [P]``, ``groups`` long ``[P]``: e.g. the positives of each row from an index list,
    or each class's samples. Shifted by the group maximum (``scatter_reduce`` ``amax``).
    """
    top = values.new_full((num_groups,), float("-inf")).scatter_reduce_(0, groups, values, "amax")
    safe = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    return _row_sum(torch.exp(values - safe.index_select(0, groups)), groups, num_groups).log() + safe


# --------------------------------------------------------------------------- kernels


def ntxent_kernel(temperature: float) -> Kernel:
    """NT-Xent: per positive pair ``log(e^{l_p} + sum_N e^{l_n}) - l_p``, mean over pairs."""

    def kernel(logits: Tensor, pairs: Any, selves: Any, want: bool) -> tuple[Tensor, Any, dict]:
        b, n = logits.shape
        pr, pc = pairs
        l_pos, stats = _positives_and_stats(logits, pairs, selves, temperature)
        e, m = _exp_rows(logits, selves)
        entries.fill_(e, pr, pc, 0.0)  # what is left in a row is its negatives
        log_neg = e.sum(1).log()  # -inf without negatives
        shifted = l_pos - m.index_select(0, pr)
        log_den = torch.logaddexp(shifted, log_neg.index_select(0, pr))
        n_pairs = max(pr.numel(), 1)
        loss = (log_den - shifted).sum() / n_pairs
        grad = None
        if want:
            # d/dl_in = sum_p E_in / den_ip; d/dl_ip = E_ip / den_ip - 1 (all / n_pairs)
            row_scale = _row_sum(torch.exp(-log_den), pr, b) / n_pairs
            grad = e.mul_(row_scale.unsqueeze(1))
            entries.put_(grad, pr, pc, (torch.exp(shifted - log_den) - 1) / n_pairs)
        return loss, grad, stats

    return kernel


def _all_over_positives(
    e: Tensor, z: Tensor, shifted: Tensor, pairs: Any, counted: Tensor, offset: Tensor | float, want: bool
) -> tuple[Tensor, Tensor | None]:
    """``mean over counted rows of log Z_i - log sum_{P(i)} e^l + offset_i`` and its gradient.

    ``e [B, N]`` the shifted exponentials (becomes the gradient), ``z [B]`` their row sums,
    ``shifted [P]`` the positives' logits with the same shift. Gradient: ``w_i E_ia / Z_i``,
    minus ``w_i E_ip / sum_P E`` at the positives (``w`` the row weight of the mean).
    """
    pr, pc = pairs
    pos_lse = group_logsumexp(shifted, pr, e.shape[0])
    weight = counted.to(e.dtype) / counted.sum().clamp_min(1)
    per_row = torch.where(counted, z.log() - pos_lse + offset, torch.zeros_like(z))
    loss = (per_row * weight).sum()
    grad = None
    if want:
        grad = e.mul_((weight / z.clamp_min(torch.finfo(z.dtype).tiny)).unsqueeze(1))
        entries.add_(
            grad, pr, pc, -weight.index_select(0, pr) * torch.exp(shifted - pos_lse.index_select(0, pr))
        )
    return loss, grad


def supcon_kernel(temperature: float, variant: str) -> Kernel:
    """SupCon ``L_out`` / ``L_in`` (denominator over all but self), mean over counted anchors."""

    def kernel(logits: Tensor, pairs: Any, selves: Any, want: bool) -> tuple[Tensor, Any, dict]:
        b, n = logits.shape
        pr, pc = pairs
        l_pos, stats = _positives_and_stats(logits, pairs, selves, temperature)
        e, m = _exp_rows(logits, selves)
        z = e.sum(1)  # [B] sum over all candidates (shifted)
        n_pos = torch.bincount(pr, minlength=b)
        n_self = torch.bincount(selves[0], minlength=b)
        counted = (n_pos > 0) & (n - n_self > 1)  # a positive and another candidate
        shifted = l_pos - m.index_select(0, pr)
        npos = n_pos.clamp_min(1).to(logits.dtype)
        if variant == "in":  # log Z - log(1/|P| sum_P e^l)
            loss, grad = _all_over_positives(e, z, shifted, pairs, counted, npos.log(), want)
            return loss, grad, stats
        # L_out: log Z - 1/|P| sum_P l; d/dl_ia = w_i E_ia / Z_i, minus w_i / |P(i)| at positives
        weight = counted.to(logits.dtype) / counted.sum().clamp_min(1)
        per_row = z.log() - _row_sum(shifted, pr, b) / npos
        loss = torch.where(counted, per_row, torch.zeros_like(per_row)).mul(weight).sum()
        grad = None
        if want:
            grad = e.mul_((weight / z.clamp_min(torch.finfo(z.dtype).tiny)).unsqueeze(1))
            entries.add_(grad, pr, pc, -(weight / npos).index_select(0, pr))
        return loss, grad, stats

    return kernel


def snn_kernel(temperature: float, sim_scale: float) -> Kernel:
    """Soft nearest neighbour: ``log sum_A e^l - log sum_P e^l`` for anchors with a positive."""

    def kernel(logits: Tensor, pairs: Any, selves: Any, want: bool) -> tuple[Tensor, Any, dict]:
        pr = pairs[0]
        l_pos, stats = _positives_and_stats(logits, pairs, selves, sim_scale)
        e, m = _exp_rows(logits, selves)
        counted = torch.bincount(pr, minlength=logits.shape[0]) > 0
        shifted = l_pos - m.index_select(0, pr)
        loss, grad = _all_over_positives(e, e.sum(1), shifted, pairs, counted, 0.0, want)
        return loss, grad, stats

    return kernel


def multi_similarity_kernel(alpha: float, beta: float, base: float) -> Kernel:
    """Multi-similarity on cosine ``S``: ``1/a log(1 + sum_P e^{-a(S-b)}) + 1/b log(1 + sum_N e^{b(S-b)})``.

    Averaged over the queries with a non-zero loss (those with any pair).
    """

    def kernel(sim: Tensor, pairs: Any, selves: Any, want: bool) -> tuple[Tensor, Any, dict]:
        b, n = sim.shape
        pr, pc = pairs
        s_pos, stats = _positives_and_stats(sim, pairs, selves, 1.0)
        # negatives: beta (S - base), positives and self pairs removed, shifted by max(0, row max)
        x = sim.sub_(base).mul_(beta)
        entries.fill_(x, pr, pc, float("-inf"))
        entries.fill_(x, *selves, float("-inf"))
        m = x.amax(1).clamp_min(0)
        e = exp_(x.sub_(m.unsqueeze(1)))
        entries.fill_(e, pr, pc, 0.0)  # exp_ clamps -inf to a tiny normal number
        entries.fill_(e, *selves, 0.0)
        neg_den = torch.exp(-m) + e.sum(1)  # (1 + sum_N e^{beta(S - base)}) e^{-m}
        neg_part = (m + neg_den.log()) / beta
        # positives: 1/alpha log(1 + sum_P e^{-alpha (S - base)}), on the index list
        xp = -alpha * (s_pos - base)
        mp = torch.zeros(b, dtype=sim.dtype, device=sim.device).scatter_reduce_(0, pr, xp, "amax")
        ep = torch.exp(xp - mp.index_select(0, pr))
        pos_den = torch.exp(-mp) + _row_sum(ep, pr, b)
        pos_part = (mp + pos_den.log()) / alpha
        n_neg = n - torch.bincount(pr, minlength=b) - torch.bincount(selves[0], minlength=b)
        rows = pos_part + neg_part
        active = (rows > 0) & ((n_neg > 0) | (torch.bincount(pr, minlength=b) > 0))
        weight = active.to(sim.dtype) / active.sum().clamp_min(1)
        loss = (rows * weight).sum()
        stats["active_fraction"] = active.sum() / b
        grad = None
        if want:
            # d/dS_in = E_in / neg_den (shifted consistently); d/dS_ip = -e_p / pos_den
            grad = e.mul_((weight / neg_den).unsqueeze(1))
            entries.put_(grad, pr, pc, -(weight.index_select(0, pr) * ep / pos_den.index_select(0, pr)))
        return loss, grad, stats

    return kernel


def circle_kernel(m: float, gamma: float) -> Kernel:
    """Circle loss on cosine ``S`` (weights ``alpha`` without gradient), mean over non-zero rows.

    ``L_i = softplus(lse_P(-g a_p (s_p - 1 + m)) + lse_N(g a_n (s_n - m)))`` with
    ``a_p = [1 + m - s_p]_+``, ``a_n = [s_n + m]_+``; rows need a positive and a negative.
    """

    def kernel(sim: Tensor, pairs: Any, selves: Any, want: bool) -> tuple[Tensor, Any, dict]:
        b, n = sim.shape
        pr, pc = pairs
        s_pos, st = _positives_and_stats(sim, pairs, selves, 1.0)
        n_pos = torch.bincount(pr, minlength=b)
        n_neg = n - n_pos - torch.bincount(selves[0], minlength=b)
        valid = (n_pos > 0) & (n_neg > 0)
        # negatives: logit g a_n (s - m), positives and self pairs removed
        a_n = (sim + m).clamp_min_(0)
        x = sim.sub_(m).mul_(a_n).mul_(gamma)
        e, mx = _exp_rows(x, (torch.cat([pr, selves[0]]), torch.cat([pc, selves[1]])))
        z = e.sum(1)
        lse_n = z.log() + mx
        # positives on the index list
        a_p = (1 + m - s_pos).clamp_min(0)
        lp = -gamma * a_p * (s_pos - (1 - m))
        lse_p = group_logsumexp(lp, pr, b)
        total = torch.where(valid, lse_p + lse_n, torch.zeros_like(z))
        rows = torch.nn.functional.softplus(total)
        active = valid & (rows > 0)
        weight = active.to(sim.dtype) / active.sum().clamp_min(1)
        loss = (rows * weight).sum()
        stats = {
            "active_rows": valid.sum() / b,
            "pos_sim": st["mean_pos_similarity"],
            "neg_sim": st["mean_neg_similarity"],
        }
        grad = None
        if want:
            # d softplus, as F.softplus (linear above its threshold 20, as PML's)
            outer = weight * torch.where(total > 20, torch.ones_like(total), torch.sigmoid(total))
            grad = e.mul_(a_n).mul_((outer * gamma / z.clamp_min(torch.finfo(z.dtype).tiny)).unsqueeze(1))
            soft_p = torch.exp(lp - lse_p.index_select(0, pr))  # finite on every row with a positive
            g_pos = -(outer.index_select(0, pr) * soft_p * gamma * a_p)
            entries.put_(grad, pr, pc, torch.where(valid.index_select(0, pr), g_pos, 0.0))
        return loss, grad, stats

    return kernel


__all__ = [
    "circle_kernel",
    "group_logsumexp",
    "gemm_loss",
    "multi_similarity_kernel",
    "ntxent_kernel",
    "snn_kernel",
    "supcon_kernel",
]
