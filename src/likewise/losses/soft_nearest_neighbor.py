"""Soft nearest neighbour loss (Frosst, Papernot & Hinton 2019, "Analyzing and Improving
Representations with the Soft Nearest Neighbor Loss").

With ``s_ij`` the similarity (default ``-|x_i - x_j|^2``, the paper's) and ``t`` the
temperature::

    L = -1/|I| sum_{i in I} log( sum_{j != i, y_j = y_i} e^{s_ij/t} / sum_{k != i} e^{s_ik/t} )

``I``: the anchors with at least one positive (for the others the ratio is 0 and its log
undefined). The denominator runs over **all** ``k != i``, as in Frosst et al.; the lecture notes
(seed 002) write it over negatives only and put ``1/|P(i)|`` inside the log, which is not what
is implemented here. With a miner, the numerator runs over the mined positives and the
denominator over the mined pairs. pytorch-metric-learning has no such loss.

Shapes: ``embeddings [B, D]``, ``labels [B]`` (or ``[B, C]``), ``ref_emb [N, D]``,
``ref_labels [N]``; the loss is a scalar.

Example::

    loss_fn = SoftNearestNeighborLoss(temperature=1.0)
    loss = loss_fn(model(images), labels)
    loss.backward()

The fast kernel (class ids, no miner, no chunking, a GEMM similarity) is
:mod:`likewise.losses._kernels.soft_nearest_neighbor`; ``fast=False`` always runs
:func:`snn_rows` (the specification).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from likewise.losses._kernels import soft_nearest_neighbor as kernel
from likewise.losses._kernels.row_blocks import (
    check_chunk_and_miner,
    check_temperature,
    functional_row_loss,
    row_loss,
)
from likewise.losses.base import Batch, MetricLoss, masked_logsumexp
from likewise.similarity import check_metric


def snn_rows(logits: Tensor, pos: Tensor, neg: Tensor) -> tuple[Tensor, Tensor]:
    """Per query row ``i``: ``(log sum_A e^l - log sum_P e^l, 1)`` for an anchor with a positive,
    ``(0, 0)`` otherwise (``A = P | N``); the loss is the sum of the first over the sum of the
    second. ``logits [r, N]`` = similarity / temperature, ``pos`` / ``neg`` bool ``[r, N]``."""
    has_pos = pos.any(1)
    per_row = masked_logsumexp(logits, pos | neg, dim=1) - masked_logsumexp(logits, pos, dim=1)
    return torch.where(has_pos, per_row, torch.zeros_like(per_row)), has_pos


def soft_nearest_neighbor_loss(
    embeddings: Tensor,
    labels: Tensor,
    *,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
    temperature: float = 1.0,
    distance: str = "squared_euclidean",
    chunk_size: int | None = None,
) -> Tensor:
    """Soft nearest neighbour loss of a batch (formula in the module docstring); ``distance``:
    ``"squared_euclidean"``, ``"euclidean"``, ``"cosine"`` or ``"dot"``; ``chunk_size``: rows at a
    time (:mod:`likewise.losses._kernels.row_blocks`)."""
    check_metric(distance)
    args = (embeddings, labels, ref_emb, ref_labels, temperature, distance, chunk_size)
    return functional_row_loss(snn_rows, *args)


class SoftNearestNeighborLoss(MetricLoss):
    """Soft nearest neighbour loss (formula in the module docstring).

    ``distance``: ``"squared_euclidean"`` (default, the paper's ``s = -|x - y|^2``),
    ``"euclidean"``, ``"cosine"`` or ``"dot"``. ``chunk_size``: query rows at a time
    (:mod:`likewise.losses._kernels.row_blocks`). ``miner=``: the numerator runs over mined
    positives, the denominator over mined pairs.

    Stats: ``pos_pairs``, ``anchors_with_pos``, ``mean_pos_similarity``, ``mean_neg_similarity``.
    """

    def __init__(
        self,
        temperature: float = 1.0,
        distance: str = "squared_euclidean",
        chunk_size: int | None = None,
        miner: Any = None,
        *,
        fast: bool = True,
    ) -> None:
        super().__init__(miner=miner, fast=fast)
        self.temperature = check_temperature(temperature)
        self.distance = check_metric(distance)
        self.chunk_size = check_chunk_and_miner(chunk_size, miner)

    def compute(self, batch: Batch) -> Tensor:
        if self.fast and kernel.eligible(batch, self.miner, self.chunk_size, self.distance):
            loss, stats = kernel.snn_fast(batch, self.temperature, self.distance)
        else:
            masks = None if self.miner is None else self.pair_masks(batch)
            loss, stats = row_loss(batch, snn_rows, self.temperature, self.distance, self.chunk_size, masks)
        self._record(**stats)
        return loss


__all__ = ["SoftNearestNeighborLoss", "snn_rows", "soft_nearest_neighbor_loss"]
