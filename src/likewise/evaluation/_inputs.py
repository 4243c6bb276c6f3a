"""Input validation shared by the evaluation functions.

Every public evaluation function accepts NumPy arrays and torch tensors (CPU or
GPU). Embeddings become floating tensors ``[n, D]`` (float16/bfloat16 are
promoted to float32), labels become int64 class codes ``[n]``; bad input raises a
``ValueError`` / ``TypeError`` naming the argument and what was expected.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from likewise.inputs import to_numpy


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
    """``device`` if given (checked: it must exist here), else the device of the first tensor
    argument, else CPU."""
    if device is None:
        for t in tensors:
            if isinstance(t, Tensor):
                return t.device
        return torch.device("cpu")
    if isinstance(device, bool) or not isinstance(device, str | int | torch.device):
        raise TypeError(f"device must be a string such as 'cpu' or 'cuda', got {_describe(device)}")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ValueError(f"device={device!r} is not a torch device: {exc}") from exc
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r} requested but CUDA is not available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(
                f"device={device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist"
            )
        return dev
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"device={device!r} requested but MPS is not available")
        return dev
    raise ValueError(f"device={device!r} is not supported for evaluation: use 'cpu' or 'cuda'")


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the enclosed CPU tensor operations on one thread (restored on exit).

    For many small operations (a few thousand elements each): split over threads they cost
    more in synchronisation than they save, and on a busy machine (more runnable threads than
    cores) each one waits for a descheduled partner, ten times the single-thread time.
    """
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def range_exponent(*tensors: Tensor) -> int:
    """``e`` such that ``x * 2**-e`` keeps every score of these embeddings finite and normal.

    Scores (dot products, squared norms, ``2 <x, y> - |y|^2``) reach ``4 D max|x|^2``: past
    about ``sqrt(finfo.max / 4D)`` they overflow (``inf``, then ``inf - inf = nan``) and far
    below 1 their products underflow. Returns 0 when the largest magnitude is in a safe range
    (nothing changes), else the exponent that brings it to ``[1, 2)``. Scaling by a power of two
    is exact, so cosine similarities and every ranking are unchanged by it.
    """
    amax = max(float(t.abs().amax()) if t.numel() else 0.0 for t in tensors)
    if amax == 0.0:
        return 0
    fi = torch.finfo(tensors[0].dtype)
    d = max(t.shape[-1] for t in tensors)
    high = math.sqrt(fi.max / (16.0 * d))
    low = math.sqrt(fi.tiny) * 2.0 / fi.eps
    if low <= amax <= high:
        return 0
    return math.frexp(amax)[1] - 1


def scale_by_power_of_two(x: Tensor, e: int) -> Tensor:
    """``x * 2**-e``, exact (two steps so that the factor itself stays representable)."""
    if e == 0:
        return x
    half = e // 2
    return x * (2.0 ** (-half)) * (2.0 ** (half - e))


def check_metric_name(metric: str) -> str:
    from likewise.similarity import check_metric

    if not isinstance(metric, str) and type(metric).__module__.startswith("pytorch_metric_learning"):
        return check_metric(metric, "metric")  # names the string to pass instead
    if not isinstance(metric, str):
        raise TypeError(f"metric must be a string, got {_describe(metric)}")
    return check_metric(metric, "metric")
