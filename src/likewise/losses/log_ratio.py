"""Log-ratio loss for continuous labels (Kim, Ha, Kwak, 2019, "Deep Metric Learning Beyond
Binary Supervision").

Labels are not classes but continuous vectors (a pose, an age, a caption
embedding), and the embedding distances should keep the *ratios* of label
distances. For an anchor ``a`` and two other samples ``i, j``, with ``D`` the
squared Euclidean distance::

    l(a, i, j) = ( log D(f_a, f_i) / D(f_a, f_j)  -  log D(y_a, y_i) / D(y_a, y_j) )^2
    L = mean over all triples (a, {i, j}),  i != j,  i, j != a

``log D`` is taken as ``log(D + eps)`` (``eps = 1e-6`` as in the authors' code),
which keeps duplicates (``D = 0``) finite.

No ``B^3`` tensor is built. With ``u_i = log(D(f_a, f_i) + eps) - log(D(y_a, y_i) + eps)``
each triple's term is ``(u_i - u_j)^2`` and, over the ``n`` candidates of anchor ``a``,
``sum_{i<j} (u_i - u_j)^2 = n sum_i (u_i - mean u)^2``: time and memory ``O(B N)``
(centring first avoids the cancellation of the equivalent ``n sum u^2 - (sum u)^2``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from likewise.losses.base import INDICES_TUPLE_MESSAGE, MetricLoss, _check_float_matrix, zero_loss
from likewise.similarity import self_pair_mask, squared_euclidean

EPS = 1e-6


def log_ratio_loss(
    emb_dist: Tensor, label_dist: Tensor, valid: Tensor | None = None, eps: float = EPS
) -> Tensor:
    """Log-ratio loss from distance matrices (see the module docstring).

    ``emb_dist [B, N]`` embedding distances (squared Euclidean in the paper),
    ``label_dist [B, N]`` label distances, ``valid`` bool ``[B, N]``: the
    candidates ``i`` of each anchor (default: all). Returns the mean of
    ``(u_i - u_j)^2`` over every anchor's unordered candidate pairs; 0 (in the
    graph) when no anchor has two candidates.
    """
    if valid is None:
        valid = torch.ones_like(emb_dist, dtype=torch.bool)
    u = torch.log(emb_dist + eps) - torch.log(label_dist.to(emb_dist.dtype) + eps)
    u = torch.where(valid, u, torch.zeros_like(u))
    n = valid.sum(1).to(emb_dist.dtype)  # [B]
    mean_u = u.sum(1) / n.clamp_min(1)
    dev = torch.where(valid, u - mean_u[:, None], torch.zeros_like(u))
    pair_sums = n * dev.pow(2).sum(1)  # sum over unordered pairs of (u_i - u_j)^2, per anchor
    num_pairs = (n * (n - 1) / 2).sum()
    if float(num_pairs) == 0:
        return zero_loss(emb_dist)
    return pair_sums.sum() / num_pairs


def _check_continuous_labels(labels: Any, n: int, name: str, rows_name: str) -> Tensor:
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dim() not in (1, 2):
        raise ValueError(
            f"{name} must be continuous label vectors [B, L] (or [B]), got shape {tuple(labels.shape)}"
        )
    if labels.dtype == torch.bool or labels.is_complex():
        raise TypeError(f"{name} must be real-valued (float) label vectors, got dtype {labels.dtype}")
    if labels.shape[0] != n:
        raise ValueError(f"{name} has {labels.shape[0]} rows but {rows_name} has {n}")
    labels = labels.to(torch.float64)
    if not torch.isfinite(labels).all():
        raise ValueError(f"{name} contain NaN or inf")
    return labels if labels.dim() == 2 else labels[:, None]


class LogRatioLoss(MetricLoss):
    """Log-ratio loss (Kim et al., 2019) for continuous labels; see the module docstring.

    Call ``loss(embeddings [B, D], labels [B, L] float)`` (``[B]`` is read as
    ``[B, 1]``; label distance = squared Euclidean), or
    ``loss(embeddings, label_dist=[B, B])`` with your own non-negative label
    distances (only their logs matter: e.g. already squared, or a graded
    dissimilarity). Without ``ref_emb`` every sample is an anchor and the others
    are its candidates. With ``ref_emb [N, D]`` the candidates are the
    references (labels from ``ref_labels [N, L]``, or ``label_dist [B, N]``);
    ``ref_self_index [B]`` marks a query's own row in ``ref_emb`` (``-1``: none).

    Labels are float vectors, unlike the class ids of the other losses, so this
    loss validates its own input. No ``miner=``. Stats: ``triples`` (number of
    ``(a, {i, j})`` terms averaged), ``loss``.
    """

    def __init__(self, eps: float = EPS) -> None:
        super().__init__()
        if not eps > 0:
            raise ValueError(f"eps must be positive, got {eps!r}")
        self.eps = float(eps)

    def forward(  # type: ignore[override]
        self,
        embeddings: Tensor,
        labels: Tensor | None = None,
        *args: Any,
        label_dist: Tensor | None = None,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
        ref_self_index: Tensor | None = None,
        indices_tuple: Any = None,
    ) -> Tensor:
        if args or indices_tuple is not None:
            raise TypeError(INDICES_TUPLE_MESSAGE)
        embeddings = _check_float_matrix(embeddings, "embeddings")
        b = embeddings.shape[0]
        same_set = ref_emb is None
        if same_set:
            if ref_labels is not None or ref_self_index is not None:
                raise ValueError("ref_labels / ref_self_index need ref_emb")
            refs = embeddings
        else:
            refs = _check_float_matrix(ref_emb, "ref_emb")
            if refs.shape[1] != embeddings.shape[1]:
                raise ValueError(
                    f"ref_emb has dimension {refs.shape[1]} but embeddings have {embeddings.shape[1]}"
                )
        n = refs.shape[0]
        if (labels is None) == (label_dist is None):
            raise ValueError("LogRatioLoss needs exactly one of labels [B, L] (float) or label_dist [B, N]")
        if label_dist is not None:
            if not isinstance(label_dist, Tensor) or not label_dist.is_floating_point():
                raise TypeError("label_dist must be a floating point torch.Tensor [B, N]")
            if tuple(label_dist.shape) != (b, n):
                raise ValueError(f"label_dist must have shape {(b, n)}, got {tuple(label_dist.shape)}")
            if not torch.isfinite(label_dist).all() or bool((label_dist < 0).any()):
                raise ValueError("label_dist must be finite and non-negative")
            if ref_labels is not None:
                raise ValueError("pass either label_dist or labels/ref_labels, not both")
            ldist = label_dist.to(embeddings.device)
        else:
            y = _check_continuous_labels(labels, b, "labels", "embeddings")
            if same_set:
                y_ref = y
            else:
                if ref_labels is None:
                    raise ValueError("ref_emb needs ref_labels (or pass label_dist [B, N])")
                y_ref = _check_continuous_labels(ref_labels, n, "ref_labels", "ref_emb")
                if y_ref.shape[1] != y.shape[1]:
                    raise ValueError(f"labels have {y.shape[1]} columns but ref_labels have {y_ref.shape[1]}")
            ldist = squared_euclidean(y, y_ref).to(device=embeddings.device)
        valid = torch.ones(b, n, dtype=torch.bool, device=embeddings.device)
        if same_set:
            valid &= ~torch.eye(b, n, dtype=torch.bool, device=embeddings.device)
        elif ref_self_index is not None:
            if not isinstance(ref_self_index, Tensor) or ref_self_index.dtype not in (
                torch.int32,
                torch.int64,
            ):
                raise TypeError("ref_self_index must be an integer torch.Tensor [B]")
            if tuple(ref_self_index.shape) != (b,) or bool(
                ((ref_self_index < -1) | (ref_self_index >= n)).any()
            ):
                raise ValueError(f"ref_self_index must have shape {(b,)} with entries in [-1, {n - 1}]")
            valid &= ~self_pair_mask(ref_self_index.to(embeddings.device).long(), n)
        loss = log_ratio_loss(squared_euclidean(embeddings, refs), ldist, valid, self.eps)
        k = valid.sum(1).double()
        self._record(triples=(k * (k - 1) / 2).sum(), loss=loss.detach())
        return loss


__all__ = ["LogRatioLoss", "log_ratio_loss"]
