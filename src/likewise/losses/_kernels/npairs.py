"""The N-pairs selection from the labels alone, and when it may run.

:func:`likewise.losses.npairs.npairs_select` (the specification) picks, for each class, its
first sample with a positive and that sample's first positive, from the ``[B, B]`` positive
mask. Without a miner every sample of a class present twice has a positive, so the pairs are
the first and second sample of each such class: one sort of the labels, nothing ``B x B``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def eligible(miner: Any) -> bool:
    """Without a miner (with one, the mined positive mask decides)."""
    return miner is None


def npairs_select_classes(labels: Tensor) -> tuple[Tensor, Tensor]:
    """``npairs_select`` without a miner, from the class ids ``[B]`` alone in ``O(B log B)``.

    The first and second sample (by index) of every class present at least twice, ordered by
    anchor index; returns two long index tensors ``[K]``.
    """
    sorted_labels, order = torch.sort(labels, stable=True)
    starts = torch.ones_like(sorted_labels, dtype=torch.bool)
    starts[1:] = sorted_labels[1:] != sorted_labels[:-1]
    first = starts.nonzero().squeeze(1)
    has_second = first + 1 < labels.shape[0]
    has_second[has_second.clone()] = ~starts[first[has_second] + 1]
    anchors, positives = order[first[has_second]], order[first[has_second] + 1]
    by_anchor = torch.argsort(anchors)
    return anchors[by_anchor], positives[by_anchor]


__all__ = ["eligible", "npairs_select_classes"]
