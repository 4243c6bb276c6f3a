"""The SupCon kernel: :mod:`likewise.losses.supcon` in one GEMM-sized buffer (the scheme of
:mod:`.row_softmax`), and when it may run.

Per anchor ``i`` it computes ``log Z_i`` (``Z_i = sum over every candidate of E``,
``E = exp(L - m_i)``) minus the mean of the positives' logits (``L_out``) or minus their
log-mean-exp (``L_in``), from the index list of the positives.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from likewise import entries
from likewise.losses._kernels.row_softmax import (
    Kernel,
    all_over_positives,
    exp_rows,
    gemm_eligible,
    gemm_row_loss,
    positives_and_stats,
    row_sum,
)
from likewise.losses.base import Batch


def eligible(batch: Batch, miner: Any, chunk_size: int | None) -> bool:
    """Class ids, no miner / relevance / given pairs / chunking (:func:`.row_softmax.gemm_eligible`).

    Any temperature: ``Z_i`` holds the row maximum's own term ``e^0 = 1``, so the clamp of
    ``exp_`` at ``-80`` changes it by at most ``N e^{-80}`` relative, far below rounding.
    """
    return gemm_eligible(batch, miner, chunk_size)


def supcon_kernel(temperature: float, variant: str) -> Kernel:
    """SupCon ``L_out`` / ``L_in`` (denominator over all but self), mean over counted anchors."""

    def kernel(logits: Tensor, pairs: Any, selves: Any, want: bool) -> tuple[Tensor, Any, dict]:
        b, n = logits.shape
        pr, pc = pairs
        l_pos, stats = positives_and_stats(logits, pairs, selves, temperature)
        e, m = exp_rows(logits, selves)
        z = e.sum(1)  # [B] sum over all candidates (shifted)
        n_pos = torch.bincount(pr, minlength=b)
        n_self = torch.bincount(selves[0], minlength=b)
        counted = (n_pos > 0) & (n - n_self > 1)  # a positive and another candidate
        shifted = l_pos - m.index_select(0, pr)
        npos = n_pos.clamp_min(1).to(logits.dtype)
        if variant == "in":  # log Z - log(1/|P| sum_P e^l)
            loss, grad = all_over_positives(e, z, shifted, pairs, counted, npos.log(), want)
            return loss, grad, stats
        # L_out: log Z - 1/|P| sum_P l; d/dl_ia = w_i E_ia / Z_i, minus w_i / |P(i)| at positives
        weight = counted.to(logits.dtype) / counted.sum().clamp_min(1)
        per_row = z.log() - row_sum(shifted, pr, b) / npos
        loss = torch.where(counted, per_row, torch.zeros_like(per_row)).mul(weight).sum()
        grad = None
        if want:
            grad = e.mul_((weight / z.clamp_min(torch.finfo(z.dtype).tiny)).unsqueeze(1))
            entries.add_(grad, pr, pc, -(weight / npos).index_select(0, pr))
        return loss, grad, stats

    return kernel


def supcon_fast(batch: Batch, temperature: float, variant: str) -> tuple[Tensor, dict]:
    """SupCon of an :func:`eligible` batch (cosine similarity) and its statistics."""
    return gemm_row_loss(batch, supcon_kernel(temperature, variant), "cosine", temperature)


__all__ = ["eligible", "supcon_fast", "supcon_kernel"]
