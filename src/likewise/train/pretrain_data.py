"""Data of a pre-training run: unlabelled training inputs, a labelled test split when there are labels.

* ``mnist1d``: the ``mnist1d`` package's generated data set (offline, 4,000 train / 1,000
  test signals of length 40; its labels serve only kNN / linear-probe evaluation).
* ``mnist5k`` / ``digits``: bundled digits, split stratified ``test_size`` (mnist5k: 4,000 / 1,000).
* an image folder (one sub-folder per class: labels for evaluation) or an array file
  ``.npy`` / ``.npz`` (``FILE.npz:key``), unlabelled unless ``data.labels`` names a labels file.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from likewise.train.pretrain_config import PretrainDataConfig


@dataclass
class PretrainData:
    x_train: np.ndarray
    y_train: np.ndarray | None
    x_test: np.ndarray
    y_test: np.ndarray | None
    mean: np.ndarray
    std: np.ndarray
    name: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.x_train.shape[1:])

    @property
    def labelled(self) -> bool:
        return self.y_train is not None


@functools.lru_cache(maxsize=2)
def _load_mnist1d(seed: int) -> tuple[np.ndarray, ...]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = 42 + seed  # the package's default seed is 42
    d = make_dataset(args)
    return (
        d["x"].astype(np.float32),
        d["y"].astype(np.int64),
        d["x_test"].astype(np.float32),
        d["y_test"].astype(np.int64),
    )


def _load_unlabelled(path: str) -> np.ndarray:
    """Inputs from ``FILE.npy`` or ``FILE.npz[:key]`` (key ``x``, or the only array), never unpickled."""
    from likewise.io import split_key

    file, key = split_key(path)
    if not Path(file).exists():
        raise FileNotFoundError(2, "No such file or directory", file)
    if Path(file).suffix.lower() == ".npy":
        return np.asarray(np.load(file, allow_pickle=False), dtype=np.float32)
    if Path(file).suffix.lower() != ".npz":
        raise ValueError(f"{path}: unlabelled inputs must be a .npy or .npz file")
    with np.load(file, allow_pickle=False) as arrays:
        name = key or ("x" if "x" in arrays.files or len(arrays.files) != 1 else arrays.files[0])
        if name not in arrays.files:
            raise ValueError(f"{file} has no array {name!r} (it has {', '.join(arrays.files)})")
        return np.asarray(arrays[name], dtype=np.float32)


def prepare_pretrain_data(config: PretrainDataConfig) -> PretrainData:
    """Load and split the data, and compute the standardisation statistics of the training part."""
    from likewise.data import load_data, stratified_split

    name = config.dataset
    if name == "mnist1d":
        x_tr, y_tr, x_te, y_te = (a.copy() for a in _load_mnist1d(config.seed))
    else:
        path = Path(name)
        unlabelled = path.suffix.lower() in (".npy", ".npz") or ":" in name
        if name not in ("mnist5k", "digits") and unlabelled and config.labels is None:
            x = _load_unlabelled(name)
            y = None
        else:
            data = load_data(name, config.labels, image_size=config.image_size, grayscale=config.grayscale)
            x, y = data.x, data.y
        if x.ndim < 2 or len(x) < 4:
            raise ValueError(f"data.dataset: need at least 4 inputs [N, ...], got shape {tuple(x.shape)}")
        if not np.all(np.isfinite(x)):
            raise ValueError("data.dataset: the inputs contain NaN or inf")
        if y is None:
            order = np.random.default_rng(config.seed).permutation(len(x))
            n_test = max(1, int(round(config.test_size * len(x))))
            tr, te = np.sort(order[n_test:]), np.sort(order[:n_test])
            x_tr, y_tr, x_te, y_te = x[tr], None, x[te], None
        else:
            tr, te = stratified_split(y, config.test_size, seed=config.seed)
            x_tr, y_tr, x_te, y_te = x[tr], y[tr], x[te], y[te]
    if config.standardize:
        mean = np.asarray(x_tr.mean(), np.float32).reshape(1)
        std = np.asarray(x_tr.std(), np.float32).reshape(1)
        std = np.where(std > 0, std, 1).astype(np.float32)
    else:
        mean, std = np.zeros(1, np.float32), np.ones(1, np.float32)
    return PretrainData(
        x_tr, y_tr, x_te, y_te, mean, std, Path(name).stem if name not in ("mnist1d",) else name
    )


__all__ = ["PretrainData", "prepare_pretrain_data"]
