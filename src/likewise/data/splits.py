"""Deterministic train / evaluation splits.

* :func:`class_disjoint_split` — train on some classes, evaluate on the others
  (the protocol of Musgrave et al. 2020, "A Metric Learning Reality Check").
* :func:`stratified_split` — every class in both parts, in proportion.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def class_disjoint_split(
    y: np.ndarray,
    train_classes: Sequence[int] | None = None,
    *,
    train_fraction: float = 0.5,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)``: samples of ``train_classes`` vs all the others.

    Without ``train_classes`` the first ``round(train_fraction * C)`` classes of a
    seeded permutation are used. Indices are sorted.
    """
    y = np.asarray(y)
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError(f"a class-disjoint split needs at least 2 classes, got {len(classes)}")
    if train_classes is None:
        if not 0.0 < train_fraction < 1.0:
            raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
        n_train = min(len(classes) - 1, max(1, round(train_fraction * len(classes))))
        perm = np.random.default_rng(seed).permutation(classes)
        train_set = np.sort(perm[:n_train])
    else:
        train_set = np.unique(np.asarray(list(train_classes)))
        unknown = np.setdiff1d(train_set, classes)
        if len(unknown):
            raise ValueError(f"train_classes {unknown.tolist()} do not occur in the labels")
        if len(train_set) == len(classes):
            raise ValueError("train_classes cover every class; nothing is left to evaluate on")
    is_train = np.isin(y, train_set)
    return np.flatnonzero(is_train), np.flatnonzero(~is_train)


def stratified_split(
    y: np.ndarray, test_size: float = 0.2, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, test)`` with each class split in proportion (seeded)."""
    y = np.asarray(y)
    if not 0.0 < test_size < 1.0:
        raise ValueError(f"test_size must be in (0, 1), got {test_size}")
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(test_size * len(idx)))
        if len(idx) > 1:
            n_test = min(max(n_test, 1), len(idx) - 1)
        else:
            n_test = 0
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))
