"""Post-processing of a winner-takes-all disparity map (after Zbontar & LeCun 2016 and
Hirschmuller 2008); every step is optional and works on ``[H, W]`` maps.

* :func:`right_disparity`: the right image's disparities from the same (aggregated) cost
  volume, ``D_R(i, j) = argmin_d S[d, i, j + d]`` (Hirschmuller 2008, sec. 3.3).
* :func:`left_right_check`: a left disparity is kept only if the right image agrees,
  ``|D_L(i, j) - D_R(i, j - D_L(i, j))| <= tolerance``; occlusions and mismatches fail.
* :func:`subpixel`: the parabola through the costs at ``d - 1, d, d + 1``:
  ``d* = d + (C(d-1) - C(d+1)) / (2 (C(d-1) - 2 C(d) + C(d+1)))``, the step clamped to +-0.5.
* :func:`fill_invalid`: each missing pixel takes the smaller (more distant) of the nearest
  valid disparities left and right on its row; an occluded pixel belongs to the background.
* :func:`median_filter`: a ``k x k`` median; missing pixels stay missing.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def right_disparity(volume: Tensor) -> Tensor:
    """``D_R [H, W]`` (long) from a left-referenced volume ``[D, H, W]``."""
    d, h, w = volume.shape
    # padded[e, i, c] = volume[e, i, c] (inf beyond the image); the strided view reads
    # padded[e, i, j + e], i.e. the cost of right pixel j at disparity e, in one argmin
    padded = torch.nn.functional.pad(volume, (0, d), value=float("inf"))
    view = padded.as_strided((d, h, w), (h * (w + d) + 1, w + d, 1))
    return view.argmin(0)


def left_right_check(left: np.ndarray, right: np.ndarray, tolerance: float = 1.0) -> np.ndarray:
    """Bool ``[H, W]``: where the left disparities agree with the right ones."""
    left = np.asarray(left, dtype=np.float64)
    right = np.asarray(right, dtype=np.float64)
    if left.shape != right.shape or left.ndim != 2:
        raise ValueError(
            f"left and right disparities must be [H, W] of one shape: {left.shape}, {right.shape}"
        )
    h, w = left.shape
    finite = np.isfinite(left)
    cols = np.arange(w)[None, :] - np.rint(np.where(finite, left, 0)).astype(np.int64)
    inside = finite & (cols >= 0) & (cols < w)
    rows = np.broadcast_to(np.arange(h)[:, None], (h, w))
    other = right[rows, np.clip(cols, 0, w - 1)]
    with np.errstate(invalid="ignore"):
        return inside & (np.abs(left - other) <= tolerance)


def subpixel(volume: Tensor, disparity: Tensor) -> Tensor:
    """Float ``[H, W]``: parabola refinement of integer disparities ``[H, W]``."""
    d = volume.shape[0]
    disparity = disparity.long()
    c0 = volume.gather(0, disparity[None]).squeeze(0)
    cm = volume.gather(0, (disparity - 1).clamp_min(0)[None]).squeeze(0)
    cp = volume.gather(0, (disparity + 1).clamp_max(d - 1)[None]).squeeze(0)
    curvature = cm - 2 * c0 + cp
    inner = (disparity > 0) & (disparity < d - 1) & (curvature > 0) & torch.isfinite(curvature)
    step = torch.where(inner, (cm - cp) / (2 * curvature.clamp_min(1e-12)), torch.zeros_like(c0))
    return disparity.float() + step.clamp(-0.5, 0.5)


def _fill_rows(disp: np.ndarray) -> np.ndarray:
    """Nearest finite value to the left (``from_left``) and right of each pixel, per row."""
    h, w = disp.shape
    valid = np.isfinite(disp)
    idx = np.where(valid, np.arange(w)[None, :], -1)
    left_idx = np.maximum.accumulate(idx, axis=1)
    idx_r = np.where(valid, np.arange(w)[None, :], w)
    right_idx = np.minimum.accumulate(idx_r[:, ::-1], axis=1)[:, ::-1]
    rows = np.arange(h)[:, None]
    from_left = np.where(left_idx >= 0, disp[rows, np.clip(left_idx, 0, w - 1)], np.inf)
    from_right = np.where(right_idx < w, disp[rows, np.clip(right_idx, 0, w - 1)], np.inf)
    return np.minimum(from_left, from_right)


def fill_invalid(disp: np.ndarray) -> np.ndarray:
    """``disp`` with NaN pixels filled from valid row neighbours (the background side).

    Rows with no valid pixel are then filled the same way along columns; a map with no
    valid pixel at all stays NaN.
    """
    disp = np.array(disp, dtype=np.float32)
    missing = ~np.isfinite(disp)
    if not missing.any():
        return disp
    filled = _fill_rows(disp)
    disp[missing] = filled[missing]
    still = ~np.isfinite(disp)
    if still.any():
        disp[still] = np.nan
        cols = _fill_rows(disp.T).T
        disp[still] = cols[still]
        disp[~np.isfinite(disp)] = np.nan
    return disp


def median_filter(disp: np.ndarray, size: int = 5) -> np.ndarray:
    """``size x size`` median; missing pixels stay missing (their window uses filled values)."""
    from scipy import ndimage

    if size < 1 or size % 2 == 0:
        raise ValueError(f"the median filter size must be odd and >= 1, got {size}")
    disp = np.asarray(disp, dtype=np.float32)
    if size == 1:
        return disp.copy()
    valid = np.isfinite(disp)
    if valid.all():
        return ndimage.median_filter(disp, size=size, mode="nearest")
    if not valid.any():
        return disp.copy()
    # missing pixels borrow their filled values for the window, then stay missing
    out = ndimage.median_filter(fill_invalid(disp), size=size, mode="nearest")
    out[~valid] = np.nan
    return out


__all__ = ["fill_invalid", "left_right_check", "median_filter", "right_disparity", "subpixel"]
