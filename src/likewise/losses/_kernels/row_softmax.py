"""Row-softmax losses of class-id labels in one ``[B, N]`` buffer, no masks (the shared machinery).

The plain path of a row-softmax loss (NT-Xent, SupCon, soft nearest neighbour, Circle,
multi-similarity) builds boolean masks, masked ``logsumexp`` and lets autograd record each
step: a dozen ``[B, N]`` passes. For the common case (class ids, no miner, no chunking:
:func:`gemm_eligible`) the positives are a short index list
(:func:`likewise.losses._kernels.positives.positive_pairs`) and every other non-self pair is a
negative, so each loss's kernel (``_kernels/ntxent.py``, ``supcon.py``,
``soft_nearest_neighbor.py``, ``circle.py``, and :func:`multi_similarity_kernel` here) is:

1. ``L = Xa Ya^T`` (one GEMM; the temperature and, for squared Euclidean, the norms
   are folded into the factors ``Xa, Ya``: :func:`scaled_factors`),
2. the self pairs set to ``-inf``, the row maximum ``m``, ``E = exp(L - m)`` in place
   (:func:`exp_rows`),
3. row sums of ``E`` and sums over the positive list, the loss, and the gradient
   ``G = dLoss/dL`` written into the same buffer (the softmax weights, scaled per row,
   corrected at the positive pairs),

and backward is the two GEMMs ``G Ya`` and ``G^T Xa`` (:func:`gemm_loss`). The values equal
those of the plain path (``tests/test_losses_contract.py`` compares them); the formulas are
in the docstrings of the loss modules.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from likewise import entries
from likewise.losses._kernels.fused import exp_
from likewise.losses._kernels.positives import batch_pairs, index_lists_eligible, pair_means
from likewise.losses.base import Batch, zero_loss
from likewise.normalize import l2_normalize

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


def gemm_eligible(batch: Batch, miner: Any, chunk_size: int | None) -> bool:
    """Whether the mask-free kernels apply: class ids ``[B]``, no miner, no relevance matrix,
    no given pairs (``indices_tuple``), no chunking (``chunk_size`` below ``B``), on the CPU.
    Looks at settings, shapes and devices only.

    CPU only: the index list of the positives has a data-dependent length
    (:func:`~likewise.losses._kernels.positives.positive_pairs`), which a GPU would have to
    report to the host; there the dense plain path runs without waiting."""
    chunked = chunk_size is not None and chunk_size < batch.embeddings.shape[0]
    return not chunked and index_lists_eligible(batch, miner)


def scaled_factors(x: Tensor, y: Tensor | None, distance: str, temperature: float) -> tuple[Tensor, Tensor]:
    """``(Xa, Ya)`` with ``Xa Ya^T = sim(x, y) / temperature`` for cosine, dot, squared Euclidean
    (``y=None``: ``y = x``).

    For cosine and dot the temperature is folded into the query rows before the GEMM; for
    squared Euclidean ``-(|x|^2 + |y|^2 - 2 x.y) / t`` is one GEMM on rows augmented with two
    columns, so forward and backward are pure GEMMs (no clamp at distance 0: a coincident
    pair may get a rounding-size positive value, harmless in a softmax).
    """
    if distance == "cosine":
        xn = l2_normalize(x, dim=1)
        yn = xn if y is None else l2_normalize(y, dim=1)
        return (xn if temperature == 1.0 else xn / temperature), yn
    y = x if y is None else y
    if distance == "dot":
        return (x if temperature == 1.0 else x / temperature), y
    if distance != "squared_euclidean":
        raise ValueError(f"no GEMM factors for distance {distance!r}")
    # [2x/t, -1/t, -|x|^2/t] . [y, |y|^2, 1] = -|x - y|^2 / t
    ones_x, ones_y = x.new_ones(x.shape[0], 1), y.new_ones(y.shape[0], 1)
    xa = torch.cat([x * 2.0, -ones_x, -x.pow(2).sum(1, keepdim=True)], dim=1) / temperature
    ya = torch.cat([y, y.pow(2).sum(1, keepdim=True), ones_y], dim=1)
    return xa, ya


def gemm_row_loss(batch: Batch, kernel: Kernel, distance: str, temperature: float) -> tuple[Tensor, dict]:
    """``kernel`` on ``sim(queries, refs) / temperature`` of an eligible batch
    (:func:`gemm_eligible`), with the index lists of its positive and self pairs; a batch
    without a positive pair gives a zero loss that back-propagates."""
    pairs, selves = batch_pairs(batch)
    refs = None if batch.same_set else batch.ref_emb
    xa, ya = scaled_factors(batch.embeddings, refs, distance, temperature)
    loss, stats = gemm_loss(xa, ya, kernel, pairs, selves)
    if pairs[0].numel() == 0:
        return zero_loss(batch.embeddings, batch.ref_emb), stats
    return loss, stats


# --------------------------------------------------------------------------- shared steps


def exp_rows(logits: Tensor, excluded: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """Row max ``m [B]`` over all but the ``excluded`` pairs (0 for an empty row) and
    ``E = exp(L - m)`` in place, 0 at the excluded pairs.

    ``exp_`` clamps ``L - m`` at -80 (float32): exact for a sum that holds the row maximum's own
    term 1; a kernel that sums part of a row without its maximum (NT-Xent's negatives) bounds
    the logits' span in its ``eligible``."""
    entries.fill_(logits, *excluded, float("-inf"))
    m = logits.amax(1)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    e = exp_(logits.sub_(m.unsqueeze(1)))
    entries.fill_(e, *excluded, 0.0)  # exp_ clamps -inf to a tiny normal number
    return e, m


def positives_and_stats(
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


def row_sum(values: Tensor, rows: Tensor, b: int) -> Tensor:
    """Per-pair ``values [P]`` summed into their ``rows`` ``[b]``."""
    return values.new_zeros(b).index_add_(0, rows, values)


def group_logsumexp(values: Tensor, groups: Tensor, num_groups: int) -> Tensor:
    """``log sum_{x : groups[x] = g} exp(values[x])`` per group ``[num_groups]`` (``-inf``: none).

    ``values [P]``, ``groups`` long ``[P]``: e.g. the positives of each row from an index list,
    or each class's samples. Shifted by the group maximum (``scatter_reduce`` ``amax``).
    """
    top = values.new_full((num_groups,), float("-inf")).scatter_reduce_(0, groups, values, "amax")
    safe = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
    return row_sum(torch.exp(values - safe.index_select(0, groups)), groups, num_groups).log() + safe


def all_over_positives(
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


# --------------------------------------------------------------------------- multi-similarity


def multi_similarity_kernel(alpha: float, beta: float, base: float) -> Kernel:
    """Multi-similarity on cosine ``S``: ``1/a log(1 + sum_P e^{-a(S-b)}) + 1/b log(1 + sum_N e^{b(S-b)})``.

    Averaged over the queries with a non-zero loss (those with any pair).
    """

    def kernel(sim: Tensor, pairs: Any, selves: Any, want: bool) -> tuple[Tensor, Any, dict]:
        b, n = sim.shape
        pr, pc = pairs
        s_pos, stats = positives_and_stats(sim, pairs, selves, 1.0)
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
        pos_den = torch.exp(-mp) + row_sum(ep, pr, b)
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


__all__ = [
    "Kernel",
    "all_over_positives",
    "exp_rows",
    "gemm_eligible",
    "gemm_loss",
    "gemm_row_loss",
    "group_logsumexp",
    "multi_similarity_kernel",
    "positives_and_stats",
    "row_sum",
    "scaled_factors",
]
