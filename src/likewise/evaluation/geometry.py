"""Geometry of an embedding: alignment, uniformity and collapse indicators.

* alignment (Wang & Isola 2020, "Understanding Contrastive Representation Learning
  through Alignment and Uniformity on the Hypersphere"):
  ``E_i |x_i - y_i|_2^alpha`` over positive pairs ``(x_i, y_i)`` — lower is better.
* uniformity (same paper): ``log E_{i<j} exp(-t |x_i - x_j|_2^2)`` over all pairs
  of one set — lower (more negative) is more uniform on the sphere.
  Both L2-normalise first (``normalize=True``), as in the paper.
* effective rank (Roy & Vetterli 2007): with singular values ``sigma_k`` of the
  ``[n, D]`` matrix and ``p_k = sigma_k / sum sigma``,
  ``erank = exp(-sum_k p_k log p_k)`` in ``[1, min(n, D)]``; a collapsed embedding
  has erank near 1 (complete collapse) or far below D (dimensional collapse).
  ``center=True`` subtracts the mean first (then a constant embedding has no
  spectrum; its erank is defined as 0).
* per-dimension standard deviation of the L2-normalised embeddings (SimSiam, Chen &
  He 2021): 0 in every dimension for a collapsed (constant) output, about
  ``1 / sqrt(D)`` for embeddings spread uniformly on the sphere.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from likewise.evaluation._inputs import embeddings_tensor, resolve_device


def alignment(x: Any, y: Any, alpha: float = 2.0, *, normalize: bool = True) -> float:
    """Mean ``|x_i - y_i|^alpha`` over row pairs of ``x, y [n, D]``."""
    dev = resolve_device(None, x, y)
    a = embeddings_tensor(x, "x", dev).double()
    b = embeddings_tensor(y, "y", dev).double()
    if a.shape != b.shape:
        raise ValueError(
            f"x and y must have one shape (row i of x pairs with row i of y), got "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )
    if not alpha > 0:
        raise ValueError(f"alpha must be positive, got {alpha!r}")
    if normalize:
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    return float((a - b).norm(dim=1).pow(alpha).mean())


def uniformity(x: Any, t: float = 2.0, *, normalize: bool = True, batch_size: int = 1024) -> float:
    """``log`` of the mean over pairs ``i < j`` of ``exp(-t |x_i - x_j|^2)`` (streamed, exact)."""
    dev = resolve_device(None, x)
    a = embeddings_tensor(x, "x", dev, min_rows=2).double()
    if not t > 0:
        raise ValueError(f"t must be positive, got {t!r}")
    if normalize:
        a = F.normalize(a, dim=1)
    n = a.shape[0]
    sq = a.pow(2).sum(1)
    partial = []
    for s in range(0, n - 1, batch_size):
        rows = a[s : s + batch_size]
        d2 = (sq[s : s + batch_size, None] + sq[None, :] - 2 * rows @ a.T).clamp_min(0)
        i = torch.arange(s, s + rows.shape[0], device=dev)[:, None]
        upper = torch.arange(n, device=dev)[None, :] > i
        partial.append(torch.logsumexp(torch.where(upper, -t * d2, float("-inf")).flatten(), 0))
    total = torch.logsumexp(torch.stack(partial), 0)
    return float(total - math.log(n * (n - 1) / 2))


def effective_rank(embeddings: Any, *, center: bool = False) -> float:
    """Roy & Vetterli (2007) effective rank of ``embeddings [n, D]``."""
    x = embeddings_tensor(embeddings, "embeddings", resolve_device(None, embeddings)).double()
    if center:
        x = x - x.mean(0, keepdim=True)
    sv = torch.linalg.svdvals(x)
    total = sv.sum()
    if total <= 0:
        return 0.0
    p = sv / total
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))


def per_dimension_std(embeddings: Any) -> np.ndarray:
    """Standard deviation (population, over rows) of each dimension of the L2-normalised ``[n, D]``."""
    x = embeddings_tensor(embeddings, "embeddings", resolve_device(None, embeddings), min_rows=2).double()
    return F.normalize(x, dim=1).std(0, unbiased=False).cpu().numpy()


def collapse_indicators(embeddings: Any) -> dict[str, float]:
    """Collapse summary: ``effective_rank``, its ratio to ``D``, and ``mean_std * sqrt(D)``.

    ``std_ratio`` = mean per-dimension std of the normalised embeddings times ``sqrt(D)``:
    about 1 when spread over the sphere, 0 when collapsed to a point.
    """
    x = embeddings_tensor(embeddings, "embeddings", resolve_device(None, embeddings), min_rows=2)
    d = x.shape[1]
    er = effective_rank(x)
    std = per_dimension_std(x)
    return {
        "effective_rank": er,
        "effective_rank_ratio": er / min(d, x.shape[0]),
        "mean_std": float(std.mean()),
        "std_ratio": float(std.mean() * math.sqrt(d)),
    }
