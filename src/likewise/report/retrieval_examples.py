"""Retrieval examples: a few queries, each followed by its top-k neighbours as thumbnails.

A neighbour framed green has the query's label, red a different one, so the
quality of the ranking is visible at a glance.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from likewise.report._figure import NEGATIVE, POSITIVE, new_figure, to_numpy


def as_display_images(images: Any, n: int | None = None) -> np.ndarray:
    """Images ``[N, H, W]``, ``[N, H, W, C]`` (C = 1, 3, 4) or ``[N, C, H, W]`` (C = 1, 3)
    -> float ``[N, H, W]`` (grey) or ``[N, H, W, 3|4]`` scaled to [0, 1] per image.

    A 4-D array whose second axis is 1 or 3 is read as ``[N, C, H, W]``."""
    a = to_numpy(images, "images")
    if a.dtype.kind not in "fiub":
        raise TypeError(f"images must be numbers, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if n is not None and a.shape[0] != n:
        raise ValueError(f"images has {a.shape[0]} entries but there are {n} embeddings")
    if a.ndim == 4 and a.shape[1] in (1, 3):
        a = a.transpose(0, 2, 3, 1)  # [N, C, H, W] (PyTorch's layout wins when ambiguous) -> [N, H, W, C]
    if a.ndim == 4 and a.shape[3] == 1:
        a = a[..., 0]
    if not (a.ndim == 3 or (a.ndim == 4 and a.shape[3] in (3, 4))):
        raise ValueError(
            f"images must be [N, H, W], [N, H, W, C] or [N, C, H, W] with C in 1, 3, 4; got shape {a.shape}"
        )
    if not np.isfinite(a).all():
        raise ValueError("images contain NaN or infinite values")
    lo = a.reshape(len(a), -1).min(1).reshape((-1,) + (1,) * (a.ndim - 1))
    hi = a.reshape(len(a), -1).max(1).reshape((-1,) + (1,) * (a.ndim - 1))
    return (a - lo) / np.where(hi > lo, hi - lo, 1.0)


def nearest_neighbours(
    embeddings: Any, queries: np.ndarray, k: int, metric: str, exclude_self: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k ``(scores, indices)`` of the rows ``queries`` of ``embeddings`` among all rows."""
    import torch

    from likewise.similarity import pairwise_similarity

    x = torch.as_tensor(to_numpy(embeddings, "embeddings"), dtype=torch.float32)
    s = pairwise_similarity(x[torch.as_tensor(queries)], x, metric)
    if exclude_self:
        s[torch.arange(len(queries)), torch.as_tensor(queries)] = -torch.inf
    top = torch.topk(s, min(k, x.shape[0] - int(exclude_self)), dim=1)
    return top.values.numpy(), top.indices.numpy()


def plot_retrieval_examples(
    images: Any,
    embeddings: Any,
    labels: Any,
    *,
    n_queries: int = 6,
    k: int = 5,
    metric: str = "cosine",
    seed: int = 0,
) -> Any:
    """Grid of ``n_queries`` random queries (seeded) and their ``k`` nearest other items."""
    emb = to_numpy(embeddings, "embeddings")
    y = to_numpy(labels, "labels").reshape(-1)
    n = emb.shape[0]
    if y.shape[0] != n:
        raise ValueError(f"labels has {y.shape[0]} entries but there are {n} embeddings")
    if n < 2:
        raise ValueError("retrieval examples need at least 2 items")
    for name, v in (("n_queries", n_queries), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    pics = as_display_images(images, n)
    rng = np.random.default_rng(seed)
    queries = np.sort(rng.choice(n, size=min(n_queries, n), replace=False))
    scores, nn = nearest_neighbours(emb, queries, k, metric, exclude_self=True)
    cols = nn.shape[1] + 1
    fig = new_figure(1.3 * cols + 0.4, 1.45 * len(queries) + 0.6)
    axes = np.atleast_2d(fig.subplots(len(queries), cols, squeeze=False))
    cmap = "gray" if pics.ndim == 3 else None
    for r, q in enumerate(queries):
        row = [(q, None)] + [(int(j), float(s)) for j, s in zip(nn[r], scores[r])]
        for c, (j, s) in enumerate(row):
            ax = axes[r, c]
            ax.imshow(pics[j], cmap=cmap, vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if s is None:
                colour, text = "#1f4e89", f"query\nlabel {y[j]}"
            else:
                colour = POSITIVE if y[j] == y[q] else NEGATIVE
                text = f"#{c}: {y[j]}\n{s:.3f}"
            for side in ax.spines.values():
                side.set_edgecolor(colour)
                side.set_linewidth(3)
            ax.set_title(text, fontsize=8, color=colour)
    fig.suptitle(
        "Retrieval: query, then its nearest neighbours (green = same label, red = different)", fontsize=10
    )
    return fig
