"""Labelled arrays in memory, and a torch ``Dataset`` over them.

:class:`LabeledArrays` is what every loader returns: ``x`` float32 ``[N, C, H, W]``
(images, values in [0, 1]) or ``[N, F]`` (features), ``y`` int64 ``[N]`` class
ids ``0..C-1``, ``class_names`` (``class_names[y[i]]`` is the original label) and
``skipped`` — the inputs that could not be read, each ``(path, reason)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from likewise.io import load_array, load_npy, split_key


@dataclass
class LabeledArrays:
    x: np.ndarray
    y: np.ndarray
    class_names: list[str]
    name: str = ""
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"{self.name or 'data'}: {self.x.shape[0]} inputs but {self.y.shape[0]} labels")
        if self.x.shape[0] == 0:
            raise ValueError(f"{self.name or 'data'}: no samples")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.x.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.x.ndim == 4

    def subset(self, index: np.ndarray) -> LabeledArrays:
        """The samples ``index`` (same class names; ``skipped`` is kept: it describes the source)."""
        return LabeledArrays(self.x[index], self.y[index], self.class_names, self.name, list(self.skipped))


class ArrayDataset(Dataset):
    """``(x[i] as float32 tensor, y[i] as int)`` pairs over arrays held in memory."""

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        if len(x) != len(y):
            raise ValueError(f"{len(x)} inputs but {len(y)} labels")
        self.x = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32)
        self.y = torch.as_tensor(np.asarray(y), dtype=torch.long)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


def encode_labels(raw: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Map arbitrary label values to ids ``0..C-1`` (sorted), with their names."""
    raw = np.asarray(raw)
    if raw.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {raw.shape}")
    if raw.dtype.kind == "f":
        if not np.all(np.isfinite(raw)):
            raise ValueError("labels contain NaN or inf")
        if not np.all(raw == np.round(raw)):
            raise ValueError("labels must be integers or strings, got fractional numbers")
        raw = raw.astype(np.int64)
    values, ids = np.unique(raw, return_inverse=True)
    return ids.astype(np.int64), [str(v) for v in values]


def unit_images(x: np.ndarray) -> np.ndarray:
    """Images as float32: ``uint8`` pixels (0..255) are scaled to [0, 1], as image folders are.

    Applied wherever image arrays ``[N, C, H, W]`` enter (training data, ``ExportedModel.embed``,
    ``likewise embed``), so a model sees the same scale in training and in use. Other dtypes are
    taken as they are.
    """
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255.0)
    return np.asarray(x, dtype=np.float32)


def load_array_dataset(features: str | Path, labels: str | Path | None) -> LabeledArrays:
    """Features ``[N, F]`` (or images ``[N, C, H, W]`` in .npy) and labels ``[N]`` from files."""
    path, key = split_key(str(features))
    x = load_npy(path) if Path(path).suffix.lower() == ".npy" else load_array(path, key)
    if x.ndim == 1:
        raise ValueError(f"{features}: features must be 2-D [N, F] (or 4-D images), got 1-D")
    if labels is None:
        raise ValueError(f"{features}: labels are required (pass a labels file)")
    lpath, lkey = split_key(str(labels))
    raw = load_array(lpath, lkey)
    if raw.ndim == 2 and raw.shape[1] == 1:
        raw = raw[:, 0]
    x = unit_images(x) if x.ndim == 4 else np.asarray(x, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{features} contains NaN or inf")
    if len(raw) != len(x):
        raise ValueError(f"{features} has {len(x)} rows but {labels} has {len(raw)} labels")
    y, names = encode_labels(raw)
    return LabeledArrays(x, y, names, name=Path(path).stem)
