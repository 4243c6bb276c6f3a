"""FastAP: a differentiable average precision (Cakir, He, Xia, Kulis, Sclaroff, 2019, "Deep
Metric Learning to Rank").

Average precision of one query's ranking of its references depends on a sort, which has no
useful gradient. FastAP quantises the distance axis into bins with centres ``c_e = e delta``
(``e = 0..E-1``, ``E = num_bins + 1``, ``delta = max_dist / num_bins``) and replaces the sort
by soft histograms: each distance ``d`` votes into the bins by a triangular kernel, so
precision and recall at every bin edge are smooth functions of the distances::

    h+_ie = sum_{j positive of i} max(0, 1 - |d_ij - c_e| / delta)     (h-_ie: the negatives)
    H+_ie = sum_{e' <= e} h+_ie',   H_ie = sum_{e' <= e} (h+_ie' + h-_ie')
    FastAP_i = 1/N+_i sum_e h+_ie H+_ie / H_ie       (terms with h+ H+ = 0 or H = 0 skipped)
    L = mean over queries with a positive of (1 - FastAP_i)

``N+_i`` = number of positives of query ``i``. Distances are squared Euclidean between
L2-normalised embeddings (``[0, 4]``, ``max_dist = 4``), as in pytorch-metric-learning's
``FastAPLoss``, whose value and gradients :class:`FastAPLoss` reproduces.

Shapes: ``dist [B, N]``, masks bool ``[B, N]`` (:func:`fast_ap_loss`); the module takes
embeddings ``[B, D]`` and labels ``[B]`` (or multi-label ``[B, C]``, or ``relevance [B, N]``).

Example::

    loss_fn = FastAPLoss(num_bins=10)
    loss = loss_fn(model(images), labels)
    loss.backward()

The default path runs :mod:`likewise.losses._kernels.fast_ap` (two bins per distance,
``O(B N)``; for class ids on a CPU the gradient written out); ``fast=False`` runs the plain
formula below (dense kernels over all bins, ``O(B N E)`` memory).
"""

from __future__ import annotations

import torch
from torch import Tensor

from likewise.losses._kernels import fast_ap as kernel
from likewise.losses._kernels.positives import batch_pairs
from likewise.losses.base import Batch, MetricLoss, masked_mean
from likewise.normalize import l2_normalize, widen
from likewise.similarity import squared_euclidean


def soft_histograms(
    dist: Tensor, pos: Tensor, neg: Tensor, num_bins: int, max_dist: float = 4.0
) -> tuple[Tensor, Tensor]:
    """Per-row soft histograms ``h+``, ``h-`` ``[B, num_bins + 1]`` of ``dist [B, N]`` over the
    bool masks ``pos`` / ``neg`` (triangular kernels of width ``delta = max_dist / num_bins`` at
    the centres ``c_e = e delta``). Memory ``O(B N E)``."""
    centres = torch.linspace(0.0, max_dist, steps=num_bins + 1, device=dist.device, dtype=dist.dtype)
    votes = torch.relu(1 - torch.abs(dist.unsqueeze(2) - centres) / (max_dist / num_bins))  # [B, N, E]
    h_pos = (votes * pos.unsqueeze(2)).sum(1)
    h_neg = (votes * neg.unsqueeze(2)).sum(1)
    return h_pos, h_neg


def fast_ap_from_histograms(h_pos: Tensor, h_neg: Tensor, n_pos: Tensor) -> Tensor:
    """FastAP of each query ``[B]`` from its soft histograms ``[B, E]`` and positive count ``[B]``
    (0 for a query without positives)."""
    cum_pos = torch.cumsum(h_pos, dim=1)
    cum_all = torch.cumsum(h_pos + h_neg, dim=1)
    num = h_pos * cum_pos
    safe = (num > 0) & (cum_all > 0)
    terms = torch.where(
        safe, num / torch.where(safe, cum_all, torch.ones_like(cum_all)), torch.zeros_like(num)
    )
    return terms.sum(1) / n_pos.to(h_pos.dtype).clamp_min(1)


def fast_ap_per_row(
    dist: Tensor, pos: Tensor, neg: Tensor, num_bins: int = 10, max_dist: float = 4.0
) -> Tensor:
    """FastAP of each query ``[B]`` (0 for rows without positives); see the module docstring."""
    h_pos, h_neg = soft_histograms(dist, pos, neg, num_bins, max_dist)
    return fast_ap_from_histograms(h_pos, h_neg, pos.sum(1))


def fast_ap_loss(dist: Tensor, pos: Tensor, neg: Tensor, num_bins: int = 10, max_dist: float = 4.0) -> Tensor:
    """FastAP loss: ``mean over queries with a positive of (1 - FastAP_i)``; 0 (in the graph) if none.

    ``dist [B, N]`` distances in ``[0, max_dist]`` (squared Euclidean between unit
    vectors: ``max_dist = 4``), masks bool ``[B, N]`` (disjoint).
    """
    ap = fast_ap_per_row(dist, pos, neg, num_bins, max_dist)
    return masked_mean(1 - ap, pos.any(1))


class FastAPLoss(MetricLoss):
    """FastAP (Cakir et al., 2019): ``1 - `` a histogram-binned, differentiable average precision.

    See the module docstring for the formula. Each query ranks its references (the batch,
    self excluded; or ``ref_emb`` — an extension: pytorch-metric-learning refuses ``ref_emb``
    here); queries without a positive are left out of the mean. No ``miner=``: AP is a
    listwise quantity over all references. Stats: ``fast_ap`` (mean over queries with a
    positive), ``queries_with_pos`` (fraction). bfloat16 embeddings are computed in float32
    (the loss is float32, gradients bfloat16): its 8 significant bits count a histogram's
    entries exactly only up to 256.
    """

    def __init__(self, num_bins: int = 10, *, fast: bool = True) -> None:
        super().__init__(fast=fast)
        if isinstance(num_bins, bool) or int(num_bins) != num_bins or int(num_bins) < 1:
            raise ValueError(f"num_bins must be a positive integer, got {num_bins!r}")
        self.num_bins = int(num_bins)

    def compute(self, batch: Batch) -> Tensor:
        x, y = batch.embeddings, batch.ref_emb
        if x.dtype == torch.bfloat16:  # histogram counts: bfloat16 counts exactly only to 256
            x = widen(x)
            y = x if batch.same_set else widen(y)
        x = l2_normalize(x, dim=1)
        y = x if batch.same_set else l2_normalize(y, dim=1)
        if self.fast and kernel.class_ids_eligible(batch):
            loss, ap, has_pos = kernel.fast_ap_of_class_ids(x, y, *batch_pairs(batch), self.num_bins)
        else:
            pos, neg = batch.masks()
            dist = squared_euclidean(x, y)
            fused = self.fast and kernel.histograms_eligible(dist)
            h_pos, h_neg = (kernel.soft_histograms_fused if fused else soft_histograms)(
                dist, pos, neg, self.num_bins
            )
            ap = fast_ap_from_histograms(h_pos, h_neg, pos.sum(1))
            has_pos = pos.any(1)
            loss = masked_mean(1 - ap, has_pos)
        ap = ap.detach()  # (the mask path's ap is in the graph: not kept alive by the statistics)
        self._record(
            fast_ap=lambda: masked_mean(ap, has_pos), queries_with_pos=lambda: has_pos.double().mean()
        )
        return loss


__all__ = ["FastAPLoss", "fast_ap_from_histograms", "fast_ap_loss", "fast_ap_per_row", "soft_histograms"]
