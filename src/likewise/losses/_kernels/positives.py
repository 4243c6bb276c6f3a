"""The positive pairs of class-id labels as an index list, without a ``[B, N]`` mask.

With class ids, the positives of a batch are few (``B x K`` for ``K`` samples per
class) while the negatives are nearly all of the ``B x N`` pairs. Losses that treat
negatives densely can then skip building boolean masks altogether: they evaluate the
negative term on every pair and correct it at the few positive and self pairs.

The list's length depends on the labels, so building it waits for the device on a GPU
(``repeat_interleave`` / ``masked_select`` must size their outputs): the losses use these lists
on the CPU only (their eligibility checks) and boolean masks elsewhere.

Cost: one ``argsort`` of the reference labels and two ``searchsorted`` calls,
``O((B + N) log N + |P|)`` time and ``O(|P|)`` memory. Gathers use ``index_select``: on a
CPU, advanced indexing (``t[idx]``) of a few thousand entries wakes the thread pool and costs
ten times more.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from likewise import entries
from likewise.losses.base import Batch


def positive_pairs(
    labels: Tensor, ref_labels: Tensor | None = None, self_index: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """``(rows, cols)`` long ``[P]``: every query-reference pair with the same class id.

    ``labels [B]`` and ``ref_labels [N]`` are class ids (``ref_labels=None``: the
    references are the queries, and ``self_index`` defaults to ``arange(B)``).
    ``self_index [B]`` gives each query's own column (``-1`` for none); those pairs are
    left out. Pairs come sorted by row.
    """
    ref = labels if ref_labels is None else ref_labels
    if ref_labels is None and self_index is None:
        self_index = torch.arange(labels.shape[0], device=labels.device)
    sorted_ref, order = torch.sort(ref, stable=True)
    lo = torch.searchsorted(sorted_ref, labels, right=False)
    hi = torch.searchsorted(sorted_ref, labels, right=True)
    counts = hi - lo
    ends = torch.cumsum(counts, 0)
    # row i repeated counts[i] times (the one-argument repeat_interleave: 5-14 us at B = 1,024-4,096
    # on one core, faster than a bincount + cumsum, and the host reads no count)
    rows = torch.repeat_interleave(counts)
    # position in the sorted references: lo[row] + rank within the row
    first = (ends - counts).sub_(lo)
    at = torch.arange(rows.shape[0], device=labels.device).sub_(first.index_select(0, rows))
    cols = order.index_select(0, at)
    if self_index is not None:
        keep = cols != self_index.index_select(0, rows)
        rows, cols = torch.masked_select(rows, keep), torch.masked_select(cols, keep)
    return rows, cols


def self_pairs(
    self_index: Tensor | None, b: int, same_set: bool, device: torch.device
) -> tuple[Tensor, Tensor]:
    """``(rows, cols)`` of the self pairs: the diagonal when the references are the queries."""
    if same_set and self_index is None:
        idx = torch.arange(b, device=device)
        return idx, idx
    if self_index is None:
        empty = torch.zeros(0, dtype=torch.long, device=device)
        return empty, empty
    rows = (self_index >= 0).nonzero().squeeze(1)
    return rows, self_index[rows].long()


def batch_pairs(batch: Batch) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """The positive pairs and the self pairs of a batch with class-id labels."""
    labels = batch.labels
    assert labels is not None and labels.dim() == 1
    pairs = positive_pairs(labels, None if batch.same_set else batch.ref_labels, batch.self_index)
    selves = self_pairs(batch.self_index, labels.shape[0], batch.same_set, labels.device)
    return pairs, selves


def index_lists_eligible(batch: Batch, miner: Any) -> bool:
    """The positives of ``batch`` may be index lists (:func:`~.positives.batch_pairs`): class-id
    labels ``[B]``, no miner, no relevance matrix, no ``indices_tuple``, on the CPU."""
    return (
        batch.embeddings.device.type == "cpu"
        and miner is None
        and batch.given is None
        and batch.relevance is None
        and batch.labels is not None
        and batch.labels.dim() == 1
    )


def pair_means(
    matrix: Tensor, pairs: tuple[Tensor, Tensor], selves: tuple[Tensor, Tensor]
) -> tuple[Tensor, Tensor]:
    """Means of ``matrix`` over the positive pairs and over the negatives (every other pair but
    the self pairs), from the index lists: no mask. float64 scalar tensors, so that nothing
    waits for the device until they are read (row sums in the matrix's dtype, added in float64:
    ``sum(dtype=float64)`` would first copy the whole ``[B, N]`` matrix to float64)."""
    b, n = matrix.shape
    pos_sum = entries.take(matrix, *pairs).sum(dtype=torch.float64)
    out_sum = pos_sum + entries.take(matrix, *selves).sum(dtype=torch.float64)
    n_pos = pairs[0].numel()
    n_neg = b * n - n_pos - selves[0].numel()
    return pos_sum / max(1, n_pos), (matrix.sum(1).sum(dtype=torch.float64) - out_sum) / max(1, n_neg)


__all__ = ["batch_pairs", "index_lists_eligible", "pair_means", "positive_pairs", "self_pairs"]
