"""The soft nearest neighbour kernel: :mod:`likewise.losses.soft_nearest_neighbor` in one
GEMM-sized buffer (the scheme of :mod:`.row_softmax`), and when it may run.

Per anchor ``i`` with a positive: ``log Z_i - log sum_{p in P(i)} E_ip`` with ``E = exp(L - m_i)``
and ``Z_i`` its sum over every candidate; the positives' part from their index list.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from likewise.losses._kernels.row_softmax import (
    Kernel,
    all_over_positives,
    exp_rows,
    gemm_eligible,
    gemm_row_loss,
    positives_and_stats,
)
from likewise.losses.base import Batch

#: the similarities with GEMM factors (:func:`.row_softmax.scaled_factors`); the plain
#: Euclidean distance (a square root) has none
GEMM_DISTANCES = ("squared_euclidean", "cosine", "dot")


def eligible(batch: Batch, miner: Any, chunk_size: int | None, distance: str) -> bool:
    """Class ids, no miner / relevance / given pairs / chunking (:func:`.row_softmax.gemm_eligible`)
    and a similarity that is one GEMM.

    Any temperature: ``Z_i`` holds the row maximum's own term ``e^0 = 1``, so the clamp of
    ``exp_`` at ``-80`` changes it by at most ``N e^{-80}`` relative, far below rounding.
    """
    return distance in GEMM_DISTANCES and gemm_eligible(batch, miner, chunk_size)


def snn_kernel(sim_scale: float) -> Kernel:
    """Soft nearest neighbour: ``log sum_A e^l - log sum_P e^l`` for anchors with a positive
    (``sim_scale``: the temperature, to report the similarities before it)."""

    def kernel(logits: Tensor, pairs: Any, selves: Any, want: bool) -> tuple[Tensor, Any, dict]:
        pr = pairs[0]
        l_pos, stats = positives_and_stats(logits, pairs, selves, sim_scale)
        e, m = exp_rows(logits, selves)
        counted = torch.bincount(pr, minlength=logits.shape[0]) > 0
        shifted = l_pos - m.index_select(0, pr)
        loss, grad = all_over_positives(e, e.sum(1), shifted, pairs, counted, 0.0, want)
        return loss, grad, stats

    return kernel


def snn_fast(batch: Batch, temperature: float, distance: str) -> tuple[Tensor, dict]:
    """Soft nearest neighbour loss of an :func:`eligible` batch and its statistics."""
    return gemm_row_loss(batch, snn_kernel(temperature), distance, temperature)


__all__ = ["GEMM_DISTANCES", "eligible", "snn_fast", "snn_kernel"]
