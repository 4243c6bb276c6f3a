"""What a gallery store does: durable adds and deletes of labelled vectors, and k-NN search.

Scores follow :mod:`likewise.index`: similarities, larger is closer — cosine (of
L2-normalised vectors), dot product, or the negated Euclidean distance.

Labels are all integers or all strings in one gallery (as in :class:`likewise.Index`);
metadata is an optional JSON object per item.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np


class Hit(NamedTuple):
    """One neighbour: its ``id``, ``label``, ``score`` and ``metadata``."""

    id: int
    label: Any
    score: float
    metadata: dict[str, Any] | None


class Conflict(ValueError):
    """A write that contradicts the gallery (an id already used, a label of the other kind): HTTP 409."""


class GalleryStore(ABC):
    """A gallery of ``dim``-dimensional vectors compared with ``metric``."""

    dim: int
    metric: str

    @abstractmethod
    def __len__(self) -> int:
        """Number of items."""

    @abstractmethod
    def add(
        self,
        vectors: np.ndarray,
        labels: Sequence[Any],
        metadata: Sequence[dict[str, Any] | None],
        ids: Sequence[int | None],
    ) -> list[int]:
        """Store the items (``ids`` entries ``None`` get new ids); durable when it returns."""

    @abstractmethod
    def remove(self, item_id: int) -> bool:
        """Delete one item, durably; ``False`` if there is no such id."""

    @abstractmethod
    def search(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        """The ``min(k, len(self))`` nearest items of each query, best first."""

    def close(self) -> None:  # noqa: B027 - optional
        """Flush and release (a clean shutdown)."""

    def describe(self) -> str:
        return type(self).__name__


def check_label_kind(labels: Sequence[Any], existing: str | None) -> str:
    """``"int"`` or ``"str"``: the kind of ``labels``, which must agree with each other and with
    the gallery's ``existing`` kind (``None`` for an empty gallery); :class:`Conflict` otherwise."""
    kinds = {"int" if isinstance(label, int | np.integer) else "str" for label in labels}
    if len(kinds) > 1:
        raise Conflict("labels in one gallery are all integers or all strings; this request mixes them")
    kind = kinds.pop()
    if existing is not None and kind != existing:
        words = {"int": "integers", "str": "strings"}
        raise Conflict(f"labels are {words[kind]} but the gallery holds {words[existing]}")
    return kind


def new_ids(ids: Sequence[int | None], next_id: int, exists: Any) -> tuple[list[int], int]:
    """Fill ``None`` ids from ``next_id`` on; :class:`Conflict` for a repeated or existing id.

    ``exists(list_of_ids) -> list_of_existing_ids``. Returns the ids and the next free id.
    """
    given = [i for i in ids if i is not None]
    if len(set(given)) != len(given):
        raise Conflict("the same id appears twice in this request")
    taken = exists(given) if given else []
    if taken:
        raise Conflict(f"ids already in the gallery: {sorted(taken)[:5]}")
    nxt = max([next_id, *[i + 1 for i in given]])
    out = []
    for i in ids:
        if i is None:
            i, nxt = nxt, nxt + 1
        out.append(int(i))
    return out, nxt
