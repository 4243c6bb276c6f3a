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
the square root has a zero gradient at zero distance (never NaN). ``x`` and ``y`` of
different float dtypes are computed in ``torch.promote_types`` of the two
(:func:`likewise.normalize.promote`); epsilons are valid in the dtype (float16 included).
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from likewise.normalize import l2_normalize, promote

Metric = Literal["cosine", "dot", "euclidean", "squared_euclidean"]
METRICS: tuple[str, ...] = ("cosine", "dot", "euclidean", "squared_euclidean")
#: metrics where a larger raw value means "more similar"
SIMILARITY_METRICS: tuple[str, ...] = ("cosine", "dot")


def _pml_equivalent(obj: object) -> tuple[str, str | None] | None:
    """``(description, metric name or None)`` for a pytorch-metric-learning distance object.

    Recognised by class name (PML is not imported): ``LpDistance`` (p=2) is
    ``euclidean``, or ``squared_euclidean`` with ``power=2``; ``CosineSimilarity`` is
    ``cosine``; ``DotProductSimilarity`` is ``dot``. Other PML distances have none.
    """
    module = type(obj).__module__ or ""
    names = [c.__name__ for c in type(obj).__mro__]
    if not module.startswith("pytorch_metric_learning") and "BaseDistance" not in names:
        return None
    name = type(obj).__name__
    if name == "LpDistance":
        p, power = getattr(obj, "p", 2), getattr(obj, "power", 1)
        described = f"LpDistance(p={p}, power={power})"
        if p != 2:
            return described, None
        if power == 1:
            return described, "euclidean"
        return described, "squared_euclidean" if power == 2 else None
    if name == "CosineSimilarity":
        return "CosineSimilarity()", "cosine"
    if name == "DotProductSimilarity":
        return "DotProductSimilarity()", "dot"
    return f"{name}()", None


def check_metric(metric: str, argument: str = "distance") -> str:
    """Return ``metric`` if it is one of :data:`METRICS`.

    Raises ``ValueError`` for an unknown name or a pytorch-metric-learning distance
    object (the message names the string to pass instead, as ``argument=...``: the
    caller's keyword, ``distance`` for losses and miners, ``metric`` elsewhere),
    ``TypeError`` for any other non-string.
    """
    if not isinstance(metric, str):
        pml = _pml_equivalent(metric)
        if pml is not None:
            described, name = pml
            if name is None:
                raise ValueError(
                    f"{argument}={described} is a pytorch-metric-learning object with no likewise "
                    f"equivalent; likewise takes a metric name, one of {', '.join(map(repr, METRICS))}"
                )
            raise ValueError(
                f"{argument}={described} is a pytorch-metric-learning object; "
                f"likewise takes {argument}={name!r}"
            )
        shown = repr(metric)
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        raise TypeError(
            f"a metric must be a string, one of {', '.join(map(repr, METRICS))}; "
            f"got {type(metric).__name__} {shown}"
        )
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
    check_metric(metric, "metric")
    y = x if y is None else y
    if y.dtype != x.dtype:
        x, y = promote(x, y)
    if metric == "euclidean":
        return _sqrt_safe(squared_euclidean(x, y))
    if metric == "squared_euclidean":
        return squared_euclidean(x, y)
    return -pairwise_similarity(x, y, metric) + (1.0 if metric == "cosine" else 0.0)


def pairwise_similarity(x: Tensor, y: Tensor | None = None, metric: Metric = "cosine") -> Tensor:
    """Pairwise similarities ``[B, N]`` (larger = more similar).

    For the Euclidean metrics this is the negated distance.
    """
    check_metric(metric, "metric")
    y = x if y is None else y
    if y.dtype != x.dtype:
        x, y = promote(x, y)
    if metric == "cosine":
        return l2_normalize(x, dim=1) @ l2_normalize(y, dim=1).T
    if metric == "dot":
        return x @ y.T
    return -pairwise_distance(x, y, metric)


def check_binary(x: Tensor, name: str, expected: str) -> Tensor:
    """Raise ``ValueError`` unless ``x`` is bool or holds only 0 and 1 (NaN counts as bad)."""
    if x.dtype == torch.bool:
        return x
    if x.is_complex():
        raise TypeError(f"{name} must be {expected}, got dtype {x.dtype}")
    bad = (x != 0) & (x != 1)
    if bool(bad.any()):
        values = torch.unique(x[bad].detach().cpu())[:5].tolist()
        raise ValueError(f"{name} must be {expected}; got values {values}")
    return x


def relation_masks(
    labels: Tensor | None,
    ref_labels: Tensor | None = None,
    *,
    relevance: Tensor | None = None,
    self_index: Tensor | None = None,
    validate: bool = True,
) -> tuple[Tensor, Tensor]:
    """Boolean positive / negative masks ``[B, N]``.

    ``labels`` may be

    * class ids ``[B]`` (int): positive = same id;
    * multi-label ``[B, C]`` 0/1 (or bool): positive = at least one shared label;

    or ``relevance`` may be given directly as a ``[B, N]`` matrix, bool or 0/1
    values (then ``labels`` is ignored and negatives are its complement).

    Self-pairs are excluded from both masks: ``self_index`` (long ``[B]``) gives,
    for each query, the reference column holding the query itself (``-1`` for
    none). When ``ref_labels`` is None the references are the queries and
    ``self_index`` defaults to ``arange(B)`` (the diagonal).

    Multi-label and relevance values other than 0/1 (e.g. ``-1``, ``2``, NaN) raise
    ``ValueError``; ``validate=False`` skips that scan (for callers that checked
    already, e.g. once per batch rather than once per chunk).
    """
    if relevance is not None:
        if relevance.dim() != 2:
            raise ValueError(f"relevance must be a [B, N] matrix, got shape {tuple(relevance.shape)}")
        if validate:
            check_binary(relevance, "relevance", "a bool or 0/1 matrix [B, N]")
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
            if validate:
                check_binary(labels, "multi-label labels [B, C]", "0/1 (or bool)")
                if ref_labels is not None:
                    check_binary(ref_labels, "multi-label ref_labels [N, C]", "0/1 (or bool)")
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
