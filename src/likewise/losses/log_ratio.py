"""Log-ratio loss for continuous labels (Kim, Ha, Kwak, 2019, "Deep Metric Learning Beyond
Binary Supervision").

Labels are not classes but continuous vectors (a pose, an age, a caption embedding), and the
embedding distances should keep the *ratios* of label distances. For an anchor ``a`` and two
of its candidates ``i, j``, with ``D`` the squared Euclidean distance::

    l(a, i, j) = ( log D(f_a, f_i) / D(f_a, f_j)  -  log D(y_a, y_i) / D(y_a, y_j) )^2
    L = mean over all triples (a, {i, j}),  i != j,  i, j != a

``log D`` is taken as ``log(D + eps)`` (``eps = 1e-6`` as in the authors' code), which keeps
duplicates (``D = 0``) finite. No ``B^3`` tensor is built: with ``u_i = log(D(f_a, f_i) + eps)
- log(D(y_a, y_i) + eps)`` each triple's term is ``(u_i - u_j)^2`` and, over the ``n``
candidates of anchor ``a``, ``sum_{i<j} (u_i - u_j)^2 = n sum_i (u_i - mean u)^2``: time and
memory ``O(B N)`` (centring first avoids the cancellation of ``n sum u^2 - (sum u)^2``).

Shapes: distances ``[B, N]`` (:func:`log_ratio_loss`); the module takes embeddings ``[B, D]``
and label vectors ``[B, L]`` (or ``label_dist [B, N]``).

Example::

    loss_fn = LogRatioLoss()
    loss = loss_fn(model(images), poses)  # poses: float [B, 3]
    loss.backward()

The default path runs :mod:`likewise.losses._kernels.log_ratio` (same values, gradient
written into one buffer); ``fast=False`` runs :func:`log_ratio_loss`'s formula.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from likewise.devices import check_on_device
from likewise.losses._kernels import log_ratio as kernel
from likewise.losses._kernels.euclidean import distance_matrix
from likewise.losses._kernels.positives import self_pairs
from likewise.losses.base import INDICES_TUPLE_MESSAGE, MetricLoss, _check_float_matrix, full_precision
from likewise.normalize import promote, widen
from likewise.similarity import pairwise_distance, self_pair_mask, squared_euclidean

EPS = 1e-6


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the loss is computed in: float32 for float16 and bfloat16, else ``dtype``
    (``log(D + eps)`` needs ``D`` to about ``eps``, its gradient divides by ``D + eps``, and the
    loss sums ``B N`` squared log-ratios). Gradients go back saturated to the input's range."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def log_ratio_of_logs(
    emb_dist: Tensor, label_log: Tensor, valid: Tensor | None, eps: float
) -> tuple[Tensor, Tensor]:
    """The loss of ``emb_dist [B, N]`` against ``label_log = log(D_y + eps) [B, N]`` over the
    candidates ``valid`` (bool ``[B, N]``, ``None``: all), and the number of triples (a tensor).
    Computed in :func:`work_dtype`; the loss has ``emb_dist``'s dtype."""
    work = work_dtype(emb_dist.dtype)
    u = torch.log(widen(emb_dist, work) + eps) - label_log  # [B, N]
    if valid is None:
        valid = torch.ones_like(u, dtype=torch.bool)
    count = valid.sum(1).to(work)  # candidates per anchor
    mean = torch.where(valid, u, 0.0).sum(1) / count.clamp_min(1)
    dev = torch.where(valid, u - mean.unsqueeze(1), 0.0)
    num_pairs = (count * (count - 1) / 2).sum()
    loss = (count * dev.square().sum(1)).sum() / num_pairs.clamp_min(1)  # 0 without triples
    return loss.to(emb_dist.dtype), num_pairs


def log_ratio_loss(
    emb_dist: Tensor, label_dist: Tensor, valid: Tensor | None = None, eps: float = EPS
) -> Tensor:
    """Log-ratio loss from distance matrices (see the module docstring), plain autograd.

    ``emb_dist [B, N]`` embedding distances (squared Euclidean in the paper), ``label_dist
    [B, N]`` label distances, ``valid`` bool ``[B, N]``: the candidates ``i`` of each anchor
    (default: all). The mean of ``(u_i - u_j)^2`` over every anchor's unordered candidate
    pairs; 0 (in the graph) when no anchor has two candidates.
    """
    label_log = torch.log(label_dist.to(work_dtype(emb_dist.dtype)) + eps)
    return log_ratio_of_logs(emb_dist, label_log, valid, eps)[0]


#: label vectors up to this width get their distances from per-column differences
#: (exact to rounding); wider ones from the GEMM expansion in float64
DIRECT_LABEL_COLUMNS = 8


def label_log_distance(y: Tensor, y_ref: Tensor, eps: float, dtype: torch.dtype) -> Tensor:
    """``log(|y_i - y_ref_j|^2 + eps)`` ``[B, N]`` in ``dtype`` for label vectors ``[B, L]``, ``[N, L]``.

    Up to ``DIRECT_LABEL_COLUMNS`` columns the squared differences are summed column by column
    in the labels' dtype (no cancellation: close labels keep their small distance); wider
    labels use ``|y|^2 + |y'|^2 - 2 y y'^T`` in float64.
    """
    if y.shape[1] > DIRECT_LABEL_COLUMNS:
        d = squared_euclidean(y.double(), y_ref.double()).to(dtype)
    else:
        d = None
        for col in range(y.shape[1]):
            diff = torch.sub(y[:, col, None], y_ref[None, :, col]).to(dtype)
            d = diff.square_() if d is None else d.addcmul_(diff, diff)
        assert d is not None
    return d.add_(eps).log_()


def _check_continuous_labels(labels: Any, n: int, name: str, rows_name: str) -> Tensor:
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dim() not in (1, 2):
        raise ValueError(
            f"{name} must be continuous label vectors [B, L] (or [B]), got shape {tuple(labels.shape)}"
        )
    if labels.is_complex():
        raise TypeError(f"{name} must be real-valued (float) label vectors, got dtype {labels.dtype}")
    if labels.shape[0] != n:
        raise ValueError(f"{name} has {labels.shape[0]} entries but {rows_name} has {n} rows")
    if labels.dtype not in (torch.float32, torch.float64):
        labels = labels.to(torch.float64)
    check_on_device(torch.isfinite(labels).all(), f"{name} contain NaN or inf")
    return labels if labels.dim() == 2 else labels[:, None]


class LogRatioLoss(MetricLoss):
    """Log-ratio loss (Kim et al., 2019) for continuous labels; see the module docstring.

    Call ``loss(embeddings [B, D], labels [B, L] float)`` (``[B]`` is read as ``[B, 1]``;
    label distance = squared Euclidean), or ``loss(embeddings, label_dist=[B, B])`` with your
    own non-negative label distances (only their logs matter: e.g. already squared, or a
    graded dissimilarity). Without ``ref_emb`` every sample is an anchor and the others are
    its candidates. With ``ref_emb [N, D]`` the candidates are the references (labels from
    ``ref_labels [N, L]``, or ``label_dist [B, N]``); ``ref_self_index [B]`` marks a query's
    own row in ``ref_emb`` (``-1``: none).

    Labels are float vectors, unlike the class ids of the other losses, so this loss
    validates its own input. No ``miner=``. Stats: ``triples`` (number of ``(a, {i, j})``
    terms averaged), ``loss``.
    """

    label_kind = "continuous"

    def __init__(self, eps: float = EPS, *, fast: bool = True) -> None:
        super().__init__(fast=fast)
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
            raise TypeError(f"LogRatioLoss {INDICES_TUPLE_MESSAGE}")
        with full_precision(embeddings) as cast:
            emb, dist, refs = cast(embeddings), cast(label_dist), cast(ref_emb)
            return self._loss(emb, labels, dist, refs, ref_labels, ref_self_index)

    def _loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        label_dist: Tensor | None,
        ref_emb: Tensor | None,
        ref_labels: Tensor | None,
        ref_self_index: Tensor | None,
    ) -> Tensor:
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
            if refs.dtype != embeddings.dtype:  # computed in torch's promoted dtype
                embeddings, refs = promote(embeddings, refs)
        if work_dtype(embeddings.dtype) != embeddings.dtype:
            embeddings = widen(embeddings, work_dtype(embeddings.dtype))
            refs = embeddings if same_set else widen(refs, embeddings.dtype)
        n = refs.shape[0]
        if (labels is None) == (label_dist is None):
            raise ValueError("LogRatioLoss needs exactly one of labels [B, L] (float) or label_dist [B, N]")
        if label_dist is not None:
            if not isinstance(label_dist, Tensor) or not label_dist.is_floating_point():
                raise TypeError("label_dist must be a floating point torch.Tensor [B, N]")
            if tuple(label_dist.shape) != (b, n):
                raise ValueError(f"label_dist must have shape {(b, n)}, got {tuple(label_dist.shape)}")
            low, high = label_dist.detach().aminmax()  # (NaN propagates)
            check_on_device((low >= 0) & torch.isfinite(high), "label_dist must be finite and non-negative")
            if ref_labels is not None:
                raise ValueError("pass either label_dist or labels/ref_labels, not both")
            work = work_dtype(embeddings.dtype)
            label_log = torch.log(label_dist.to(device=embeddings.device, dtype=work) + self.eps)
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
            label_log = label_log_distance(y, y_ref, self.eps, work_dtype(embeddings.dtype))
            label_log = label_log.to(embeddings.device)
        if ref_self_index is not None:
            if not isinstance(ref_self_index, Tensor) or ref_self_index.dtype not in (
                torch.int32,
                torch.int64,
            ):
                raise TypeError("ref_self_index must be an integer torch.Tensor [B]")
            message = f"ref_self_index must have shape {(b,)} with entries in [-1, {n - 1}]"
            if tuple(ref_self_index.shape) != (b,):
                raise ValueError(message)
            check_on_device(((ref_self_index >= -1) & (ref_self_index < n)).all(), message)
            ref_self_index = ref_self_index.to(embeddings.device).long()
        if self.fast and kernel.eligible(embeddings, ref_self_index):
            excluded = self_pairs(ref_self_index, b, same_set, embeddings.device)
            emb_dist = distance_matrix(embeddings, refs, "squared_euclidean")
            loss, triples = kernel.log_ratio_kernel(emb_dist, label_log, excluded, self.eps, embeddings.dtype)
        else:
            if same_set:
                ref_self_index = torch.arange(b, device=embeddings.device)
            valid = None if ref_self_index is None else ~self_pair_mask(ref_self_index, n)
            emb_dist = pairwise_distance(embeddings, refs, "squared_euclidean")
            loss, triples = log_ratio_of_logs(emb_dist, label_log, valid, self.eps)
        self._record(triples=triples, loss=loss.detach())
        return loss


__all__ = ["LogRatioLoss", "label_log_distance", "log_ratio_loss"]
