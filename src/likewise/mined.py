"""What a miner hands to a loss: pair masks or triplet indices.

Two containers, both of at most O(B * N) entries:

* :class:`PairMask` — boolean ``pos`` / ``neg`` masks ``[B, N]`` over the
  similarity matrix; pair-based losses restrict their sums to them.
* :class:`Triplets` — index tensors ``anchor, positive, negative`` of equal
  length ``T`` (rows index the queries, ``positive``/``negative`` index refs).

A loss that works on pairs converts triplets to pair masks with
:func:`to_pair_mask`; a triplet loss given a :class:`PairMask` forms every
triplet ``(a, p, n)`` with ``pos[a, p]`` and ``neg[a, n]`` (densely, never
materialised).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class PairMask:
    pos: Tensor  # bool [B, N]
    neg: Tensor  # bool [B, N]

    def __post_init__(self) -> None:
        if self.pos.shape != self.neg.shape or self.pos.dim() != 2:
            raise ValueError(
                f"PairMask needs two bool [B, N] masks of one shape, got "
                f"{tuple(self.pos.shape)} and {tuple(self.neg.shape)}"
            )


@dataclass(frozen=True)
class Triplets:
    anchor: Tensor  # long [T]
    positive: Tensor  # long [T]
    negative: Tensor  # long [T]

    def __post_init__(self) -> None:
        n = self.anchor.shape
        if self.positive.shape != n or self.negative.shape != n or len(n) != 1:
            raise ValueError("Triplets needs three 1-D index tensors of equal length")

    def __len__(self) -> int:
        return int(self.anchor.numel())


Mined = PairMask | Triplets


def to_pair_mask(mined: Mined, shape: tuple[int, int], device: torch.device) -> PairMask:
    """Pair masks covering the pairs a miner selected (triplets -> (a,p) and (a,n) pairs)."""
    if isinstance(mined, PairMask):
        if tuple(mined.pos.shape) != tuple(shape):
            raise ValueError(f"miner returned masks of shape {tuple(mined.pos.shape)}, expected {shape}")
        return mined
    if isinstance(mined, Triplets):
        pos = torch.zeros(shape, dtype=torch.bool, device=device)
        neg = torch.zeros(shape, dtype=torch.bool, device=device)
        pos[mined.anchor, mined.positive] = True
        neg[mined.anchor, mined.negative] = True
        return PairMask(pos, neg)
    raise TypeError(f"a miner must return PairMask or Triplets, got {type(mined).__name__}")
