"""Exact ranks of the relevant entries among the top ``K`` of each row of a score block.

Rank order: score descending, equal scores by column ascending (the order of a
stable sort, as in :mod:`likewise.evaluation._ranks`). For a row with cut-off
``K`` the top ``K`` entries are found without sorting the row:

1. *threshold*: ``t`` = the ``K``-th largest score among the row's first ``n_s``
   columns (a prefix sample; ``-inf`` when ``K > n_s``). At least ``K`` entries
   of the row score ``>= t``, so its top ``K`` all score ``>= t``;
2. *candidates*: the entries with score ``>= t`` (one comparison per entry);
   every candidate precedes every other entry in rank order, so a candidate's
   position among the candidates, sorted by (score descending, column
   ascending), *is* its rank in the whole row — exact, ties included;
3. the candidates (about ``K N / n_s`` per row) are sorted (stable, so equal
   scores keep their ascending columns) and the relevant ones among the first
   ``K`` give their ranks.

Time ``O(b N)`` for the comparison plus ``O(b (n_s + K N / n_s) log)`` for the
sample and the candidates, against ``O(b N log N)`` for sorting the rows;
memory ``O(b N)`` bytes for the comparison mask.
"""

from __future__ import annotations

import torch
from torch import Tensor

#: the prefix sample holds ``N / SAMPLE_DIV`` columns (about ``SAMPLE_DIV * K`` candidates per row)
SAMPLE_DIV = 8


def top_relevant_ranks(
    S: Tensor,
    k_row: Tensor,
    row_codes: Tensor,
    ref_codes: Tensor,
    width: int,
    exclude: Tensor | None = None,
    mask_buf: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Ranks of the relevant entries that lie in each row's top ``K``.

    Args:
        S: ``[b, N]`` scores (finite, or ``-inf`` for an excluded entry).
        k_row: ``[b]`` int64 cut-offs ``1 <= K_r <= N``.
        row_codes: ``[b]`` class code of each row; ``ref_codes``: ``[N]`` class code of each
            column. Column ``m`` is relevant to row ``r`` when the codes are equal.
        width: columns of the result (at least the largest number of relevant entries of a row).
        exclude: optional ``[b]`` column never relevant to its row (leave-one-out: the query).
        mask_buf: optional reusable ``bool`` buffer of at least ``b * N`` elements.

    Returns:
        ``ranks [b, width]`` float64: the 1-based ranks, ascending, of row ``r``'s relevant
        entries among its first ``max(K)`` ranks (exact), ``inf`` after; and ``found [b]``
        bool: the row has a relevant entry among them.
    """
    b, n = S.shape
    dev = S.device
    k_max = int(k_row.max())
    n_s = min(n, max(n // SAMPLE_DIV, k_max))
    sample_top = torch.topk(S[:, :n_s], k_max, dim=1, sorted=True).values
    t = sample_top.gather(1, (k_row - 1).unsqueeze(1))

    flat_mask = torch.ge(S, t, out=None if mask_buf is None else mask_buf[: b * n].view(b, n)).view(-1)
    flat = torch.nonzero(flat_mask).squeeze(1)  # row-major: columns ascending within a row
    row = torch.div(flat, n, rounding_mode="floor")
    col = flat - row * n
    counts = torch.bincount(row, minlength=b)
    width_c = int(counts.max())
    start = torch.cumsum(counts, 0) - counts
    slot = torch.arange(flat.numel(), device=dev) - start[row]
    scores = torch.full((b, width_c), float("-inf"), dtype=S.dtype, device=dev)
    scores[row, slot] = S.view(-1)[flat]
    cols = torch.zeros((b, width_c), dtype=torch.int64, device=dev)
    cols[row, slot] = col
    # the padding (-inf) sits after every candidate of its row: a stable sort keeps it there
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k_max]
    top_cols = cols.gather(1, order)
    real = order < counts.unsqueeze(1)
    is_rel = real & (ref_codes[top_cols] == row_codes.unsqueeze(1))
    if exclude is not None:
        is_rel &= top_cols != exclude.unsqueeze(1)
    position = torch.arange(1, k_max + 1, dtype=torch.float64, device=dev).expand(b, k_max)
    j = torch.where(is_rel, is_rel.cumsum(1) - 1, width).clamp_max(width)
    ranks = torch.full((b, width + 1), float("inf"), dtype=torch.float64, device=dev)
    ranks.scatter_(1, j, torch.where(is_rel, position, float("inf")))
    return ranks[:, :width], is_rel.any(1)


def first_relevant_rank(S: Tensor, rel_idx: Tensor, valid: Tensor) -> Tensor:
    """Exact rank of each row's best relevant entry (for rows whose top ``K`` holds none).

    ``rel_idx [b, M]`` ascending columns of the relevant entries, ``valid [b, M]`` which are
    real (at least one per row). Rank = ``1 + #{m : s_m > s*} + #{m < p* : s_m == s*}`` for the
    best relevant entry ``p*`` (highest score, lowest column among equals). Returns float64 ``[b]``.
    """
    rel_s = torch.where(valid, S.gather(1, rel_idx), float("-inf"))
    best = rel_s.amax(1, keepdim=True)
    # lowest column among the relevant entries scoring ``best`` (rel_idx is ascending)
    at_best = valid & (rel_s == best)
    p = rel_idx.gather(1, at_best.to(torch.int8).argmax(1, keepdim=True))
    cols = torch.arange(S.shape[1], device=S.device).unsqueeze(0)
    ahead = (S > best) | ((S == best) & (cols < p))
    return (ahead.sum(1) + 1).to(torch.float64)
