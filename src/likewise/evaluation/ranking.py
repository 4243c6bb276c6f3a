"""Average precision of one ranking, and rank-based metrics of many queries.

Average precision (AP) of a ranking with ``R`` relevant items at 1-based ranks
``r_1 < r_2 < ... < r_R``:

    AP = (1 / R) * sum_j  j / r_j          (precision at each relevant item)

which is the area under the step-wise precision-recall curve (Manning, Raghavan &
Schütze 2008, ch. 8; the worked exercise of the lecture notes in ``seeds/002``).

Ties. A *ranking* needs an order among equal scores; two conventions exist:

* ``ties="threshold"`` (scikit-learn's ``average_precision_score``): every distinct
  score is one threshold, so tied items enter the PR curve together:
  ``AP = sum_t (recall_t - recall_{t-1}) * precision_t`` over distinct thresholds.
* ``ties="index"`` (what :func:`likewise.evaluation.retrieval_metrics` uses): equal
  scores are ordered by position (lower index first) and AP is the formula above.

Both agree whenever the scores of relevant and non-relevant items never tie.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from likewise.evaluation._inputs import binary_array, scores_array


def average_precision(
    scores: Any, is_relevant: Any, *, ties: Literal["threshold", "index"] = "threshold"
) -> float:
    """Average precision of one ranking.

    Args:
        scores: ``[n]`` similarities (larger = ranked earlier). For distances pass
            their negation.
        is_relevant: ``[n]`` bool (or 0/1), at least one True.
        ties: ``"threshold"`` (default; equals ``sklearn.metrics.average_precision_score``
            exactly) or ``"index"`` (equal scores ordered by index, as in retrieval).

    Example (seed 002): distances ``[5, 2, 3, 1]`` from ``x1`` to ``x2..x5`` with
    relevance ``[0, 0, 1, 1]`` -> ``average_precision([-5, -2, -3, -1], [0, 0, 1, 1])``
    = (1/2)(1/1 + 2/3) = 0.8333.
    """
    s = scores_array(scores, "scores")
    rel = binary_array(is_relevant, "is_relevant", s.shape[0])
    if s.shape[0] == 0:
        raise ValueError("scores is empty")
    n_rel = int(rel.sum())
    if n_rel == 0:
        raise ValueError("is_relevant has no True entry: average precision is undefined")
    if ties not in ("threshold", "index"):
        raise ValueError(f"ties must be 'threshold' or 'index', got {ties!r}")
    order = np.argsort(-s, kind="stable")
    rel_sorted = rel[order]
    tp = np.cumsum(rel_sorted)
    if ties == "index":
        ranks = np.flatnonzero(rel_sorted) + 1
        return float(np.mean(np.arange(1, n_rel + 1) / ranks))
    s_sorted = s[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), s.shape[0] - 1]
    tp_t = tp[last_of_group]
    precision = tp_t / (last_of_group + 1)
    recall = tp_t / n_rel
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


#: names of the per-query metrics computed from ranks (besides recall_at_k)
RANK_METRICS: tuple[str, ...] = ("precision_at_1", "r_precision", "map_at_r", "map", "mrr")


def metrics_from_ranks(ranks: Tensor, n_relevant: Tensor, ks: Sequence[int]) -> dict[str, Tensor]:
    """Per-query metrics from the ranks of each query's relevant items.

    Args:
        ranks: ``[b, M]`` 1-based ranks of the relevant items, sorted ascending per row,
            padded (columns ``>= n_relevant[i]``) with any value ``> N``
            (e.g. ``inf``). Float or int.
        n_relevant: ``[b]`` number ``R_i >= 1`` of relevant items per query.
        ks: the K of ``recall_at_K``.

    Returns float64 ``[b]`` tensors: ``precision_at_1`` (r_1 == 1), ``r_precision``
    (#{j: r_j <= R} / R), ``map_at_r`` ((1/R) sum_{r_j <= R} j / r_j, Musgrave et al.
    2020), ``map`` (AP over the full ranking), ``mrr`` (1 / r_1) and ``recall_at_K``
    (r_1 <= K: at least one relevant item in the top K).
    """
    ranks = ranks.to(torch.float64)
    b, m = ranks.shape
    R = n_relevant.to(torch.float64).unsqueeze(1)
    j = torch.arange(1, m + 1, dtype=torch.float64, device=ranks.device).unsqueeze(0)
    valid = j <= R
    prec = torch.where(valid, j / ranks, torch.zeros((), dtype=torch.float64, device=ranks.device))
    within_r = valid & (ranks <= R)
    first = ranks[:, 0]
    out = {
        "precision_at_1": (first == 1).to(torch.float64),
        "r_precision": within_r.sum(1).to(torch.float64) / R[:, 0],
        "map_at_r": torch.where(within_r, prec, 0.0).sum(1) / R[:, 0],
        "map": prec.sum(1) / R[:, 0],
        "mrr": 1.0 / first,
    }
    for k in ks:
        out[f"recall_at_{k}"] = (first <= k).to(torch.float64)
    return out
