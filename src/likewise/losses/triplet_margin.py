"""Triplet margin loss (Schroff, Kalenichenko & Philbin 2015, "FaceNet").

For an anchor ``a`` (a query), a positive ``p`` and a negative ``n`` (references), with
distances ``d`` (smaller = closer; ``d = -s`` for the similarities ``"cosine"`` / ``"dot"``,
pytorch-metric-learning's ``CosineSimilarity`` form)::

    l_apn = [d_ap - d_an + m]_+              (hinge)
    l_apn = log(1 + exp(d_ap - d_an + m))    (smooth_loss=True: softplus "soft margin",
                                              Hermans, Beyer & Leibe 2017)
    L = sum_{l_apn > 0} l_apn / #{l_apn > 0}  (PML's AvgNonZeroReducer; 0 when none)

over every triplet with ``pos[a, p]`` and ``neg[a, n]``. With ``swap=True`` (Balntas et al.
2016, "Learning local feature descriptors with triplets") ``d_an`` becomes ``min(d_an, d_pn)``,
the positive-negative distance taken between the references.

Shapes: ``dist, pos, neg [B, N]`` (``pos``/``neg`` bool masks or non-negative weights, e.g.
PML's pairs counted as listed); given triplets: index tensors ``[T]``.

    >>> loss = TripletMarginLoss(margin=0.2)
    >>> x, y = torch.randn(32, 8, requires_grad=True), torch.arange(32) % 4
    >>> loss(x, y).backward()

:func:`triplet_margin_loss` is the specification: plain autograd over blocks of positive
pairs (one ``[pairs, N]`` tensor each, checkpointed: memory stays at one block, never ``B^3``).
The fast kernels (:mod:`likewise.losses._kernels.triplet`) compute the same for the calls
they declare themselves eligible for; ``fast=False`` always runs the plain form.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from likewise.losses._kernels import triplet as kernels
from likewise.losses._kernels.euclidean import distance_matrix
from likewise.losses.base import Batch, MetricLoss, check_number, masked_mean, prepare, zero_loss
from likewise.mined import Triplets, to_pair_mask
from likewise.mining import check_triplets, sample_triplets
from likewise.normalize import l2_normalize
from likewise.similarity import check_metric, is_similarity, pairwise_distance, pairwise_similarity

SwapDist = Tensor | Callable[[Tensor], Tensor] | None


def distance_like(x: Tensor, y: Tensor, metric: str, fast: bool = True) -> Tensor:
    """``[B, N]`` distances, ``-similarity`` for cosine / dot (``fast``: two-GEMM Euclidean backward)."""
    if is_similarity(metric):
        return -pairwise_similarity(x, y, metric)
    return distance_matrix(x, y, metric) if fast else pairwise_distance(x, y, metric)


def rowwise_distance_like(u: Tensor, v: Tensor, metric: str) -> Tensor:
    """``[T]`` distances between matching rows of ``u, v [T, D]`` (same convention)."""
    if metric in ("cosine", "dot"):
        return -((l2_normalize(u, dim=1) * l2_normalize(v, dim=1)) if metric == "cosine" else u * v).sum(1)
    d2 = (u - v).pow(2).sum(1)
    if metric == "squared_euclidean":
        return d2
    return torch.where(d2 > 0, d2.clamp_min(torch.finfo(d2.dtype).tiny).sqrt(), d2 * 0)


def _terms(v: Tensor, smooth: bool) -> Tensor:
    return F.softplus(v) if smooth else F.relu(v)


def _triplet_terms(
    dist: Tensor,
    pos: Tensor,
    neg: Tensor,
    margin: float,
    smooth: bool,
    swap_rows: Callable[[Tensor], Tensor] | None,
    block_elements: int,
) -> tuple[Tensor, Tensor]:
    """``(sum, count)`` of the non-zero terms over all ``(a, p, n)``, each weighted by
    ``pos[a, p] * neg[a, n]`` (1 for bool masks); ``swap_rows(p [c]) -> [c, N]`` reference
    distances. Positive pairs in blocks of ``block_elements // N`` (``nonzero``: on a GPU a sync)."""
    pos_w, neg_w = pos.to(dist.dtype), neg.to(dist.dtype)
    a_idx, p_idx = pos_w.nonzero(as_tuple=True)

    def block(d: Tensor, a: Tensor, p: Tensor) -> Tensor:
        d_an = d[a] if swap_rows is None else torch.minimum(d[a], swap_rows(p))
        losses = _terms(d[a, p].unsqueeze(1) - d_an + margin, smooth)
        weight = torch.where(losses > 0, neg_w[a] * pos_w[a, p].unsqueeze(1), 0.0)
        return torch.stack([(weight * losses).sum(), weight.sum()])

    per_block = max(1, block_elements // max(1, dist.shape[1]))
    use_ckpt = a_idx.shape[0] > per_block and torch.is_grad_enabled()
    out = torch.stack([dist.sum() * 0, dist.new_zeros(())])  # in the graph when nothing is summed
    for s in range(0, a_idx.shape[0], per_block):
        a, p = a_idx[s : s + per_block], p_idx[s : s + per_block]
        out = out + (checkpoint(block, dist, a, p, use_reentrant=False) if use_ckpt else block(dist, a, p))
    return out[0], out[1].detach()


def triplet_margin_loss(
    dist: Tensor,
    pos: Tensor,
    neg: Tensor,
    margin: float = 0.05,
    *,
    smooth_loss: bool = False,
    swap_dist: SwapDist = None,
    block_elements: int = 1 << 22,
) -> Tensor:
    """The loss over every triplet with ``pos[a, p]`` and ``neg[a, n]``: ``dist [B, N]`` (``-s``
    for similarities), ``pos, neg`` bool masks (or weights) ``[B, N]``. ``swap_dist``: reference
    distances for the swap, an ``[N, N]`` tensor or a function ``p [c] -> [c, N]``. Plain autograd
    over blocks of positive pairs, checkpointed. A scalar (0, in the graph, when no term is > 0)."""
    swap_rows = swap_dist.__getitem__ if isinstance(swap_dist, Tensor) else swap_dist
    total, count = _triplet_terms(dist, pos, neg, margin, smooth_loss, swap_rows, block_elements)
    return total / count.clamp_min(1)


def triplet_margin_loss_from_triplets(
    d_ap: Tensor, d_an: Tensor, margin: float = 0.05, *, smooth_loss: bool = False
) -> Tensor:
    """The same loss on given triplets: ``d_ap, d_an [T]`` (``d_an`` already swapped if wanted)."""
    losses = _terms(d_ap - d_an + margin, smooth_loss)
    return masked_mean(losses, losses > 0)


class TripletMarginLoss(MetricLoss):
    """Triplet margin loss, a drop-in for PML's ``TripletMarginLoss`` (formula: module docstring).

    PML's keywords and defaults: ``margin=0.05``, ``swap=False``, ``smooth_loss=False``,
    ``triplets_per_anchor="all"``, Euclidean distance between L2-normalised embeddings
    (``distance=``: ``"squared_euclidean"``, ``"cosine"``: ``s_an - s_ap + m``, ``"dot"``).
    Triplets: all of them, ``triplets_per_anchor=k`` random ones per anchor (not PML's draws),
    or a miner's: ``Triplets`` as given; a ``PairMask`` gives every ``(a, p, n)`` with both pairs
    selected. ``indices_tuple=`` (PML's): triplets as given; pairs ``(a1, p, a2, n)`` give every
    ``(a1[i], p[i], n[j])`` with ``a2[j] == a1[i]``, duplicates counted, never listed.

    Shapes: ``embeddings [B, D]``, ``labels [B]``, optional ``ref_emb [N, D]``, ``ref_labels
    [N]``. ``stats``: ``num_triplets``, ``active_fraction`` (non-zero terms), ``mean_pos_<unit>``,
    ``mean_neg_<unit>`` (``distance`` or ``similarity``).
    """

    accepts_indices_tuple = True

    def __init__(
        self,
        margin: float = 0.05,
        swap: bool = False,
        smooth_loss: bool = False,
        triplets_per_anchor: int | Literal["all"] = "all",
        distance: str = "euclidean",
        normalize_embeddings: bool = True,
        miner: Any = None,
        block_elements: int = 1 << 22,
        *,
        fast: bool = True,
    ) -> None:
        super().__init__(miner=miner, fast=fast)
        self.margin = check_number(margin, "margin")
        self.swap, self.smooth_loss = bool(swap), bool(smooth_loss)
        k = triplets_per_anchor
        if k != "all" and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
            raise ValueError(f"triplets_per_anchor must be 'all' or a positive int, got {k!r}")
        self.triplets_per_anchor = k
        self.distance = check_metric(distance)
        self.normalize_embeddings = bool(normalize_embeddings)
        if isinstance(block_elements, bool) or not isinstance(block_elements, int) or block_elements < 1:
            raise ValueError(f"block_elements must be a positive int, got {block_elements!r}")
        self.block_elements = block_elements

    def compute(self, batch: Batch) -> Tensor:
        x = prepare(batch.embeddings, self.distance, self.normalize_embeddings)
        y = x if batch.same_set else prepare(batch.ref_emb, self.distance, self.normalize_embeddings)
        dist = distance_like(x, y, self.distance, self.fast)
        if self.fast and kernels.class_ids_eligible(batch, self):
            out = kernels.all_triplets_of_class_ids(dist, batch, self.margin, *self._sign_unit())
            if out is not None:  # None: many positives per anchor, the sorted search below
                self._record(**out[1])
                return out[0]
        mined = None
        if self.fast and kernels.mine_on_loss_matrix_eligible(batch, self):
            mined = kernels.mine_on_loss_matrix(self.miner, dist, batch)
        mined = self.mine(batch) if mined is None else mined
        given = batch.given
        if isinstance(mined, Triplets):
            return self._from_triplets(batch, dist, y, check_triplets(mined, *dist.shape))
        if given is not None and mined is None and given.triplets is not None:
            return self._from_triplets(batch, dist, y, given.triplets)
        pos, neg = batch.masks() if given is None else (given.pos_w, given.neg_w)
        if mined is not None:
            m = to_pair_mask(mined, tuple(dist.shape), dist.device)
            pos, neg = pos * m.pos, neg * m.neg
        if given is None and self.triplets_per_anchor != "all":
            return self._from_triplets(batch, dist, y, sample_triplets(pos, neg, self.triplets_per_anchor))
        if self.fast and kernels.sorted_eligible(self):
            search = kernels.sorted_hinge if pos.dtype == torch.bool else kernels.listed_sorted_hinge
            total, count = search(dist, pos, neg, self.margin)
        else:
            swap = (lambda p: distance_like(y[p], y, self.distance, self.fast)) if self.swap else None
            total, count = _triplet_terms(
                dist, pos, neg, self.margin, self.smooth_loss, swap, self.block_elements
            )
        n_triplets, (sign, unit) = (pos.sum(1) * neg.sum(1)).sum(), self._sign_unit()
        with torch.no_grad():  # tensors now: a lazy statistic would keep [B, N] tensors alive
            d = dist.detach()
            mean_pos, mean_neg = sign * masked_mean(d, pos > 0), sign * masked_mean(d, neg > 0)
        self._record(
            num_triplets=n_triplets,
            active_fraction=lambda: count.double() / n_triplets.clamp_min(1),
            **{f"mean_pos_{unit}": mean_pos, f"mean_neg_{unit}": mean_neg},
        )
        return total / count.clamp_min(1).to(total.dtype)

    def _sign_unit(self) -> tuple[float, str]:
        return (-1.0, "similarity") if is_similarity(self.distance) else (1.0, "distance")

    def _from_triplets(self, batch: Batch, dist: Tensor, y: Tensor, t: Triplets) -> Tensor:
        """The loss of the triplets ``t`` on the distance matrix ``dist [B, N]``."""
        if len(t) == 0:
            self._record(num_triplets=0, active_fraction=0.0)
            return zero_loss(batch.embeddings, batch.ref_emb)
        a, p, n = t.anchor.long(), t.positive.long(), t.negative.long()
        if self.fast and kernels.gathered_eligible(self):
            loss, d_ap, d_an = kernels.gathered_triplets(dist, a, p, n, self.margin, self.smooth_loss)
        else:
            d_ap, d_an = dist[a, p], dist[a, n]
            if self.swap:
                d_an = torch.minimum(d_an, rowwise_distance_like(y[p], y[n], self.distance))
            loss = triplet_margin_loss_from_triplets(d_ap, d_an, self.margin, smooth_loss=self.smooth_loss)
            d_ap, d_an = d_ap.detach(), d_an.detach()
        sign, unit = self._sign_unit()
        self._record(
            num_triplets=len(t),
            active_fraction=lambda: (_terms(d_ap - d_an + self.margin, self.smooth_loss) > 0).double().mean(),
            **{
                f"mean_pos_{unit}": lambda: sign * d_ap.mean(),
                f"mean_neg_{unit}": lambda: sign * d_an.mean(),
            },
        )
        return loss


__all__ = [
    "TripletMarginLoss",
    "triplet_margin_loss",
    "triplet_margin_loss_from_triplets",
]
