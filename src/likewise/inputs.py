"""Converting the arrays users pass (NumPy arrays, torch tensors on any device, lists) into
validated NumPy arrays: the one place evaluation, the index, matching and the commands do it.

Nothing here imports torch: a tensor is recognised by its ``detach`` / ``cpu`` methods, so the
index and its commands stay light. Bad input raises a ``TypeError`` (wrong kind of object or
dtype) or ``ValueError`` (wrong shape, non-finite values) naming the argument.
(:mod:`likewise.evaluation._inputs` builds the evaluation's tensors on top of these.)
"""

from __future__ import annotations

from typing import Any

import numpy as np


def to_numpy(x: Any, name: str) -> np.ndarray:
    """A torch tensor (any device, detached), NumPy array or list as a NumPy array.

    ``TypeError`` for any other object and for arrays of Python objects.
    """
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch
        return x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray | list | tuple):
        raise TypeError(f"{name} must be a NumPy array or a torch tensor, got {type(x).__name__}")
    arr = np.asarray(x)
    if arr.dtype == object:
        raise TypeError(f"{name} must be numbers (or strings for labels), got Python objects")
    return arr


def as_matrix(x: Any, name: str, dim: int | None = None) -> np.ndarray:
    """C-contiguous finite float32 ``[n, dim]`` (a new array; ``dim`` checked when given)."""
    arr = to_numpy(x, name)
    if arr.dtype.kind not in "fiu" or arr.dtype == np.bool_:
        raise TypeError(f"{name} must be real numbers, got dtype {arr.dtype}")
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [n, dim], got shape {arr.shape}")
    if dim is not None and arr.shape[1] != dim:
        raise ValueError(f"{name} have {arr.shape[1]} dimensions but the index has {dim}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty (0 rows)")
    out = np.array(arr, dtype=np.float32, order="C", copy=True)
    if not np.isfinite(out).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return out


def labels_array(y: Any, name: str = "labels", n: int | None = None, rows: str = "embeddings") -> np.ndarray:
    """1-D class labels as given (integers, bools, strings, or integral floats); ``n``: the
    expected length (``rows`` names what it counts in the message)."""
    arr = to_numpy(y, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one label per row), got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries but there are {n} {rows}")
    if arr.dtype.kind == "f":
        if not (np.isfinite(arr).all() and np.all(arr == np.round(arr))):
            raise ValueError(f"{name} must be class ids (integers or strings); got non-integral floats")
    elif arr.dtype.kind not in "iubUS":
        raise TypeError(f"{name} must be class ids (integers or strings), got dtype {arr.dtype}")
    return arr


def as_labels(y: Any, name: str, n: int | None = None) -> np.ndarray:
    """:func:`labels_array` of ``n`` stored vectors, as int64 or str (the index's label types)."""
    arr = labels_array(y, name, n, rows="vectors")
    return arr.astype(str) if arr.dtype.kind in "US" else arr.astype(np.int64)


def integer_array(x: Any, name: str) -> np.ndarray:
    """Integers (ids) of any shape as int64 (``TypeError`` for other dtypes, ``ValueError`` for
    values beyond int64)."""
    arr = to_numpy(x, name)
    if arr.dtype.kind not in "iu" or arr.dtype == np.bool_:
        raise TypeError(f"{name} must be integers, got dtype {arr.dtype}")
    if arr.dtype == np.uint64 and arr.size and arr.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} must fit in int64")
    return arr.astype(np.int64)


__all__ = ["as_labels", "as_matrix", "integer_array", "labels_array", "to_numpy"]
