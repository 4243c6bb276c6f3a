"""Lifted structured loss, smooth form (Song, Xiang, Jegelka & Savarese 2016).

Every positive pair ``(i, j)`` is lifted against all the negatives of both its ends, with
distances ``D [B, N]``, ``m = neg_margin`` and ``m_p = pos_margin`` (0 in the paper)::

    J_ij = log( sum_{k in N(i)} exp(m - D_ik) + sum_{l in N(j)} exp(m - D_lj) ) + D_ij - m_p
    L    = 1 / (2 |P|) * sum_{(i, j) in P} [J_ij]_+^2

``N(i)``: the references negative to query ``i`` (row ``i`` of ``neg``); ``N(j)``: the queries
negative to reference ``j`` (column ``j``). When the references are the queries this is
exactly Song's formula (the ordered pairs ``(i, j), (j, i)`` over ``|P|`` ordered pairs equal
the paper's sum over unordered pairs). Pairs with no negative at all are left out of ``P``.
``formula="pml"`` is pytorch-metric-learning 2.x's variant (see :func:`lifted_structure_loss`).

Shapes: ``embeddings [B, D]``, ``labels [B]`` (or ``None`` with an ``indices_tuple``), optional
``ref_emb [N, D]``, ``ref_labels [N]``; the functional form takes ``dist [B, N]`` and the masks
``pos, neg [B, N]``. Memory ``O(B * N)``: one row- and one column-wise log-sum-exp. Fast
kernel: :mod:`likewise.losses._kernels.lifted_structure`.

Example::

    loss_fn = LiftedStructureLoss(neg_margin=1.0)
    x, y = torch.randn(32, 16, requires_grad=True), torch.arange(32) % 8
    loss_fn(x, y).backward()
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from likewise.losses._kernels.lifted_structure import eligible, lifted_sparse
from likewise.losses._kernels.positives import batch_pairs
from likewise.losses.base import Batch, MetricLoss, check_number, masked_logsumexp
from likewise.losses.contrastive import batch_matrix
from likewise.similarity import check_metric

LiftedFormula = Literal["song", "pml"]
LIFTED_FORMULAS: tuple[str, ...] = ("song", "pml")


def check_lifted_formula(formula: Any) -> str:
    if formula not in LIFTED_FORMULAS:
        raise ValueError(f"unknown formula {formula!r}; expected 'song' or 'pml'")
    return formula


def _none(x: Tensor) -> float:
    """The log-sum-exp of nothing: a very negative finite number (``-inf`` would put ``NaN`` in
    the gradient), which ``logaddexp`` with anything else ignores."""
    return torch.finfo(x.dtype).min / 4


def _lse(x: Tensor, mask: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """``log sum_{mask} exp(x)`` along ``dim`` (:func:`_none` where empty) and whether any entry was kept."""
    has = mask.any(dim=dim)
    return masked_logsumexp(x, mask, dim).masked_fill(~has, _none(x)), has


def _song(dist: Tensor, pos: Tensor, neg: Tensor, neg_margin: float, pos_margin: float) -> tuple[Tensor, ...]:
    """Song's loss, ``J [B, N]`` of every pair, and the positive pairs with a negative (``P``)."""
    a = neg_margin - dist
    row, row_has = _lse(a, neg, dim=1)  # over N(i): refs negative to query i
    col, col_has = _lse(a, neg, dim=0)  # over N(j): queries negative to ref j
    j = torch.logaddexp(row.unsqueeze(1), col.unsqueeze(0)) + dist - pos_margin
    valid = pos & (row_has.unsqueeze(1) | col_has.unsqueeze(0))
    hinge = F.relu(j)
    loss = torch.where(valid, hinge * hinge, torch.zeros_like(hinge)).sum() / (2 * valid.sum().clamp_min(1))
    return loss, j, valid


def _pml(
    dist: Tensor, pos_w: Tensor, neg_w: Tensor, neg_margin: float, pos_margin: float
) -> tuple[Tensor, Tensor]:
    """PML's loss on count matrices ``pos_w, neg_w [B, N]`` and ``J [B, N]`` of every pair."""
    b, n = dist.shape
    keep = neg_w > 0  # R_i = log sum_k w_ik exp(m - D_ik): the negatives listed with anchor i
    row, row_has = _lse(neg_margin - dist + torch.where(keep, neg_w, 1.0).log(), keep, dim=1)
    # the negatives of anchor j: PML compares the anchor index a2 with the positive's index p,
    # so column j takes query row j (none when j >= B, or j == i: each listed pair counts once)
    k = min(b, n)
    col = torch.cat([row[:k], row.new_full((n - k,), _none(dist))])
    col_has = torch.cat([row_has[:k], row_has.new_zeros(n - k)])
    same = torch.arange(b, device=dist.device).unsqueeze(1) == torch.arange(n, device=dist.device)
    both = torch.logaddexp(row.unsqueeze(1), col.unsqueeze(0))
    lse = torch.where(same, row.unsqueeze(1), both)
    has = row_has.unsqueeze(1) | (col_has.unsqueeze(0) & ~same)
    j = torch.where(has, lse, torch.zeros_like(lse)) + dist - pos_margin  # PML: 0 with no negative
    hinge = F.relu(j)
    n_pos = pos_w.sum()
    loss = (pos_w * hinge * hinge).sum() / (2 * n_pos.clamp_min(1))
    # PML returns 0 when no pair is listed as positive or none as negative
    return torch.where((n_pos > 0) & (neg_w.sum() > 0), loss, torch.zeros_like(loss)), j


def lifted_structure_loss(
    dist: Tensor,
    pos: Tensor,
    neg: Tensor,
    neg_margin: float = 1.0,
    pos_margin: float = 0.0,
    *,
    formula: LiftedFormula = "song",
) -> Tensor:
    """Lifted structured loss on ``dist [B, N]`` and bool ``pos, neg [B, N]`` (module docstring).

    ``formula="pml"``: pytorch-metric-learning 2.x's ``LiftedStructureLoss`` (default
    ``MeanReducer``). ``pos, neg`` may then be counts ``[B, N]`` (how often a pair is listed
    in an ``indices_tuple``; bool masks count 1). For every listed positive pair ``(i, j)``,
    once per listing::

        R_i  = log sum_k neg_ik * exp(m - D_ik)              (negatives listed with anchor i)
        S_ij = log(exp(R_i) + exp(R_j))  (R_j: 0 terms when j >= B or j == i)
        J_ij = S_ij + D_ij - m_p         (S_ij = 0 when neither i nor j has a negative)
        L    = 1 / (2 sum pos) * sum_ij pos_ij * [J_ij]_+^2

    and ``L = 0`` when no pair is positive or none negative. Unlike Song's ``N(j)`` (the
    queries negative to reference ``j``, a column), PML's second set is the negatives
    listed with *anchor* ``j`` (a row: ``a2 == p`` in its code, which with ``ref_emb``
    compares a query index with a reference index; this is reproduced). With class ids and
    no ``ref_emb`` the masks are symmetric, every positive pair has negatives (or none has)
    and the two formulas give the same value; they differ on given pairs (Song: each pair
    once, the column ``N(j)``; PML: as often as listed, row ``j``), with ``ref_emb``, and for
    a positive pair without any negative (Song leaves it out, PML keeps it with ``S = 0``).
    """
    if check_lifted_formula(formula) == "pml":
        return _pml(dist, pos.to(dist.dtype), neg.to(dist.dtype), neg_margin, pos_margin)[0]
    return _song(dist, pos, neg, neg_margin, pos_margin)[0]


class LiftedStructureLoss(MetricLoss):
    """Lifted structured embedding loss, smooth form (Song et al. 2016); formulas in the module
    docstring and :func:`lifted_structure_loss`. Default distance: Euclidean between
    L2-normalised embeddings (as PML's ``LpDistance``).

    ``formula``: ``"song"`` (default) is Song et al.'s smooth loss, equal to PML's
    ``LiftedStructureLoss`` with class ids and no ``ref_emb`` only; ``"pml"`` is PML 2.x's
    formula and reduction: values and gradients equal PML's with labels, with
    ``ref_emb``/``ref_labels`` and with an ``indices_tuple`` (distances ``"euclidean"`` =
    ``LpDistance()``, ``"squared_euclidean"`` = ``LpDistance(power=2)``; PML's
    ``CosineSimilarity`` with margins ``m_p, m_n`` is ``distance="cosine"`` with
    ``pos_margin=1 - m_p, neg_margin=1 - m_n``). Two exceptions stay, as in the other losses:
    PML returns 0 when every index tensor has at most one entry (we compute the loss), and
    with a miner the mined pairs count once each.

    ``indices_tuple=`` (PML's pairs or triplets, labels then optional): only the listed
    pairs are known, every other pair is unknown and left out. ``"song"`` takes each listed
    pair once; ``"pml"`` counts a pair as often as it is listed (a triplets tuple
    ``(a, p, n)`` is PML's pairs ``(a, p, a, n)``).

    ``stats``: ``active_fraction`` (positive pairs with ``J > 0``), ``mean_pos_distance``,
    ``mean_neg_distance``.
    """

    accepts_indices_tuple = True

    def __init__(
        self,
        neg_margin: float = 1.0,
        pos_margin: float = 0.0,
        distance: str = "euclidean",
        normalize_embeddings: bool = True,
        miner: Any = None,
        formula: LiftedFormula = "song",
        *,
        fast: bool = True,
    ) -> None:
        super().__init__(miner=miner, fast=fast)
        self.neg_margin = check_number(neg_margin, "neg_margin")
        self.pos_margin = check_number(pos_margin, "pos_margin")
        self.distance = check_metric(distance)
        self.normalize_embeddings = bool(normalize_embeddings)
        self.formula = check_lifted_formula(formula)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("formula", "song")  # pickled before the keyword existed

    def compute(self, batch: Batch) -> Tensor:
        margins = (self.neg_margin, self.pos_margin)
        if self.fast and eligible(batch, self.miner, self.formula, self.distance, self.normalize_embeddings):
            loss, stats = lifted_sparse(self._distances(batch), *batch_pairs(batch), *margins)
            self._record(**stats)
            return loss
        pos, neg = self.pair_masks(batch)
        dist = self._distances(batch)
        if self.formula == "pml":  # counts: each listed pair as often as it is listed
            if batch.given is not None:
                pos, neg = batch.given.pos_w * pos, batch.given.neg_w * neg
            pos, neg = pos.to(dist.dtype), neg.to(dist.dtype)
            loss, j = _pml(dist, pos, neg, *margins)
            counted = pos
        else:
            loss, j, counted = _song(dist, pos, neg, *margins)
        with torch.no_grad():  # tensors now: a lazy statistic would keep [B, N] tensors alive
            m, jd = dist.detach(), j.detach()
            active = (counted * (jd > 0)).sum(dtype=torch.float64) / counted.sum(
                dtype=torch.float64
            ).clamp_min(1)
            mean_pos = (pos * m).sum() / pos.sum().clamp_min(1)
            mean_neg = (neg * m).sum() / neg.sum().clamp_min(1)
        self._record(active_fraction=active, mean_pos_distance=mean_pos, mean_neg_distance=mean_neg)
        return loss

    def _distances(self, batch: Batch) -> Tensor:
        return batch_matrix(batch, self.distance, self.normalize_embeddings, similarity=False, fast=self.fast)


__all__ = ["LIFTED_FORMULAS", "LiftedFormula", "LiftedStructureLoss", "lifted_structure_loss"]
