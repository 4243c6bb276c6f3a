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
    exclude_self: bool | None = None,
) -> tuple[Tensor, Tensor]:
    """Boolean positive / negative masks ``[B, N]``.

    ``labels`` may be

    * class ids ``[B]`` (int): positive = same id;
    * multi-label ``[B, C]`` 0/1 (or bool): positive = at least one shared label;

    or ``relevance`` may be given directly as a bool ``[B, N]`` matrix
    (then ``labels`` is ignored and negatives are its complement).

    ``ref_labels`` defaults to ``labels`` (refs are the queries); then the
    diagonal (self-pairs) is excluded from both masks unless ``exclude_self`` is
    set explicitly.
    """
    if relevance is not None:
        if relevance.dim() != 2:
            raise ValueError(f"relevance must be a [B, N] matrix, got shape {tuple(relevance.shape)}")
        pos = relevance.bool()
        neg = ~pos
        same = exclude_self if exclude_self is not None else False
    else:
        if labels is None:
            raise ValueError("labels are required (or pass relevance=[B, N] bool matrix)")
        same = ref_labels is None if exclude_self is None else exclude_self
        ref = labels if ref_labels is None else ref_labels
        if labels.dim() == 1 and ref.dim() == 1:
            pos = labels.unsqueeze(1) == ref.unsqueeze(0)
        elif labels.dim() == 2 and ref.dim() == 2:
            if labels.shape[1] != ref.shape[1]:
                raise ValueError(
                    f"multi-label labels have {labels.shape[1]} columns but ref_labels have "
                    f"{ref.shape[1]}"
                )
            pos = (labels.to(torch.float32) @ ref.to(torch.float32).T) > 0
        else:
            raise ValueError(
                "labels and ref_labels must both be class ids [B] or both multi-label [B, C]; "
                f"got shapes {tuple(labels.shape)} and {tuple(ref.shape)}"
            )
        neg = ~pos
    if same:
        if pos.shape[0] != pos.shape[1]:
            raise ValueError("exclude_self needs a square relation (refs are the queries)")
        eye = torch.eye(pos.shape[0], dtype=torch.bool, device=pos.device)
        pos = pos & ~eye
        neg = neg & ~eye
    return pos, neg
