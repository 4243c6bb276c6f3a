"""Semi-global matching (Hirschmuller 2008, "Stereo Processing by Semiglobal Matching
and Mutual Information", TPAMI 30(2)).

Along each path direction ``r`` the cost is aggregated by the recursion::

    L_r(p, d) = C(p, d) + min( L_r(p - r, d),
                               L_r(p - r, d - 1) + P1,
                               L_r(p - r, d + 1) + P1,
                               min_k L_r(p - r, k) + P2 )  -  min_k L_r(p - r, k)

started with ``L_r(p, d) = C(p, d)`` at the first pixel of every path, and the paths are
summed: ``S(p, d) = sum_r L_r(p, d)``. P1 penalises disparity steps of one pixel (slanted
surfaces), P2 larger jumps (depth edges). With a ``guide`` image, P2 is lowered across
intensity edges, where depth edges usually are (a smooth form of Hirschmuller's
``P2 / |I(p) - I(p - r)|``)::

    P2(p, r) = max(P1, P2 / (1 + |I(p) - I(p - r)| / gamma))

4 paths: left/right/up/down; 8 paths add the diagonals. Every path is vectorised: one
step processes a whole image row (vertical and diagonal paths) or column (horizontal
paths) over all disparities at once, so the work is ``O(paths * D * H * W)`` in
``H + W`` Python steps per path; groups of paths run side by side on the cores.
"""

from __future__ import annotations

import torch
from torch import Tensor

from likewise.stereo.parallel import pieces, run_all

PATHS_4 = ((0, 1), (0, -1), (1, 0), (-1, 0))
PATHS_8 = PATHS_4 + ((1, 1), (1, -1), (-1, 1), (-1, -1))


def check_penalties(p1: float, p2: float) -> None:
    if not (0 <= p1 <= p2):
        raise ValueError(f"SGM needs 0 <= P1 <= P2, got P1={p1}, P2={p2}")


def _scan(cost: Tensor, acc: Tensor, p1: float, p2map: Tensor | None, p2: float, reverse: bool, shift: int):
    """Aggregate one path direction over the scan layout ``cost [S, D, N]`` into ``acc``.

    Step ``s`` follows ``s - 1`` (or ``s + 1`` when ``reverse``); ``shift`` (-1, 0, 1) is the
    offset along N of the predecessor: ``pred[:, n] = prev[:, n - shift]`` (0 = a fresh start).
    ``p2map [S, N]`` (or the constant ``p2``) is the P2 of each pixel.
    """
    steps, d, n = cost.shape
    padded = torch.full((d + 2, n), float("inf"))  # pred with +inf above and below the disparities
    pred = padded[1:-1]
    pred.zero_()
    prev = torch.zeros(d, n)
    order = range(steps - 1, -1, -1) if reverse else range(steps)
    for k, s in enumerate(order):
        if k:
            if shift == 0:
                pred.copy_(prev)
            elif shift == 1:
                pred[:, 1:] = prev[:, :-1]
                pred[:, 0] = 0.0
            else:
                pred[:, :-1] = prev[:, 1:]
                pred[:, -1] = 0.0
        m = pred.amin(0, keepdim=True)
        best = torch.minimum(padded[:-2], padded[2:]).add_(p1)
        torch.minimum(best, pred, out=best)
        jump = m + (p2 if p2map is None else p2map[s])
        torch.minimum(best, jump, out=best)
        best.sub_(m).add_(cost[s])
        acc[s].add_(best)
        prev = best


def _p2_map(guide: Tensor | None, p1: float, p2: float, gamma: float, dy: int, dx: int) -> Tensor | None:
    """``P2(p, r)`` on the image grid ``[H, W]`` (None when constant)."""
    if guide is None:
        return None
    g = guide.float()
    diff = torch.zeros_like(g)
    h, w = g.shape
    ys, yp = slice(max(dy, 0), h + min(dy, 0)), slice(max(-dy, 0), h + min(-dy, 0))
    xs, xp = slice(max(dx, 0), w + min(dx, 0)), slice(max(-dx, 0), w + min(-dx, 0))
    diff[ys, xs] = (g[ys, xs] - g[yp, xp]).abs()
    return (p2 / (1.0 + diff / gamma)).clamp_min(p1)


def sgm(
    volume: Tensor,
    p1: float,
    p2: float,
    *,
    paths: int = 8,
    guide: Tensor | None = None,
    gamma: float = 10.0,
) -> Tensor:
    """Aggregated costs ``S [D, H, W]`` (float32) of a cost volume ``[D, H, W]``.

    ``guide``: optional ``[H, W]`` intensities (0-255) for the edge-adaptive P2.
    """
    if not isinstance(volume, Tensor) or volume.dim() != 3:
        raise ValueError(f"a cost volume is a tensor [D, H, W], got {getattr(volume, 'shape', type(volume))}")
    if paths not in (4, 8):
        raise ValueError(f"SGM uses 4 or 8 paths, got {paths}")
    check_penalties(p1, p2)
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    d, h, w = volume.shape
    if guide is not None:
        guide = torch.as_tensor(guide)
        if tuple(guide.shape) != (h, w):
            raise ValueError(f"guide image {tuple(guide.shape)} does not match the cost volume {(h, w)}")
    directions = PATHS_8 if paths == 8 else PATHS_4
    with pieces() as workers, torch.no_grad():
        volume = volume.float()
        # rows as steps: vertical and diagonal paths; layout [H, D, W]
        rows = volume.permute(1, 0, 2).contiguous()
        acc = _scans(rows, [r for r in directions if r[0] != 0], p1, p2, guide, gamma, workers, False)
        del rows
        out = acc.permute(1, 0, 2).contiguous()
        del acc
        # columns as steps: horizontal paths; layout [W, D, H]
        cols = volume.permute(2, 0, 1).contiguous()
        acc = _scans(cols, [r for r in directions if r[0] == 0], p1, p2, guide, gamma, workers, True)
        del cols
        out += acc.permute(1, 2, 0)
    return out


def _scans(cost, directions, p1, p2, guide, gamma, workers, columns) -> Tensor:
    """Sum of the paths ``directions`` over a scan layout; ``workers`` groups side by side."""
    groups = [directions[k::workers] for k in range(min(workers, len(directions)))]

    def run(group):
        acc = torch.zeros_like(cost)
        for dy, dx in group:
            p2map = _p2_map(guide, p1, p2, gamma, dy, dx)
            if columns:
                _scan(cost, acc, p1, None if p2map is None else p2map.t(), p2, reverse=dx < 0, shift=0)
            else:
                _scan(cost, acc, p1, p2map, p2, reverse=dy < 0, shift=dx)
        return acc

    parts = run_all([lambda g=g: run(g) for g in groups], workers)
    total = parts[0]
    for part in parts[1:]:
        total += part
    return total


__all__ = ["PATHS_4", "PATHS_8", "sgm"]
