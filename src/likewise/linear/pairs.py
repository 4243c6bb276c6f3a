"""Pair constraints: the similar set S and the dissimilar set D of weak supervision.

A constraint set is given as index pairs into ``X`` (``pairs``: ``[P, 2]`` ints) with
``y_pairs`` ``[P]`` in ``{+1, -1}`` (+1: the two points are similar, in S; -1: dissimilar, in D).
From class labels, :func:`label_pairs` builds local constraints: each point with its
``n_neighbors`` nearest same-class points (S) and its ``n_neighbors`` nearest other-class points
(D) in the input space — the pairs that matter for a nearest-neighbour rule.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch


def check_pairs(pairs, y_pairs, n_samples: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate index pairs; return ``(a, b, sign)``: ``[P]`` int64 indices and ``[P]`` float64 +/-1."""
    pairs = np.asarray(pairs)
    if pairs.ndim != 2 or pairs.shape[1] != 2 or pairs.shape[0] == 0:
        raise ValueError(f"pairs must be an array of index pairs of shape [n_pairs, 2], got {pairs.shape}")
    if not np.issubdtype(pairs.dtype, np.integer):
        raise TypeError(f"pairs must hold integer indices into X, got dtype {pairs.dtype}")
    lo, hi = int(pairs.min()), int(pairs.max())
    if lo < 0 or hi >= n_samples:
        raise ValueError(
            f"pairs index outside X: indices must be in [0, {n_samples - 1}], got range [{lo}, {hi}]"
        )
    y_pairs = np.asarray(y_pairs)
    if y_pairs.shape != (pairs.shape[0],):
        raise ValueError(
            f"y_pairs must have shape [{pairs.shape[0]}] (one label per pair), got {y_pairs.shape}"
        )
    if not np.isin(y_pairs, (-1, 1)).all():
        raise ValueError("y_pairs must hold +1 (similar) or -1 (dissimilar) only")
    return pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64), y_pairs.astype(np.float64)


def label_pairs(X: np.ndarray, y: np.ndarray, n_neighbors: int, chunk: int = 2048) -> tuple[np.ndarray, ...]:
    """Local constraints from labels: ``(a, b, sign)`` for S (k nearest same-class) and D (k nearest
    other-class) pairs of every point; duplicates (i, j) / (j, i) kept once.

    ``X``: ``[N, D]``, ``y``: ``[N]`` integer labels. A class with one sample contributes no S pair.
    """
    if not isinstance(n_neighbors, numbers.Integral) or n_neighbors < 1:
        raise ValueError(f"n_neighbors must be a positive int, got {n_neighbors!r}")
    Xt = torch.tensor(X - X.mean(0), dtype=torch.float64)  # centred: less cancellation below
    yt = torch.as_tensor(y)
    N = Xt.shape[0]
    sq = (Xt * Xt).sum(1)
    k = min(int(n_neighbors), N - 1)
    out = {1.0: [], -1.0: []}
    for start in range(0, N, chunk):
        rows = torch.arange(start, min(start + chunk, N))
        # ||x_j||^2 - 2 x_i.x_j: the squared distance less a constant of the row, same order in j
        d = torch.addmm(sq[None, :], Xt[rows], Xt.T, alpha=-2.0)
        d[torch.arange(len(rows)), rows] = float("inf")
        same = yt[rows, None] == yt[None, :]
        for sign, dd in (
            (1.0, d.masked_fill(~same, float("inf"))),
            (-1.0, d.masked_fill_(same, float("inf"))),
        ):
            val, idx = dd.topk(k, dim=1, largest=False)
            ok = torch.isfinite(val)
            a = rows[:, None].expand_as(idx)[ok]
            out[sign].append(torch.stack([a, idx[ok]], 1))
    a_all, b_all, s_all = [], [], []
    for sign, chunks in out.items():
        p = torch.cat(chunks).numpy()
        p = np.unique(np.sort(p, axis=1), axis=0)
        a_all.append(p[:, 0])
        b_all.append(p[:, 1])
        s_all.append(np.full(len(p), sign))
    return np.concatenate(a_all), np.concatenate(b_all), np.concatenate(s_all)
