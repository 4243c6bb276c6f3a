"""NT-Xent / InfoNCE (van den Oord et al. 2018, "Representation Learning with Contrastive
Predictive Coding"; Chen et al. 2020, SimCLR), on cosine similarities.

With ``l_ij = s_ij / t`` (``s`` the cosine similarity, ``t`` the temperature), ``P(i)`` / ``N(i)``
the positives / negatives of query ``i`` (every reference but ``i`` itself without a miner)::

    l(i, p) = -log( e^{l_ip} / (e^{l_ip} + sum_{n in N(i)} e^{l_in}) )
            = log(e^{l_ip} + sum_{n in N(i)} e^{l_in}) - l_ip
            = softplus( log sum_{n in N(i)} e^{l_in} - l_ip )
    L = mean over all positive pairs (i, p) of l(i, p)

(pytorch-metric-learning's ``NTXentLoss``). An anchor without negatives gives ``l = 0``; a
batch without a positive pair a zero loss that back-propagates. With
``labels = arange(B).repeat(2)`` on two stacked views this is SimCLR's loss.

Shapes: ``embeddings [B, D]``, ``labels [B]`` (or multi-label ``[B, C]``), ``ref_emb [N, D]``,
``ref_labels [N]``; the loss is a scalar.

Example::

    loss_fn = NTXentLoss(temperature=0.1)
    loss = loss_fn(model(images), labels)
    loss.backward()

The fast kernel (class ids, no miner, no chunking) is :mod:`likewise.losses._kernels.ntxent`;
``fast=False`` always runs :func:`ntxent_rows` (the specification).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from likewise.losses._kernels import ntxent as kernel
from likewise.losses._kernels.row_blocks import (
    check_chunk_and_miner,
    check_temperature,
    functional_row_loss,
    row_loss,
    scaled_similarity,
)
from likewise.losses.base import Batch, MetricLoss, masked_logsumexp


def ntxent_rows(logits: Tensor, pos: Tensor, neg: Tensor) -> tuple[Tensor, Tensor]:
    """Per query row ``i``: ``(sum_{p in P(i)} l(i, p), |P(i)|)``; the loss is the sum of the
    first over the sum of the second.

    ``logits [r, N]`` = similarity / temperature, ``pos`` / ``neg`` bool ``[r, N]``.
    """
    lse_neg = masked_logsumexp(logits, neg, dim=1).unsqueeze(1)  # log sum_N e^l [r, 1]
    lse_neg = lse_neg.masked_fill(~neg.any(1, keepdim=True), float("-inf"))  # no negative: l = 0
    # l(i, p) at the positives (the other entries are 0 before softplus: no exp of a large negative)
    terms = torch.where(pos, _softplus(torch.where(pos, lse_neg - logits, 0.0)), 0.0)
    return terms.sum(1), pos.sum(1)


def _softplus(x: Tensor) -> Tensor:
    """``log(1 + e^x)`` (``= log(e^a + e^b) - a`` for ``x = b - a``), linear only above 40 where
    ``log(1 + e^-x) < 5e-18``: exact to float64 rounding (``F.softplus`` switches at 20)."""
    return F.softplus(x, threshold=40.0)


def ntxent_loss(
    embeddings: Tensor,
    labels: Tensor,
    *,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
    temperature: float = 0.07,
    chunk_size: int | None = None,
) -> Tensor:
    """NT-Xent of a batch (formula in the module docstring); ``chunk_size``: rows at a time
    (:mod:`likewise.losses._kernels.row_blocks`)."""
    args = (embeddings, labels, ref_emb, ref_labels, temperature, "cosine", chunk_size)
    return functional_row_loss(ntxent_rows, *args)


def ntxent_listed(logits: Tensor, pos_w: Tensor, neg_w: Tensor) -> Tensor:
    """NT-Xent over listed pairs: ``sum pos_w[a, p] l(a, p) / sum pos_w`` with
    ``l(a, p) = log(e^{l_ap} + sum_n neg_w[a, n] e^{l_an}) - l_ap`` (``logits [B, N]``, counts
    ``pos_w, neg_w [B, N]``: how often each pair is listed)."""
    listed = neg_w > 0
    weighted = logits + torch.where(listed, neg_w, 1.0).log()
    lse_neg = masked_logsumexp(weighted, listed, dim=1).unsqueeze(1)
    lse_neg = lse_neg.masked_fill(~listed.any(1, keepdim=True), float("-inf"))  # no negative: l = 0
    return (pos_w * _softplus(lse_neg - logits)).sum() / pos_w.sum().clamp_min(1)


class NTXentLoss(MetricLoss):
    """NT-Xent / InfoNCE: a drop-in for PML's ``NTXentLoss`` (formula in the module docstring).

    Same default ``temperature=0.07``, cosine similarity and mean over positive pairs as
    pytorch-metric-learning, so value and gradient agree (also with ``ref_emb`` /
    ``ref_labels``). (PML also returns zero when the batch has at most one positive and one
    negative pair; we compute the loss there.)

    ``chunk_size``: query rows at a time (:mod:`likewise.losses._kernels.row_blocks`).
    ``miner=``: the positives and negatives are restricted to the mined pairs.

    ``indices_tuple=`` (PML's pairs or triplets, labels then optional): ``l(a, p)`` for every
    listed positive pair, over the negatives listed for ``a``, each pair as often as it is
    listed (PML's pair-based form); mean over the listed positive pairs. Not chunked.

    Stats: ``pos_pairs``, ``anchors_with_pos``, ``mean_pos_similarity``, ``mean_neg_similarity``.
    """

    accepts_indices_tuple = True

    def __init__(
        self,
        temperature: float = 0.07,
        chunk_size: int | None = None,
        miner: Any = None,
        *,
        fast: bool = True,
    ) -> None:
        super().__init__(miner=miner, fast=fast)
        self.temperature = check_temperature(temperature)
        self.chunk_size = check_chunk_and_miner(chunk_size, miner)

    def compute(self, batch: Batch) -> Tensor:
        if batch.given is not None:
            return self._compute_listed(batch)
        if self.fast and kernel.eligible(batch, self.miner, self.chunk_size, self.temperature):
            loss, stats = kernel.ntxent_fast(batch, self.temperature)
        else:
            masks = None if self.miner is None else self.pair_masks(batch)
            loss, stats = row_loss(batch, ntxent_rows, self.temperature, "cosine", self.chunk_size, masks)
        self._record(**stats)
        return loss

    def _compute_listed(self, batch: Batch) -> Tensor:
        """Given pairs (``indices_tuple``): :func:`ntxent_listed` on their counts (within a miner's)."""
        assert batch.given is not None
        pos, neg = self.pair_masks(batch)
        pos_w, neg_w = batch.given.pos_w * pos, batch.given.neg_w * neg
        refs = None if batch.same_set else batch.ref_emb
        logits = scaled_similarity(batch.embeddings, refs, "cosine", self.temperature)
        self._record(pos_pairs=pos_w.sum())
        return ntxent_listed(logits, pos_w, neg_w)


__all__ = ["NTXentLoss", "ntxent_listed", "ntxent_loss", "ntxent_rows"]
