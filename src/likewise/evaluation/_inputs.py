"""Input validation shared by the evaluation functions.

Every public evaluation function accepts NumPy arrays and torch tensors (CPU or
GPU). Embeddings become floating tensors ``[n, D]`` (float16/bfloat16 are
promoted to float32), labels become int64 class codes ``[n]``; bad input raises a
``ValueError`` / ``TypeError`` naming the argument and what was expected.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor


def _describe(x: Any) -> str:
    return type(x).__name__


def as_tensor(x: Any, name: str, device: torch.device | str | None = None) -> Tensor:
    """NumPy array / tensor / nested list -> tensor (no copy when already a tensor on ``device``)."""
    if isinstance(x, Tensor):
        t = x.detach()
    elif isinstance(x, np.ndarray | list | tuple):
        arr = np.asarray(x)
        if arr.dtype == object:
            raise TypeError(f"{name} must be numeric, got an array of Python objects")
        if arr.dtype.kind in "USO":
            raise TypeError(f"{name} must be numeric, got strings")
        t = torch.from_numpy(np.ascontiguousarray(arr))
    else:
        raise TypeError(f"{name} must be a NumPy array or a torch tensor, got {_describe(x)}")
    if device is not None:
        t = t.to(device)
    return t


def embeddings_tensor(
    x: Any, name: str = "embeddings", device: torch.device | str | None = None, min_rows: int = 1
) -> Tensor:
    """Validate a 2-D finite floating matrix ``[n, D]``; returns float32 (or float64) tensor."""
    t = as_tensor(x, name, device)
    if t.dim() != 2:
        raise ValueError(f"{name} must be a 2-D array [n, D], got shape {tuple(t.shape)}")
    if t.shape[0] < min_rows:
        raise ValueError(f"{name} needs at least {min_rows} row(s), got {t.shape[0]}")
    if t.shape[1] < 1:
        raise ValueError(f"{name} must have at least one column, got shape {tuple(t.shape)}")
    if t.dtype == torch.bool or t.is_complex():
        raise TypeError(f"{name} must be real numbers, got dtype {t.dtype}")
    if t.dtype != torch.float64:
        t = t.to(torch.float32)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or infinite values")
    return t


def labels_array(y: Any, name: str = "labels", n: int | None = None) -> np.ndarray:
    """Validate 1-D labels (ints, bools, strings, or integral floats) as a NumPy array."""
    if isinstance(y, Tensor):
        arr = y.detach().cpu().numpy()
    elif isinstance(y, np.ndarray | list | tuple):
        arr = np.asarray(y)
    else:
        raise TypeError(f"{name} must be a NumPy array or a torch tensor, got {_describe(y)}")
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one class id per row), got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries but there are {n} embeddings")
    if arr.dtype == object:
        raise TypeError(f"{name} must be integers or strings, got Python objects")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must be class ids (integers); got non-integral floats")
    elif arr.dtype.kind not in "iubUS":
        raise TypeError(f"{name} must be class ids (integers or strings), got dtype {arr.dtype}")
    return arr


def encode_labels(*labels: np.ndarray) -> list[np.ndarray]:
    """Jointly map several label arrays to contiguous int64 codes ``0..C-1`` (same label, same code)."""
    kinds = {a.dtype.kind in "US" for a in labels}
    if len(kinds) > 1:
        raise TypeError("labels and ref_labels must both be numbers or both be strings")
    joint = np.concatenate(labels)
    _, codes = np.unique(joint, return_inverse=True)
    codes = codes.reshape(-1).astype(np.int64)
    out, start = [], 0
    for a in labels:
        out.append(codes[start : start + a.shape[0]])
        start += a.shape[0]
    return out


def to_numpy(x: Any, name: str) -> np.ndarray:
    """Tensor/array -> NumPy array (on CPU)."""
    if isinstance(x, Tensor):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray | list | tuple):
        arr = np.asarray(x)
        if arr.dtype == object:
            raise TypeError(f"{name} must be numeric, got Python objects")
        return arr
    raise TypeError(f"{name} must be a NumPy array or a torch tensor, got {_describe(x)}")


def scores_array(x: Any, name: str = "scores") -> np.ndarray:
    """1-D finite float64 scores."""
    arr = to_numpy(x, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def binary_array(x: Any, name: str, n: int) -> np.ndarray:
    """1-D 0/1 (or bool) array of length ``n`` -> bool."""
    arr = to_numpy(x, name)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} entries but scores has {n}")
    if arr.dtype != bool:
        if arr.dtype.kind not in "fiu" or not np.all((arr == 0) | (arr == 1)):
            raise ValueError(f"{name} must be boolean (or 0/1)")
        arr = arr.astype(bool)
    return arr


def resolve_device(device: torch.device | str | None, *tensors: Any) -> torch.device:
    """``device`` if given, else the device of the first tensor argument, else CPU."""
    if device is not None:
        return torch.device(device)
    for t in tensors:
        if isinstance(t, Tensor):
            return t.device
    return torch.device("cpu")


def check_metric_name(metric: str) -> str:
    from likewise.similarity import check_metric

    if not isinstance(metric, str) and type(metric).__module__.startswith("pytorch_metric_learning"):
        return check_metric(metric, "metric")  # names the string to pass instead
    if not isinstance(metric, str):
        raise TypeError(f"metric must be a string, got {_describe(metric)}")
    return check_metric(metric, "metric")
