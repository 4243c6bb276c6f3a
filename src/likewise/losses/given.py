"""Pairs and triplets given by the caller: pytorch-metric-learning's ``indices_tuple``.

``loss(embeddings, labels=None, indices_tuple=...)`` takes, as PML 2.x does,

* pairs ``(a1, p, a2, n)``: ``(a1[k], p[k])`` similar, ``(a2[k], n[k])`` dissimilar;
* triplets ``(a, p, n)``: ``(a[k], p[k])`` similar and ``(a[k], n[k])`` dissimilar.

Anchors index the queries (``embeddings``), the others the references (``ref_emb``,
the queries themselves when absent). When a tuple is given the labels are not used
(PML ignores them too) and may be ``None``.

The tuple becomes a three-state relation over the ``[B, N]`` query-reference pairs:
similar, dissimilar, or unknown (listed in neither). It is held as two count
matrices ``pos_w, neg_w [B, N]`` (how often each pair is listed; duplicates count, as
in PML's pair-based losses) whose supports are the usual boolean ``P, N`` masks, so
every mask-based loss and miner works on it unchanged and memory stays ``O(B * N)``:
no product of pairs is formed. Triplets are also kept as given, for the triplet loss.

PML's conversions are followed exactly: a loss on pairs given triplets uses
``(a, p, a, n)`` (the anchor-positive pair once per triplet); the triplet loss given
pairs uses every ``(a1[i], p[i], n[j])`` with ``a2[j] == a1[i]`` (weighted by the
counts, never listed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from likewise.mined import Triplets

INDICES_TUPLE_FORM = "indices_tuple must be pairs (a1, p, a2, n) or triplets (a, p, n) of 1-D integer tensors"


@dataclass(frozen=True)
class Given:
    """The caller's relation: counts of similar / dissimilar listings per pair ``[B, N]``."""

    pos_w: Tensor  # float [B, N], >= 0
    neg_w: Tensor  # float [B, N], >= 0
    triplets: Triplets | None  # the triplets as given (a triplets tuple), else None

    def masks(self) -> tuple[Tensor, Tensor]:
        """Boolean ``P, N`` ``[B, N]``: listed similar / dissimilar (unknown: neither)."""
        return self.pos_w > 0, self.neg_w > 0

    def rows(self, start: int, stop: int) -> Given:
        """The relation of queries ``start:stop`` (triplets are not row-sliced)."""
        return Given(self.pos_w[start:stop], self.neg_w[start:stop], None)


def _index_tensor(x: Any, name: str, device: torch.device) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{INDICES_TUPLE_FORM}; {name} is a {type(x).__name__}")
    if x.dim() != 1:
        raise ValueError(f"{INDICES_TUPLE_FORM}; {name} has shape {tuple(x.shape)}")
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"{INDICES_TUPLE_FORM}; {name} has dtype {x.dtype}")
    return x.to(device=device, dtype=torch.long)


def parse_indices_tuple(
    indices_tuple: Any, b: int, n: int, device: torch.device, dtype: torch.dtype, *, disjoint: bool = False
) -> Given:
    """Validate ``indices_tuple`` for ``b`` queries and ``n`` references; build the relation.

    ``disjoint=True`` (losses built on masks, where PML asserts it) refuses a pair listed
    both as similar and as dissimilar. Raises ``TypeError`` / ``ValueError`` on bad input.
    The checks cost one host synchronisation per call (input validation, as the finite
    check of the embeddings); building the relation costs none.
    """
    if not isinstance(indices_tuple, Sequence) or isinstance(indices_tuple, (str, bytes)):
        raise TypeError(f"{INDICES_TUPLE_FORM}, got {type(indices_tuple).__name__}")
    if len(indices_tuple) not in (3, 4):
        raise ValueError(f"{INDICES_TUPLE_FORM}, got a tuple of {len(indices_tuple)}")
    names = ("a", "p", "n") if len(indices_tuple) == 3 else ("a1", "p", "a2", "n")
    idx = [_index_tensor(x, name, device) for x, name in zip(indices_tuple, names, strict=True)]
    if len(idx) == 3:
        a, p, neg = idx
        if not (a.numel() == p.numel() == neg.numel()):
            raise ValueError(
                f"triplets (a, p, n) need equal lengths, got {a.numel()}, {p.numel()}, {neg.numel()}"
            )
        a1, p1, a2, n2 = a, p, a, neg
    else:
        a1, p1, a2, n2 = idx
        if a1.numel() != p1.numel() or a2.numel() != n2.numel():
            raise ValueError(
                f"pairs (a1, p, a2, n) need len(a1) == len(p) and len(a2) == len(n), got "
                f"{a1.numel()}, {p1.numel()}, {a2.numel()}, {n2.numel()}"
            )
    checks = [(a1, b, "anchor"), (a2, b, "anchor"), (p1, n, "positive"), (n2, n, "negative")]
    flags = [((x < 0) | (x >= bound)).any() for x, bound, _ in checks]
    # clamped for building: the range flags are read below, all checks in one synchronisation
    pos_w = torch.zeros(b, n, device=device, dtype=dtype)
    neg_w = torch.zeros(b, n, device=device, dtype=dtype)
    one = torch.ones((), device=device, dtype=dtype)
    pos_w.index_put_((a1.clamp(0, b - 1), p1.clamp(0, n - 1)), one.expand(a1.numel()), accumulate=True)
    neg_w.index_put_((a2.clamp(0, b - 1), n2.clamp(0, n - 1)), one.expand(a2.numel()), accumulate=True)
    overlap = ((pos_w > 0) & (neg_w > 0)).any() if disjoint else torch.zeros((), dtype=torch.bool)
    bad = torch.stack([*flags, overlap.to(device)]).tolist()
    for flag, (_, bound, what) in zip(bad, checks, strict=False):
        if flag:
            refs = "queries" if what == "anchor" else "references"
            raise ValueError(f"indices_tuple: {what} indices must lie in [0, {bound - 1}] (the {refs})")
    if bad[-1]:
        raise ValueError("indices_tuple lists a pair both as similar and as dissimilar")
    triplets = Triplets(*idx) if len(idx) == 3 else None
    return Given(pos_w, neg_w, triplets)


__all__ = ["Given", "INDICES_TUPLE_FORM", "parse_indices_tuple"]
