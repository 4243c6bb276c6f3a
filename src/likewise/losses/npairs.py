"""Multi-class N-pair loss (Sohn 2016, "Improved Deep Metric Learning with Multi-class N-pair
Loss Objective").

``K`` (anchor, positive) pairs of distinct classes, one per class present at least twice
(:func:`npairs_select`); with logits ``z_kl = <f_{a_k}, f_{p_l}>`` (``f`` L2-normalised when
``normalize_embeddings``, i.e. cosine similarity; raw embeddings otherwise, as in Sohn)::

    L = 1/K sum_k -log( e^{z_kk} / sum_l e^{z_kl} )  +  l2_reg * 1/(2K) sum_k (|x_{a_k}|^2 + |x_{p_k}|^2)

i.e. cross-entropy where each anchor's positives of the other classes are its negatives; the
penalty is on the raw embeddings ``x``.

Shapes: ``embeddings [B, D]``, ``labels [B]`` (class ids); the loss is a scalar.

Example::

    loss_fn = NPairsLoss()
    loss = loss_fn(model(images), labels)
    loss.backward()

Without a miner the pairs come from a sort of the labels
(:mod:`likewise.losses._kernels.npairs`); ``fast=False`` always selects them from the
positive mask with :func:`npairs_select` (the specification).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from likewise.losses._kernels import npairs as kernel
from likewise.losses.base import Batch, MetricLoss, zero_loss
from likewise.normalize import l2_normalize


def npairs_select(pos: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """One (anchor, positive) pair per class: pytorch-metric-learning's choice.

    For each class, the anchor is its lowest-index sample with a positive and the positive is
    that anchor's lowest-index positive (without a miner: the first and second sample of each
    class with at least two). ``pos`` bool ``[B, B]``; returns two long index tensors ``[K]``.
    Memory ``O(B^2)``.
    """
    has_pos = pos.any(1)
    same = labels.unsqueeze(1) == labels.unsqueeze(0)
    earlier = torch.ones_like(same).tril(-1)  # earlier[i, j]: j < i
    first = has_pos & ~(same & earlier & has_pos.unsqueeze(0)).any(1)
    anchors = first.nonzero().squeeze(1)
    positives = pos[anchors].to(torch.int8).argmax(1)  # first True
    return anchors, positives


def npairs_loss(
    embeddings: Tensor,
    anchors: Tensor,
    positives: Tensor,
    normalize_embeddings: bool = True,
    l2_reg: float = 0.0,
) -> Tensor:
    """The N-pair loss (formula in the module docstring) on the pairs ``anchors``, ``positives``
    (long ``[K]``) of ``embeddings [B, D]``."""
    # (advanced indexing: its backward, an accumulating index_put_, costs a tenth of
    # index_select's index_add on CPU)
    a, p = embeddings[anchors], embeddings[positives]
    logits = _npairs_logits(a, p, normalize_embeddings)
    loss = F.cross_entropy(logits, torch.arange(len(anchors), device=embeddings.device))
    if l2_reg:
        loss = loss + l2_reg * (a.pow(2).sum(1).mean() + p.pow(2).sum(1).mean()) / 2
    return loss


def _npairs_logits(a: Tensor, p: Tensor, normalize_embeddings: bool) -> Tensor:
    if normalize_embeddings:
        a, p = l2_normalize(a, dim=1), l2_normalize(p, dim=1)
    return a @ p.T


class NPairsLoss(MetricLoss):
    """Multi-class N-pair loss: a drop-in for PML's ``NPairsLoss`` (formula in the module docstring).

    The pairs are chosen as pytorch-metric-learning does (:func:`npairs_select`); dot product of
    L2-normalised embeddings (PML's default ``DotProductSimilarity()``), mean cross-entropy, so
    value and gradient agree with PML. Sohn's original form is ``normalize_embeddings=False``
    with ``l2_reg > 0`` (his penalty on the squared norms; default 0, as PML).

    ``ref_emb`` / ``relevance`` are refused (as in PML); labels must be class ids ``[B]``.
    ``miner=``: the pairs are chosen among the mined positives by the same lowest-index rule
    (PML takes the first mined pair per class in the miner's output order, which may differ).
    Stats: ``num_pairs``, ``mean_pos_similarity``, ``mean_neg_similarity`` (the logits).
    """

    accepts_refs = False

    def __init__(
        self, normalize_embeddings: bool = True, l2_reg: float = 0.0, miner: Any = None, *, fast: bool = True
    ) -> None:
        super().__init__(miner=miner, fast=fast)
        self.normalize_embeddings = bool(normalize_embeddings)
        if isinstance(l2_reg, bool) or not isinstance(l2_reg, (int, float)) or not 0 <= l2_reg < math.inf:
            raise ValueError(f"l2_reg must be a finite number >= 0, got {l2_reg!r}")
        self.l2_reg = float(l2_reg)

    def compute(self, batch: Batch) -> Tensor:
        if not batch.same_set or batch.relevance is not None:
            raise ValueError(
                "NPairsLoss supports neither ref_emb/ref_labels nor relevance (as in "
                "pytorch-metric-learning): call loss(embeddings, labels)"
            )
        labels = batch.labels
        assert labels is not None
        if labels.dim() != 1:
            raise ValueError(f"NPairsLoss needs class ids [B], got labels of shape {tuple(labels.shape)}")
        if self.fast and kernel.eligible(self.miner):
            anchors, positives = kernel.npairs_select_classes(labels)
        else:
            pos, _ = self.pair_masks(batch)
            anchors, positives = npairs_select(pos, labels)
        k = len(anchors)
        if k == 0:
            self._record(num_pairs=0)
            return zero_loss(batch.embeddings)
        x = batch.embeddings
        loss = npairs_loss(x, anchors, positives, self.normalize_embeddings, self.l2_reg)
        # the pairs' rows as they are now (the statistics are evaluated when read)
        x_a, x_p = x.detach().index_select(0, anchors), x.detach().index_select(0, positives)
        normalize = self.normalize_embeddings

        def mean_similarity(of_positives: bool) -> Callable[[], Tensor]:
            def mean() -> Tensor:
                z = _npairs_logits(x_a, x_p, normalize)
                diag = z.diagonal().sum()
                return diag / k if of_positives else (z.sum() - diag) / (k * k - k)

            return mean

        self._record(
            num_pairs=k,
            mean_pos_similarity=mean_similarity(True),
            mean_neg_similarity=mean_similarity(False) if k > 1 else 0.0,
        )
        return loss


__all__ = ["NPairsLoss", "npairs_loss", "npairs_select"]
