"""Softmax-family losses: NT-Xent / InfoNCE, supervised contrastive, soft nearest neighbour, N-pairs.

Each is a softmax over one row of the similarity matrix ``S = sim(queries, refs)``
``[B, N]`` (divided by a temperature ``t``), restricted by the boolean masks
``P`` (positives) and ``N`` (negatives) of :mod:`likewise.similarity`; ``A = P | N``
is the set of candidates of a row (every reference but the query itself when no
miner is set). Everything is computed densely with masked ``logsumexp``: memory is
``O(B * N)``, never ``O(B^3)`` or ``O(pos pairs x neg pairs)``.

``chunk_size=c`` (NT-Xent, SupCon, soft nearest neighbour) evaluates ``c`` query
rows at a time with recomputation in backward
(:func:`likewise.losses._kernels.chunking.map_row_blocks`), so at most ``c x N``
similarities are alive at once; the result equals the unchunked one. A miner
needs the whole similarity matrix, so ``chunk_size`` and ``miner`` are exclusive.

Statistics of the last call (``loss.stats``): ``pos_pairs`` (number of positive
pairs), ``anchors_with_pos`` (fraction of queries with at least one positive),
``mean_pos_similarity`` and ``mean_neg_similarity`` (raw similarity, before the
temperature).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from likewise.losses._kernels.chunking import check_chunk_size, map_row_blocks
from likewise.losses._kernels.positives import fast_pairs
from likewise.losses._kernels.row_softmax import gemm_loss, ntxent_kernel, snn_kernel, supcon_kernel
from likewise.losses.base import Batch, MetricLoss, check_batch, zero_loss
from likewise.normalize import l2_normalize
from likewise.similarity import check_metric, pairwise_similarity


@dataclass
class Rows:
    """One block of query rows, as a row rule sees it.

    ``logits`` ``[r, N]`` = similarity / temperature; ``pos`` / ``neg`` bool ``[r, N]``
    (disjoint); the positives also as a sparse list: ``prow`` (row of each positive
    pair) and ``plogit`` (its logit); ``n_pos`` / ``n_neg`` long ``[r]``.
    """

    logits: Tensor
    pos: Tensor
    neg: Tensor
    prow: Tensor
    plogit: Tensor
    n_pos: Tensor
    n_neg: Tensor

    def row_sum(self, values: Tensor) -> Tensor:
        """Sum of per-positive ``values`` into their rows ``[r]``."""
        return values.new_zeros(self.logits.shape[0]).index_add(0, self.prow, values)

    def pos_lse(self) -> Tensor:
        """``log sum_{p in P(i)} e^{l_ip}`` per row ``[r]`` (``-inf`` without positives)."""
        r = self.logits.shape[0]
        top = self.plogit.new_full((r,), float("-inf"))
        top = top.scatter_reduce(0, self.prow, self.plogit.detach(), "amax")
        has = self.n_pos > 0
        top = torch.where(has, top, torch.zeros_like(top))
        total = self.row_sum(torch.exp(self.plogit - top[self.prow])) + (~has).to(top.dtype)
        out = torch.log(total) + top
        return torch.where(has, out, torch.full_like(out, float("-inf")))


# A row rule maps a block of rows to (loss sum [r], weight [r]);
# the loss is sum(loss sums) / sum(weights) over all rows.
RowRule = Callable[[Rows], tuple[Tensor, Tensor]]


# --------------------------------------------------------------------------- helpers


def check_temperature(temperature: Any) -> float:
    """A finite number > 0 (raises TypeError / ValueError otherwise)."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"temperature must be a positive number, got {type(temperature).__name__}")
    value = float(temperature)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return value


def masked_lse(x: Tensor, mask: Tensor) -> Tensor:
    """``log sum_{j: mask[i, j]} exp(x[i, j])`` per row ``[r]``; ``-inf`` for an empty row.

    The gradient is finite everywhere (zero for masked entries and empty rows):
    empty rows are evaluated on zeros and their result replaced by ``-inf``, so no
    ``softmax`` of an all ``-inf`` row is ever differentiated.
    """
    has = mask.any(dim=1)
    filled = x.masked_fill(~mask, float("-inf"))
    if bool(has.all()):
        return torch.logsumexp(filled, dim=1)
    filled = filled.masked_fill(~has.unsqueeze(1), 0.0)
    out = torch.logsumexp(filled, dim=1)
    return out.masked_fill(~has, float("-inf"))


def scaled_factors(x: Tensor, y: Tensor | None, distance: str, temperature: float) -> tuple[Tensor, Tensor]:
    """``(Xa, Ya)`` with ``Xa Ya^T = sim(x, y) / temperature`` for cosine, dot, squared Euclidean.

    See :func:`scaled_similarity` (``y=None``: ``y = x``).
    """
    if distance == "cosine":
        xn = l2_normalize(x, dim=1)
        yn = xn if y is None else l2_normalize(y, dim=1)
        return xn / temperature, yn
    y = x if y is None else y
    if distance == "dot":
        return x / temperature, y
    if distance != "squared_euclidean":
        raise ValueError(f"no GEMM factors for distance {distance!r}")
    # [2x/t, -1/t, -|x|^2/t] . [y, |y|^2, 1] = -|x - y|^2 / t
    ones_x, ones_y = x.new_ones(x.shape[0], 1), y.new_ones(y.shape[0], 1)
    xa = torch.cat([x * 2.0, -ones_x, -x.pow(2).sum(1, keepdim=True)], dim=1) / temperature
    ya = torch.cat([y, y.pow(2).sum(1, keepdim=True), ones_y], dim=1)
    return xa, ya


def _fast_loss(
    batch: Batch, miner: Any, chunk_size: int | None, kernel: Any, distance: str, temperature: float
) -> tuple[Tensor, dict] | None:
    """The loss by a mask-free kernel of :mod:`likewise.losses._kernels.row_softmax` (``None``: the general
    path applies: a miner, relevance, multi-label or chunking)."""
    chunked = chunk_size is not None and chunk_size < batch.embeddings.shape[0]
    fast = None if chunked else fast_pairs(batch, miner)
    if fast is None:
        return None
    pairs, selves = fast
    refs = None if batch.same_set else batch.ref_emb
    xa, ya = scaled_factors(batch.embeddings, refs, distance, temperature)
    loss, stats = gemm_loss(xa, ya, kernel, pairs, selves)
    if pairs[0].numel() == 0:
        return zero_loss(batch.embeddings, batch.ref_emb), stats
    return loss, stats


def scaled_similarity(x: Tensor, y: Tensor | None, distance: str, temperature: float) -> Tensor:
    """``sim(x, y) / temperature`` ``[B, N]`` (``y=None``: ``y = x``) in few ``[B, N]`` passes.

    Same values as ``pairwise_similarity(x, y, distance) / temperature`` up to rounding:
    for cosine and dot the temperature is folded into the query rows before the GEMM;
    for squared Euclidean ``-(|x|^2 + |y|^2 - 2 x.y) / t`` is one GEMM on rows augmented
    with two columns, so forward and backward are pure GEMMs (no clamp at distance 0:
    a coincident pair may get a rounding-size positive value, harmless in a softmax).
    """
    if distance in ("cosine", "dot", "squared_euclidean"):
        xa, ya = scaled_factors(x, y, distance, temperature)
        return xa @ ya.T
    y = x if y is None else y
    return pairwise_similarity(x, y, distance).div_(temperature)


def _check_chunk_and_miner(chunk_size: int | None, miner: Any) -> int | None:
    chunk_size = check_chunk_size(chunk_size)
    if chunk_size is not None and miner is not None:
        raise ValueError(
            "chunk_size and miner cannot be combined: a miner needs the whole [B, N] similarity "
            "matrix, so chunking would save nothing; pass one or the other"
        )
    return chunk_size


def _block(
    batch: Batch, rule: RowRule, temperature: float, distance: str, masks: tuple[Tensor, Tensor] | None
) -> Tensor:
    """Rows of ``batch`` -> ``[r, 6]``: loss sum, weight, #pos, #neg, pos-sim sum, neg-sim sum.

    Only the first column carries a gradient; the others are for the statistics.
    """
    refs = None if batch.same_set else batch.ref_emb
    logits = scaled_similarity(batch.embeddings, refs, distance, temperature)
    pos, neg = batch.masks() if masks is None else masks
    prow, pcol = pos.nonzero(as_tuple=True)
    r = logits.shape[0]
    rows = Rows(
        logits=logits,
        pos=pos,
        neg=neg,
        prow=prow,
        plogit=logits[prow, pcol],
        n_pos=torch.bincount(prow, minlength=r),
        n_neg=neg.sum(1),
    )
    loss_sum, weight = rule(rows)
    with torch.no_grad():
        extra = [
            weight.to(logits.dtype),
            rows.n_pos.to(logits.dtype),
            rows.n_neg.to(logits.dtype),
            rows.row_sum(rows.plogit) * temperature,
            logits.masked_fill(~neg, 0.0).sum(1) * temperature,
        ]
    return torch.stack([loss_sum, *extra], dim=1)


def _row_loss(
    batch: Batch,
    rule: RowRule,
    temperature: float,
    distance: str,
    chunk_size: int | None,
    masks: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """``sum(loss sums) / sum(weights)`` over all query rows, and the statistics."""
    if masks is not None or chunk_size is None:
        rows = _block(batch, rule, temperature, distance, masks)
    else:
        rows = map_row_blocks(lambda b: _block(b, rule, temperature, distance, None), batch, chunk_size)
    totals = rows.detach().double().sum(0)
    weight, n_pos, n_neg = float(totals[1]), float(totals[2]), float(totals[3])
    stats = {
        "pos_pairs": n_pos,
        "anchors_with_pos": float((rows[:, 2] > 0).sum()) / rows.shape[0],
        "mean_pos_similarity": float(totals[4]) / max(n_pos, 1.0),
        "mean_neg_similarity": float(totals[5]) / max(n_neg, 1.0),
    }
    if n_pos == 0 or weight == 0:
        return zero_loss(batch.embeddings, batch.ref_emb), stats
    return rows[:, 0].sum() / weight, stats


def _functional(
    rule: RowRule,
    embeddings: Tensor,
    labels: Tensor | None,
    ref_emb: Tensor | None,
    ref_labels: Tensor | None,
    temperature: float,
    distance: str,
    chunk_size: int | None,
) -> Tensor:
    batch = check_batch(embeddings, labels, ref_emb, ref_labels)
    loss, _ = _row_loss(batch, rule, check_temperature(temperature), distance, check_chunk_size(chunk_size))
    return loss


# --------------------------------------------------------------------------- NT-Xent / InfoNCE


def ntxent_rows(rows: Rows) -> tuple[Tensor, Tensor]:
    """Per row: sum over its positives ``p`` of ``log(e^{l_p} + sum_N e^{l_n}) - l_p``; weight ``|P|``."""
    lse_neg = masked_lse(rows.logits, rows.neg)  # [r], -inf without negatives
    terms = torch.logaddexp(rows.plogit, lse_neg[rows.prow]) - rows.plogit
    return rows.row_sum(terms), rows.n_pos


def ntxent_loss(
    embeddings: Tensor,
    labels: Tensor,
    *,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
    temperature: float = 0.07,
    chunk_size: int | None = None,
) -> Tensor:
    """NT-Xent / InfoNCE (van den Oord et al. 2018; Chen et al. 2020), cosine similarity.

    With ``s`` the cosine similarity and ``t`` the temperature, for every positive
    pair ``(a, p)``::

        l(a, p) = -log( e^{s_ap/t} / (e^{s_ap/t} + sum_{n in N(a)} e^{s_an/t}) )
        L = mean over positive pairs of l(a, p)

    (pytorch-metric-learning's ``NTXentLoss``). Per row one ``logsumexp`` over the
    negatives, then one ``logaddexp`` per positive pair: ``O(B * N)`` memory.
    With ``labels = arange(B).repeat(2)`` on two stacked views this is SimCLR's loss.

    Shapes: ``embeddings [B, D]``, ``labels [B]`` (or multi-label ``[B, C]``),
    ``ref_emb [N, D]``, ``ref_labels [N]``. Returns a scalar.
    """
    rule = ntxent_rows
    return _functional(rule, embeddings, labels, ref_emb, ref_labels, temperature, "cosine", chunk_size)


class NTXentLoss(MetricLoss):
    """NT-Xent / InfoNCE (van den Oord 2018, Chen 2020): a drop-in for PML's ``NTXentLoss``.

    Formula in :func:`ntxent_loss`; same default ``temperature=0.07``, cosine
    similarity and mean over positive pairs as pytorch-metric-learning, so value and
    gradient agree (also with ``ref_emb`` / ``ref_labels``). An anchor without
    negatives contributes ``l = 0`` for each of its positives (as in PML). A batch
    with no positive pair gives a zero loss that back-propagates.
    (PML also returns zero when the batch has at most one positive and one negative
    pair; we compute the loss there.)

    ``chunk_size``: see :mod:`likewise.losses.softmax`. ``miner=``: the positives and
    negatives are restricted to the mined pairs.

    ``indices_tuple=`` (PML's pairs or triplets, labels then optional): ``l(a, p)`` for every
    listed positive pair, over the negatives listed for ``a``, each pair as often as it is
    listed (PML's pair-based form); mean over the listed positive pairs. Not chunked.
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
        self.chunk_size = _check_chunk_and_miner(chunk_size, miner)

    def compute(self, batch: Batch) -> Tensor:
        if batch.given is not None:
            return self._compute_listed(batch)
        # the mask-free kernel shifts rows by their max: safe while cosine logits span < 80
        fast = None
        if 2 / self.temperature < 80:
            kernel = ntxent_kernel(self.temperature)
            fast = _fast_loss(batch, self.miner, self.chunk_size, kernel, "cosine", self.temperature)
        if fast is not None:
            self._record(**fast[1])
            return fast[0]
        masks = None if self.miner is None else self.pair_masks(batch)
        loss, stats = _row_loss(batch, ntxent_rows, self.temperature, "cosine", self.chunk_size, masks)
        self._record(**stats)
        return loss

    def _compute_listed(self, batch: Batch) -> Tensor:
        """Given pairs (``indices_tuple``): :func:`ntxent_listed` on their counts (within a miner's)."""
        assert batch.given is not None
        pos, neg = self.pair_masks(batch)
        pos_w, neg_w = batch.given.pos_w * pos, batch.given.neg_w * neg
        refs = None if batch.same_set else batch.ref_emb
        logits = scaled_similarity(batch.embeddings, refs, "cosine", self.temperature)
        self._record(pos_pairs=lambda: pos_w.sum())
        return ntxent_listed(logits, pos_w, neg_w)


def ntxent_listed(logits: Tensor, pos_w: Tensor, neg_w: Tensor) -> Tensor:
    """NT-Xent over listed pairs: ``sum pos_w[a, p] l(a, p) / sum pos_w`` with
    ``l(a, p) = log(e^{l_ap} + sum_n neg_w[a, n] e^{l_an}) - l_ap`` (``logits [B, N]``, counts
    ``pos_w, neg_w [B, N]``). Plain autograd; no host synchronisation."""
    listed = neg_w > 0
    has = listed.any(dim=1, keepdim=True)
    x = (logits + torch.where(listed, neg_w, 1.0).log()).masked_fill(~listed, float("-inf"))
    lse_neg = torch.logsumexp(x.masked_fill(~has, 0.0), dim=1, keepdim=True)
    lse_neg = lse_neg.masked_fill(~has, float("-inf"))  # no negatives: l(a, p) = 0
    terms = torch.logaddexp(logits, lse_neg) - logits
    return (pos_w * terms).sum() / pos_w.sum().clamp_min(1)


# --------------------------------------------------------------------------- SupCon

SupConVariant = Literal["out", "in"]


def supcon_rows(variant: str) -> RowRule:
    """Row rule of the supervised contrastive loss ``L_out`` or ``L_in`` (Khosla 2020)."""

    def rule(rows: Rows) -> tuple[Tensor, Tensor]:
        lse_all = masked_lse(rows.logits, rows.pos | rows.neg)
        n_pos = rows.n_pos.clamp_min(1).to(lse_all.dtype)
        if variant == "out":
            per_row = lse_all - rows.row_sum(rows.plogit) / n_pos
        else:
            per_row = lse_all - rows.pos_lse() + torch.log(n_pos)
        counted = (rows.n_pos > 0) & (rows.n_pos + rows.n_neg > 1)
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
    """Supervised contrastive loss (Khosla et al. 2020), cosine similarity.

    For an anchor ``i`` with positives ``P(i)`` and candidates ``A(i) = P(i) | N(i)``
    (all references but ``i`` itself)::

        L_out(i) = -1/|P(i)| sum_{p in P(i)} log( e^{s_ip/t} / sum_{a in A(i)} e^{s_ia/t} )
        L_in(i)  = -log( 1/|P(i)| sum_{p in P(i)} e^{s_ip/t} / sum_{a in A(i)} e^{s_ia/t} )
        L = mean over anchors with a positive and at least two candidates

    (an anchor whose only candidate is its positive has a loss that is identically
    zero; like PML's ``AvgNonZeroReducer`` we do not count it). ``L_out`` is the
    paper's recommended form and the default.

    Shapes: ``embeddings [B, D]``, ``labels [B]`` (or ``[B, C]``), ``ref_emb [N, D]``,
    ``ref_labels [N]``. Returns a scalar.
    """
    rule = supcon_rows(_check_variant(variant))
    return _functional(rule, embeddings, labels, ref_emb, ref_labels, temperature, "cosine", chunk_size)


class SupConLoss(MetricLoss):
    """Supervised contrastive loss (Khosla 2020): a drop-in for PML's ``SupConLoss``.

    Formula in :func:`supcon_loss`; ``variant="out"`` (default, as PML) or ``"in"``.
    Same default ``temperature=0.1`` and cosine similarity as pytorch-metric-learning;
    value and gradient agree with ``variant="out"`` (also with ``ref_emb``), with
    two deliberate differences: (1) a batch with positives but no negative pair at
    all (one class) gets the paper's ``L_out`` (the candidates are the other
    positives), where PML returns 0; (2) PML averages the per-anchor losses that
    are > 0, we average over anchors with a positive and another candidate: they
    differ only when a loss rounds to exactly zero (an enormous margin).

    ``chunk_size``: see :mod:`likewise.losses.softmax`. ``miner=``: ``P`` and ``N``
    (hence ``A``) are restricted to the mined pairs, as in PML.

    ``indices_tuple=`` (PML's pairs or triplets, labels then optional): ``P(i)`` and
    ``N(i)`` are the pairs listed for anchor ``i`` (each once; a pair listed as both is
    refused, as in PML), unlisted pairs are not candidates.
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
        self.chunk_size = _check_chunk_and_miner(chunk_size, miner)

    def compute(self, batch: Batch) -> Tensor:
        kernel = supcon_kernel(self.temperature, self.variant)
        fast = _fast_loss(batch, self.miner, self.chunk_size, kernel, "cosine", self.temperature)
        if fast is not None:
            self._record(**fast[1])
            return fast[0]
        masks = None if self.miner is None else self.pair_masks(batch)
        rule = supcon_rows(self.variant)
        loss, stats = _row_loss(batch, rule, self.temperature, "cosine", self.chunk_size, masks)
        self._record(**stats)
        return loss


# --------------------------------------------------------------------------- soft nearest neighbour


def snn_rows(rows: Rows) -> tuple[Tensor, Tensor]:
    """Per row ``log sum_A e^l - log sum_P e^l`` (anchors with a positive); weight 1 or 0."""
    has_pos = rows.n_pos > 0
    per_row = masked_lse(rows.logits, rows.pos | rows.neg) - rows.pos_lse()
    return torch.where(has_pos, per_row, torch.zeros_like(per_row)), has_pos


def soft_nearest_neighbor_loss(
    embeddings: Tensor,
    labels: Tensor,
    *,
    ref_emb: Tensor | None = None,
    ref_labels: Tensor | None = None,
    temperature: float = 1.0,
    distance: str = "squared_euclidean",
    chunk_size: int | None = None,
) -> Tensor:
    """Soft nearest neighbour loss (Frosst, Papernot & Hinton 2019).

    With ``s_ij`` the similarity (default ``-|x_i - x_j|^2``, the paper's)::

        L = -1/|I| sum_{i in I} log( sum_{j != i, y_j = y_i} e^{s_ij/t} / sum_{k != i} e^{s_ik/t} )

    ``I``: anchors with at least one positive (for the others the ratio is 0 and
    its log undefined). The denominator runs over **all** ``k != i``, as in Frosst
    et al.; the lecture notes (seed 002) write it over negatives only and put
    ``1/|P(i)|`` inside the log, which is not what is implemented here. With
    ``distance="dot"`` or ``"cosine"``, ``s_ij`` is that similarity.

    Shapes: ``embeddings [B, D]``, ``labels [B]`` (or ``[B, C]``), ``ref_emb [N, D]``,
    ``ref_labels [N]``. Returns a scalar.
    """
    check_metric(distance)
    return _functional(snn_rows, embeddings, labels, ref_emb, ref_labels, temperature, distance, chunk_size)


class SoftNearestNeighborLoss(MetricLoss):
    """Soft nearest neighbour loss (Frosst 2019); formula in :func:`soft_nearest_neighbor_loss`.

    ``distance``: ``"squared_euclidean"`` (default, the paper's ``s = -|x - y|^2``),
    ``"euclidean"``, ``"cosine"`` or ``"dot"``. pytorch-metric-learning has no
    such loss. ``chunk_size``: see :mod:`likewise.losses.softmax`. ``miner=``: the
    numerator runs over mined positives, the denominator over mined pairs.
    """

    def __init__(
        self,
        temperature: float = 1.0,
        distance: str = "squared_euclidean",
        chunk_size: int | None = None,
        miner: Any = None,
        *,
        fast: bool = True,
    ) -> None:
        super().__init__(miner=miner, fast=fast)
        self.temperature = check_temperature(temperature)
        self.distance = check_metric(distance)
        self.chunk_size = _check_chunk_and_miner(chunk_size, miner)

    def compute(self, batch: Batch) -> Tensor:
        fast = None
        if self.distance != "euclidean":  # no GEMM factors for the plain Euclidean distance
            kernel = snn_kernel(self.temperature, self.temperature)
            fast = _fast_loss(batch, self.miner, self.chunk_size, kernel, self.distance, self.temperature)
        if fast is not None:
            self._record(**fast[1])
            return fast[0]
        masks = None if self.miner is None else self.pair_masks(batch)
        loss, stats = _row_loss(batch, snn_rows, self.temperature, self.distance, self.chunk_size, masks)
        self._record(**stats)
        return loss


# --------------------------------------------------------------------------- N-pairs


def npairs_select(pos: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """One (anchor, positive) pair per class: pytorch-metric-learning's choice.

    For each class, the anchor is its lowest-index sample with a positive and the
    positive is that anchor's lowest-index positive (without a miner: the first and
    second sample of each class with at least two). ``pos`` bool ``[B, B]``;
    returns two long index tensors ``[K]``. Memory ``O(B^2)``.
    """
    has_pos = pos.any(1)
    same = labels.unsqueeze(1) == labels.unsqueeze(0)
    earlier = torch.ones_like(same).tril(-1)  # earlier[i, j]: j < i
    first = has_pos & ~(same & earlier & has_pos.unsqueeze(0)).any(1)
    anchors = first.nonzero().squeeze(1)
    positives = pos[anchors].to(torch.int8).argmax(1)  # first True
    return anchors, positives


def npairs_select_classes(labels: Tensor) -> tuple[Tensor, Tensor]:
    """:func:`npairs_select` without a miner, from the labels alone in ``O(B log B)``.

    The first and second sample (by index) of every class present at least twice,
    ordered by anchor index; nothing of size ``B x B`` is built.
    """
    sorted_labels, order = torch.sort(labels, stable=True)
    starts = torch.ones_like(sorted_labels, dtype=torch.bool)
    starts[1:] = sorted_labels[1:] != sorted_labels[:-1]
    first = starts.nonzero().squeeze(1)
    has_second = first + 1 < labels.shape[0]
    has_second[has_second.clone()] = ~starts[first[has_second] + 1]
    anchors, positives = order[first[has_second]], order[first[has_second] + 1]
    by_anchor = torch.argsort(anchors)
    return anchors[by_anchor], positives[by_anchor]


def npairs_loss(
    embeddings: Tensor,
    anchors: Tensor,
    positives: Tensor,
    normalize_embeddings: bool = True,
    l2_reg: float = 0.0,
) -> Tensor:
    """Multi-class N-pair loss (Sohn 2016) on ``K`` (anchor, positive) pairs of distinct classes.

    With logits ``z_kl = <f_{a_k}, f_{p_l}>`` (``f`` L2-normalised when
    ``normalize_embeddings``, i.e. cosine similarity; raw embeddings otherwise, as in
    Sohn)::

        L = 1/K sum_k -log( e^{z_kk} / sum_l e^{z_kl} )  +  l2_reg * 1/(2K) sum_k (|x_{a_k}|^2 + |x_{p_k}|^2)

    i.e. cross-entropy where each anchor's positives of the other classes are its
    negatives; the penalty is on the raw embeddings ``x``. Shapes: ``embeddings
    [B, D]``, ``anchors`` / ``positives`` long ``[K]``.
    """
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
    """Multi-class N-pair loss (Sohn 2016): a drop-in for PML's ``NPairsLoss``.

    One (anchor, positive) pair per class present at least twice, chosen as
    pytorch-metric-learning does (:func:`npairs_select`); formula in
    :func:`npairs_loss` (dot product of L2-normalised embeddings, i.e. PML's default
    ``DotProductSimilarity()``; mean cross-entropy), so value and gradient agree
    with PML. Sohn's original form is ``normalize_embeddings=False`` with
    ``l2_reg > 0`` (his penalty on the squared norms; default 0, as PML).

    ``ref_emb`` / ``relevance`` are refused (as in PML); labels must be class ids
    ``[B]``. ``miner=``: the pairs are chosen among the mined positives by the same
    lowest-index rule (PML takes the first mined pair per class in the miner's
    output order, which may differ).
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
        if self.miner is None:
            anchors, positives = npairs_select_classes(labels)
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


__all__ = [
    "NPairsLoss",
    "NTXentLoss",
    "SoftNearestNeighborLoss",
    "SupConLoss",
    "check_temperature",
    "masked_lse",
    "npairs_loss",
    "npairs_select",
    "npairs_select_classes",
    "ntxent_loss",
    "soft_nearest_neighbor_loss",
    "supcon_loss",
]
