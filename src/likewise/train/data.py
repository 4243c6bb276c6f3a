"""The data of a run: load, split, standardisation statistics, and checks made before training.

Three parts, all deterministic under ``data.seed``:

* ``train``: the samples trained on;
* ``validation``: a stratified ``eval.validation_fraction`` of the training classes'
  samples, not trained on, on which the best epoch is selected (``None`` when the
  fraction is 0);
* ``test``: the held-out part (unseen classes with ``split: class_disjoint``), only
  evaluated.

Problems are ``ValueError`` naming the config key to change, found before anything is
written: ``data.train_classes: [11] do not occur in the labels``,
``sampler.classes_per_batch: 8 but the training data hold 5 classes (0, 1, 2, 3, 4)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from likewise.data import LabeledArrays, class_disjoint_split, load_data, stratified_split
from likewise.train.config import DEFAULT_CLASSES_PER_BATCH, DataConfig, SamplerConfig


@dataclass
class RunData:
    """Training, validation and held-out parts, with the input statistics the model is fed with."""

    train: LabeledArrays
    test: LabeledArrays
    mean: np.ndarray  # broadcastable to one input, e.g. [C, 1, 1] or [F]
    std: np.ndarray
    train_label_ids: np.ndarray  # training labels mapped to 0..C_train-1 (proxy losses need it)
    validation: LabeledArrays | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.train.input_shape

    @property
    def num_train_classes(self) -> int:
        return int(self.train_label_ids.max()) + 1

    @property
    def train_class_names(self) -> list[str]:
        """Name of every training label id (``train_class_names[train_label_ids[i]]``)."""
        return [self.train.class_names[c] for c in np.unique(self.train.y)]

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """Inputs of the data set that could not be read, ``(path, reason)``."""
        return list(self.train.skipped)


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


def _names(part: LabeledArrays, classes: np.ndarray, limit: int = 6) -> str:
    shown = [part.class_names[c] for c in classes[:limit]]
    return ", ".join(shown) + (f", ... ({len(classes)} classes)" if len(classes) > limit else "")


def _has_pairs(y: np.ndarray) -> bool:
    """Whether some query has a same-class partner (some class has two samples)."""
    return len(y) > 0 and int(np.bincount(y).max()) >= 2


def _split(data: LabeledArrays, config: DataConfig) -> tuple[np.ndarray, np.ndarray]:
    if config.split == "class_disjoint":
        key = "data.train_classes" if config.train_classes is not None else "data.train_fraction"
        try:
            return class_disjoint_split(
                data.y, config.train_classes, train_fraction=config.train_fraction, seed=config.seed
            )
        except ValueError as exc:
            text = str(exc)
            if "at least 2 classes" in text:
                key = "data.dataset"
            raise ValueError(f"{key}: {text.removeprefix('train_classes ')}") from None
    try:
        return stratified_split(data.y, config.test_size, seed=config.seed)
    except ValueError as exc:
        raise ValueError(f"data.test_size: {exc}") from None


def prepare_data(config: DataConfig, *, validation_fraction: float = 0.0) -> RunData:
    """Load ``config.dataset``, split it as configured, hold out a validation part.

    ``validation_fraction`` (``eval.validation_fraction`` of a run): the stratified share
    of the training part's samples kept out of training for model selection.
    """
    try:
        data = load_data(
            config.dataset, config.labels, image_size=config.image_size, grayscale=config.grayscale
        )
    except ValueError as exc:
        raise ValueError(f"data.dataset: {exc}") from None
    train_idx, test_idx = _split(data, config)
    if len(train_idx) == 0 or len(test_idx) == 0:
        raise ValueError(
            f"data: the split leaves {len(train_idx)} training and {len(test_idx)} held-out samples"
        )
    test = data.subset(test_idx)
    if not _has_pairs(test.y):
        key = "data.test_size" if config.split == "stratified" else "data.split"
        raise ValueError(
            f"{key}: every held-out class ({_names(test, np.unique(test.y))}) has a single sample, "
            "so no held-out query has a same-class partner to retrieve"
        )
    validation = None
    if validation_fraction > 0:
        if not 0 < validation_fraction < 1:
            raise ValueError(f"eval.validation_fraction: must be in [0, 1), got {validation_fraction}")
        keep, val = stratified_split(data.y[train_idx], validation_fraction, seed=config.seed)
        if not _has_pairs(data.y[train_idx][val]):
            raise ValueError(
                f"eval.validation_fraction: {validation_fraction} leaves no validation class with two "
                "samples (no query with a same-class partner); raise it, or set 0 to select the "
                "best epoch on the held-out classes (optimistic)"
            )
        validation = data.subset(train_idx[val])
        train_idx = train_idx[keep]
    train = data.subset(train_idx)
    mean, std = input_statistics(train.x, config.standardize)
    _, ids = np.unique(train.y, return_inverse=True)
    return RunData(train, test, mean, std, ids.astype(np.int64), validation)


def classes_per_batch(sampler: SamplerConfig, num_classes: int) -> int:
    """P of the class-balanced sampler: as configured, else ``min(8, training classes)``."""
    if sampler.classes_per_batch is not None:
        return sampler.classes_per_batch
    return max(1, min(DEFAULT_CLASSES_PER_BATCH, num_classes))


def check_sampler(sampler: SamplerConfig, data: RunData, world_size: int = 1) -> dict[str, Any]:
    """Check the sampler against the training data (before training); its resolved arguments.

    ``ValueError`` naming the config key and the classes by name, e.g.
    ``sampler.samples_per_class: 4 but class 'cat' has 2 training samples``.
    """
    ids = data.train_label_ids
    n = len(ids)
    if sampler.kind == "random":
        if sampler.batch_size > n:
            raise ValueError(
                f"sampler.batch_size: {sampler.batch_size} is larger than the {n} training samples"
            )
        if sampler.batch_size % world_size:
            raise ValueError(
                f"sampler.batch_size: {sampler.batch_size} cannot be split equally across "
                f"{world_size} processes"
            )
        return {"batch_size": sampler.batch_size}
    names = data.train_class_names
    p, k = classes_per_batch(sampler, len(names)), sampler.samples_per_class
    if p > len(names):
        shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
        raise ValueError(
            f"sampler.classes_per_batch: {p} but the training data hold {len(names)} classes ({shown})"
        )
    if (p * k) % world_size:
        raise ValueError(
            f"sampler.classes_per_batch: a batch of {p} classes x {k} samples cannot be split equally "
            f"across {world_size} processes"
        )
    counts = np.bincount(ids, minlength=len(names))
    small = np.flatnonzero(counts < k)
    if len(small) and not sampler.replacement:
        c = int(small[np.argmin(counts[small])])
        more = f" (and {len(small) - 1} more classes)" if len(small) > 1 else ""
        raise ValueError(
            f"sampler.samples_per_class: {k} but class {names[c]!r} has {int(counts[c])} training "
            f"sample{'s' if counts[c] != 1 else ''}{more}; lower it or set sampler.replacement: true"
        )
    return {"classes_per_batch": p, "samples_per_class": k}


__all__ = ["RunData", "check_sampler", "classes_per_batch", "input_statistics", "prepare_data"]
