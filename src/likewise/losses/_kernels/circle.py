"""The Circle loss kernel: :mod:`likewise.losses.circle` in one GEMM-sized buffer (the scheme
of :mod:`.row_softmax`), and when it may run.

The negatives' log-sum-exp is taken over the whole row buffer (positives and self pairs set
to ``-inf``), the positives' over their index list; the weights ``alpha`` carry no gradient.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from likewise import entries
from likewise.losses._kernels.row_softmax import (
    Kernel,
    exp_rows,
    gemm_eligible,
    gemm_row_loss,
    group_logsumexp,
    positives_and_stats,
)
from likewise.losses.base import Batch


def eligible(batch: Batch, miner: Any) -> bool:
    """Class ids, no miner / relevance / given pairs (:func:`.row_softmax.gemm_eligible`).

    Any ``m, gamma``: the negatives' sum ``z_i`` holds the row maximum's own term ``e^0 = 1``, so
    the clamp of ``exp_`` at ``-80`` changes it by at most ``N e^{-80}`` relative.
    """
    return gemm_eligible(batch, miner, None)


def circle_kernel(m: float, gamma: float) -> Kernel:
    """Circle loss on cosine ``S`` (weights ``alpha`` without gradient), mean over non-zero rows.

    ``L_i = softplus(lse_P(-g a_p (s_p - 1 + m)) + lse_N(g a_n (s_n - m)))`` with
    ``a_p = [1 + m - s_p]_+``, ``a_n = [s_n + m]_+``; rows need a positive and a negative.
    """

    def kernel(sim: Tensor, pairs: Any, selves: Any, want: bool) -> tuple[Tensor, Any, dict]:
        b, n = sim.shape
        pr, pc = pairs
        s_pos, st = positives_and_stats(sim, pairs, selves, 1.0)
        n_pos = torch.bincount(pr, minlength=b)
        n_neg = n - n_pos - torch.bincount(selves[0], minlength=b)
        valid = (n_pos > 0) & (n_neg > 0)
        # negatives: logit g a_n (s - m), positives and self pairs removed
        a_n = (sim + m).clamp_min_(0)
        x = sim.sub_(m).mul_(a_n).mul_(gamma)
        e, mx = exp_rows(x, (torch.cat([pr, selves[0]]), torch.cat([pc, selves[1]])))
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


def circle_fast(batch: Batch, m: float, gamma: float) -> tuple[Tensor, dict]:
    """Circle loss of an :func:`eligible` batch (cosine similarity) and its statistics."""
    return gemm_row_loss(batch, circle_kernel(m, gamma), "cosine", 1.0)


__all__ = ["circle_fast", "circle_kernel", "eligible"]
