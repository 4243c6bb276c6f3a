"""Pair constraints: the similar set S and the dissimilar set D of weak supervision.

A constraint set is given as index pairs into ``X`` (``pairs``: ``[P, 2]`` ints) with
``y_pairs`` ``[P]`` in ``{+1, -1}`` (+1: the two points are similar, in S; -1: dissimilar, in D).
From class labels, :func:`label_pairs` builds local constraints: each anchor point (every point,
or a subset spread over the classes) with its ``n_neighbors`` nearest same-class points (S) and
its ``n_neighbors`` nearest other-class points (D), in the input space — the pairs that matter for
a nearest-neighbour rule.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

from likewise.linear.impostors import class_ranges

BLOCK_ENTRIES = 1 << 19  # distances per block of anchors (2 MiB of float32, as lbfgs.row_blocks)


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


def label_pairs(
    X: np.ndarray, y: np.ndarray, n_neighbors: int, n_anchors: int | None = None
) -> tuple[np.ndarray, ...]:
    """Local constraints from labels: ``(a, b, sign)``, ``[P]`` each, for the anchor points (every
    point when ``n_anchors`` is ``None`` or ``>= N``, else ``n_anchors`` points spread evenly over
    the classes): each anchor with its ``n_neighbors`` nearest same-class points (S, +1) and its
    ``n_neighbors`` nearest other-class points (D, -1). Duplicates (i, j) / (j, i) are kept once; a
    class with one sample gives no S pair.

    One pass over the ``[n_anchors, N]`` distances, in blocks of anchors, on class-sorted points:
    a class is a contiguous range of columns (the S search takes its slice, the D search sets it
    to ``inf``). ``X``: ``[N, D]``, ``y``: ``[N]`` integer labels.
    """
    if not isinstance(n_neighbors, numbers.Integral) or n_neighbors < 1:
        raise ValueError(f"n_neighbors must be a positive int, got {n_neighbors!r}")
    if n_anchors is not None and (not isinstance(n_anchors, numbers.Integral) or n_anchors < 1):
        raise ValueError(f"n_anchors must be a positive int or None, got {n_anchors!r}")
    order = np.argsort(y, kind="stable")  # class-sorted: a class is one contiguous range
    Xt = torch.from_numpy(np.array(X, dtype=np.float32)).index_select(0, torch.from_numpy(order))  # a copy
    Xt -= Xt.mean(0)  # centred: less cancellation in ||x_j||^2 - 2 x_i.x_j
    N = Xt.shape[0]
    k = min(int(n_neighbors), N - 1)
    anchors = torch.arange(N)
    if n_anchors is not None and n_anchors < N:
        anchors = torch.from_numpy(np.linspace(0, N - 1, int(n_anchors)).round().astype(np.int64))
    ranges = class_ranges(torch.as_tensor(y[order]))
    cuts = torch.searchsorted(anchors, torch.as_tensor([c0 for c0, _ in ranges] + [N])).tolist()
    sq = (Xt * Xt).sum(1)
    found: dict[float, list[torch.Tensor]] = {1.0: [], -1.0: []}
    step = max(1, BLOCK_ENTRIES // N)  # blocks of anchors, of about BLOCK_ENTRIES distances
    for s in range(0, len(anchors), step):
        e = min(s + step, len(anchors))
        A = anchors[s:e]
        D = torch.addmm(sq[None, :], Xt[A], Xt.T, alpha=-2.0)  # ||x_j||^2 - 2 x_a.x_j: same order in j
        D[torch.arange(e - s), A] = float("inf")  # not its own neighbour
        for (c0, c1), a0, a1 in zip(ranges, cuts[:-1], cuts[1:]):
            r0, r1 = max(a0, s) - s, min(a1, e) - s  # this block's anchors of the class
            if r0 >= r1:
                continue
            kc = min(k, c1 - c0 - 1)
            if kc >= 1:
                j = D[r0:r1, c0:c1].topk(kc, dim=1, largest=False)[1] + c0
                found[1.0].append(torch.stack([A[r0:r1, None].expand_as(j), j], 2).view(-1, 2))
            D[r0:r1, c0:c1] = float("inf")  # other classes only, for D
        val, j = D.topk(k, dim=1, largest=False)
        fin = torch.isfinite(val)  # fewer than k other-class points
        found[-1.0].append(torch.stack([A[:, None].expand_as(j)[fin], j[fin]], 1))
    a_all, b_all, s_all = [], [], []
    for sign, parts in found.items():
        p = order[torch.cat(parts).numpy()] if parts else np.zeros((0, 2), dtype=np.int64)
        key = np.sort(np.minimum(p[:, 0], p[:, 1]) * N + np.maximum(p[:, 0], p[:, 1]))
        key = key[np.r_[True, key[1:] != key[:-1]]] if len(key) else key  # (i, j) and (j, i) once
        a_all.append(key // N)
        b_all.append(key % N)
        s_all.append(np.full(len(key), sign))
    return np.concatenate(a_all), np.concatenate(b_all), np.concatenate(s_all)
