"""Exact ranks of a few marked entries in each row of a score block, without sorting rows.

Rank order: score descending, equal scores by column ascending; write ``m < p``
("m is ranked before p") for that total order. Given scores ``S [b, N]`` and, per
row, the columns of its ``R`` relevant entries ``p_1 < p_2 < ... < p_R`` (in rank
order), define for every entry ``q_m = #{j : p_j <= m}``. Then
``m < p_j  <=>  q_m <= j - 1``, so

    rank(p_j) = 1 + #{m : q_m <= j - 1}    (a cumulative histogram of q).

``q_m`` is found in two steps, both exact:

1. a monotone bucket map ``k(s) = trunc(clamp((s - s_min) * G / (s_max - s_min), -1, G) + 1)``
   over the range of the row's relevant scores (separate correctly rounded
   operations, so ``s <= s'`` implies ``k(s) <= k(s')`` everywhere in the block);
   the relevant entries' buckets are read from the same tensor. An entry whose
   bucket holds no relevant entry has ``q_m`` = number of relevant entries in
   higher buckets (no comparison needed); only entries sharing a bucket with a
   relevant one (about 1-3 per cent) are compared with those relevant entries
   (score, then column — equal scores always share a bucket).
2. ``q`` is histogrammed (one ``bincount`` over the block) and cumulated.

Cost per entry: a handful of elementwise passes and one ``bincount`` (int32
buckets), versus ``O(log N)`` comparisons for sorting a row.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: about N / REFS_PER_BUCKET buckets per row (at least 16 per relevant entry, at most 65,536)
REFS_PER_BUCKET = 8


def workspace(rows: int, cols: int, dtype: torch.dtype, device: torch.device) -> dict[str, Tensor]:
    """Reusable ``[rows, cols]`` buffers for :func:`relevant_ranks` (fresh large allocations
    cost page faults on every block)."""
    return {
        "x": torch.empty(rows, cols, dtype=dtype, device=device),
        "k": torch.empty(rows, cols, dtype=torch.int32, device=device),
        "c": torch.empty(rows * cols, dtype=torch.bool, device=device),
    }


def relevant_ranks(
    S: Tensor, rel_idx: Tensor, valid: Tensor, work: dict[str, Tensor] | None = None
) -> Tensor:
    """Ranks of relevant entries, ascending per row (ties: lower column first).

    Args:
        S: ``[b, N]`` scores (``-inf`` allowed for excluded entries, never relevant).
        rel_idx: ``[b, M]`` column of each relevant entry, ascending along each row
            (any value where not ``valid``).
        valid: ``[b, M]`` bool; row ``r`` has ``R_r = valid[r].sum() >= 1`` relevant entries.
        work: optional buffers from :func:`workspace` with at least ``b`` rows and ``N`` columns.

    Returns:
        ``ranks [b, M]`` float64: the 1-based ranks of row ``r``'s relevant entries in
        ascending order in columns ``< R_r``, ``inf`` after.
    """
    b, n = S.shape
    m = rel_idx.shape[1]
    dev = S.device
    rel_s = S.gather(1, rel_idx)
    lowest = torch.where(valid, rel_s, torch.full_like(rel_s, float("inf"))).amin(1, keepdim=True)
    highest = torch.where(valid, rel_s, torch.full_like(rel_s, float("-inf"))).amax(1, keepdim=True)
    n_buckets = int(min(1 << 16, max(1024, 16 * m, n // REFS_PER_BUCKET)))
    width = n_buckets + 2  # buckets -1 .. G, stored as 0 .. G + 1
    span = (highest - lowest).clamp_min(torch.finfo(S.dtype).tiny)
    scale = (n_buckets / span).clamp_max(torch.finfo(S.dtype).max / 4)
    if work is None:
        work = workspace(b, n, S.dtype, dev)
    x = torch.sub(S, lowest, out=work["x"][:b])
    x.mul_(scale).clamp_(-1, n_buckets).add_(1)
    buckets = work["k"][:b]
    buckets.copy_(x)  # trunc, monotone: 0 .. G + 1 (int32: converts and indexes fast)
    base = torch.arange(b, device=dev, dtype=torch.int32).unsqueeze(1) * width
    buckets.add_(base)  # row r occupies [r * width, r * width + G + 1]
    flat = buckets.view(-1)
    hist = torch.bincount(flat, minlength=b * width).view(b, width)

    rel_b = torch.where(valid, buckets.gather(1, rel_idx).long() - base, 0)
    rel_cnt = torch.zeros(b, width, dtype=torch.int64, device=dev).scatter_add_(1, rel_b, valid.long())
    holds_rel = rel_cnt > 0
    # relevant entries in strictly higher buckets
    above = rel_cnt.flip(1).cumsum(1).flip(1) - rel_cnt

    # q histogram: entries in buckets without relevant ones, all at once
    q_hist = torch.zeros(b, m + 1, dtype=torch.int64, device=dev)
    q_hist.scatter_add_(1, above.clamp_max(m), torch.where(holds_rel, 0, hist))

    # entries sharing a bucket with relevant ones: compare with those relevant scores
    cand = torch.index_select(holds_rel.view(-1), 0, flat, out=work["c"][: b * n])
    pos = torch.nonzero(cand).squeeze(1)
    del cand
    cr, cm = pos // n, pos % n
    cs = S.view(-1)[pos]
    g = flat[pos].long()  # global bucket id: indexes the flattened [b, width] tables
    del buckets, flat
    # relevant entries in rank order: score descending, equal scores by column ascending
    # (rel_idx is ascending per row and the sort is stable)
    order = torch.sort(
        torch.where(valid, rel_s, torch.full_like(rel_s, float("-inf"))), dim=1, descending=True, stable=True
    )
    u, u_idx = order.values, rel_idx.gather(1, order.indices)
    start = above.view(-1)[g]
    count = rel_cnt.view(-1)[g]
    span_l = int(count.max()) if count.numel() else 0
    lanes = torch.arange(span_l, device=dev).unsqueeze(0)
    in_bucket = lanes < count.unsqueeze(1)
    at = ((cr * m + start).unsqueeze(1) + lanes).clamp_max(b * m - 1)
    uu, ui = u.view(-1)[at], u_idx.view(-1)[at]
    c = cs.unsqueeze(1)
    # relevant entry l is at or before entry m in rank order
    before = (uu > c) | ((uu == c) & (ui <= cm.unsqueeze(1)))
    q = start + (before & in_bucket).sum(1)
    q_hist.view(-1).index_add_(0, cr * (m + 1) + q, torch.ones_like(q))

    ahead = q_hist.cumsum(1)[:, :m]  # ahead[:, j - 1] = #{q <= j - 1}
    n_rel = valid.sum(1, keepdim=True)
    j = torch.arange(1, m + 1, device=dev).unsqueeze(0)
    ranks = torch.where(j <= n_rel, (ahead + 1).to(torch.float64), float("inf"))
    return ranks
