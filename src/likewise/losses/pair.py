"""Pair-based losses: contrastive, lifted structure, multi-similarity.

Every loss here is a function of one matrix over query x reference pairs
(``[B, N]`` distances or similarities) and two boolean masks ``pos, neg`` of the
same shape (see :mod:`likewise.similarity`). Nothing larger than ``O(B * N)`` is
built. Each has a functional form on ``(matrix, pos, neg)`` and an ``nn.Module``
with the pytorch-metric-learning (PML) call convention
``loss(embeddings, labels, *, ref_emb=None, ref_labels=None)``.

Distances (``distance=``): a metric name of :mod:`likewise.similarity`
(``"euclidean"``, ``"squared_euclidean"``, ``"cosine"``, ``"dot"``). With
``normalize_embeddings=True`` (the default, as PML's ``LpDistance``) embeddings are
L2-normalised first. PML equivalents: ``LpDistance()`` = ``"euclidean"``,
``LpDistance(power=2)`` = ``"squared_euclidean"``, ``CosineSimilarity()`` =
``"cosine"``, ``DotProductSimilarity(normalize_embeddings=False)`` = ``"dot"`` with
``normalize_embeddings=False``.

The triplet loss lives in :mod:`likewise.losses.triplet`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from likewise import entries
from likewise.losses._kernels.chunking import check_chunk_size, map_row_blocks
from likewise.losses._kernels.euclidean import distance_matrix
from likewise.losses._kernels.fused import needs_grad, with_gradient
from likewise.losses._kernels.positives import fast_pairs, pair_means
from likewise.losses._kernels.row_softmax import gemm_loss, multi_similarity_kernel
from likewise.losses.base import Batch, MetricLoss, check_number, masked_mean, prepare, zero_loss
from likewise.normalize import l2_normalize
from likewise.similarity import check_metric, is_similarity, pairwise_similarity

NegForm = Literal["hinge", "squared_hinge", "hinge_squared"]
NEG_FORMS: tuple[str, ...] = ("hinge", "squared_hinge", "hinge_squared")


# --------------------------------------------------------------------------- helpers


def batch_matrix(batch: Batch, metric: str, normalize_embeddings: bool, *, similarity: bool) -> Tensor:
    """``[B, N]`` similarities (``similarity=True``) or distances between queries and refs."""
    x = prepare(batch.embeddings, metric, normalize_embeddings)
    y = x if batch.same_set else prepare(batch.ref_emb, metric, normalize_embeddings)
    if similarity:
        return pairwise_similarity(x, y, metric)
    return distance_matrix(x, y, metric)


def mean_stats(mat: Tensor, pos: Tensor, neg: Tensor, unit: str) -> dict[str, float]:
    """Mean value over positive and negative pairs (for monitoring)."""
    with torch.no_grad():
        return {
            f"mean_pos_{unit}": float(masked_mean(mat, pos)),
            f"mean_neg_{unit}": float(masked_mean(mat, neg)),
        }


# --------------------------------------------------------------------------- contrastive


def _check_neg_form(neg_form: str, similarity: bool) -> str:
    if neg_form not in NEG_FORMS:
        raise ValueError(f"unknown neg_form {neg_form!r}; expected one of {', '.join(NEG_FORMS)}")
    if similarity and neg_form == "hinge_squared":
        raise ValueError("neg_form='hinge_squared' needs a distance, not a similarity (cosine, dot)")
    return neg_form


def _hinge(values: Tensor, margin: float, sign: float, neg_form: str) -> Tensor:
    """``t = [sign (v - m)]_+`` (``[sign (v^2 - m^2)]_+`` for ``"hinge_squared"``), a new tensor."""
    h = values * values - margin * margin if neg_form == "hinge_squared" else values - margin
    if sign < 0:
        h.neg_()
    return h.clamp_min_(0)


def count_positive(t: Tensor) -> Tensor:
    """Number of entries ``> 0`` of ``t >= 0`` (float64 scalar): row sums of ``sign(t)``, exact,
    added in float64. (``torch.count_nonzero`` takes 5 ms per 10^6 entries on CPU, this 0.2.)"""
    return torch.sign(t).sum(-1).sum(dtype=torch.float64)


def _term_sum(t: Tensor, neg_form: str) -> Tensor:
    """Sum of the terms: ``t^2`` for ``"squared_hinge"``, else ``t``."""
    flat = t.reshape(-1)
    return torch.dot(flat, flat) if neg_form == "squared_hinge" else flat.sum()


def _term_grad_(t: Tensor, values: Tensor, sign: float, neg_form: str, scale: Tensor) -> Tensor:
    """``scale * d term / d value``, written into ``t`` (which holds the hinge values)."""
    if neg_form == "squared_hinge":  # d t^2 = 2 t sign
        return t.mul_(2 * sign * scale)
    if neg_form == "hinge_squared":  # d [sign (v^2 - m^2)]_+ = 2 v sign 1(t > 0)
        return t.sign_().mul_(values).mul_(2 * sign * scale)
    return t.sign_().mul_(sign * scale)


def _contrastive_part(
    mat: Tensor, mask: Tensor, margin: float, sign: float, neg_form: str, want_grad: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    """One half (positive or negative pairs) of the contrastive loss, densely on ``mask``.

    Returns the mean over the non-zero terms, their count, and the gradient of that
    mean with respect to ``mat`` (``None`` unless ``want_grad``). A few in-place
    ``[B, N]`` passes; nothing is recorded for autograd.
    """
    with torch.no_grad():
        t = _hinge(mat, margin, sign, neg_form).mul_(mask)
        count = count_positive(t)
        denom = count.clamp_min(1).to(mat.dtype)
        total = _term_sum(t, neg_form)
        grad = _term_grad_(t, mat, sign, neg_form, 1 / denom) if want_grad else None
    return total / denom, count, grad


def _contrastive(
    mat: Tensor,
    pos: Tensor,
    neg: Tensor,
    pos_margin: float,
    neg_margin: float,
    neg_form: str,
    similarity: bool,
) -> tuple[Tensor, dict[str, float]]:
    """Loss and statistics on bool masks, with the gradient written down in the same passes."""
    _check_neg_form(neg_form, similarity)
    want_grad = needs_grad(mat)
    # distances: pos [d - m_p]_+, neg [m_n - d]_+; similarities mirrored
    pos_sign = -1.0 if similarity else 1.0
    pos_loss, n_pos_active, g_pos = _contrastive_part(mat, pos, pos_margin, pos_sign, neg_form, want_grad)
    neg_loss, n_neg_active, g_neg = _contrastive_part(mat, neg, neg_margin, -pos_sign, neg_form, want_grad)
    grad = g_pos.add_(g_neg) if want_grad else None
    loss = with_gradient(mat, pos_loss + neg_loss, grad)
    with torch.no_grad():
        n_pos, n_neg = int(pos.sum()), int(neg.sum())
        unit = "similarity" if similarity else "distance"
        stats = {
            "pos_active_fraction": n_pos_active / max(1, n_pos),
            "neg_active_fraction": n_neg_active / max(1, n_neg),
            f"mean_pos_{unit}": float(torch.where(pos, mat, 0.0).sum()) / max(1, n_pos),
            f"mean_neg_{unit}": float(torch.where(neg, mat, 0.0).sum()) / max(1, n_neg),
        }
    return loss, stats


def _contrastive_sparse(
    mat: Tensor,
    pos_pairs: tuple[Tensor, Tensor],
    self_pairs: tuple[Tensor, Tensor],
    pos_margin: float,
    neg_margin: float,
    neg_form: str,
    similarity: bool,
) -> tuple[Tensor, dict[str, float]]:
    """The same loss from index lists of the positive and self pairs (class-id labels).

    Every pair that is neither positive nor a self pair is a negative, so the negative
    half is evaluated on all of ``mat`` and the few positive and self pairs are
    subtracted again: no ``[B, N]`` mask is built.
    """
    want_grad = needs_grad(mat)
    pos_sign = -1.0 if similarity else 1.0
    pr, pc = pos_pairs
    xr, xc = torch.cat([pr, self_pairs[0]]), torch.cat([pc, self_pairs[1]])  # not negatives
    with torch.no_grad():
        t_all = _hinge(mat, neg_margin, -pos_sign, neg_form)
        t_out = entries.take(t_all, xr, xc)
        n_neg_active = count_positive(t_all) - count_positive(t_out)
        neg_denom = n_neg_active.clamp_min(1).to(mat.dtype)
        neg_loss = (_term_sum(t_all, neg_form) - _term_sum(t_out, neg_form)) / neg_denom
        p_vals = entries.take(mat, pr, pc)
        t_pos = _hinge(p_vals, pos_margin, pos_sign, neg_form)
        n_pos_active = count_positive(t_pos)
        pos_denom = n_pos_active.clamp_min(1).to(mat.dtype)
        pos_loss = _term_sum(t_pos, neg_form) / pos_denom
        grad = None
        if want_grad:
            grad = _term_grad_(t_all, mat, -pos_sign, neg_form, 1 / neg_denom)
            entries.fill_(grad, xr, xc, 0.0)
            entries.put_(grad, pr, pc, _term_grad_(t_pos, p_vals, pos_sign, neg_form, 1 / pos_denom))
        b, n = mat.shape
        n_pos = pr.numel()
        n_neg = b * n - n_pos - self_pairs[0].numel()
        mean_pos, mean_neg = pair_means(mat, pos_pairs, self_pairs)
        unit = "similarity" if similarity else "distance"
        stats = {
            "pos_active_fraction": n_pos_active / max(1, n_pos),
            "neg_active_fraction": n_neg_active / max(1, n_neg),
            f"mean_pos_{unit}": mean_pos,
            f"mean_neg_{unit}": mean_neg,
        }
    return with_gradient(mat, pos_loss + neg_loss, grad), stats


def _contrastive_listed(
    mat: Tensor,
    pos_w: Tensor,
    neg_w: Tensor,
    pos_margin: float,
    neg_margin: float,
    neg_form: str,
    similarity: bool,
) -> Tensor:
    """The loss over listed pairs (``indices_tuple``), each listing one term, as PML's pair-based
    form: ``pos_w, neg_w [B, N]`` count how often a pair is listed; per part the weighted sum of
    the terms over the weighted count of the non-zero ones. Plain autograd, ``O(B * N)``."""
    pos_sign = -1.0 if similarity else 1.0
    loss = mat.new_zeros(())
    for w, margin, sign in ((pos_w, pos_margin, pos_sign), (neg_w, neg_margin, -pos_sign)):
        h = mat * mat - margin * margin if neg_form == "hinge_squared" else mat - margin
        h = F.relu(h * sign)
        t = h * h if neg_form == "squared_hinge" else h
        active_w = torch.where(t > 0, w, 0.0)
        loss = loss + (active_w * t).sum() / active_w.sum().clamp_min(1)
    return loss


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
    """Contrastive loss (Hadsell, Chopra & LeCun 2006; Chopra et al. 2005).

    ``mat [B, N]`` distances ``d`` (or similarities ``s`` with ``similarity=True``),
    ``pos, neg`` bool ``[B, N]``. Per pair, by ``neg_form``:

    * ``"hinge"`` (PML's default):      pos ``[d - m_p]_+``,       neg ``[m_n - d]_+``
    * ``"squared_hinge"`` (Hadsell):    pos ``[d - m_p]_+^2``,     neg ``[m_n - d]_+^2``
    * ``"hinge_squared"``:              pos ``[d^2 - m_p^2]_+``,   neg ``[m_n^2 - d^2]_+``

    (the positive term follows the same power, so with ``m_p = 0`` the two squared
    forms are the seed's ``d^2`` attraction). For similarities the hinge is mirrored:
    pos ``[m_p - s]_+``, neg ``[s - m_n]_+`` (squared for ``"squared_hinge"``).

    Reduction (PML's ``AvgNonZeroReducer``): the positive terms are averaged over the
    positive pairs with a non-zero term, the negative terms likewise, and the two
    means are added. Returns a scalar; 0 (in the graph) when no term is non-zero.
    """
    return _contrastive(mat, pos, neg, pos_margin, neg_margin, neg_form, similarity)[0]


class ContrastiveLoss(MetricLoss):
    """Contrastive loss (Hadsell et al. 2006), a drop-in for PML's ``ContrastiveLoss``.

    Same keywords and defaults as PML (``pos_margin=0``, ``neg_margin=1``, Euclidean
    distance between L2-normalised embeddings, average over non-zero terms of each
    part); see :func:`contrastive_loss` for the formula and ``neg_form``. With a
    similarity (``distance="cosine"`` / ``"dot"``) the margins are on the similarity,
    as in PML with ``CosineSimilarity`` (then use e.g. ``pos_margin=1, neg_margin=0``).

    Shapes: ``embeddings [B, D]``, ``labels [B]``; optional ``ref_emb [N, D]``,
    ``ref_labels [N]``. Memory ``O(B * N)``. ``miner=``: the loss is restricted to
    the mined pairs (triplets give their (a, p) and (a, n) pairs).

    ``indices_tuple=`` (PML's pairs ``(a1, p, a2, n)`` or triplets ``(a, p, n)``, labels then
    optional): only the listed pairs count, each as often as it is listed, as in PML.

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
        self.neg_form = _check_neg_form(neg_form, self.similarity)
        self.normalize_embeddings = bool(normalize_embeddings)

    def compute(self, batch: Batch) -> Tensor:
        if batch.given is not None:
            return self._compute_listed(batch)
        fast = fast_pairs(batch, self.miner)
        if fast is not None:  # class ids: index lists of the few positive and self pairs, no masks
            pairs, selves = fast
            b, n = batch.embeddings.shape[0], batch.ref_emb.shape[0]
            empty = pairs[0].numel() == 0 and selves[0].numel() == b * n
            compute = partial(_contrastive_sparse, pos_pairs=pairs, self_pairs=selves)
        else:
            pos, neg = self.pair_masks(batch)
            empty = not (pos.any() or neg.any())
            compute = partial(_contrastive, pos=pos, neg=neg)
        if empty:
            self._record(pos_active_fraction=0.0, neg_active_fraction=0.0)
            return zero_loss(batch.embeddings, batch.ref_emb)
        mat = batch_matrix(batch, self.distance, self.normalize_embeddings, similarity=self.similarity)
        loss, stats = compute(
            mat,
            pos_margin=self.pos_margin,
            neg_margin=self.neg_margin,
            neg_form=self.neg_form,
            similarity=self.similarity,
        )
        self._record(**stats)
        return loss

    def _compute_listed(self, batch: Batch) -> Tensor:
        """Given pairs (``indices_tuple``), within the miner's pairs when a miner is set."""
        assert batch.given is not None
        pos, neg = self.pair_masks(batch)
        pos_w, neg_w = batch.given.pos_w * pos, batch.given.neg_w * neg
        mat = batch_matrix(batch, self.distance, self.normalize_embeddings, similarity=self.similarity)
        loss = _contrastive_listed(
            mat, pos_w, neg_w, self.pos_margin, self.neg_margin, self.neg_form, self.similarity
        )
        unit = "similarity" if self.similarity else "distance"
        m = mat.detach()
        self._record(
            **{
                f"mean_pos_{unit}": lambda: (pos_w * m).sum() / pos_w.sum().clamp_min(1),
                f"mean_neg_{unit}": lambda: (neg_w * m).sum() / neg_w.sum().clamp_min(1),
            }
        )
        return loss


# --------------------------------------------------------------------------- lifted structure


def _masked_logsumexp(x: Tensor, mask: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """``log sum_{mask} exp(x)`` along ``dim`` and whether any entry was kept.

    Empty reductions give a very negative finite value (not ``-inf``) so that no
    ``NaN`` can reach the gradient.
    """
    has = mask.any(dim=dim)
    empty = (~has).unsqueeze(dim)
    filled = x.masked_fill(~mask, float("-inf")).masked_fill(empty, 0.0)
    lse = torch.logsumexp(filled, dim=dim)
    sentinel = torch.finfo(x.dtype).min / 4
    return torch.where(has, lse, torch.full_like(lse, sentinel)), has


def _lifted_terms(
    dist: Tensor, pos: Tensor, neg: Tensor, neg_margin: float, pos_margin: float
) -> tuple[Tensor, Tensor]:
    """``J [B, N]`` of every pair and the mask of positive pairs that have a negative."""
    a = neg_margin - dist
    row, row_has = _masked_logsumexp(a, neg, dim=1)  # over N(i): refs negative to query i
    col, col_has = _masked_logsumexp(a, neg, dim=0)  # over N(j): queries negative to ref j
    j = torch.logaddexp(row.unsqueeze(1), col.unsqueeze(0)) + dist - pos_margin
    valid = pos & (row_has.unsqueeze(1) | col_has.unsqueeze(0))
    return j, valid


LiftedFormula = Literal["song", "pml"]
LIFTED_FORMULAS: tuple[str, ...] = ("song", "pml")


def _check_lifted_formula(formula: Any) -> str:
    if formula not in LIFTED_FORMULAS:
        raise ValueError(f"unknown formula {formula!r}; expected 'song' or 'pml'")
    return formula


def _weighted_row_logsumexp(a: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """``log sum_n w_in exp(a_in)`` per row ``i`` (``w >= 0`` counts) and whether the row has any.

    Empty rows give a very negative finite value (as :func:`_masked_logsumexp`)."""
    keep = w > 0
    return _masked_logsumexp(a + torch.where(keep, w, 1.0).log(), keep, dim=1)


def _lifted_pml(
    dist: Tensor, pos_w: Tensor, neg_w: Tensor, neg_margin: float, pos_margin: float
) -> tuple[Tensor, Tensor]:
    """PML's lifted structure loss on count matrices ``pos_w, neg_w [B, N]``: the loss and the
    ``J [B, N]`` of every pair (see :func:`lifted_structure_loss`, ``formula="pml"``).

    Plain autograd, ``O(B * N)``, no host synchronisation."""
    b, n = dist.shape
    row, row_has = _weighted_row_logsumexp(neg_margin - dist, neg_w)  # [B]: negatives of anchor i
    # the negatives of anchor j: PML compares the anchor index a2 with the positive's index p,
    # so column j takes query row j (none when j >= B, or j == i: each listed pair counts once)
    k = min(b, n)
    col = torch.cat([row[:k], row.new_full((n - k,), torch.finfo(dist.dtype).min / 4)])
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
    """Lifted structured loss, smooth form (Song, Xiang, Jegelka & Savarese 2016).

    ``dist [B, N]`` distances, ``pos, neg`` bool ``[B, N]``. For every positive pair
    ``(i, j)``::

        J_ij = log( sum_{k in N(i)} exp(m - D_ik) + sum_{l in N(j)} exp(m - D_lj) ) + D_ij - m_p
        L    = 1 / (2 |P|) * sum_{(i, j) in P} [J_ij]_+^2

    with ``m = neg_margin`` and ``m_p = pos_margin`` (0 in the paper). ``N(i)`` are the
    references negative to query ``i`` (row ``i`` of ``neg``) and ``N(j)`` the queries
    negative to reference ``j`` (column ``j`` of ``neg``). When the references are the
    queries (``neg`` symmetric) this is exactly Song's formula, and the sum over the
    ordered pairs ``(i, j), (j, i)`` with ``|P|`` ordered pairs equals the paper's sum over
    unordered pairs. With separate references (``ref_emb``), each query-reference
    positive pair is lifted against the references negative to the query and the
    queries negative to the reference. Pairs with no negative at all are left out of
    ``P``. Computed densely with one row- and one column-wise log-sum-exp: ``O(B * N)``.

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
    Row log-sum-exps only: ``O(B * N)``.
    """
    if _check_lifted_formula(formula) == "pml":
        return _lifted_pml(dist, pos.to(dist.dtype), neg.to(dist.dtype), neg_margin, pos_margin)[0]
    j, valid = _lifted_terms(dist, pos, neg, neg_margin, pos_margin)
    hinge = F.relu(j)
    total = torch.where(valid, hinge * hinge, torch.zeros_like(hinge)).sum()
    return total / (2 * valid.sum().clamp_min(1))


def _lifted_sparse(
    dist: Tensor,
    pos_pairs: tuple[Tensor, Tensor],
    self_pairs: tuple[Tensor, Tensor],
    neg_margin: float,
    pos_margin: float,
) -> tuple[Tensor, dict[str, float]]:
    """Lifted structure loss from index lists of the positive and self pairs (class ids).

    Needs bounded distances (L2-normalised embeddings: ``d <= 2``, or 4 squared), so that
    ``E = exp(-d)`` neither over- nor underflows: then ``log sum_N exp(m - d) = m + log R``
    with ``R`` the row (``C``: column) sums of ``E`` over the negatives, and
    ``J_ij = m + log(R_i + C_j) + d_ij - m_p``. Gradient, written down with ``g_ij =
    [J_ij]_+ / |P|``: ``g_ij`` at a positive pair, ``-E_ab (u_a + v_b)`` at a negative one,
    ``u_a = sum_j g_aj / (R_a + C_j)``, ``v_b = sum_i g_ib / (R_i + C_b)``.
    """
    pr, pc = pos_pairs
    xr, xc = torch.cat([pr, self_pairs[0]]), torch.cat([pc, self_pairs[1]])
    b, n = dist.shape
    want_grad = needs_grad(dist)
    with torch.no_grad():
        e = torch.neg(dist).exp_()
        entries.fill_(e, xr, xc, 0.0)  # only the negatives are left
        r, c = e.sum(1), e.sum(0)
        den = r.index_select(0, pr) + c.index_select(0, pc)
        valid = den > 0  # the pair has a negative on one side or the other
        d_pos = entries.take(dist, pr, pc)
        j = neg_margin + den.clamp_min(torch.finfo(dist.dtype).tiny).log() + d_pos - pos_margin
        hinge = torch.where(valid, j.clamp_min(0), 0.0)
        n_valid = valid.sum().clamp_min(1).to(dist.dtype)  # a tensor: no wait for the device
        loss = hinge.pow(2).sum() / (2 * n_valid)
        grad = None
        if want_grad:
            g = hinge / n_valid
            w = torch.where(valid, g / den.clamp_min(torch.finfo(dist.dtype).tiny), 0.0)
            u = dist.new_zeros(b).index_add_(0, pr, w)
            v = dist.new_zeros(n).index_add_(0, pc, w)
            grad = e.mul_(-(u.unsqueeze(1) + v.unsqueeze(0)))
            entries.put_(grad, pr, pc, g)
        mean_pos, mean_neg = pair_means(dist, pos_pairs, self_pairs)
        stats = {
            "active_fraction": count_positive(hinge) / n_valid,
            "mean_pos_distance": mean_pos,
            "mean_neg_distance": mean_neg,
        }
    return with_gradient(dist, loss, grad), stats


class LiftedStructureLoss(MetricLoss):
    """Lifted structured embedding loss, smooth form (Song et al. 2016).

    See :func:`lifted_structure_loss` for both formulas and what ``ref_emb`` means.
    Default distance: Euclidean between L2-normalised embeddings (as the other losses
    here and PML's ``LpDistance``).

    ``formula``: ``"song"`` (default) is Song et al.'s smooth loss, equal to PML's
    ``LiftedStructureLoss`` with class ids and no ``ref_emb`` only; ``"pml"`` is PML 2.x's
    formula and reduction: values and
    gradients equal PML's with labels, with ``ref_emb``/``ref_labels`` and with an
    ``indices_tuple`` (distances ``"euclidean"`` = ``LpDistance()``, ``"squared_euclidean"`` =
    ``LpDistance(power=2)``; PML's ``CosineSimilarity`` with margins ``m_p, m_n`` is
    ``distance="cosine"`` with ``pos_margin=1 - m_p, neg_margin=1 - m_n``). Two exceptions
    stay, as in the other losses: PML returns 0 when every index tensor has at most one
    entry (we compute the loss), and with a miner the mined pairs count once each.

    ``indices_tuple=`` (PML's pairs or triplets, labels then optional): only the listed
    pairs are known, every other pair is unknown and left out. ``"song"`` takes each listed
    pair once; ``"pml"`` counts a pair as often as it is listed (a triplets tuple
    ``(a, p, n)`` is PML's pairs ``(a, p, a, n)``).

    Shapes: ``embeddings [B, D]``, ``labels [B]`` (or ``None`` with a tuple), optional
    ``ref_emb [N, D]``, ``ref_labels [N]``; memory ``O(B * N)``. ``formula="pml"`` makes no
    host synchronisation in forward or backward.

    ``stats``: ``active_fraction`` (positive pairs with ``J > 0``),
    ``mean_pos_distance``, ``mean_neg_distance``.
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
        self.formula = _check_lifted_formula(formula)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("formula", "song")  # pickled before the keyword existed

    def _compute_pml(self, batch: Batch) -> Tensor:
        """PML's formula on the count matrices (given pairs) or the label masks."""
        pos, neg = self.pair_masks(batch)
        dtype = batch.embeddings.dtype
        if batch.given is not None:
            pos_w, neg_w = batch.given.pos_w * pos, batch.given.neg_w * neg
        else:
            pos_w, neg_w = pos.to(dtype), neg.to(dtype)
        dist = batch_matrix(batch, self.distance, self.normalize_embeddings, similarity=False)
        loss, j = _lifted_pml(dist, pos_w, neg_w, self.neg_margin, self.pos_margin)
        m, jd = dist.detach(), j.detach()
        self._record(
            active_fraction=lambda: (pos_w * (jd > 0)).sum() / pos_w.sum().clamp_min(1),
            mean_pos_distance=lambda: (pos_w * m).sum() / pos_w.sum().clamp_min(1),
            mean_neg_distance=lambda: (neg_w * m).sum() / neg_w.sum().clamp_min(1),
        )
        return loss

    def compute(self, batch: Batch) -> Tensor:
        if self.formula == "pml":
            return self._compute_pml(batch)
        bounded = self.normalize_embeddings and self.distance in ("euclidean", "squared_euclidean")
        fast = fast_pairs(batch, self.miner) if bounded else None
        if fast is not None:
            pairs, selves = fast
            b, n = batch.embeddings.shape[0], batch.ref_emb.shape[0]
            if pairs[0].numel() == 0 or pairs[0].numel() + selves[0].numel() == b * n:
                self._record(active_fraction=0.0)
                return zero_loss(batch.embeddings, batch.ref_emb)
            dist = batch_matrix(batch, self.distance, self.normalize_embeddings, similarity=False)
            loss, stats = _lifted_sparse(dist, pairs, selves, self.neg_margin, self.pos_margin)
            self._record(**stats)
            return loss
        pos, neg = self.pair_masks(batch)
        if not pos.any() or not neg.any():
            self._record(active_fraction=0.0)
            return zero_loss(batch.embeddings, batch.ref_emb)
        dist = batch_matrix(batch, self.distance, self.normalize_embeddings, similarity=False)
        j, valid = _lifted_terms(dist, pos, neg, self.neg_margin, self.pos_margin)
        hinge = F.relu(j)
        loss = torch.where(valid, hinge * hinge, torch.zeros_like(hinge)).sum() / (
            2 * valid.sum().clamp_min(1)
        )
        self._record(
            active_fraction=float((valid & (j > 0)).sum()) / max(1, int(valid.sum())),
            **mean_stats(dist, pos, neg, "distance"),
        )
        return loss


# --------------------------------------------------------------------------- multi-similarity


def _ms_row_losses(sim: Tensor, pos: Tensor, neg: Tensor, alpha: float, beta: float, base: float) -> Tensor:
    """Per-query multi-similarity loss ``[B]`` (0 for a query with no pairs)."""
    zeros = sim.new_zeros(sim.shape[0], 1)
    pos_x = torch.cat([(alpha * (base - sim)).masked_fill(~pos, float("-inf")), zeros], dim=1)
    neg_x = torch.cat([(beta * (sim - base)).masked_fill(~neg, float("-inf")), zeros], dim=1)
    return torch.logsumexp(pos_x, dim=1) / alpha + torch.logsumexp(neg_x, dim=1) / beta


def multi_similarity_loss(
    sim: Tensor, pos: Tensor, neg: Tensor, alpha: float = 2.0, beta: float = 50.0, base: float = 0.5
) -> Tensor:
    """Multi-similarity loss (Wang, Han, Huang, Dong & Scott 2019).

    ``sim [B, N]`` similarities, ``pos, neg`` bool ``[B, N]``. Per query ``i``::

        L_i = 1/alpha * log(1 + sum_{p in P_i} exp(-alpha (S_ip - base)))
            + 1/beta  * log(1 + sum_{n in N_i} exp( beta  (S_in - base)))

    averaged over the queries with ``L_i > 0`` (PML's ``AvgNonZeroReducer``; a query
    with no pair contributes nothing). ``log(1 + sum exp)`` is a log-sum-exp with an
    extra zero term, so it is stable for any ``alpha, beta``.
    """
    rows = _ms_row_losses(sim, pos, neg, alpha, beta, base)
    return masked_mean(rows, rows > 0)


def _map_rows(
    fn: Callable[..., Tensor], chunk_size: int | None, queries: Tensor, refs: Tensor, *row_args: Tensor
) -> Tensor:
    """``fn(queries, refs, *row_args) -> [rows]``, evaluated ``chunk_size`` query rows at a time.

    Each block runs under activation checkpointing, so at most ``chunk_size x N``
    similarities (and intermediates) are alive at once, forward or backward. Like
    :func:`likewise.losses._kernels.chunking.map_row_blocks`, but row-slicing extra ``[B, ...]``
    tensors too (the mined pair masks, which a :class:`Batch` cannot carry).
    """
    b = queries.shape[0]
    if chunk_size is None or chunk_size >= b:
        return fn(queries, refs, *row_args)
    grad = torch.is_grad_enabled() and (queries.requires_grad or refs.requires_grad)
    out = []
    for start in range(0, b, chunk_size):
        sl = slice(start, start + chunk_size)
        args = (queries[sl], refs, *(t[sl] for t in row_args))
        out.append(checkpoint(fn, *args, use_reentrant=False) if grad else fn(*args))
    return torch.cat(out, dim=0)


class MultiSimilarityLoss(MetricLoss):
    """Multi-similarity loss (Wang et al. 2019), a drop-in for PML's ``MultiSimilarityLoss``.

    Same keywords and defaults as PML (``alpha=2, beta=50, base=0.5``, cosine
    similarity, average over queries with a non-zero loss); formula in
    :func:`multi_similarity_loss`. ``distance`` must be a similarity (``"cosine"``,
    or ``"dot"`` on L2-normalised embeddings unless ``normalize_embeddings=False``).

    ``chunk_size=c``: the queries are processed ``c`` rows at a time with
    recomputation in backward; at most ``c x N`` similarities are alive at once and
    the result equals the unchunked one. Without a miner the label masks are built
    per block as well (nothing of size ``B x N`` at all); with a miner the mined
    ``[B, N]`` bool masks are built once and sliced per block. ``miner=`` (e.g.
    ``MultiSimilarityMiner``) restricts the sums to the mined pairs.

    ``indices_tuple=`` (PML's pairs or triplets, labels then optional): ``P_i`` and ``N_i``
    are the pairs listed for query ``i`` (each once; a pair listed as both is refused, as
    PML asserts) and, as PML's ``MeanReducer`` does then, the row losses are averaged over
    all ``B`` queries (a query with no listed pair contributes 0).

    ``stats``: ``active_fraction`` (queries with a non-zero loss),
    ``mean_pos_similarity``, ``mean_neg_similarity`` (unchunked calls only).
    """

    accepts_indices_tuple = True
    disjoint_pairs = True

    def __init__(
        self,
        alpha: float = 2.0,
        beta: float = 50.0,
        base: float = 0.5,
        distance: str = "cosine",
        normalize_embeddings: bool = True,
        chunk_size: int | None = None,
        miner: Any = None,
        *,
        fast: bool = True,
    ) -> None:
        super().__init__(miner=miner, fast=fast)
        self.alpha = check_number(alpha, "alpha", positive=True)
        self.beta = check_number(beta, "beta", positive=True)
        self.base = check_number(base, "base")
        if not is_similarity(distance):
            raise ValueError(
                f"MultiSimilarityLoss needs a similarity (cosine or dot), got distance={distance!r}"
            )
        self.distance = distance
        self.normalize_embeddings = bool(normalize_embeddings)
        self.chunk_size = check_chunk_size(chunk_size)

    def _block_rows(self, rows: Batch) -> Tensor:
        """Row losses of some queries against all refs, masks built for those rows only."""
        x = prepare(rows.embeddings, self.distance, self.normalize_embeddings)
        y = prepare(rows.ref_emb, self.distance, self.normalize_embeddings)
        return _ms_row_losses(
            pairwise_similarity(x, y, self.distance), *rows.masks(), self.alpha, self.beta, self.base
        )

    def compute(self, batch: Batch) -> Tensor:
        chunked = self.chunk_size is not None and self.chunk_size < batch.embeddings.shape[0]
        fast = None if chunked else fast_pairs(batch, self.miner)
        if fast is not None:
            # class ids: one similarity buffer, no masks (likewise.losses._kernels.row_softmax)
            pairs, selves = fast
            x = prepare(batch.embeddings, self.distance, self.normalize_embeddings)
            y = x if batch.same_set else prepare(batch.ref_emb, self.distance, self.normalize_embeddings)
            if self.distance == "cosine":
                x = l2_normalize(x, dim=1)
                y = x if batch.same_set else l2_normalize(y, dim=1)
            kernel = multi_similarity_kernel(self.alpha, self.beta, self.base)
            loss, stats = gemm_loss(x, y, kernel, pairs, selves)
            self._record(
                active_fraction=stats["active_fraction"],
                mean_pos_similarity=stats["mean_pos_similarity"],
                mean_neg_similarity=stats["mean_neg_similarity"],
            )
            return loss
        stats: dict[str, float] = {}
        if chunked and self.miner is None:
            # masks too are built block by block: nothing of size B x N is alive
            rows = map_row_blocks(self._block_rows, batch, self.chunk_size)
        else:
            pos, neg = self.pair_masks(batch)
            x = prepare(batch.embeddings, self.distance, self.normalize_embeddings)
            y = x if batch.same_set else prepare(batch.ref_emb, self.distance, self.normalize_embeddings)
            if chunked:

                def rows_fn(q: Tensor, r: Tensor, p: Tensor, n: Tensor) -> Tensor:
                    sim = pairwise_similarity(q, r, self.distance)
                    return _ms_row_losses(sim, p, n, self.alpha, self.beta, self.base)

                # the mined masks are whole-batch [B, N] bools, sliced per block
                rows = _map_rows(rows_fn, self.chunk_size, x, y, pos, neg)
            else:
                sim = pairwise_similarity(x, y, self.distance)
                rows = _ms_row_losses(sim, pos, neg, self.alpha, self.beta, self.base)
                if batch.given is None:
                    stats = mean_stats(sim, pos, neg, "similarity")
        active = rows > 0
        if batch.given is not None:  # PML's MeanReducer over all queries
            self._record(active_fraction=lambda: active.sum() / rows.shape[0])
            return rows.mean()
        self._record(active_fraction=float(active.sum()) / rows.shape[0], **stats)
        return masked_mean(rows, active)


__all__ = [
    "ContrastiveLoss",
    "LiftedStructureLoss",
    "MultiSimilarityLoss",
    "contrastive_loss",
    "lifted_structure_loss",
    "multi_similarity_loss",
]
