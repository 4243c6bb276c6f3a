"""Miners: pick the informative pairs or triplets of a batch.

A miner is called like a supervised loss,

    miner(embeddings, labels, *, ref_emb=None, ref_labels=None, relevance=None, ref_self_index=None)

with ``embeddings [B, D]``, ``labels [B]`` (or multi-label ``[B, C]``), references
``ref_emb [N, D]`` / ``ref_labels [N]`` (the queries themselves when absent, self-pairs
excluded), and returns either

* :class:`~likewise.mined.Triplets` ``(anchor, positive, negative)`` index tensors
  (``anchor`` indexes the queries, ``positive``/``negative`` the references), or
* :class:`~likewise.mined.PairMask` bool ``pos``/``neg`` masks ``[B, N]``.

Plug a miner into a loss with ``TripletMarginLoss(miner=BatchHardMiner())``; the loss
calls it on detached embeddings. Positives and negatives come from
:func:`likewise.similarity.relation_masks`. Every miner works on one distance matrix
``d [B, N]`` and keeps at most O(B * N) numbers alive: nothing of size B^3.

Input dtypes: embeddings and references of different float dtypes are taken in
``torch.promote_types`` of the two; float16 and bfloat16 ones are mined in float32 (a miner
only selects indices: the wider range and exact column numbers cost nothing downstream).
Class ids may be any integer dtype or bool (two classes); float class ids raise ``TypeError``.

Distances (``distance=``, a metric name of :mod:`likewise.similarity`): ``"euclidean"``
with ``normalize_embeddings=True`` (pytorch-metric-learning's default ``LpDistance``)
unless stated otherwise; the similarity metrics are turned into distances by
:func:`~likewise.similarity.pairwise_distance` (``1 - cos``, ``-<x, y>``), so margins
are differences of similarities there. Each miner keeps statistics of its last call
in ``self.stats`` (a dict of floats, computed when read: :mod:`likewise.lazy_stats`).

Host synchronisation: none in Python (no ``.item()``, ``int(t)``, ``bool(t)``) with default
settings. A miner that returns :class:`~likewise.mined.Triplets` returns as many as the data
select, found with ``nonzero``: on a GPU that output size is a synchronisation (as is the
largest number of positives of an anchor, read from ``bincount``'s length); the miners that
return a :class:`~likewise.mined.PairMask` (fixed ``[B, N]`` size) have none.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from likewise import entries
from likewise.devices import check_on_device
from likewise.lazy_stats import LazyStats
from likewise.mined import Mined, PairMask, Triplets
from likewise.normalize import l2_normalize
from likewise.similarity import check_metric, is_similarity, pairwise_distance, pairwise_similarity


class Miner(LazyStats, nn.Module):
    """Base class: validates the call, builds masks and distances, and calls :meth:`mine`."""

    def __init__(self, distance: str = "euclidean", normalize_embeddings: bool = True) -> None:
        super().__init__()
        self.distance = check_metric(distance)
        self.normalize_embeddings = bool(normalize_embeddings)

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor | None = None,
        *,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
        relevance: Tensor | None = None,
        ref_self_index: Tensor | None = None,
        relation: PairMask | None = None,
    ) -> Mined:
        """``relation``: given similar / dissimilar pairs (a :class:`~likewise.mined.PairMask`
        ``[B, N]``; pairs in neither are unknown) instead of labels: the miner picks within it."""
        # Imported here: likewise.losses imports loss modules that may import this one.
        from likewise.losses.base import check_batch

        with torch.no_grad():
            batch = check_batch(
                embeddings,
                labels,
                ref_emb,
                ref_labels,
                relevance,
                ref_self_index=ref_self_index,
                pairs_given=relation is not None,
            )
            if relation is not None:
                shape = (batch.embeddings.shape[0], batch.ref_emb.shape[0])
                if not isinstance(relation, PairMask) or tuple(relation.pos.shape) != shape:
                    raise ValueError(f"relation must be a PairMask of two bool {shape} masks")
                pos, neg = relation.pos.bool(), relation.neg.bool()
            else:
                pos, neg = batch.masks()
            x, y = batch.embeddings, batch.ref_emb  # one dtype: check_batch promoted mixed ones
            if x.dtype in _LOW_PRECISION:  # selected in float32 (see the module docstring)
                x, y = x.float(), (x.float() if batch.same_set else y.float())
            if self.normalize_embeddings and self.distance != "cosine":
                x = l2_normalize(x, dim=1)
                y = x if batch.same_set else l2_normalize(y, dim=1)
            return self.mine(x, y, pos, neg)

    def mine(self, x: Tensor, y: Tensor, pos: Tensor, neg: Tensor) -> Mined:  # pragma: no cover
        """``x [B, D]`` queries, ``y [N, D]`` references, bool masks ``[B, N]``."""
        raise NotImplementedError

    def distances(self, x: Tensor, y: Tensor) -> Tensor:
        """``[B, N]`` distances in the chosen metric (smaller = closer)."""
        return pairwise_distance(x, y, self.distance)

    def mine_class_ids(
        self, d: Tensor, pairs: tuple[Tensor, Tensor], selves: tuple[Tensor, Tensor]
    ) -> Mined | None:
        """What :meth:`forward` returns, from a distance matrix ``d [B, N]`` in this miner's
        metric (of the embeddings it would normalise) and class-id relations given as index
        lists (:func:`likewise.losses._kernels.positives.batch_pairs`): every other non-self pair is a
        negative. A loss that has ``d`` already uses it to skip a second GEMM and the
        ``[B, N]`` masks. ``None``: not available for this miner or these settings."""
        return None

    def _record_triplets(self, triplets: Triplets, d: Tensor, n_queries: int) -> Triplets:
        t = len(triplets)
        d_ap = entries.take(d, triplets.anchor, triplets.positive)
        d_an = entries.take(d, triplets.anchor, triplets.negative)
        anchors = triplets.anchor
        self._record(
            num_triplets=float(t),
            anchor_fraction=lambda: anchors.unique().numel() / n_queries,
            mean_pos_distance=d_ap.mean() if t else 0.0,
            mean_neg_distance=d_an.mean() if t else 0.0,
            hard_fraction=(d_an < d_ap).float().mean() if t else 0.0,
        )
        return triplets


def _extreme(d: Tensor, mask: Tensor, largest: bool) -> tuple[Tensor, Tensor, Tensor]:
    """Per row: (value, column, has_any) of the largest / smallest ``d`` where ``mask``."""
    fill = -math.inf if largest else math.inf
    masked = d.masked_fill(~mask, fill)
    values, cols = masked.max(dim=1) if largest else masked.min(dim=1)
    return values, cols, mask.any(dim=1)


def _sorted_negatives(d: Tensor, neg: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per anchor, negative distances sorted ascending (+inf after the last), their columns, count."""
    values, cols = d.masked_fill(~neg, math.inf).sort(dim=1)
    return values, cols, neg.sum(dim=1)


def largest_count(counts: Tensor) -> int:
    """``max(counts)`` of non-negative integers (0 for none), read from ``bincount``'s output
    length: a shape, so Python never calls ``int`` on a tensor (on a GPU the output size is still
    a synchronisation, as any ``nonzero``)."""
    return max(torch.bincount(counts).shape[0] - 1, 0)


#: float16 / bfloat16: miners compute distances and weights in float32 (range, and exact
#: column numbers: float16 counts exactly only to 2048, bfloat16 to 256)
_LOW_PRECISION = (torch.float16, torch.bfloat16)

#: added to the distances that are not candidates of a search by float passes (``> any distance``)
_FAR = 1e30

#: work budget (elements) of one block of the dense per-positive search
_BLOCK_ELEMENTS = 1 << 22


def _use_dense(max_pos: int, n_refs: int) -> bool:
    """Few positives per anchor (class-balanced batches): comparing each positive with every
    negative, O(B * N * max_pos), beats sorting the rows, O(B * N log N)."""
    return max_pos <= max(1, math.ceil(math.log2(max(n_refs, 2))))


def _positive_slots(pos: Tensor) -> tuple[Tensor, Tensor, Tensor, int]:
    """Positive pairs ``(a, p)`` (row-major), each pair's slot among its anchor's positives,
    and the largest number of positives of one anchor."""
    a, p = torch.nonzero(pos, as_tuple=True)
    counts = pos.sum(dim=1)
    slot = torch.arange(a.numel(), device=a.device) - (counts.cumsum(0) - counts)[a]
    return a, p, slot, largest_count(counts)


def _dense_blocks(
    d: Tensor, neg: Tensor, a: Tensor, p: Tensor, slot: Tensor, max_pos: int
) -> Iterator[tuple[slice, Tensor, Tensor, Tensor]]:
    """Anchor blocks: ``(rows, d_ap [r, max_pos, 1] (NaN padding), d_an [r, 1, N] (+inf where
    not negative), neg [r, 1, N])``, at most ``_BLOCK_ELEMENTS`` pair x reference entries each."""
    b, n = d.shape
    d_ap = d.new_full((b, max_pos), math.nan)
    d_ap[a, slot] = d[a, p]
    d_an = d.masked_fill(~neg, math.inf)
    step = max(1, _BLOCK_ELEMENTS // max(1, max_pos * n))
    for start in range(0, b, step):
        rows = slice(start, min(b, start + step))
        yield rows, d_ap[rows].unsqueeze(2), d_an[rows].unsqueeze(1), neg[rows].unsqueeze(1)


class _PerAnchorMiner(Miner):
    """One triplet per anchor: an extreme positive and an extreme negative. O(B * N)."""

    farthest_positive: bool = True

    def mine(self, x: Tensor, y: Tensor, pos: Tensor, neg: Tensor) -> Triplets:
        d = self.distances(x, y)
        _, p, has_p = _extreme(d, pos, largest=self.farthest_positive)
        _, n, has_n = _extreme(d, neg, largest=False)
        anchors = torch.nonzero(has_p & has_n).flatten()
        triplets = Triplets(anchors, p[anchors], n[anchors])
        return self._record_triplets(triplets, d, x.shape[0])


class BatchHardMiner(_PerAnchorMiner):
    """Batch-hard mining (Hermans, Beyer & Leibe, 2017, "In Defense of the Triplet Loss").

    For every anchor ``a`` with at least one positive and one negative:
    ``p = argmax_{p in P(a)} d(a, p)`` and ``n = argmin_{n in N(a)} d(a, n)``, giving
    the batch-hard loss ``sum_a [margin + max_p d_ap - min_n d_an]_+`` with a triplet loss.

    Returns :class:`Triplets` of length ``<= B``; time and memory O(B * N).
    Same selection as pytorch-metric-learning's ``BatchHardMiner`` (default distance).
    """

    farthest_positive = True


class EasyPositiveMiner(_PerAnchorMiner):
    """Easy-positive, hard-negative mining (Xuan, Stylianou & Pless, 2020, "Improved
    Embeddings with Easy Positive Triplet Mining").

    For every anchor: its *closest* positive ``p = argmin_{p in P(a)} d(a, p)`` and its
    closest (hardest) negative ``n = argmin_{n in N(a)} d(a, n)``. Pulling only the easiest
    positive keeps classes with several modes from being collapsed into one.

    Returns :class:`Triplets` of length ``<= B``; O(B * N).
    """

    farthest_positive = False


class BatchAllMiner(Miner):
    """Batch-all mining (Hermans, Beyer & Leibe, 2017): every valid triplet with a
    positive hinge, ``d(a, p) - d(a, n) + margin > 0``.

    Instead of the (up to B^3) triplets it returns the :class:`PairMask` of the pairs
    that take part in at least one of them:

    * ``pos[a, p]`` iff ``min_{n in N(a)} d_an < d_ap + margin``;
    * ``neg[a, n]`` iff ``d_an < max_{p in P(a)} d_ap + margin``.

    A triplet loss given these masks forms every ``(a, p, n)`` with both pairs selected:
    all positive-loss triplets, plus possibly some zero-loss ones whose pairs are each
    active with another partner (they add zero to a hinge sum; a loss that averages
    over non-zero terms, like pytorch-metric-learning's default, is unaffected).
    ``stats["num_triplets"]`` counts the positive-loss triplets exactly, when the statistics
    are read (the distances and masks of the last call are kept for it): per positive pair,
    the negatives below ``d_ap + margin`` (a comparison with each negative when anchors have
    few positives, else sorted negatives + ``searchsorted``); time
    O(B * N * min(P_max, log N)), memory O(B * N). Mining itself is O(B * N) and, returning
    fixed-size masks, never synchronises with the host.
    """

    def __init__(self, margin: float = 0.2, distance: str = "euclidean", normalize_embeddings: bool = True):
        super().__init__(distance, normalize_embeddings)
        self.margin = float(margin)

    def mine(self, x: Tensor, y: Tensor, pos: Tensor, neg: Tensor) -> PairMask:
        d = self.distances(x, y)
        reach = d + self.margin  # a triplet (a, p, n) is active iff d_an < d_ap + margin
        min_neg, _, _ = _extreme(d, neg, largest=False)
        max_pos, _, has_pos = _extreme(d, pos, largest=True)
        pos_sel = pos & (min_neg.unsqueeze(1) < reach)
        neg_sel = neg & has_pos.unsqueeze(1) & (d < (max_pos + self.margin).unsqueeze(1))
        n_active = functools.cache(lambda: self._count_active(d, pos, neg))  # when read
        n_valid = (pos.sum(1) * neg.sum(1)).sum()
        self._record(
            num_triplets=n_active,
            active_fraction=lambda: n_active() / max(float(n_valid), 1.0),
            num_pos_pairs=pos_sel.sum(),
            num_neg_pairs=neg_sel.sum(),
            anchor_fraction=pos_sel.any(1).float().mean(),
        )
        return PairMask(pos_sel, neg_sel)

    def _count_active(self, d: Tensor, pos: Tensor, neg: Tensor) -> int:
        a, p, slot, max_pos = _positive_slots(pos)
        if a.numel() == 0:
            return 0
        if _use_dense(max_pos, d.shape[1]):
            total = 0
            for _, d_ap, d_an, _ in _dense_blocks(d, neg, a, p, slot, max_pos):
                total += int((d_an < d_ap + self.margin).sum())  # NaN padding never counts
            return total
        sorted_neg, _, _ = _sorted_negatives(d, neg)
        reach = (d + self.margin).contiguous()
        return int(torch.searchsorted(sorted_neg, reach, right=False)[pos].sum())


class SemiHardMiner(Miner):
    """Semi-hard negative mining (Schroff, Kalenichenko & Philbin, 2015, FaceNet).

    For every positive pair ``(a, p)``: the hardest negative inside the margin band
    ``d_ap < d_an < d_ap + margin``, i.e. the closest negative farther than the positive.
    Pairs whose band is empty are dropped, unless ``hard_fallback=True``: then such a
    pair takes the *easiest hard* negative, the largest ``d_an`` with ``d_an <= d_ap``
    (if any; the choice of TensorFlow Addons' ``triplet_semihard_loss`` when no negative
    is farther than the positive). Pairs whose negatives all lie at or beyond
    ``d_ap + margin`` carry no loss and are always dropped.

    At most one triplet per positive pair (so O(B * N) triplets). When anchors have few
    positives (``P_max <= log2 N``, e.g. class-balanced batches) each positive is compared
    with every negative in blocks, O(B * N * P_max); otherwise each anchor's negative
    distances are sorted once and every pair located with ``searchsorted``,
    O(B * N log N). Memory O(B * N) either way. No host synchronisation in Python; the
    number of triplets depends on the data (``nonzero``), which on a GPU is one.
    """

    def __init__(
        self,
        margin: float = 0.2,
        *,
        hard_fallback: bool = False,
        distance: str = "euclidean",
        normalize_embeddings: bool = True,
    ) -> None:
        super().__init__(distance, normalize_embeddings)
        if not margin > 0:
            raise ValueError(f"margin must be positive, got {margin}")
        self.margin = float(margin)
        self.hard_fallback = bool(hard_fallback)

    def mine(self, x: Tensor, y: Tensor, pos: Tensor, neg: Tensor) -> Triplets:
        d = self.distances(x, y)
        a, p, slot, max_pos = _positive_slots(pos)
        d_ap = d[a, p]
        if a.numel() == 0:
            far_val, far_col, near_col = d_ap, a, a
        elif _use_dense(max_pos, d.shape[1]):
            far_val, far_col, near_col = self._search_dense(d, neg, a, p, slot, max_pos)
        else:
            far_val, far_col, near_col = self._search_sorted(d, neg, a, p, d_ap)
        band = far_val < d_ap + self.margin  # far_val = +inf when no negative is farther
        keep, col = band, far_col
        if self.hard_fallback:
            inside = ~band & (near_col >= 0)
            keep, col = band | inside, torch.where(inside, near_col, far_col)
        triplets = Triplets(a[keep], p[keep], col[keep])
        self._record_triplets(triplets, d, x.shape[0])
        self._record_more(semihard_fraction=band.float().mean() if band.numel() else 0.0)
        return triplets

    def mine_class_ids(
        self, d: Tensor, pairs: tuple[Tensor, Tensor], selves: tuple[Tensor, Tensor]
    ) -> Triplets | None:
        """Semi-hard triplets of class-id relations given as index lists (see the base class).

        Per positive slot ``j`` of every anchor, the negatives' distances with ``FAR`` added
        where ``d_an <= d_ap_j`` (the positive and self pairs at ``+inf``) have their row minimum
        at the nearest negative farther than the positive; its column is the first where the
        minimum is reached. Float passes over two ``[B, N]`` buffers, no boolean masks, no
        ``min(dim)``. Without ``hard_fallback`` and for ``P_max <= log2 N``; otherwise ``None``.
        """
        pr, pc = pairs
        b, n = d.shape
        if d.dtype in _LOW_PRECISION:  # _FAR and the column numbers need float32
            d = d.float()
        counts = torch.bincount(pr, minlength=b)
        max_pos = largest_count(counts)
        if self.hard_fallback or not _use_dense(max_pos, n):
            return None
        slot = torch.arange(pr.numel(), device=d.device) - (counts.cumsum(0) - counts).index_select(0, pr)
        d_pos = entries.take(d, pr, pc)
        d_ap = entries.put_(d.new_full((b, max(max_pos, 1)), math.nan), pr, slot, d_pos)
        best = d.new_empty(d_ap.shape)
        best_col = torch.empty(d_ap.shape, dtype=torch.long, device=d.device)
        d_neg = d.clone(
            memory_format=torch.contiguous_format
        )  # the negatives' distances, +inf at the positive and self pairs
        entries.fill_(d_neg, torch.cat([pr, selves[0]]), torch.cat([pc, selves[1]]), math.inf)
        work = d_neg.new_empty(d.shape)
        # N-1 ... 0: the largest of (hit * reversed) is the first column that hits
        reversed_cols = torch.arange(n - 1, -1, -1, device=d.device, dtype=d.dtype)
        for j in range(d_ap.shape[1]):
            # d_an, or d_an + FAR where d_an <= d_ap_j (not farther; NaN padding slots: never read)
            torch.le(d_neg, d_ap[:, j : j + 1], out=work)
            torch.addcmul(d_neg, work, work, value=_FAR, out=work)
            best[:, j] = low = work.amin(1)
            # the column of the minimum by float passes (min(dim) is ~30x slower than amin)
            torch.eq(work, low.unsqueeze(1), out=work).mul_(reversed_cols)
            best_col[:, j] = (n - 1) - work.amax(1).long()
        col = entries.take(best_col, pr, slot)
        band = entries.take(best, pr, slot) < d_pos + self.margin  # >= FAR or inf: none farther
        keep = band.nonzero().squeeze(1)
        triplets = Triplets(pr.index_select(0, keep), pc.index_select(0, keep), col.index_select(0, keep))
        self._record_triplets(triplets, d, b)
        self._record_more(semihard_fraction=band.float().mean() if band.numel() else 0.0)
        return triplets

    def _search_dense(
        self, d: Tensor, neg: Tensor, a: Tensor, p: Tensor, slot: Tensor, max_pos: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Per pair: nearest negative with ``d_an > d_ap`` (value, column) and, with
        ``hard_fallback``, the farthest negative with ``d_an <= d_ap`` (column, -1 if none)."""
        b = d.shape[0]
        far_col = torch.empty(b, max_pos, dtype=torch.long, device=d.device)
        far_found = torch.empty(b, max_pos, dtype=torch.bool, device=d.device)
        near_col = torch.full_like(far_col, -1)
        for rows, d_ap, d_an, is_neg in _dense_blocks(d, neg, a, p, slot, max_pos):
            gap = d_an - d_ap  # > 0 exactly when d_an > d_ap; NaN in padding slots (never read)
            closer = gap <= 0
            value, col = gap.masked_fill_(closer, math.inf).min(dim=2)
            # an all-inf row (no negative farther) gives column 0, which may be any pair
            far_col[rows], far_found[rows] = col, value < math.inf
            if self.hard_fallback:
                near = torch.where(closer & is_neg, d_an, -math.inf)
                value, col = near.max(dim=2)
                near_col[rows] = col.masked_fill_(value == -math.inf, -1)
        far_col, near_col, far_found = far_col[a, slot], near_col[a, slot], far_found[a, slot]
        far_val = torch.where(far_found, d[a, far_col], math.inf)  # none farther: +inf
        return far_val, far_col, near_col

    @staticmethod
    def _search_sorted(
        d: Tensor, neg: Tensor, a: Tensor, p: Tensor, d_ap: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The same search on each anchor's sorted negative distances."""
        sorted_neg, cols, n_neg = _sorted_negatives(d, neg)
        # position of the first negative strictly farther than d[a, j], for every (a, j)
        k = torch.searchsorted(sorted_neg, d.contiguous(), right=True)[a, p]
        last = d.shape[1] - 1
        far_val = torch.where(k < n_neg[a], sorted_neg[a, k.clamp_max(last)], math.inf)
        far_col = cols[a, k.clamp_max(last)]
        near_col = torch.where(k > 0, cols[a, (k - 1).clamp_min(0)], -1)
        return far_val, far_col, near_col


def distance_weighted_log_weights(
    d: Tensor, neg: Tensor, dim: int, cutoff: float = 0.5, nonzero_loss_cutoff: float = 1.4
) -> Tensor:
    """Log sampling weights ``[B, N]`` of Wu et al. (2017) (``-inf`` where not sampled).

    On the unit sphere in ``R^dim`` the distance between two uniform points has density
    ``q(d) ∝ d^(dim-2) (1 - d^2/4)^((dim-3)/2)``; negatives are drawn with weight
    ``1 / q(max(d, cutoff))``, only where ``d < nonzero_loss_cutoff`` and ``d < 2``:
    ``log w = -(dim-2) log d' - (dim-3)/2 log(1 - d'^2/4)``, ``d' = max(d, cutoff)``.
    """
    dc = d.clamp_min(cutoff)
    log_w = -(dim - 2.0) * torch.log(dc) - ((dim - 3.0) / 2.0) * torch.log1p(-0.25 * dc * dc)
    allowed = neg & (d < nonzero_loss_cutoff) & (dc < 2.0)
    return log_w.masked_fill(~allowed, -math.inf)


class DistanceWeightedMiner(Miner):
    """Distance-weighted negative sampling (Wu, Manmatha, Smola & Krähenbühl, 2017,
    "Sampling Matters in Deep Embedding Learning").

    Embeddings are L2-normalised (the weights assume the unit hypersphere, so there is
    no ``distance=`` option: Euclidean on the sphere). For every positive pair
    ``(a, p)`` one negative is drawn from ``N(a)`` with probability proportional to
    ``1 / q(d_an)`` (see :func:`distance_weighted_log_weights`; computed in log space and
    shifted by the row maximum, so large ``dim`` neither overflows nor underflows).
    An anchor whose negatives all lie beyond ``nonzero_loss_cutoff`` draws uniformly
    among its negatives (as the authors' code does).

    Randomness: ``generator=`` (a ``torch.Generator``) or ``seed=`` (the miner then owns
    a generator seeded once, so a run of calls is reproducible); neither: torch's global
    generator. Returns :class:`Triplets` with one entry per positive pair; O(B * N). No host
    synchronisation in Python; the positive pairs (``nonzero``) and the number of draws (the
    largest positive count) have data-dependent sizes, which on a GPU synchronise.
    """

    def __init__(
        self,
        cutoff: float = 0.5,
        nonzero_loss_cutoff: float = 1.4,
        *,
        seed: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__("euclidean", normalize_embeddings=True)
        if not 0 <= cutoff < nonzero_loss_cutoff:
            raise ValueError(
                f"need 0 <= cutoff < nonzero_loss_cutoff, got cutoff={cutoff}, "
                f"nonzero_loss_cutoff={nonzero_loss_cutoff}"
            )
        if seed is not None and generator is not None:
            raise ValueError("pass seed or generator, not both")
        self.cutoff = float(cutoff)
        self.nonzero_loss_cutoff = float(nonzero_loss_cutoff)
        if seed is not None:
            generator = torch.Generator().manual_seed(int(seed))
        self.generator = generator

    def probabilities(self, d: Tensor, neg: Tensor, dim: int) -> Tensor:
        """Row-normalised sampling probabilities ``[B, N]`` over each anchor's negatives."""
        log_w = distance_weighted_log_weights(d, neg, dim, self.cutoff, self.nonzero_loss_cutoff)
        empty = torch.isinf(log_w).all(dim=1, keepdim=True) & neg.any(dim=1, keepdim=True)
        log_w = torch.where(empty & neg, torch.zeros_like(log_w), log_w)  # uniform fallback
        lowest = torch.finfo(log_w.dtype).min  # a row without candidates: all weights 0
        w = torch.exp(log_w - log_w.max(dim=1, keepdim=True).values.clamp_min(lowest))
        return w / w.sum(dim=1, keepdim=True).clamp_min(torch.finfo(w.dtype).tiny)

    def mine(self, x: Tensor, y: Tensor, pos: Tensor, neg: Tensor) -> Triplets:
        d = self.distances(x, y)
        probs = self.probabilities(d, neg, x.shape[1])
        pos = pos & neg.any(dim=1, keepdim=True)
        a, p = torch.nonzero(pos, as_tuple=True)  # row-major: pairs of one anchor are adjacent
        n = torch.empty_like(a)
        if a.numel():
            # draw, per anchor, as many negatives (with replacement) as it has positives
            counts = pos.sum(dim=1)
            anchors = torch.nonzero(counts).flatten()
            rows = probs[anchors].float()
            gen = self.generator
            if gen is not None and gen.device != rows.device:
                rows = rows.to(gen.device)
            draws = torch.multinomial(rows, largest_count(counts), replacement=True, generator=gen)
            draws = draws.to(a.device)
            slot = torch.full_like(counts, -1)
            slot[anchors] = torch.arange(anchors.numel(), device=a.device)
            rank = torch.arange(a.numel(), device=a.device) - (counts.cumsum(0) - counts)[a]
            n = draws[slot[a], rank]
        triplets = Triplets(a, p, n)
        return self._record_triplets(triplets, d, x.shape[0])


class MultiSimilarityMiner(Miner):
    """Multi-similarity pair mining (Wang, Han, Huang, Dong & Scott, 2019).

    With similarities ``s`` (default ``distance="cosine"``, pytorch-metric-learning's):

    * a positive pair ``(a, p)`` is kept iff ``s_ap - epsilon < max_{n in N(a)} s_an``;
    * a negative pair ``(a, n)`` is kept iff ``s_an + epsilon > min_{p in P(a)} s_ap``.

    With a distance metric the inequalities flip (``d_ap + epsilon > min d_an``,
    ``d_an - epsilon < max d_ap``). Returns a :class:`PairMask`; O(B * N). The selected
    pairs equal pytorch-metric-learning's ``MultiSimilarityMiner`` (same formulas on
    the same similarity values; no sort is needed since only row extremes matter).
    """

    def __init__(self, epsilon: float = 0.1, distance: str = "cosine", normalize_embeddings: bool = True):
        super().__init__(distance, normalize_embeddings)
        self.epsilon = float(epsilon)

    def mine(self, x: Tensor, y: Tensor, pos: Tensor, neg: Tensor) -> PairMask:
        eps = self.epsilon
        if is_similarity(self.distance):
            s = pairwise_similarity(x, y, self.distance)
            max_neg, _, _ = _extreme(s, neg, largest=True)
            min_pos, _, _ = _extreme(s, pos, largest=False)
            pos_sel = pos & (s - eps < max_neg.unsqueeze(1))
            neg_sel = neg & (s + eps > min_pos.unsqueeze(1))
        else:
            d = self.distances(x, y)
            min_neg, _, _ = _extreme(d, neg, largest=False)
            max_pos, _, _ = _extreme(d, pos, largest=True)
            pos_sel = pos & (d + eps > min_neg.unsqueeze(1))
            neg_sel = neg & (d - eps < max_pos.unsqueeze(1))
        n_pos, n_neg, k_pos, k_neg = pos.sum(), neg.sum(), pos_sel.sum(), neg_sel.sum()
        self._record(
            num_pos_pairs=k_pos,
            num_neg_pairs=k_neg,
            pos_fraction=lambda: float(k_pos) / float(n_pos) if n_pos else 0.0,
            neg_fraction=lambda: float(k_neg) / float(n_neg) if n_neg else 0.0,
            anchor_fraction=(pos_sel.any(1) | neg_sel.any(1)).float().mean(),
        )
        return PairMask(pos_sel, neg_sel)


def sample_triplets(
    pos: Tensor, neg: Tensor, per_anchor: int, generator: torch.Generator | None = None
) -> Triplets:
    """``per_anchor`` random triplets (positive and negative drawn uniformly, independently, with
    replacement) for every anchor with a positive and a negative. The anchors are a ``nonzero``."""
    anchors = (pos.any(1) & neg.any(1)).nonzero().squeeze(1)
    if anchors.numel() == 0:
        empty = torch.zeros(0, dtype=torch.long, device=pos.device)
        return Triplets(empty, empty, empty)
    p = torch.multinomial(pos[anchors].float(), per_anchor, replacement=True, generator=generator)
    n = torch.multinomial(neg[anchors].float(), per_anchor, replacement=True, generator=generator)
    return Triplets(anchors.repeat_interleave(per_anchor), p.reshape(-1), n.reshape(-1))


def check_triplets(t: Triplets, b: int, n: int) -> Triplets:
    """Mined indices are integers within range (a device-side assertion: no synchronisation)."""
    for name, idx, bound in (
        ("anchor", t.anchor, b),
        ("positive", t.positive, n),
        ("negative", t.negative, n),
    ):
        if idx.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"mined {name} indices must be integer tensors, got {idx.dtype}")
        check_on_device(
            ((idx >= 0) & (idx < bound)).all(), f"mined {name} indices must lie in [0, {bound - 1}]"
        )
    return t


#: every miner class by name (configs and the CLI look miners up here; the contract tests run
#: over it): add a new miner here
MINERS: dict[str, type[Miner]] = {
    cls.__name__: cls
    for cls in (
        BatchHardMiner,
        BatchAllMiner,
        SemiHardMiner,
        EasyPositiveMiner,
        DistanceWeightedMiner,
        MultiSimilarityMiner,
    )
}

__all__ = [
    "MINERS",
    "Miner",
    "BatchHardMiner",
    "BatchAllMiner",
    "SemiHardMiner",
    "EasyPositiveMiner",
    "DistanceWeightedMiner",
    "MultiSimilarityMiner",
    "check_triplets",
    "distance_weighted_log_weights",
    "sample_triplets",
]
