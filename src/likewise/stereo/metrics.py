"""Disparity error metrics: bad-N and end-point error, in pixels of the image given.

For a disparity map ``disp`` and ground truth ``gt`` (both ``[H, W]``), only pixels where
``gt`` is finite are scored (Middlebury marks unknown ground truth with ``inf``/NaN)::

    bad-N = |{p : gt(p) finite, disp(p) missing or |disp(p) - gt(p)| > N}| / |{p : gt(p) finite}|
    EPE   = mean_{p : gt(p), disp(p) finite} |disp(p) - gt(p)|

A pixel left without a disparity (NaN / inf in ``disp``) counts as an error in bad-N; EPE
is taken over the pixels that have one, and :func:`coverage` says what fraction that is.
Middlebury 2014 at a quarter of its full resolution (``skimage.data.stereo_motorcycle``)
has disparities 4x smaller, so bad-0.5 there corresponds to the official bad-2.0.
"""

from __future__ import annotations

import numpy as np


def _check(disp: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    disp = np.asarray(disp, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if disp.ndim != 2 or disp.shape != gt.shape:
        raise ValueError(
            f"disparity and ground truth must be 2-D maps of one shape, got {disp.shape} and {gt.shape}"
        )
    known = np.isfinite(gt)
    if not known.any():
        raise ValueError("the ground truth has no finite disparity")
    return disp, gt, known


def bad_pixel_rate(disp: np.ndarray, gt: np.ndarray, threshold: float) -> float:
    """Fraction of pixels with ground truth whose error exceeds ``threshold`` (missing = error)."""
    if not threshold >= 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    disp, gt, known = _check(disp, gt)
    with np.errstate(invalid="ignore"):
        good = np.isfinite(disp) & (np.abs(disp - gt) <= threshold)
    return float(1.0 - (good & known).sum() / known.sum())


def end_point_error(disp: np.ndarray, gt: np.ndarray) -> float:
    """Mean absolute disparity error over pixels with ground truth and a disparity (NaN if none)."""
    disp, gt, known = _check(disp, gt)
    both = known & np.isfinite(disp)
    if not both.any():
        return float("nan")
    return float(np.abs(disp[both] - gt[both]).mean())


def coverage(disp: np.ndarray, gt: np.ndarray) -> float:
    """Fraction of the pixels with ground truth that have a disparity."""
    disp, gt, known = _check(disp, gt)
    return float((known & np.isfinite(disp)).sum() / known.sum())


def disparity_metrics(
    disp: np.ndarray, gt: np.ndarray, thresholds: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0)
) -> dict[str, float]:
    """``{"bad-0.5": ..., "bad-1": ..., "bad-2": ..., "bad-4": ..., "epe": ..., "coverage": ...}``."""
    out = {f"bad-{t:g}": bad_pixel_rate(disp, gt, t) for t in thresholds}
    out["epe"] = end_point_error(disp, gt)
    out["coverage"] = coverage(disp, gt)
    return out


__all__ = ["bad_pixel_rate", "coverage", "disparity_metrics", "end_point_error"]
