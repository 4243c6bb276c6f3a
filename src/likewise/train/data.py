"""The data of a run: load, split (class-disjoint or stratified), standardisation statistics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from likewise.data import LabeledArrays, class_disjoint_split, load_data, stratified_split
from likewise.train.config import DataConfig


@dataclass
class RunData:
    """Training and held-out parts, with the input statistics the model is fed with."""

    train: LabeledArrays
    test: LabeledArrays
    mean: np.ndarray  # broadcastable to one input, e.g. [C, 1, 1] or [F]
    std: np.ndarray
    train_label_ids: np.ndarray  # training labels mapped to 0..C_train-1 (proxy losses need it)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.train.input_shape

    @property
    def num_train_classes(self) -> int:
        return int(self.train_label_ids.max()) + 1


def input_statistics(x: np.ndarray, standardize: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (images ``[N, C, H, W]``) or per-feature (``[N, F]``) mean and std."""
    shape = (x.shape[1], 1, 1) if x.ndim == 4 else x.shape[1:]
    if not standardize:
        return np.zeros(shape, np.float32), np.ones(shape, np.float32)
    axes = (0, 2, 3) if x.ndim == 4 else (0,)
    mean = x.mean(axis=axes, dtype=np.float64).reshape(shape)
    std = x.std(axis=axes, dtype=np.float64).reshape(shape)
    std = np.where(std > 1e-6, std, 1.0)
    return mean.astype(np.float32), std.astype(np.float32)


def prepare_data(config: DataConfig) -> RunData:
    """Load ``config.dataset`` and split it as configured (deterministic under ``config.seed``)."""
    data = load_data(config.dataset, config.labels, image_size=config.image_size, grayscale=config.grayscale)
    if config.split == "class_disjoint":
        train_idx, test_idx = class_disjoint_split(
            data.y, config.train_classes, train_fraction=config.train_fraction, seed=config.seed
        )
    else:
        train_idx, test_idx = stratified_split(data.y, config.test_size, seed=config.seed)
    if len(train_idx) == 0 or len(test_idx) == 0:
        raise ValueError(
            f"data: the split leaves {len(train_idx)} training and {len(test_idx)} held-out samples"
        )
    train, test = data.subset(train_idx), data.subset(test_idx)
    mean, std = input_statistics(train.x, config.standardize)
    _, ids = np.unique(train.y, return_inverse=True)
    return RunData(train, test, mean, std, ids.astype(np.int64))


__all__ = ["RunData", "input_statistics", "prepare_data"]
