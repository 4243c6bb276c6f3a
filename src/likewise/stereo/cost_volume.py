"""Matching-cost volume from dense features, by batched dot products in bounded blocks.

With L2-normalised features ``f_L, f_R`` of shape ``[F, H, W]`` (Zbontar & LeCun 2016)::

    V[d, i, j] = 1 - <f_L[:, i, j], f_R[:, i, j - d]>        0 <= d < D,  in [0, 2]

and ``V[d, i, j] = outside`` where ``j - d < 0`` (the match would lie left of the right
image). Smaller is better; the winner-takes-all disparity is ``argmin_d V[d, i, j]``.

How it is computed: for a block of ``b`` left columns of a block of rows, one batched
matrix product ``[rows, b, F] @ [rows, F, b + D - 1]`` gives the dot products with every
right column the block can match, and the ``D`` diagonals of that band are read out by
a strided view. The work is ``(b + D - 1) / D`` times the ``H W D F`` of the exact
volume, and the temporary memory stays below ``block_elements`` floats per worker whatever
the image (column blocks are shared among the cores).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from likewise.stereo.parallel import pieces, run_all

#: cost of a disparity whose match lies outside the right image (the worst cosine cost)
OUTSIDE_COST = 2.0


def check_disparities(num_disparities: int, width: int | None = None) -> int:
    """Validate the number of disparities ``D`` (searched: ``0 <= d < D``)."""
    if isinstance(num_disparities, bool) or not isinstance(num_disparities, int):
        raise TypeError(f"max_disparity must be an int, got {type(num_disparities).__name__}")
    if num_disparities < 1:
        raise ValueError(
            f"max_disparity must be >= 1 (disparities 0 .. D-1 are searched), got {num_disparities}"
        )
    if width is not None and num_disparities > width:
        raise ValueError(f"max_disparity {num_disparities} exceeds the image width {width}")
    return num_disparities


def check_feature_pair(left: Tensor, right: Tensor) -> None:
    if not isinstance(left, Tensor) or not isinstance(right, Tensor):
        raise TypeError("features must be tensors [F, H, W]")
    if left.dim() != 3 or left.shape != right.shape:
        raise ValueError(
            f"left and right features must be [F, H, W] of one shape, got "
            f"{tuple(left.shape)} and {tuple(right.shape)}"
        )


def cost_volume(
    left: Tensor,
    right: Tensor,
    num_disparities: int,
    *,
    block_columns: int = 128,
    block_elements: int = 1 << 22,
    outside: float = OUTSIDE_COST,
) -> Tensor:
    """``V [D, H, W]`` (float32) from features ``[F, H, W]``; see the module docstring."""
    check_feature_pair(left, right)
    _, h, w = left.shape
    d = check_disparities(num_disparities, w)
    lf = left.float().permute(1, 2, 0)  # [H, W, F]
    rf = F.pad(right.float().permute(1, 2, 0), (0, 0, d - 1, 0))  # [H, W + D - 1, F]; column c -> c - D + 1
    out = torch.empty(d, h, w, dtype=torch.float32)
    b = max(1, min(block_columns, w))
    rows = max(1, block_elements // (b * (b + d - 1)))
    starts = list(range(0, w, b))

    def fill(columns: list[int]) -> None:
        for j0 in columns:
            j1 = min(w, j0 + b)
            n = j1 - j0
            for i0 in range(0, h, rows):
                i1 = min(h, i0 + rows)
                s = torch.bmm(lf[i0:i1, j0:j1], rf[i0:i1, j0 : j1 + d - 1].transpose(1, 2))
                # s[i, j, k] pairs left column j0 + j with right column j0 + k - D + 1;
                # disparity e = D - 1 - m sits on the diagonal k = j + m
                band = s.as_strided((i1 - i0, n, d), (s.stride(0), s.stride(1) + 1, 1))
                out[:, i0:i1, j0:j1] = (1.0 - band.flip(-1)).permute(2, 0, 1)

    with pieces() as workers, torch.no_grad():
        # column blocks are independent: each worker fills its own (disjoint) slices of ``out``
        run_all([lambda k=k: fill(starts[k::workers]) for k in range(workers)], workers)
        mask_outside(out, outside)
    return out


def mask_outside(volume: Tensor, value: float) -> Tensor:
    """Set ``volume[d, :, j] = value`` for ``j < d`` (no right pixel), in place."""
    for e in range(1, min(volume.shape[0], volume.shape[-1] + 1)):
        volume[e, :, :e] = value
    return volume


def winner_takes_all(volume: Tensor) -> Tensor:
    """``argmin_d V[d, i, j]`` as a long ``[H, W]`` map."""
    if volume.dim() != 3:
        raise ValueError(f"a cost volume is [D, H, W], got shape {tuple(volume.shape)}")
    return volume.argmin(0)


__all__ = ["OUTSIDE_COST", "check_disparities", "cost_volume", "mask_outside", "winner_takes_all"]
