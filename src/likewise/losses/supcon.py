"""Supervised contrastive loss (Khosla et al. 2020, "Supervised Contrastive Learning"), on
cosine similarities.

With ``l_ij = s_ij / t``, positives ``P(i)`` and candidates ``A(i) = P(i) | N(i)`` of query ``i``
(every reference but ``i`` itself without a miner)::

    L_out(i) = -1/|P(i)| sum_{p in P(i)} log( e^{l_ip} / sum_{a in A(i)} e^{l_ia} )
    L_in(i)  = -log( 1/|P(i)| sum_{p in P(i)} e^{l_ip} / sum_{a in A(i)} e^{l_ia} )
    L = mean over the anchors with a positive and at least two candidates

(an anchor whose only candidate is its positive has a loss that is identically zero; like
PML's ``AvgNonZeroReducer`` we do not count it). ``L_out`` is the paper's recommended form and
the default.

Shapes: ``embeddings [B, D]``, ``labels [B]`` (or ``[B, C]``), ``ref_emb [N, D]``,
``ref_labels [N]``; the loss is a scalar.

Example::

    loss_fn = SupConLoss(temperature=0.1)
    loss = loss_fn(model(images), labels)
    loss.backward()

The fast kernel (class ids, no miner, no chunking) is :mod:`likewise.losses._kernels.supcon`;
``fast=False`` always runs :func:`supcon_rows` (the specification).
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from likewise.losses._kernels import supcon as kernel
from likewise.losses._kernels.row_blocks import (
    RowRule,
    check_chunk_and_miner,
    check_temperature,
    functional_row_loss,
    row_loss,
)
from likewise.losses.base import Batch, MetricLoss, masked_logsumexp

SupConVariant = Literal["out", "in"]


def supcon_rows(variant: str) -> RowRule:
    """The row rule of ``L_out`` or ``L_in``: per query row ``i`` ``(L(i), 1)`` for a counted
    anchor, ``(0, 0)`` otherwise; the loss is the sum of the first over the sum of the second.

    The rule takes ``logits [r, N]`` = similarity / temperature and ``pos`` / ``neg`` bool
    ``[r, N]``.
    """

    def rule(logits: Tensor, pos: Tensor, neg: Tensor) -> tuple[Tensor, Tensor]:
        n_pos = pos.sum(1)
        count = n_pos.clamp_min(1).to(logits.dtype)
        lse_all = masked_logsumexp(logits, pos | neg, dim=1)  # log sum_A e^l
        if variant == "out":
            per_row = lse_all - torch.where(pos, logits, torch.zeros_like(logits)).sum(1) / count
        else:
            per_row = lse_all - masked_logsumexp(logits, pos, dim=1) + torch.log(count)
        counted = (n_pos > 0) & (n_pos + neg.sum(1) > 1)
        return torch.where(counted, per_row, torch.zeros_like(per_row)), counted

    return rule


def _check_variant(variant: Any) -> str:
    if variant not in ("out", "in"):
        raise ValueError(f"variant must be 'out' or 'in', got {variant!r}")
    return variant


def supcon_loss(
    embeddings: Tensor,
    labels: Tensor,
    *,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
    temperature: float = 0.1,
    variant: SupConVariant = "out",
    chunk_size: int | None = None,
) -> Tensor:
    """SupCon of a batch (formula in the module docstring); ``chunk_size``: rows at a time
    (:mod:`likewise.losses._kernels.row_blocks`)."""
    rule = supcon_rows(_check_variant(variant))
    return functional_row_loss(
        rule, embeddings, labels, ref_emb, ref_labels, temperature, "cosine", chunk_size
    )


class SupConLoss(MetricLoss):
    """Supervised contrastive loss: a drop-in for PML's ``SupConLoss`` (formula in the module
    docstring); ``variant="out"`` (default, as PML) or ``"in"``.

    Same default ``temperature=0.1`` and cosine similarity as pytorch-metric-learning; value
    and gradient agree with ``variant="out"`` (also with ``ref_emb``), with two deliberate
    differences: (1) a batch with positives but no negative pair at all (one class) gets the
    paper's ``L_out`` (the candidates are the other positives), where PML returns 0; (2) PML
    averages the per-anchor losses that are > 0, we average over anchors with a positive and
    another candidate: they differ only when a loss rounds to exactly zero.

    ``chunk_size``: query rows at a time (:mod:`likewise.losses._kernels.row_blocks`).
    ``miner=``: ``P`` and ``N`` (hence ``A``) are restricted to the mined pairs, as in PML.

    ``indices_tuple=`` (PML's pairs or triplets, labels then optional): ``P(i)`` and ``N(i)`` are
    the pairs listed for anchor ``i`` (each once; a pair listed as both is refused, as in PML),
    unlisted pairs are not candidates.

    Stats: ``pos_pairs``, ``anchors_with_pos``, ``mean_pos_similarity``, ``mean_neg_similarity``.
    """

    accepts_indices_tuple = True
    disjoint_pairs = True

    def __init__(
        self,
        temperature: float = 0.1,
        variant: SupConVariant = "out",
        chunk_size: int | None = None,
        miner: Any = None,
        *,
        fast: bool = True,
    ) -> None:
        super().__init__(miner=miner, fast=fast)
        self.temperature = check_temperature(temperature)
        self.variant = _check_variant(variant)
        self.chunk_size = check_chunk_and_miner(chunk_size, miner)

    def compute(self, batch: Batch) -> Tensor:
        if self.fast and kernel.eligible(batch, self.miner, self.chunk_size):
            loss, stats = kernel.supcon_fast(batch, self.temperature, self.variant)
        else:
            masks = None if self.miner is None else self.pair_masks(batch)
            rule = supcon_rows(self.variant)
            loss, stats = row_loss(batch, rule, self.temperature, "cosine", self.chunk_size, masks)
        self._record(**stats)
        return loss


__all__ = ["SupConLoss", "supcon_loss", "supcon_rows"]
