"""Starting points for the L-BFGS learners (``L`` ``[d, D]``)."""

from __future__ import annotations

import numpy as np
from sklearn.utils import check_random_state

INITS = ("auto", "lda", "identity", "pca", "random")


def lda_components(X: np.ndarray, y: np.ndarray, n_components: int, ridge: float = 1e-2) -> np.ndarray:
    """Whitened discriminant directions ``[d, D]``: ``L = V_d^T W``, ``W = (S_w + s I)^{-1/2}``.

    ``S_w`` is the within-class covariance of ``X`` ``[N, D]`` (labels ``y`` ``[N]``), ``s = ridge *
    tr(S_w) / D`` keeps it invertible, and ``V_d`` are the top ``d`` principal directions of the
    whitened data: the between-class directions first (Fisher's discriminants; Fisher 1936), then
    the rest. Within-class spread becomes isotropic, so a feature that is noise within every class
    starts down-weighted and a small but discriminative one up-weighted; with ``d = D`` it is
    ``W`` up to a rotation (the same metric).
    """
    classes, yi = np.unique(y, return_inverse=True)
    means = np.zeros((len(classes), X.shape[1]))
    np.add.at(means, yi, X)
    means /= np.bincount(yi)[:, None]
    R = X - means[yi]
    S = R.T @ R / len(X)
    scale = np.trace(S) / X.shape[1]
    if scale <= 0:  # no within-class spread at all (e.g. singleton classes): use the total spread
        Xc = X - X.mean(0)
        scale = np.trace(Xc.T @ Xc / len(X)) / X.shape[1]
        S = np.zeros_like(S)
    if scale <= 0:  # every point identical
        return np.eye(n_components, X.shape[1])
    w, U = np.linalg.eigh(S + ridge * scale * np.eye(X.shape[1]))
    W = (U / np.sqrt(w)) @ U.T
    Xw = (X - X.mean(0)) @ W
    _, V = np.linalg.eigh(Xw.T @ Xw)
    return V[:, ::-1][:, :n_components].T @ W


def initial_components(init, X: np.ndarray, n_components: int, random_state=None, y=None) -> np.ndarray:
    """``init``: ``"auto"`` (``"lda"`` when labels ``y`` are given, else identity when ``d = D`` and
    PCA otherwise), ``"lda"`` (:func:`lda_components`), ``"identity"`` (the first ``d`` rows of ``I``),
    ``"pca"`` (top ``d`` principal directions), ``"random"`` or an array ``[d, D]``."""
    N, D = X.shape
    if isinstance(init, str):
        if init == "auto":
            init = "lda" if y is not None else ("identity" if n_components == D else "pca")
        if init == "lda":
            if y is None:
                raise ValueError("init='lda' needs class labels")
            return lda_components(X, y, n_components)
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
        raise ValueError(f"init must be one of {', '.join(map(repr, INITS))} or an array, got {init!r}")
    L = np.asarray(init, dtype=np.float64)
    if L.shape != (n_components, D):
        raise ValueError(f"init array must have shape [{n_components}, {D}], got {L.shape}")
    if not np.isfinite(L).all():
        raise ValueError("init array contains NaN or infinity")
    return L.copy()
