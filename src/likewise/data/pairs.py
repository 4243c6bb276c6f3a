"""Pairs and triplets files: supervision without class labels.

* pairs file, CSV with header ``a,b,similar``: one pair per row, ``similar`` 1 (similar) or
  0 (dissimilar);
* triplets file, CSV with header ``a,p,n``: ``a`` similar to ``p`` and dissimilar to ``n``.

``a``/``b``/``p``/``n`` are row indices of a features file (0-based) or, for an image
folder, image paths relative to the folder. Pairs are unordered. Any pair not listed is
*unknown* (neither similar nor dissimilar): the relation has three states.

:class:`PairRelation` answers, for a batch of item ids, which of its pairs are known similar
or dissimilar, as pytorch-metric-learning's ``indices_tuple`` ``(a1, p, a2, n)`` (both
orders of each pair). With ``closure=True`` similar pairs are closed transitively: items
connected by similar pairs form one group (connected components, scipy), every two members
are similar, and a dissimilar pair makes the two groups dissimilar.

Bad files raise one-line ``ValueError`` naming the file and the row (row 1 = first data
row): an index out of range, an unknown path, a pair of an item with itself, ``similar``
not 0/1, an empty file, missing columns, a pair listed both similar and dissimilar.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

PAIR_COLUMNS = ("a", "b", "similar")
TRIPLET_COLUMNS = ("a", "p", "n")


def _read_rows(path: Path, columns: Sequence[str]) -> list[tuple[int, dict[str, str]]]:
    if not path.is_file():
        raise FileNotFoundError(2, "No such pairs file", str(path))
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            if not header:
                raise ValueError(f"{path}: empty file (expected a header {','.join(columns)})")
            missing = [c for c in columns if c not in header]
            if missing:
                raise ValueError(
                    f"{path}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                    f"(header {','.join(header)}; expected {','.join(columns)})"
                )
            reader.fieldnames = header
            rows = [
                (i, row)
                for i, row in enumerate(reader, start=1)
                if any((v or "").strip() for v in row.values())
            ]
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UTF-8 text file") from None
    if not rows:
        raise ValueError(f"{path}: empty file (a header but no rows)")
    return rows


def _item(
    value: str | None, path: Path, row: int, column: str, n_items: int, names: dict[str, int] | None
) -> int:
    text = (value or "").strip()
    if not text:
        raise ValueError(f"{path}: row {row}: column {column} is empty")
    if names is not None:
        if text not in names:
            raise ValueError(f"{path}: row {row}: {column}={text!r} is not an image of the folder")
        return names[text]
    try:
        i = int(text)
    except ValueError:
        raise ValueError(f"{path}: row {row}: {column}={text!r} is not a row index") from None
    if not 0 <= i < n_items:
        raise ValueError(f"{path}: row {row}: {column}={i} is out of range [0, {n_items - 1}]")
    return i


def read_pairs(
    path: str | Path, n_items: int, names: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(a, b, similar)`` int64 / int64 / bool arrays of a pairs file.

    ``n_items``: rows of the features; ``names``: the image paths of the rows (an image
    folder) when ``a``/``b`` are paths.
    """
    path = Path(path)
    lookup = None if names is None else {n: i for i, n in enumerate(names)}
    a, b, s = [], [], []
    for row, rec in _read_rows(path, PAIR_COLUMNS):
        i = _item(rec.get("a"), path, row, "a", n_items, lookup)
        j = _item(rec.get("b"), path, row, "b", n_items, lookup)
        if i == j:
            raise ValueError(f"{path}: row {row}: a pair of an item with itself ({rec['a'].strip()})")
        flag = (rec.get("similar") or "").strip().lower()
        if flag not in ("0", "1", "true", "false"):
            raise ValueError(f"{path}: row {row}: similar={flag!r} must be 0 or 1")
        a.append(i)
        b.append(j)
        s.append(flag in ("1", "true"))
    return np.asarray(a, np.int64), np.asarray(b, np.int64), np.asarray(s, bool)


def read_triplets(
    path: str | Path, n_items: int, names: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(a, p, n)`` int64 arrays of a triplets file (``a`` similar to ``p``, dissimilar to ``n``)."""
    path = Path(path)
    lookup = None if names is None else {n: i for i, n in enumerate(names)}
    out: list[list[int]] = [[], [], []]
    for row, rec in _read_rows(path, TRIPLET_COLUMNS):
        items = [_item(rec.get(c), path, row, c, n_items, lookup) for c in TRIPLET_COLUMNS]
        if len(set(items)) < 3:
            raise ValueError(f"{path}: row {row}: a, p and n must be three different items, got {items}")
        for k in range(3):
            out[k].append(items[k])
    return tuple(np.asarray(c, np.int64) for c in out)  # type: ignore[return-value]


def triplets_as_pairs(
    a: np.ndarray, p: np.ndarray, n: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pairs of triplets: ``(a, p)`` similar and ``(a, n)`` dissimilar."""
    return (
        np.concatenate([a, a]),
        np.concatenate([p, n]),
        np.concatenate([np.ones(len(a), bool), np.zeros(len(a), bool)]),
    )


def similar_groups(n_items: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Group id of every item: the connected components of the similar pairs ``(a, b)``."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(n_items, n_items))
    _, groups = connected_components(graph, directed=False)
    return groups.astype(np.int64)


@dataclass
class PairRelation:
    """Known similar / dissimilar pairs over ``n_items`` items (unknown otherwise).

    Held as sorted keys of unordered node pairs; a node is the item itself, or its group of
    similar items with ``closure``. ``O(pairs)`` memory; a batch lookup is ``O(B^2 log pairs)``.
    """

    n_items: int
    node: np.ndarray  # [n_items] node of every item (itself, or its similar group)
    similar_keys: np.ndarray  # sorted int64 keys lo * n + hi of similar node pairs
    dissimilar_keys: np.ndarray  # sorted int64 keys of dissimilar node pairs
    closure: bool

    @classmethod
    def from_pairs(
        cls,
        n_items: int,
        a: np.ndarray,
        b: np.ndarray,
        similar: np.ndarray,
        *,
        closure: bool = False,
        source: str = "pairs",
    ) -> PairRelation:
        """The relation of pairs ``(a[k], b[k])`` (``similar[k]``); ``ValueError`` naming ``source``
        and the row of the first pair that is listed (or, with ``closure``, implied) both ways."""
        node = similar_groups(n_items, a[similar], b[similar]) if closure else np.arange(n_items)
        u, v = node[a], node[b]
        keys = np.minimum(u, v) * n_items + np.maximum(u, v)
        sim_keys = np.unique(keys[similar] if not closure else np.zeros(0, np.int64))
        dis_keys = np.unique(keys[~similar])
        conflict = ~similar & (np.isin(keys, sim_keys) | (u == v))
        if conflict.any():
            k = int(np.flatnonzero(conflict)[0])
            how = "connected by similar pairs (closure)" if closure else "also listed as similar"
            raise ValueError(
                f"{source}: row {k + 1}: items {a[k]} and {b[k]} are listed as dissimilar but {how}"
            )
        return cls(n_items, node.astype(np.int64), sim_keys, dis_keys, closure)

    def batch_tuple(self, ids: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """PML's ``(a1, p, a2, n)`` of the known pairs among the items ``ids [B]`` (batch
        positions; both orders of each pair; an item met twice is similar to its copy)."""
        device = ids.device
        idx = ids.detach().cpu().numpy().astype(np.int64)
        node = self.node[idx]
        lo = np.minimum(node[:, None], node[None, :])
        hi = np.maximum(node[:, None], node[None, :])
        keys = lo * self.n_items + hi
        same = node[:, None] == node[None, :]
        off_diag = ~np.eye(len(idx), dtype=bool)
        sim = (same | _member(keys, self.similar_keys)) & off_diag
        dis = _member(keys, self.dissimilar_keys) & ~same
        a1, p = np.nonzero(sim)
        a2, n = np.nonzero(dis)
        return tuple(torch.as_tensor(t, dtype=torch.long, device=device) for t in (a1, p, a2, n))  # type: ignore[return-value]


def _member(keys: np.ndarray, table: np.ndarray) -> np.ndarray:
    if table.size == 0:
        return np.zeros(keys.shape, bool)
    at = np.searchsorted(table, keys).clip(max=table.size - 1)
    return table[at] == keys


__all__ = [
    "PAIR_COLUMNS",
    "TRIPLET_COLUMNS",
    "PairRelation",
    "read_pairs",
    "read_triplets",
    "similar_groups",
    "triplets_as_pairs",
]
