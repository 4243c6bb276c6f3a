"""Pairwise similarity / distance and label relation masks.

Everything downstream (losses, miners, evaluation) is a function of one batch
similarity matrix ``S = sim(queries, refs)`` of shape ``[B, N]`` and two boolean
masks ``P, N`` of the same shape (positive and negative pairs).

Metrics (``x`` is a query row, ``y`` a reference row):

* ``cosine``             s = <x/|x|, y/|y|>            (zero vectors give s = 0)
* ``dot``                s = <x, y>
* ``euclidean``          d = |x - y|_2                  (s = -d)
* ``squared_euclidean``  d = |x - y|_2^2                (s = -d)

Distances are built from one GEMM, ``|x|^2 + |y|^2 - 2 x y^T``, clamped at zero;
the square root has a zero gradient at zero distance (never NaN).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

Metric = Literal["cosine", "dot", "euclidean", "squared_euclidean"]
METRICS: tuple[str, ...] = ("cosine", "dot", "euclidean", "squared_euclidean")
#: metrics where a larger raw value means "more similar"
SIMILARITY_METRICS: tuple[str, ...] = ("cosine", "dot")


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
    return metric


def is_similarity(metric: str) -> bool:
    """True when larger values mean more similar (cosine, dot)."""
    return check_metric(metric) in SIMILARITY_METRICS


def _sqrt_safe(d2: Tensor) -> Tensor:
    """sqrt with gradient 0 (not inf/NaN) where the argument is 0."""
    positive = d2 > 0
    return torch.where(positive, d2.clamp_min(torch.finfo(d2.dtype).tiny).sqrt(), d2 * 0)


def squared_euclidean(x: Tensor, y: Tensor) -> Tensor:
    """``[B, D] x [N, D] -> [B, N]`` squared Euclidean distances (GEMM form, >= 0)."""
    d2 = x.pow(2).sum(1, keepdim=True) + y.pow(2).sum(1).unsqueeze(0) - 2.0 * (x @ y.T)
    return d2.clamp_min(0)


def pairwise_distance(x: Tensor, y: Tensor | None = None, metric: Metric = "euclidean") -> Tensor:
    """Pairwise distances ``[B, N]`` (smaller = more similar).

    For ``cosine`` the distance is ``1 - cos``; for ``dot`` it is ``-<x, y>``.
    """
    check_metric(metric)
    y = x if y is None else y
    if metric == "euclidean":
        return _sqrt_safe(squared_euclidean(x, y))
    if metric == "squared_euclidean":
        return squared_euclidean(x, y)
    return -pairwise_similarity(x, y, metric) + (1.0 if metric == "cosine" else 0.0)


def pairwise_similarity(
    x: Tensor, y: Tensor | None = None, metric: Metric = "cosine"
) -> Tensor:
    """Pairwise similarities ``[B, N]`` (larger = more similar).

    For the Euclidean metrics this is the negated distance.
    """
    check_metric(metric)
    y = x if y is None else y
    if metric == "cosine":
        return F.normalize(x, dim=1) @ F.normalize(y, dim=1).T
    if metric == "dot":
        return x @ y.T
    return -pairwise_distance(x, y, metric)


def relation_masks(
    labels: Tensor | None,
    ref_labels: Tensor | None = None,
    *,
    relevance: Tensor | None = None,
    self_index: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Boolean positive / negative masks ``[B, N]``.

    ``labels`` may be

    * class ids ``[B]`` (int): positive = same id;
    * multi-label ``[B, C]`` 0/1 (or bool): positive = at least one shared label;

    or ``relevance`` may be given directly as a bool ``[B, N]`` matrix
    (then ``labels`` is ignored and negatives are its complement).

    Self-pairs are excluded from both masks: ``self_index`` (long ``[B]``) gives,
    for each query, the reference column holding the query itself (``-1`` for
    none). When ``ref_labels`` is None the references are the queries and
    ``self_index`` defaults to ``arange(B)`` (the diagonal).
    """
    if relevance is not None:
        if relevance.dim() != 2:
            raise ValueError(f"relevance must be a [B, N] matrix, got shape {tuple(relevance.shape)}")
        pos = relevance.bool()
    else:
        if labels is None:
            raise ValueError("labels are required (or pass relevance=[B, N] bool matrix)")
        ref = labels if ref_labels is None else ref_labels
        if ref_labels is None and self_index is None:
            self_index = torch.arange(labels.shape[0], device=labels.device)
        if labels.dim() == 1 and ref.dim() == 1:
            pos = labels.unsqueeze(1) == ref.unsqueeze(0)
        elif labels.dim() == 2 and ref.dim() == 2:
            if labels.shape[1] != ref.shape[1]:
                raise ValueError(
                    f"multi-label labels have {labels.shape[1]} columns but ref_labels have {ref.shape[1]}"
                )
            pos = (labels.to(torch.float32) @ ref.to(torch.float32).T) > 0
        else:
            raise ValueError(
                "labels and ref_labels must both be class ids [B] or both multi-label [B, C]; "
                f"got shapes {tuple(labels.shape)} and {tuple(ref.shape)}"
            )
    neg = ~pos
    if self_index is not None:
        keep = ~self_pair_mask(self_index, pos.shape[1])
        pos, neg = pos & keep, neg & keep
    return pos, neg


def self_pair_mask(self_index: Tensor, n_refs: int) -> Tensor:
    """Bool ``[B, N]`` mask, True at ``(i, self_index[i])`` (rows with ``-1`` have none)."""
    cols = torch.arange(n_refs, device=self_index.device)
    return self_index.unsqueeze(1) == cols.unsqueeze(0)
