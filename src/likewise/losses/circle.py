"""Circle loss (Sun et al., 2020, "Circle Loss: A Unified Perspective of Pair Similarity Optimization").

Each similarity is re-weighted by how far it is from its optimum, so a pair
that is already good is pushed less. On cosine similarities ``s`` with
relaxation ``m`` and scale ``gamma``::

    O_p = 1 + m,  O_n = -m,  Delta_p = 1 - m,  Delta_n = m
    alpha_p = [O_p - s_p]_+,  alpha_n = [s_n - O_n]_+        (treated as constants: no gradient)
    L_i = softplus( logsumexp_{p in P_i} (-gamma alpha_p (s_p - Delta_p))
                  + logsumexp_{n in N_i} ( gamma alpha_n (s_n - Delta_n)) )

averaged over the queries that have both a positive and a negative (and a
non-zero loss, like pytorch-metric-learning's ``AvgNonZeroReducer``). Dense on
the ``[B, N]`` similarity matrix: memory ``O(B N)``.

Shapes: ``embeddings [B, D]``, ``labels [B]`` (or ``[B, C]`` multi-label, or ``relevance
[B, N]``); the loss is a scalar.

Example::

    loss_fn = CircleLoss(m=0.25, gamma=256)
    loss = loss_fn(model(images), labels)
    loss.backward()

The fast kernel (class ids, no miner) is :mod:`likewise.losses._kernels.circle`;
``fast=False`` always runs :func:`circle_loss` (the specification).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from likewise.losses._kernels import circle as kernel
from likewise.losses.base import Batch, MetricLoss, check_number, masked_logsumexp, masked_mean
from likewise.similarity import pairwise_similarity


def circle_row_losses(
    sim: Tensor,
    pos: Tensor,
    neg: Tensor,
    m: float = 0.4,
    gamma: float = 80.0,
    weight_sim: Tensor | None = None,
) -> Tensor:
    """Per-query circle loss ``[B]`` (0 for rows lacking a positive or a negative).

    ``sim [B, N]`` cosine similarities; ``pos`` / ``neg`` bool ``[B, N]``. The
    weights ``alpha_p, alpha_n`` are computed from ``weight_sim`` (default
    ``sim.detach()``, as in the paper), so no gradient flows through them.
    """
    s = sim.detach() if weight_sim is None else weight_sim.detach()
    logit_p = -gamma * torch.relu(1 + m - s) * (sim - (1 - m))
    logit_n = gamma * torch.relu(s + m) * (sim - m)
    lse = masked_logsumexp(logit_p, pos, dim=1) + masked_logsumexp(logit_n, neg, dim=1)
    valid = pos.any(1) & neg.any(1)
    return torch.where(valid, F.softplus(lse), torch.zeros_like(lse))


def circle_loss(
    sim: Tensor,
    pos: Tensor,
    neg: Tensor,
    m: float = 0.4,
    gamma: float = 80.0,
    weight_sim: Tensor | None = None,
) -> Tensor:
    """Circle loss: mean of the non-zero :func:`circle_row_losses`; 0 (in the graph) when none."""
    rows = circle_row_losses(sim, pos, neg, m, gamma, weight_sim)
    return masked_mean(rows, rows > 0)


class CircleLoss(MetricLoss):
    """Circle loss (Sun et al., 2020) on cosine similarities; see the module docstring.

    Same keywords, defaults (``m=0.4, gamma=80``, the paper's fine-grained
    retrieval setting), value and gradients as pytorch-metric-learning's
    ``CircleLoss``, including calls with ``ref_emb``/``ref_labels``. ``miner=``
    restricts the positive / negative pairs to the mined ones.

    ``m`` must lie in ``[0, 0.5]`` (targets ``s_p > 1 - m``, ``s_n < m``: ``m < 0`` asks
    for a cosine above 1, ``m > 0.5`` lets negatives be more similar than positives);
    ``gamma`` must be a finite number ``> 0``.

    Shapes: ``embeddings [B, D]``, ``labels [B]`` (or ``[B, C]`` multi-label, or
    ``relevance [B, N]``). Stats: ``active_rows`` (fraction of queries with a
    positive and a negative), ``pos_sim`` / ``neg_sim`` (mean cosine over the pairs used).

    ``indices_tuple=`` (PML's pairs or triplets, labels then optional): the listed pairs are
    the positives and negatives (each once; a pair listed as both is refused, as in PML).
    """

    exact_gradient = False

    accepts_indices_tuple = True
    disjoint_pairs = True

    def __init__(self, m: float = 0.4, gamma: float = 80, miner: Any = None, *, fast: bool = True) -> None:
        super().__init__(miner=miner, fast=fast)
        self.m = check_number(m, "m")
        if not 0 <= self.m <= 0.5:
            raise ValueError(
                f"m must lie in [0, 0.5], got {self.m}: the positive target 1 - m must be "
                "reachable by a cosine (m >= 0) and not below the negative target m (m <= 0.5)"
            )
        self.gamma = check_number(gamma, "gamma", positive=True)

    def compute(self, batch: Batch) -> Tensor:
        if self.fast and kernel.eligible(batch, self.miner):
            loss, stats = kernel.circle_fast(batch, self.m, self.gamma)
            self._record(**stats)
            return loss
        pos, neg = self.pair_masks(batch)
        sim = pairwise_similarity(batch.embeddings, batch.ref_emb, "cosine")
        with torch.no_grad():
            s = sim.detach()
            self._record(
                active_rows=(pos.any(1) & neg.any(1)).to(s.dtype).mean(),
                pos_sim=masked_mean(s, pos),
                neg_sim=masked_mean(s, neg),
            )
        return circle_loss(sim, pos, neg, self.m, self.gamma)


__all__ = ["CircleLoss", "circle_loss", "circle_row_losses"]
