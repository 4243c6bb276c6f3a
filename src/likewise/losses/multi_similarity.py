"""Multi-similarity loss (Wang, Han, Huang, Dong & Scott 2019).

Each query ``i`` weighs its positives ``P_i`` and negatives ``N_i`` by their own similarity
and by each other's (a soft form of the paper's pair weighting), with similarities ``S``::

    L_i = 1/alpha * log(1 + sum_{p in P_i} exp(-alpha (S_ip - base)))
        + 1/beta  * log(1 + sum_{n in N_i} exp( beta  (S_in - base)))
    L   = mean of L_i over the queries with L_i > 0

(pytorch-metric-learning's ``AvgNonZeroReducer``: a query with no pair contributes nothing).
``log(1 + sum exp)`` is a log-sum-exp with an extra zero term, stable for any ``alpha, beta``.

Shapes: ``embeddings [B, D]``, ``labels [B]`` (or multi-label ``[B, C]``), optional
``ref_emb [N, D]``, ``ref_labels [N]``; the functional form takes ``sim [B, N]`` and bool
``pos, neg [B, N]``. Memory ``O(B * N)``, or ``O(c * N)`` with ``chunk_size=c``. Fast kernel:
:mod:`likewise.losses._kernels.multi_similarity`.

Example::

    loss_fn = MultiSimilarityLoss(alpha=2.0, beta=50.0, base=0.5)
    x, y = torch.randn(32, 16, requires_grad=True), torch.arange(32) % 8
    loss_fn(x, y).backward()
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from likewise.losses._kernels.chunking import check_chunk_size, map_row_blocks
from likewise.losses._kernels.multi_similarity import eligible, multi_similarity_gemm
from likewise.losses.base import Batch, MetricLoss, check_number, masked_logsumexp, masked_mean, prepare
from likewise.losses.given import Given
from likewise.similarity import is_similarity, pairwise_similarity


def multi_similarity_rows(
    sim: Tensor, pos: Tensor, neg: Tensor, alpha: float = 2.0, beta: float = 50.0, base: float = 0.5
) -> Tensor:
    """``L_i`` of every query ``[B]`` (0 for a query with no pair)."""
    pos_part = masked_logsumexp(alpha * (base - sim), pos, dim=1, add_one=True) / alpha
    return pos_part + masked_logsumexp(beta * (sim - base), neg, dim=1, add_one=True) / beta


def multi_similarity_loss(
    sim: Tensor, pos: Tensor, neg: Tensor, alpha: float = 2.0, beta: float = 50.0, base: float = 0.5
) -> Tensor:
    """Multi-similarity loss on ``sim [B, N]`` and bool ``pos, neg [B, N]``: the mean of the row
    losses over the queries with ``L_i > 0`` (module docstring). Returns a scalar."""
    rows = multi_similarity_rows(sim, pos, neg, alpha, beta, base)
    return masked_mean(rows, rows > 0)


class MultiSimilarityLoss(MetricLoss):
    """Multi-similarity loss (Wang et al. 2019), a drop-in for PML's ``MultiSimilarityLoss``.

    Same keywords and defaults as PML (``alpha=2, beta=50, base=0.5``, cosine similarity,
    average over queries with a non-zero loss); formula in the module docstring.
    ``distance`` must be a similarity (``"cosine"``, or ``"dot"`` on L2-normalised embeddings
    unless ``normalize_embeddings=False``).

    ``chunk_size=c``: the queries are processed ``c`` rows at a time with recomputation in
    backward; at most ``c x N`` similarities are alive at once and the result equals the
    unchunked one. Without a miner the label masks are built per block as well (nothing of
    size ``B x N`` at all); with a miner the mined ``[B, N]`` bool masks are built once and
    sliced per block. ``miner=`` (e.g. ``MultiSimilarityMiner``) restricts the sums to the
    mined pairs.

    ``indices_tuple=`` (PML's pairs or triplets, labels then optional): ``P_i`` and ``N_i``
    are the pairs listed for query ``i`` (each once; a pair listed as both is refused, as
    PML asserts) and, as PML's ``MeanReducer`` does then, the row losses are averaged over
    all ``B`` queries (a query with no listed pair contributes 0).

    ``stats``: ``active_fraction`` (queries with a non-zero loss), ``mean_pos_similarity``,
    ``mean_neg_similarity`` (unchunked calls only).
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

    def compute(self, batch: Batch) -> Tensor:
        params = (self.alpha, self.beta, self.base)
        if self.fast and eligible(batch, self.miner, self.chunk_size):
            loss, stats = multi_similarity_gemm(batch, self.distance, self.normalize_embeddings, *params)
            keys = ("active_fraction", "mean_pos_similarity", "mean_neg_similarity")
            self._record(**{k: stats[k] for k in keys})
            return loss
        listed = batch.given is not None  # PML's MeanReducer over all queries then
        stats: dict[str, Any] = {}
        if self.chunk_size is not None and self.chunk_size < batch.embeddings.shape[0]:
            if self.miner is not None:  # the mined masks ride along as the relation, sliced per block
                batch = replace(batch, given=Given(*self.pair_masks(batch), None))
            rows = map_row_blocks(self._block_rows, batch, self.chunk_size)
        else:
            pos, neg = self.pair_masks(batch)
            sim = self._similarity(batch)
            rows = multi_similarity_rows(sim, pos, neg, *params)
            if not listed:
                with torch.no_grad():  # tensors now: a lazy statistic would keep [B, N] tensors alive
                    stats["mean_pos_similarity"] = masked_mean(sim.detach(), pos)
                    stats["mean_neg_similarity"] = masked_mean(sim.detach(), neg)
        active, b = rows.detach() > 0, rows.shape[0]
        self._record(active_fraction=lambda: active.sum(dtype=torch.float64) / b, **stats)
        return rows.mean() if listed else masked_mean(rows, active)

    def _similarity(self, batch: Batch) -> Tensor:
        x = prepare(batch.embeddings, self.distance, self.normalize_embeddings)
        y = x if batch.same_set else prepare(batch.ref_emb, self.distance, self.normalize_embeddings)
        return pairwise_similarity(x, y, self.distance)

    def _block_rows(self, rows: Batch) -> Tensor:
        """Row losses of some queries against all refs, masks built for those rows only."""
        return multi_similarity_rows(self._similarity(rows), *rows.masks(), self.alpha, self.beta, self.base)


__all__ = ["MultiSimilarityLoss", "multi_similarity_loss", "multi_similarity_rows"]
