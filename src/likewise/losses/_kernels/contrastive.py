"""The contrastive loss with its gradient written down in the passes that compute it.

:func:`likewise.losses.contrastive.contrastive_loss` is the specification (plain autograd).
Its terms are piecewise polynomials of one matrix entry, so ``dL/dM`` is known while the
value is computed: the indicator of the active terms, scaled by one over their count. The
kernels here compute value and gradient in a few in-place ``[B, N]`` passes and attach the
gradient with :func:`~likewise.losses._kernels.fused.with_gradient` (nothing recorded for
autograd):

* :func:`contrastive_dense` on boolean masks ``pos, neg [B, N]`` (any labels, a miner);
  eligible wherever the pairs are not counts (``indices_tuple``): :func:`dense_eligible`;
* :func:`contrastive_sparse` on index lists of the positive and self pairs (class ids):
  the negative half is evaluated on the whole matrix and corrected at the few positive
  and self pairs, no mask is built; :func:`index_lists_eligible` (CPU only: the lists'
  sizes depend on the labels, and on a GPU reading a size waits for the device).

Statistics are tensors (read lazily, :mod:`likewise.lazy_stats`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from likewise import entries
from likewise.losses._kernels.fused import needs_grad, with_gradient
from likewise.losses._kernels.positives import pair_means
from likewise.losses.base import Batch


def dense_eligible(batch: Batch) -> bool:
    """:func:`contrastive_dense` applies: boolean pairs (an ``indices_tuple`` counts them)."""
    return batch.given is None


def count_positive(t: Tensor) -> Tensor:
    """Number of entries ``> 0`` of ``t >= 0`` (float64 scalar): row sums of ``sign(t)``, exact,
    added in float64. (``torch.count_nonzero`` takes 5 ms per 10^6 entries on CPU, this 0.2.)"""
    return torch.sign(t).sum(-1).sum(dtype=torch.float64)


def _hinge(values: Tensor, margin: float, sign: float, neg_form: str) -> Tensor:
    """``t = [sign (v - m)]_+`` (``[sign (v^2 - m^2)]_+`` for ``"hinge_squared"``), a new tensor."""
    h = values * values - margin * margin if neg_form == "hinge_squared" else values - margin
    if sign < 0:
        h.neg_()
    return h.clamp_min_(0)


def _term_sum(t: Tensor, neg_form: str) -> Tensor:
    """Sum of the terms: ``t^2`` for ``"squared_hinge"``, else ``t``."""
    flat = t.reshape(-1)
    return torch.dot(flat, flat) if neg_form == "squared_hinge" else flat.sum()


def _term_grad_(t: Tensor, values: Tensor, sign: float, neg_form: str, scale: Tensor) -> Tensor:
    """``scale * d term / d value``, written into ``t`` (which holds the hinge values)."""
    if neg_form == "squared_hinge":  # d t^2 = 2 t sign
        return t.mul_(2 * sign * scale)
    if neg_form == "hinge_squared":  # d [sign (v^2 - m^2)]_+ = 2 v sign 1(t > 0)
        return t.sign_().mul_(values).mul_(2 * sign * scale)
    return t.sign_().mul_(sign * scale)


def _part(
    mat: Tensor, mask: Tensor, margin: float, sign: float, neg_form: str, want_grad: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    """One half (positive or negative pairs) on ``mask``: the mean over the non-zero terms, their
    count, and the gradient of that mean with respect to ``mat`` (``None`` unless ``want_grad``)."""
    with torch.no_grad():
        t = _hinge(mat, margin, sign, neg_form).mul_(mask)
        count = count_positive(t)
        denom = count.clamp_min(1).to(mat.dtype)
        total = _term_sum(t, neg_form)
        grad = _term_grad_(t, mat, sign, neg_form, 1 / denom) if want_grad else None
    return total / denom, count, grad


def contrastive_dense(
    mat: Tensor,
    pos: Tensor,
    neg: Tensor,
    pos_margin: float,
    neg_margin: float,
    neg_form: str,
    similarity: bool,
) -> tuple[Tensor, dict[str, Any]]:
    """The loss on bool masks ``pos, neg [B, N]`` and its statistics; the gradient is written down
    in the same passes (distances: pos ``[d - m_p]_+``, neg ``[m_n - d]_+``; similarities mirrored)."""
    want_grad = needs_grad(mat)
    pos_sign = -1.0 if similarity else 1.0
    pos_loss, n_pos_active, g_pos = _part(mat, pos, pos_margin, pos_sign, neg_form, want_grad)
    neg_loss, n_neg_active, g_neg = _part(mat, neg, neg_margin, -pos_sign, neg_form, want_grad)
    grad = g_pos.add_(g_neg) if g_pos is not None and g_neg is not None else None
    unit = "similarity" if similarity else "distance"
    with torch.no_grad():  # tensors now (no host wait): lazy ones would keep the [B, N] masks alive
        m, n_pos, n_neg = mat.detach(), pos.sum().clamp_min(1), neg.sum().clamp_min(1)
        stats = {
            "pos_active_fraction": n_pos_active / n_pos,
            "neg_active_fraction": n_neg_active / n_neg,
            f"mean_pos_{unit}": torch.where(pos, m, 0.0).sum() / n_pos,
            f"mean_neg_{unit}": torch.where(neg, m, 0.0).sum() / n_neg,
        }
    return with_gradient(mat, pos_loss + neg_loss, grad), stats


def contrastive_sparse(
    mat: Tensor,
    pos_pairs: tuple[Tensor, Tensor],
    self_pairs: tuple[Tensor, Tensor],
    pos_margin: float,
    neg_margin: float,
    neg_form: str,
    similarity: bool,
) -> tuple[Tensor, dict[str, Any]]:
    """The same loss from index lists of the positive and self pairs (class-id labels).

    Every pair that is neither positive nor a self pair is a negative, so the negative half
    is evaluated on all of ``mat`` and the few positive and self pairs are subtracted again.
    """
    want_grad = needs_grad(mat)
    pos_sign = -1.0 if similarity else 1.0
    pr, pc = pos_pairs
    xr, xc = torch.cat([pr, self_pairs[0]]), torch.cat([pc, self_pairs[1]])  # not negatives
    with torch.no_grad():
        t_all = _hinge(mat, neg_margin, -pos_sign, neg_form)
        t_out = entries.take(t_all, xr, xc)
        n_neg_active = count_positive(t_all) - count_positive(t_out)
        neg_denom = n_neg_active.clamp_min(1).to(mat.dtype)
        neg_loss = (_term_sum(t_all, neg_form) - _term_sum(t_out, neg_form)) / neg_denom
        p_vals = entries.take(mat, pr, pc)
        t_pos = _hinge(p_vals, pos_margin, pos_sign, neg_form)
        n_pos_active = count_positive(t_pos)
        pos_denom = n_pos_active.clamp_min(1).to(mat.dtype)
        pos_loss = _term_sum(t_pos, neg_form) / pos_denom
        grad = None
        if want_grad:
            grad = _term_grad_(t_all, mat, -pos_sign, neg_form, 1 / neg_denom)
            entries.fill_(grad, xr, xc, 0.0)
            entries.put_(grad, pr, pc, _term_grad_(t_pos, p_vals, pos_sign, neg_form, 1 / pos_denom))
        b, n = mat.shape
        n_pos = pr.numel()
        n_neg = b * n - n_pos - self_pairs[0].numel()
        mean_pos, mean_neg = pair_means(mat, pos_pairs, self_pairs)
        unit = "similarity" if similarity else "distance"
        stats = {
            "pos_active_fraction": n_pos_active / max(1, n_pos),
            "neg_active_fraction": n_neg_active / max(1, n_neg),
            f"mean_pos_{unit}": mean_pos,
            f"mean_neg_{unit}": mean_neg,
        }
    return with_gradient(mat, pos_loss + neg_loss, grad), stats


__all__ = [
    "contrastive_dense",
    "contrastive_sparse",
    "count_positive",
    "dense_eligible",
]
