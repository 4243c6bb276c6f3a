"""The plain path shared by NT-Xent, SupCon and soft nearest neighbour: a per-row rule on
``(S, P, N)``, evaluated on all query rows at once or ``chunk_size`` rows at a time.

A *row rule* (``ntxent_rows``, ``supcon_rows``, ``snn_rows`` in the loss modules) maps the
logits ``l = sim / t`` ``[r, N]`` of some query rows and their masks ``pos`` / ``neg`` bool
``[r, N]`` to a loss sum and a weight per row (``[r]`` each); the loss is
``sum(loss sums) / sum(weights)`` (zero, in the graph, when the weights are all zero).

``chunk_size=c`` runs the rule ``c`` query rows at a time with recomputation in backward
(:func:`likewise.losses._kernels.chunking.map_row_blocks`), so at most ``c x N`` similarities
are alive at once; the result equals the unchunked one. A miner needs the whole similarity
matrix, so ``chunk_size`` and ``miner`` are exclusive.

Statistics (tensors, read lazily): ``pos_pairs``, ``anchors_with_pos`` (fraction of queries
with a positive), ``mean_pos_similarity`` / ``mean_neg_similarity`` (before the temperature).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from likewise.losses._kernels.chunking import check_chunk_size, map_row_blocks
from likewise.losses._kernels.row_softmax import scaled_factors
from likewise.losses.base import Batch, check_batch
from likewise.similarity import pairwise_similarity

#: (logits [r, N], pos [r, N], neg [r, N]) -> (loss sum [r], weight [r])
RowRule = Callable[[Tensor, Tensor, Tensor], tuple[Tensor, Tensor]]


def check_temperature(temperature: Any) -> float:
    """A finite number > 0 (raises TypeError / ValueError otherwise)."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature must be a positive number, got {type(temperature).__name__}")
    value = float(temperature)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return value


def check_chunk_and_miner(chunk_size: int | None, miner: Any) -> int | None:
    """A valid ``chunk_size``, not combined with a miner."""
    chunk_size = check_chunk_size(chunk_size)
    if chunk_size is not None and miner is not None:
        raise ValueError(
            "chunk_size and miner cannot be combined: a miner needs the whole [B, N] similarity "
            "matrix, so chunking would save nothing; pass one or the other"
        )
    return chunk_size


def scaled_similarity(x: Tensor, y: Tensor | None, distance: str, temperature: float) -> Tensor:
    """``sim(x, y) / temperature`` ``[B, N]`` (``y=None``: ``y = x``): one GEMM for cosine, dot and
    squared Euclidean (:func:`.row_softmax.scaled_factors`), else ``pairwise_similarity / t``."""
    if distance in ("cosine", "dot", "squared_euclidean"):
        xa, ya = scaled_factors(x, y, distance, temperature)
        return xa @ ya.T
    return pairwise_similarity(x, x if y is None else y, distance).div_(temperature)


def _block(batch: Batch, rule: RowRule, temperature: float, distance: str, masks: Any) -> Tensor:
    """Rows of ``batch`` -> ``[r, 6]``: loss sum, weight, #pos, #neg, pos-sim sum, neg-sim sum
    (only the first column carries a gradient; the others are for the statistics)."""
    logits = scaled_similarity(
        batch.embeddings, None if batch.same_set else batch.ref_emb, distance, temperature
    )
    pos, neg = batch.masks() if masks is None else masks
    loss_sum, weight = rule(logits, pos, neg)
    with torch.no_grad():
        zero = logits.new_zeros(())
        extra = [
            weight.to(logits.dtype),
            pos.sum(1).to(logits.dtype),
            neg.sum(1).to(logits.dtype),
            torch.where(pos, logits, zero).sum(1) * temperature,
            torch.where(neg, logits, zero).sum(1) * temperature,
        ]
    return torch.stack([loss_sum, *extra], dim=1)


def row_loss(
    batch: Batch,
    rule: RowRule,
    temperature: float,
    distance: str,
    chunk_size: int | None,
    masks: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """``sum(loss sums) / sum(weights)`` of ``rule`` over all query rows, and the statistics.

    ``masks``: ``(pos, neg)`` of the whole batch (a miner's); ``None``: each row block's own.
    """
    if masks is not None or chunk_size is None:
        rows = _block(batch, rule, temperature, distance, masks)
    else:
        rows = map_row_blocks(lambda b: _block(b, rule, temperature, distance, None), batch, chunk_size)
    totals = rows.detach().double().sum(0)
    stats = {
        "pos_pairs": totals[2],
        "anchors_with_pos": (rows[:, 2].detach() > 0).double().mean(),
        "mean_pos_similarity": totals[4] / totals[2].clamp_min(1),
        "mean_neg_similarity": totals[5] / totals[3].clamp_min(1),
    }
    return rows[:, 0].sum() / totals[1].clamp_min(1).to(rows.dtype), stats


def functional_row_loss(
    rule: RowRule,
    embeddings: Tensor,
    labels: Tensor | None,
    ref_emb: Tensor | None,
    ref_labels: Tensor | None,
    temperature: float,
    distance: str,
    chunk_size: int | None,
) -> Tensor:
    """The loss of ``rule`` on a validated call (the functional forms ``ntxent_loss`` & co.)."""
    batch = check_batch(embeddings, labels, ref_emb, ref_labels)
    loss, _ = row_loss(batch, rule, check_temperature(temperature), distance, check_chunk_size(chunk_size))
    return loss


__all__ = [
    "RowRule",
    "check_chunk_and_miner",
    "check_temperature",
    "functional_row_loss",
    "row_loss",
    "scaled_similarity",
]
