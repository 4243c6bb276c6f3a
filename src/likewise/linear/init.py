"""Starting points for the L-BFGS learners (``L`` ``[d, D]``)."""

from __future__ import annotations

import numpy as np
from sklearn.utils import check_random_state


def initial_components(init, X: np.ndarray, n_components: int, random_state=None) -> np.ndarray:
    """``init``: ``"auto"`` (identity when ``d = D``, else PCA), ``"identity"`` (the first ``d`` rows of
    ``I``), ``"pca"`` (top ``d`` principal directions), ``"random"`` or an array ``[d, D]``."""
    N, D = X.shape
    if isinstance(init, str):
        if init == "auto":
            init = "identity" if n_components == D else "pca"
        if init == "identity":
            return np.eye(n_components, D)
        if init == "pca":
            Xc = X - X.mean(0)
            _, _, Vt = np.linalg.svd(Xc, full_matrices=False)
            L = np.zeros((n_components, D))
            L[: min(n_components, len(Vt))] = Vt[:n_components]
            return L
        if init == "random":
            return check_random_state(random_state).standard_normal((n_components, D)) / np.sqrt(D)
        raise ValueError(f"init must be 'auto', 'identity', 'pca', 'random' or an array, got {init!r}")
    L = np.asarray(init, dtype=np.float64)
    if L.shape != (n_components, D):
        raise ValueError(f"init array must have shape [{n_components}, {D}], got {L.shape}")
    if not np.isfinite(L).all():
        raise ValueError("init array contains NaN or infinity")
    return L.copy()
