"""Song's lifted structure loss from index lists of the positive pairs, gradient written down.

:func:`likewise.losses.lifted_structure.lifted_structure_loss` is the specification (plain
autograd: two masked log-sum-exps over ``[B, N]`` and a dozen recorded passes). With class
ids and bounded distances the kernel here needs no mask and no autograd record:

``E = exp(-D)`` neither over- nor underflows when the distances are bounded (L2-normalised
embeddings: ``D <= 2``, or 4 squared), so ``log sum_N exp(m - D) = m + log R`` with ``R`` the
row (``C``: column) sums of ``E`` over the negatives, and ``J_ij = m + log(R_i + C_j) + D_ij -
m_p``. Gradient, with ``g_ij = [J_ij]_+ / |P|``: ``g_ij`` at a positive pair, ``-E_ab (u_a +
v_b)`` at a negative one, ``u_a = sum_j g_aj / (R_a + C_j)``, ``v_b = sum_i g_ib / (R_i + C_b)``.

:func:`eligible` holds both conditions: the bound (normalised Euclidean distances) and the
index lists (class ids, CPU).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from likewise import entries
from likewise.losses._kernels.contrastive import count_positive
from likewise.losses._kernels.fused import needs_grad, with_gradient
from likewise.losses._kernels.positives import index_lists_eligible, pair_means
from likewise.losses.base import Batch


def eligible(batch: Batch, miner: Any, formula: str, distance: str, normalize_embeddings: bool) -> bool:
    """:func:`lifted_sparse` applies: Song's formula, distances bounded by the normalisation
    (``exp(-D)`` cannot underflow), the positives as index lists."""
    bounded = normalize_embeddings and distance in ("euclidean", "squared_euclidean")
    return formula == "song" and bounded and index_lists_eligible(batch, miner)


def lifted_sparse(
    dist: Tensor,
    pos_pairs: tuple[Tensor, Tensor],
    self_pairs: tuple[Tensor, Tensor],
    neg_margin: float,
    pos_margin: float,
) -> tuple[Tensor, dict[str, Any]]:
    """The loss and its statistics from index lists of the positive and self pairs."""
    pr, pc = pos_pairs
    xr, xc = torch.cat([pr, self_pairs[0]]), torch.cat([pc, self_pairs[1]])
    b, n = dist.shape
    want_grad = needs_grad(dist)
    tiny = torch.finfo(dist.dtype).tiny
    with torch.no_grad():
        e = torch.neg(dist).exp_()
        entries.fill_(e, xr, xc, 0.0)  # only the negatives are left
        r, c = e.sum(1), e.sum(0)
        den = r.index_select(0, pr) + c.index_select(0, pc)
        valid = den > 0  # the pair has a negative on one side or the other
        d_pos = entries.take(dist, pr, pc)
        j = neg_margin + den.clamp_min(tiny).log() + d_pos - pos_margin
        hinge = torch.where(valid, j.clamp_min(0), 0.0)
        n_valid = valid.sum().clamp_min(1).to(dist.dtype)  # a tensor: no wait for the device
        loss = hinge.pow(2).sum() / (2 * n_valid)
        grad = None
        if want_grad:
            g = hinge / n_valid
            w = torch.where(valid, g / den.clamp_min(tiny), 0.0)
            u = dist.new_zeros(b).index_add_(0, pr, w)
            v = dist.new_zeros(n).index_add_(0, pc, w)
            grad = e.mul_(-(u.unsqueeze(1) + v.unsqueeze(0)))
            entries.put_(grad, pr, pc, g)
        mean_pos, mean_neg = pair_means(dist, pos_pairs, self_pairs)
        stats = {
            "active_fraction": count_positive(hinge) / n_valid,
            "mean_pos_distance": mean_pos,
            "mean_neg_distance": mean_neg,
        }
    return with_gradient(dist, loss, grad), stats


__all__ = ["eligible", "lifted_sparse"]
