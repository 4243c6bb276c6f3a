"""Exact ranks of the relevant entries among the top ``K`` of each row of a score block.

Rank order: score descending, equal scores by column ascending (the order of a
stable sort, as in :mod:`likewise.evaluation._ranks`). For a row with cut-off
``K`` the top ``K`` entries are found without sorting the row:

1. *threshold*: ``t`` = a large score of the row's first ``n_s`` columns (a prefix
   sample): about its ``3 K n_s / N``-th largest; if fewer than ``K`` entries of
   the row score ``>= t`` the row takes the sample's ``K``-th largest instead, and
   then at least ``K`` do. So the row's top ``K`` all score ``>= t``;
2. *candidates*: the entries with score ``>= t`` (one comparison per entry);
   every candidate precedes every other entry in rank order, so a candidate's
   position among the candidates, sorted by (score descending, column
   ascending), *is* its rank in the whole row — exact, ties included;
3. the candidates (about ``3 K`` per row) are ordered by a key unique per row
   (score bits, then column; a stable sort for float64 scores) and the relevant
   ones among the first ``K`` give their ranks.

Time ``O(b N)`` for the comparison plus ``O(b (n_s + K))`` for the sample and
the candidates, against ``O(b N log N)`` for sorting the rows;
memory ``O(b N)`` bytes for the comparison mask.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from likewise.evaluation._inputs import one_thread

#: the prefix sample holds ``N / SAMPLE_DIV`` columns (at least ``4 K``)
SAMPLE_DIV = 32
#: the threshold is the sample's ``OVERSAMPLE * K / SAMPLE_DIV``-th largest score: about
#: ``OVERSAMPLE * K`` candidates per row; a row that gets fewer than ``K`` takes the sample's
#: ``K``-th largest instead (always enough)
OVERSAMPLE = 3


def sample_size(n: int, k_max: int) -> int:
    """Columns of the prefix sample for rows of ``n`` entries and cut-offs up to ``k_max``."""
    return min(n, max(n // SAMPLE_DIV, 4 * k_max))


def tight_rank(k: np.ndarray, n: int, n_s: int) -> np.ndarray:
    """The sample rank of the tight threshold: ``ceil(OVERSAMPLE K n_s / N)``, within ``[1, K]``."""
    return np.clip(-(-(k * OVERSAMPLE * n_s) // n), 1, k)


def _at_least(S: Tensor, t: Tensor, mask_buf: Tensor | None) -> Tensor:
    """Ascending flat positions of the entries of ``S [b, N]`` scoring ``>= t [b, 1]``.

    The comparison writes one byte per entry; the search for the True bytes reads them eight
    at a time (as int64 words, nonzero where a word holds a candidate) and looks inside only
    the few words found.
    """
    size = S.numel()
    padded = -(-size // 8) * 8
    if mask_buf is None or mask_buf.numel() < padded:
        mask_buf = torch.empty(padded, dtype=torch.bool, device=S.device)
    mask = mask_buf[:padded]
    torch.ge(S, t, out=mask[:size].view(S.shape))
    mask[size:] = False
    words = torch.nonzero(mask.view(torch.int64)).squeeze(1)
    with one_thread():
        w, j = torch.nonzero(mask.view(-1, 8)[words], as_tuple=True)
        return words[w] * 8 + j


def candidates(
    S: Tensor, k_safe: Tensor, k_tight: Tensor, n_s: int, mask_buf: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The entries of each row that score at least its threshold (steps 1-2 of the module doc).

    Args:
        S: ``[b, N]`` scores. ``k_safe [b]``: the cut-offs ``K``; ``k_tight [b]``: the tight
            sample ranks (:func:`tight_rank`); ``n_s``: the sample size (:func:`sample_size`).
        mask_buf: optional reusable ``bool`` buffer of at least ``b * N + 7`` elements.

    Returns ``(row, col, score)`` of every candidate, rows ascending and columns ascending
    within a row, each row with at least ``K`` of them; and the thresholds ``t [b]``.
    """
    b, n = S.shape
    top = torch.topk(S[:, :n_s], int(k_tight.max()), dim=1, sorted=True).values
    t = top.gather(1, (k_tight - 1).unsqueeze(1))
    flat = _at_least(S, t, mask_buf)
    with one_thread():  # small operations on the candidates: see one_thread
        return _settle(S, flat, t, k_safe)


def _settle(S: Tensor, flat: Tensor, t: Tensor, k_safe: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Rows with fewer than ``K`` candidates take their exact ``K``-th score as threshold."""
    b, n = S.shape
    row = torch.div(flat, n, rounding_mode="floor")
    short = torch.bincount(row, minlength=b) < k_safe
    if bool(short.any()):  # too few above the tight threshold: these rows take their K-th score
        redo = torch.nonzero(short).squeeze(1)
        k_redo = k_safe[redo]
        exact = torch.topk(S[redo], int(k_redo.max()), dim=1).values.gather(1, (k_redo - 1).unsqueeze(1))
        t[redo] = exact
        flat2 = _at_least(S[redo], exact, None)
        r2 = torch.div(flat2, n, rounding_mode="floor")
        flat = torch.cat([flat[~short[row]], redo[r2] * n + (flat2 - r2 * n)])
        flat = torch.sort(flat).values  # row-major order again
        row = torch.div(flat, n, rounding_mode="floor")
    return row, flat - row * n, S.view(-1)[flat], t.squeeze(1)


def _buffer(
    work: dict[str, Tensor] | None, name: str, size: int, dtype: torch.dtype, dev: torch.device
) -> Tensor:
    """``size`` elements of a buffer kept in ``work`` (grown when too small): reused memory
    costs no page faults."""
    if work is None:
        return torch.empty(size, dtype=dtype, device=dev)
    buf = work.get(name)
    if buf is None or buf.numel() < size:
        buf = work[name] = torch.empty(max(size, 1 << 16), dtype=dtype, device=dev)
    return buf[:size]


def _order_keys(s: Tensor, col: Tensor) -> Tensor:
    """int64 keys, unique per row, larger = earlier in rank order (float32 scores only):
    the score's bits mapped monotonically to int32 (``-0.0`` first made ``+0.0``), then
    ``2^32 - 1 - col`` (equal scores: lower column first)."""
    bits = (s + 0.0).view(torch.int32)
    mono = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(torch.int64)
    return (mono << 32) | (0xFFFFFFFF - col)


def top_relevant_ranks(
    row: Tensor,
    col: Tensor,
    score: Tensor,
    b: int,
    k_max: int | None,
    row_codes: Tensor,
    ref_codes: Tensor,
    width: int,
    exclude: Tensor | None = None,
    work: dict[str, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Ranks of the relevant entries among the first ``k_max`` of each row (step 3).

    Args:
        row, col, score: the candidates of :func:`candidates` (rows ``0 .. b-1``), at least
            ``K_r`` per row, every candidate of a row scoring above all its other entries.
        k_max: the largest cut-off ``K``; None: rank every candidate (their ranks are exact too).
        row_codes: ``[b]`` class code of each row; ``ref_codes``: ``[N]`` class code of each
            column. Column ``m`` is relevant to row ``r`` when the codes are equal.
        width: columns of the result (at least the largest number of relevant entries of a row).
        exclude: optional ``[b]`` column never relevant to its row (leave-one-out: the query).
        work: optional dict in which buffers are kept between calls.

    Returns:
        ``ranks [b, width]`` float64: the 1-based ranks, ascending, of row ``r``'s relevant
        entries among its first ``k_max`` ranks (exact), ``inf`` after; and ``found [b]``
        bool: the row has a relevant entry among them.
    """
    with one_thread():  # small operations on the candidates
        return _top_relevant_ranks(row, col, score, b, k_max, row_codes, ref_codes, width, exclude, work)


def _top_relevant_ranks(
    row: Tensor,
    col: Tensor,
    score: Tensor,
    b: int,
    k_max: int | None,
    row_codes: Tensor,
    ref_codes: Tensor,
    width: int,
    exclude: Tensor | None,
    work: dict[str, Tensor] | None,
) -> tuple[Tensor, Tensor]:
    dev = score.device
    counts = torch.bincount(row, minlength=b)
    width_c = int(counts.max())
    k_max = width_c if k_max is None else min(k_max, width_c)
    start = torch.cumsum(counts, 0) - counts
    dest = row * width_c + (torch.arange(row.numel(), device=dev) - start[row])
    if score.dtype == torch.float32:
        lowest = torch.iinfo(torch.int64).min
        keys = _buffer(work, "keys", b * width_c, torch.int64, dev).fill_(lowest)
        keys.index_copy_(0, dest, _order_keys(score, col))
        top_keys = torch.topk(keys.view(b, width_c), k_max, dim=1, sorted=True).values
        real = top_keys != lowest
        top_cols = torch.where(real, 0xFFFFFFFF - (top_keys & 0xFFFFFFFF), 0)
    else:  # float64: a stable sort of the scores (candidates are in column order; padding last)
        padded = torch.full((b * width_c,), float("-inf"), dtype=score.dtype, device=dev)
        padded.index_copy_(0, dest, score)
        slots = torch.sort(padded.view(b, width_c), dim=1, descending=True, stable=True).indices[:, :k_max]
        cols = torch.zeros(b * width_c, dtype=torch.int64, device=dev).index_copy_(0, dest, col)
        top_cols = cols.view(b, width_c).gather(1, slots)
        real = slots < counts.unsqueeze(1)
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
    p = rel_idx.gather(1, at_best.to(torch.int8).argmax(1, keepdim=True)).squeeze(1)
    above = torch.gt(S, best).view(torch.uint8).sum(1, dtype=torch.int32).to(torch.int64)  # int32: 2x faster
    tie = torch.nonzero(torch.eq(S, best))  # few: the best relevant entry and exact equals
    before = (tie[:, 1] < p[tie[:, 0]]).to(above.dtype)
    above.index_add_(0, tie[:, 0], before)
    return (above + 1).to(torch.float64)
