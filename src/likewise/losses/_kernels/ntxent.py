"""The NT-Xent kernel: :mod:`likewise.losses.ntxent` in one GEMM-sized buffer (the scheme of
:mod:`.row_softmax`), and when it may run.

Per positive pair ``(i, p)`` it computes ``log(e^{l_ip} + sum_{n in N(i)} e^{l_in}) - l_ip`` on
``E = exp(L - m_i)`` (``m_i`` the row maximum over every candidate, positives included), with
the positives zeroed out of ``E`` so that a row sum is the sum over the negatives alone.
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
    positives_and_stats,
    row_sum,
)
from likewise.losses.base import Batch

#: :func:`likewise.losses._kernels.fused.exp_` clamps the shifted logits ``l - m_i`` at ``-80``
#: (float32; ``-700`` in float64) to keep ``exp`` out of subnormals
EXP_CLAMP = 80.0


def eligible(batch: Batch, miner: Any, chunk_size: int | None, temperature: float) -> bool:
    """Class ids, no miner / relevance / given pairs / chunking (:func:`.row_softmax.gemm_eligible`),
    and a temperature for which the clamp of ``exp_`` never acts.

    The sum over the negatives is taken after the row maximum was subtracted, and that maximum
    may be a positive's: a row whose negatives all lie more than ``EXP_CLAMP`` below it would
    have them clamped, i.e. enlarged. Cosine logits ``s / t`` span at most ``2 / t``, so for
    ``2 / t < EXP_CLAMP`` (``t > 0.025``) no shifted logit reaches the clamp and the kernel is
    exact; smaller temperatures take the plain path.
    """
    return 2 / temperature < EXP_CLAMP and gemm_eligible(batch, miner, chunk_size)


def ntxent_kernel(temperature: float) -> Kernel:
    """NT-Xent: per positive pair ``log(e^{l_p} + sum_N e^{l_n}) - l_p``, mean over pairs."""

    def kernel(logits: Tensor, pairs: Any, selves: Any, want: bool) -> tuple[Tensor, Any, dict]:
        b = logits.shape[0]
        pr, pc = pairs
        l_pos, stats = positives_and_stats(logits, pairs, selves, temperature)
        e, m = exp_rows(logits, selves)
        entries.fill_(e, pr, pc, 0.0)  # what is left in a row is its negatives
        log_neg = e.sum(1).log()  # -inf without negatives
        shifted = l_pos - m.index_select(0, pr)
        log_den = torch.logaddexp(shifted, log_neg.index_select(0, pr))
        n_pairs = max(pr.numel(), 1)
        loss = (log_den - shifted).sum() / n_pairs
        grad = None
        if want:
            # d/dl_in = sum_p E_in / den_ip; d/dl_ip = E_ip / den_ip - 1 (all / n_pairs)
            row_scale = row_sum(torch.exp(-log_den), pr, b) / n_pairs
            grad = e.mul_(row_scale.unsqueeze(1))
            entries.put_(grad, pr, pc, (torch.exp(shifted - log_den) - 1) / n_pairs)
        return loss, grad, stats

    return kernel


def ntxent_fast(batch: Batch, temperature: float) -> tuple[Tensor, dict]:
    """NT-Xent of an :func:`eligible` batch (cosine similarity) and its statistics."""
    return gemm_row_loss(batch, ntxent_kernel(temperature), "cosine", temperature)


__all__ = ["EXP_CLAMP", "eligible", "ntxent_fast", "ntxent_kernel"]
