"""Census transform and its Hamming-distance cost volume (Zabih & Woodfill 1994).

The census signature of a pixel is one bit per pixel of a ``wh x ww`` window around it
(centre excluded): ``bit = I(q) < I(p)``. The matching cost of disparity ``d`` is the
Hamming distance ``V[d, i, j] = popcount(c_L(i, j) XOR c_R(i, j - d))``, a classic
cost robust to gain and bias changes; it is the baseline for the learned features.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from likewise.stereo.cost_volume import check_disparities


def census_transform(gray: np.ndarray, window: tuple[int, int] = (7, 9)) -> np.ndarray:
    """Census signatures ``uint64 [H, W]`` of a grey image (borders replicated)."""
    wh, ww = window
    if wh % 2 == 0 or ww % 2 == 0 or wh * ww - 1 > 64:
        raise ValueError(f"census window must be odd and hold at most 65 pixels, got {window}")
    gray = np.asarray(gray, dtype=np.float32)
    if gray.ndim != 2:
        raise ValueError(f"census needs a grey [H, W] image, got shape {gray.shape}")
    rh, rw = wh // 2, ww // 2
    padded = np.pad(gray, ((rh, rh), (rw, rw)), mode="edge")
    h, w = gray.shape
    code = np.zeros((h, w), dtype=np.uint64)
    for dy in range(wh):
        for dx in range(ww):
            if dy == rh and dx == rw:
                continue
            bit = padded[dy : dy + h, dx : dx + w] < gray
            code = (code << np.uint64(1)) | bit.astype(np.uint64)
    return code


def census_cost_volume(
    left_gray: np.ndarray, right_gray: np.ndarray, num_disparities: int, window: tuple[int, int] = (7, 9)
) -> Tensor:
    """``V [D, H, W]`` float32 Hamming costs; ``j < d`` gets the largest possible cost."""
    left_gray, right_gray = np.asarray(left_gray), np.asarray(right_gray)
    if left_gray.shape != right_gray.shape:
        raise ValueError(f"left and right images differ in shape: {left_gray.shape} and {right_gray.shape}")
    cl, cr = census_transform(left_gray, window), census_transform(right_gray, window)
    h, w = cl.shape
    d = check_disparities(num_disparities, w)
    bits = window[0] * window[1] - 1
    out = np.full((d, h, w), bits, dtype=np.float32)
    for e in range(d):
        out[e, :, e:] = np.bitwise_count(cl[:, e:] ^ cr[:, : w - e])
    return torch.from_numpy(out)


__all__ = ["census_cost_volume", "census_transform"]
