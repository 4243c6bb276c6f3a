"""Read and write scattered entries ``(rows[k], cols[k])`` of a matrix through its flat view.

``m[rows, cols]`` and ``m[rows, cols] = v`` (advanced indexing) go through PyTorch's generic
index kernels, which on a CPU wake the whole thread pool even for a few thousand entries:
about 50-250 us each with an idle (passive) OpenMP pool, against 4-8 us for the 1-D
``index_select`` / ``index_copy_`` / ``index_fill_`` / ``index_add_`` used here on
``rows * N + cols``. The losses' fast paths touch their positive and self pairs this way
several times per call.

Writes need a contiguous matrix (they go to its flat view; a ``ValueError`` otherwise);
reads take any. Indices are integer ``[K]``.
"""

from __future__ import annotations

from torch import Tensor


def flat_index(rows: Tensor, cols: Tensor, m: Tensor) -> Tensor:
    """``rows * N + cols``: the positions of the entries in ``m.view(-1)`` (``m [B, N]``)."""
    return rows.long() * m.shape[1] + cols


def _flat(m: Tensor) -> Tensor:
    if not m.is_contiguous():
        raise ValueError("entries: writes need a contiguous matrix")
    return m.view(-1)


def take(m: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """``m[rows, cols]`` ``[K]``."""
    return m.reshape(-1).index_select(0, flat_index(rows, cols, m))


def put_(m: Tensor, rows: Tensor, cols: Tensor, values: Tensor) -> Tensor:
    """``m[rows, cols] = values`` in place (distinct entries); returns ``m``."""
    _flat(m).index_copy_(0, flat_index(rows, cols, m), values.to(m.dtype))
    return m


def fill_(m: Tensor, rows: Tensor, cols: Tensor, value: float) -> Tensor:
    """``m[rows, cols] = value`` in place; returns ``m``."""
    _flat(m).index_fill_(0, flat_index(rows, cols, m), value)
    return m


def add_(m: Tensor, rows: Tensor, cols: Tensor, values: Tensor) -> Tensor:
    """``m[rows, cols] += values`` in place, repeated entries accumulated; returns ``m``."""
    _flat(m).index_add_(0, flat_index(rows, cols, m), values.to(m.dtype))
    return m


__all__ = ["add_", "fill_", "flat_index", "put_", "take"]
