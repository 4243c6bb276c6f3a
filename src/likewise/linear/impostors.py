"""Neighbour searches of LMNN (Weinberger & Saul 2009): target neighbours and candidate impostors.

With ``z = L x`` and ``D_il = ||z_i - z_l||^2``, point ``i``'s target neighbours ``j`` are its ``k``
nearest same-class points in the input space, and an impostor ``l`` (``y_l != y_i``) is active in
LMNN's hinge ``[margin + D_ij - D_il]_+`` only while ``D_il < margin + max_j D_ij``.

Both searches work on class-sorted points (``y`` non-decreasing): a class is then one contiguous
range, so the same-class entries of a block of the ``[N, N]`` distances are a few rectangles (set
aside by slicing, with no label test). Shapes: ``X``/``Z`` ``[N, d]``, ``y`` ``[N]``, targets ``[N, k]``.
"""

from __future__ import annotations

import numpy as np
import torch

from likewise.linear.lbfgs import row_blocks


def class_ranges(y: torch.Tensor) -> list[tuple[int, int]] | None:
    """``[(start, end), ...]`` of each class's points when ``y`` ``[N]`` is sorted, else ``None``."""
    if len(y) > 1 and not bool((y[1:] >= y[:-1]).all()):
        return None
    counts = torch.unique_consecutive(y, return_counts=True)[1].tolist()
    ends = np.cumsum(counts).tolist()
    return list(zip([0, *ends[:-1]], ends))


def target_neighbors(X: torch.Tensor, y: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(idx, valid)``, both ``[N, k]``: the ``k`` nearest same-class points of each point, nearest
    first (a class with fewer than ``k + 1`` points gives fewer valid targets, a singleton none; an
    invalid slot holds the point's own index).

    Searched class by class (``sum_c N_c^2`` distances instead of ``N^2``), in blocks of rows.
    """
    N = X.shape[0]
    idx = torch.arange(N, device=X.device)[:, None].repeat(1, k)
    ok = torch.zeros(N, k, dtype=torch.bool, device=X.device)
    ranges = class_ranges(y)  # class-sorted: each class is a slice
    groups = (
        [(None, c0, c1) for c0, c1 in ranges]
        if ranges is not None
        else [((y == c).nonzero().squeeze(1), 0, 0) for c in torch.unique(y)]
    )
    sq_all = (X * X).sum(1)
    for members, c0, c1 in groups:
        n_c = c1 - c0 if members is None else len(members)
        kc = min(k, n_c - 1)
        if kc < 1:
            continue
        Xc = X[c0:c1] if members is None else X.index_select(0, members)
        sq = sq_all[c0:c1] if members is None else sq_all.index_select(0, members)
        for s, e in row_blocks(n_c):
            D = torch.addmm(sq[None, :], Xc[s:e], Xc.T, alpha=-2.0)  # ||x_j||^2 - 2 x_i.x_j: same order in j
            D[:, s:e].fill_diagonal_(float("inf"))
            i = D.topk(kc, dim=1, largest=False)[1]
            if members is None:
                idx[c0 + s : c0 + e, :kc] = i + c0
                ok[c0 + s : c0 + e, :kc] = True
            else:
                idx[members[s:e], :kc] = members[i]
                ok[members[s:e], :kc] = True
    return idx, ok


def target_distances(Z: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``[N, k]`` squared distances to the target neighbours (0 where not valid)."""
    diff = Z[:, None, :] - Z[targets]
    return (diff * diff).sum(2) * valid.to(Z.dtype)


def _nonzero(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flat (row-major) indices, rows and columns of the True entries of a 2-D ``mask`` (NumPy's
    ``flatnonzero`` and ``divmod`` on CPU: about twice as fast as ``torch.nonzero`` there)."""
    if mask.device.type == "cpu":
        flat = np.flatnonzero(mask.numpy())
        r, c = np.divmod(flat, mask.shape[1])
        return torch.from_numpy(flat), torch.from_numpy(r), torch.from_numpy(c)
    flat = mask.reshape(-1).nonzero().squeeze(1)
    return flat, flat // mask.shape[1], flat % mask.shape[1]


def argsort_keys(keys: torch.Tensor) -> torch.Tensor:
    """Order of distinct int64 ``keys`` ``[P]`` (``torch.argsort``; NumPy's quicksort on CPU, where
    torch's sort of 10,000 keys takes about six times as long)."""
    if keys.device.type == "cpu":
        return torch.from_numpy(np.argsort(keys.numpy()))
    return torch.argsort(keys)


def candidate_impostors(
    Z: torch.Tensor,
    y: torch.Tensor,
    targets: torch.Tensor,
    valid: torch.Tensor,
    margin: float = 1.0,
    slack: float = 0.0,
    tight: bool = False,
    sort: bool = True,
    *,
    ranges: list[tuple[int, int]] | None = None,
    t: torch.Tensor | None = None,
):
    """``(i, l)``, ``[P]`` each, sorted by ``(i, l)``: the differently labelled pairs with
    ``D_il < (1 + slack)(margin + max_j D_ij)`` (``slack = 0``: every pair that can be active at
    ``Z``, and no other). ``tight=True`` adds a bool ``[P]``: which of the pairs meet the bound with
    ``slack = 0``. ``sort=False`` leaves the pairs in the search's order (for a caller that sorts
    them itself).

    One pass over the upper triangle of the ``[N, N]`` distances, in blocks of rows: ``D`` is
    symmetric, so each block ``D[s:e, s:]`` is tested against the row bounds (pairs ``(i, l)``) and,
    right of its diagonal square, the column bounds (pairs ``(l, i)``). With class-sorted ``y``
    (:class:`~likewise.linear.lmnn.LMNN` sorts once) the same-class rectangles are cleared by
    slicing; other input is sorted here and mapped back. A caller that has them may pass the class
    ``ranges`` of the sorted ``y`` (:func:`class_ranges`) and the target distances ``t`` ``[N, k]`` at
    ``Z`` (:func:`target_distances`).
    """
    ranges = class_ranges(y) if ranges is None else ranges
    if ranges is None:
        order = torch.argsort(y, stable=True)
        inv = torch.empty_like(order)
        inv[order] = torch.arange(len(order), device=order.device)
        args = (Z[order], y[order], inv[targets[order]], valid[order], margin, slack, tight, False)
        out = candidate_impostors(*args)
        ii, ll = order[out[0]], order[out[1]]
        if not sort:
            return (ii, ll, *out[2:])
        srt = argsort_keys(ii * len(y) + ll)
        return tuple(a[srt] for a in (ii, ll, *out[2:]))
    N = Z.shape[0]
    sq = (Z * Z).sum(1)
    t = target_distances(Z, targets, valid) if t is None else t
    bound = margin + torch.where(valid, t, torch.full_like(t, -float("inf"))).amax(1)  # -inf: no targets
    thr = (1.0 + slack) * bound
    ii, ll, ok = [], [], []
    for s, e in row_blocks(N):
        D = torch.addmm(sq[None, s:], Z[s:e], Z[s:].T, alpha=-2.0).add_(sq[s:e, None])  # D[i, l], l >= s
        rows = D < thr[s:e, None]  # (i, l): i in the block, l >= s
        cols = D[:, e - s :] < thr[None, e:]  # (l, i): l >= e, i in the block
        for c0, c1 in ranges:  # same-class rectangles of the block
            r0, r1 = max(c0, s), min(c1, e)
            if r0 < r1:
                rows[r0 - s : r1 - s, max(c0, s) - s : c1 - s] = False  # (c0 < s: a class across blocks)
                if c1 > e:
                    cols[r0 - s : r1 - s, max(c0, e) - e : c1 - e] = False
        f_rows, i, l = _nonzero(rows)
        f_cols, j, m = _nonzero(cols)
        if tight:  # the entries by their flat index in D (cols is D's right part: column m + e - s)
            ok += [
                D.view(-1).index_select(0, f_rows) < bound[s + i],
                D.view(-1).index_select(0, j * D.shape[1] + m + (e - s)) < bound[e + m],
            ]
        ii += [i + s, m + e]
        ll += [l + s, j + s]
    ii, ll = torch.cat(ii), torch.cat(ll)
    ok = torch.cat(ok) if tight else None
    if sort:
        srt = argsort_keys(ii * N + ll)
        ii, ll, ok = ii[srt], ll[srt], (ok[srt] if tight else None)
    return (ii, ll, ok) if tight else (ii, ll)
