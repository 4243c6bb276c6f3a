"""Contrastive loss (Chopra, Hadsell & LeCun 2005; Hadsell, Chopra & LeCun 2006).

Pairs of a query ``i`` and a reference ``j`` at distance ``d = D_ij`` are pulled together
when similar (``P``) and pushed beyond a margin when dissimilar (``N``). Per pair, by
``neg_form``::

    "hinge" (PML's default)     pos [d - m_p]_+          neg [m_n - d]_+
    "squared_hinge" (Hadsell)   pos [d - m_p]_+^2        neg [m_n - d]_+^2
    "hinge_squared"             pos [d^2 - m_p^2]_+      neg [m_n^2 - d^2]_+

    L = sum_P t / #{P : t > 0}  +  sum_N t / #{N : t > 0}

each half averaged over its non-zero terms (pytorch-metric-learning's ``AvgNonZeroReducer``),
0 for a half without any. With a similarity ``s`` (``distance="cosine"`` / ``"dot"``) the hinges
are mirrored: pos ``[m_p - s]_+``, neg ``[s - m_n]_+`` (squared for ``"squared_hinge"``).

Shapes: ``embeddings [B, D]``, ``labels [B]`` (or multi-label ``[B, C]``), optional
``ref_emb [N, D]``, ``ref_labels [N]``; the functional form takes the matrix ``[B, N]`` and
the masks ``pos, neg [B, N]`` (bool, or counts: how often a pair is listed). Memory
``O(B * N)``. Fast kernels: :mod:`likewise.losses._kernels.contrastive`.

Example::

    loss_fn = ContrastiveLoss(pos_margin=0.0, neg_margin=1.0)
    x, y = torch.randn(32, 16, requires_grad=True), torch.arange(32) % 8
    loss_fn(x, y).backward()

Distances (``distance=``): a metric of :mod:`likewise.similarity`. With
``normalize_embeddings=True`` (the default, as PML's ``LpDistance``) embeddings are
L2-normalised first. PML equivalents: ``LpDistance()`` = ``"euclidean"``,
``LpDistance(power=2)`` = ``"squared_euclidean"``, ``CosineSimilarity()`` = ``"cosine"``,
``DotProductSimilarity(normalize_embeddings=False)`` = ``"dot"`` with
``normalize_embeddings=False``.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from likewise.losses._kernels.contrastive import (
    contrastive_dense,
    contrastive_sparse,
    dense_eligible,
)
from likewise.losses._kernels.euclidean import distance_matrix
from likewise.losses._kernels.positives import batch_pairs, index_lists_eligible
from likewise.losses.base import Batch, MetricLoss, check_number, prepare
from likewise.similarity import check_metric, is_similarity, pairwise_distance, pairwise_similarity

NegForm = Literal["hinge", "squared_hinge", "hinge_squared"]
NEG_FORMS: tuple[str, ...] = ("hinge", "squared_hinge", "hinge_squared")


def check_neg_form(neg_form: str, similarity: bool) -> str:
    if neg_form not in NEG_FORMS:
        raise ValueError(f"unknown neg_form {neg_form!r}; expected one of {', '.join(NEG_FORMS)}")
    if similarity and neg_form == "hinge_squared":
        raise ValueError("neg_form='hinge_squared' needs a distance, not a similarity (cosine, dot)")
    return neg_form


def batch_matrix(
    batch: Batch, metric: str, normalize_embeddings: bool, *, similarity: bool, fast: bool
) -> Tensor:
    """``[B, N]`` similarities (``similarity=True``) or distances between queries and references.

    ``fast``: Euclidean distances by :func:`~likewise.losses._kernels.euclidean.distance_matrix`
    (same values, a two-GEMM backward), else by :func:`likewise.similarity.pairwise_distance`."""
    x = prepare(batch.embeddings, metric, normalize_embeddings)
    y = x if batch.same_set else prepare(batch.ref_emb, metric, normalize_embeddings)
    if similarity:
        return pairwise_similarity(x, y, metric)
    return (distance_matrix if fast else pairwise_distance)(x, y, metric)


def contrastive_terms(mat: Tensor, margin: float, sign: float, neg_form: str) -> Tensor:
    """The term of every entry: ``[sign (v - m)]_+`` (``v^2 - m^2`` for ``"hinge_squared"``),
    squared for ``"squared_hinge"``; ``sign = +1`` pulls values below ``m``, ``-1`` above."""
    h = mat * mat - margin * margin if neg_form == "hinge_squared" else mat - margin
    h = F.relu(sign * h)
    return h * h if neg_form == "squared_hinge" else h


def contrastive_loss(
    mat: Tensor,
    pos: Tensor,
    neg: Tensor,
    pos_margin: float = 0.0,
    neg_margin: float = 1.0,
    neg_form: NegForm = "hinge",
    *,
    similarity: bool = False,
) -> Tensor:
    """Contrastive loss on ``mat [B, N]`` (distances, or similarities with ``similarity=True``).

    ``pos, neg [B, N]``: bool masks of the similar / dissimilar pairs, or counts (a pair listed
    ``k`` times counts ``k`` times, in the sum and in the number of non-zero terms, as PML's
    pair-based reduction does). Formula in the module docstring. Returns a scalar; 0 (in the
    graph) when no term is non-zero.
    """
    check_neg_form(neg_form, similarity)
    pos_sign = -1.0 if similarity else 1.0  # distances: positives pulled below m_p
    loss = mat.new_zeros(())
    for w, margin, sign in ((pos, pos_margin, pos_sign), (neg, neg_margin, -pos_sign)):
        t = contrastive_terms(mat, margin, sign, neg_form)
        active = torch.where(t > 0, w.to(mat.dtype), 0.0)
        loss = loss + (active * t).sum() / active.sum().clamp_min(1)
    return loss


class ContrastiveLoss(MetricLoss):
    """Contrastive loss (Hadsell et al. 2006), a drop-in for PML's ``ContrastiveLoss``.

    Same keywords and defaults as PML (``pos_margin=0``, ``neg_margin=1``, Euclidean
    distance between L2-normalised embeddings, average over non-zero terms of each
    part); see the module docstring for the formula and ``neg_form``. With a
    similarity (``distance="cosine"`` / ``"dot"``) the margins are on the similarity,
    as in PML with ``CosineSimilarity`` (then use e.g. ``pos_margin=1, neg_margin=0``).

    ``miner=``: the loss is restricted to the mined pairs (triplets give their (a, p) and
    (a, n) pairs). ``indices_tuple=`` (PML's pairs ``(a1, p, a2, n)`` or triplets
    ``(a, p, n)``, labels then optional): only the listed pairs count, each as often as it
    is listed, as in PML.

    ``stats``: ``pos_active_fraction``, ``neg_active_fraction`` (share of positive /
    negative pairs with a non-zero term), ``mean_pos_<unit>``, ``mean_neg_<unit>``.
    """

    accepts_indices_tuple = True

    def __init__(
        self,
        pos_margin: float = 0.0,
        neg_margin: float = 1.0,
        distance: str = "euclidean",
        neg_form: NegForm = "hinge",
        normalize_embeddings: bool = True,
        miner: Any = None,
        *,
        fast: bool = True,
    ) -> None:
        super().__init__(miner=miner, fast=fast)
        self.pos_margin = check_number(pos_margin, "pos_margin")
        self.neg_margin = check_number(neg_margin, "neg_margin")
        self.distance = check_metric(distance)
        self.similarity = is_similarity(distance)
        self.neg_form = check_neg_form(neg_form, self.similarity)
        self.normalize_embeddings = bool(normalize_embeddings)

    def compute(self, batch: Batch) -> Tensor:
        settings = (self.pos_margin, self.neg_margin, self.neg_form, self.similarity)
        if self.fast and index_lists_eligible(batch, self.miner):
            pairs, selves = batch_pairs(batch)  # class ids: the few positive and self pairs, no masks
            loss, stats = contrastive_sparse(self._matrix(batch), pairs, selves, *settings)
            self._record(**stats)
            return loss
        pos, neg = self.pair_masks(batch)
        mat = self._matrix(batch)
        if self.fast and dense_eligible(batch):
            loss, stats = contrastive_dense(mat, pos, neg, *settings)
            self._record(**stats)
            return loss
        if batch.given is not None:  # counts: each listed pair as often as it is listed
            pos, neg = batch.given.pos_w * pos, batch.given.neg_w * neg
        loss = contrastive_loss(mat, pos, neg, *settings[:3], similarity=self.similarity)
        self._record_plain_stats(mat.detach(), pos, neg)
        return loss

    def _matrix(self, batch: Batch) -> Tensor:
        return batch_matrix(
            batch, self.distance, self.normalize_embeddings, similarity=self.similarity, fast=self.fast
        )

    def _record_plain_stats(self, m: Tensor, pos: Tensor, neg: Tensor) -> None:
        """The statistics of the plain path, computed when read (``pos, neg``: masks or counts)."""
        pos_sign = -1.0 if self.similarity else 1.0
        unit = "similarity" if self.similarity else "distance"

        def share(w: Tensor, margin: float, sign: float) -> Any:
            def fraction() -> Tensor:
                active = w * (contrastive_terms(m, margin, sign, self.neg_form) > 0)
                return active.sum(dtype=torch.float64) / w.sum(dtype=torch.float64).clamp_min(1)

            return fraction

        def mean(w: Tensor) -> Any:
            return lambda: (w * m).sum() / w.sum().clamp_min(1)

        self._record(
            pos_active_fraction=share(pos, self.pos_margin, pos_sign),
            neg_active_fraction=share(neg, self.neg_margin, -pos_sign),
            **{f"mean_pos_{unit}": mean(pos), f"mean_neg_{unit}": mean(neg)},
        )


__all__ = ["NEG_FORMS", "ContrastiveLoss", "NegForm", "batch_matrix", "contrastive_loss", "contrastive_terms"]
