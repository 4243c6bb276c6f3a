"""The Motorcycle benchmark behind ``likewise stereo benchmark`` and ``benchmarks/stereo.py``.

One run on ``skimage.data.stereo_motorcycle()`` (Middlebury 2014 "Motorcycle" at a quarter
of full resolution, 500x741, ground truth with inf where unknown), 128 disparities for
every method, a pixel without a disparity counted as an error:

* OpenCV ``StereoBM`` and ``StereoSGBM`` with the settings in :data:`BM_SETTINGS` /
  :data:`SGBM_SETTINGS` (the best of a small sweep, docs/stereo.md);
* census 7x9 Hamming cost with likewise's SGM and post-processing (:data:`CENSUS`);
* likewise's learned features: WTA alone, then each post-processing step added.

Runtimes are wall-clock seconds for the pair on this machine, model loading and feature
computation included for the learned rows (the SGM is shared by the ablation rows and
counted in each).
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from likewise.stereo.match import MatchSettings, disparity_from_volume, grey
from likewise.stereo.metrics import disparity_metrics

NUM_DISPARITIES = 128
#: StereoBM on grey images: the best bad-2 of a sweep over blockSize 5-21, uniquenessRatio 0/5/15,
#: disp12MaxDiff 1/off, textureThreshold 0/10 (OpenCV's stereo_match sample values otherwise)
BM_SETTINGS = {
    "blockSize": 11,
    "preFilterCap": 31,
    "textureThreshold": 10,
    "uniquenessRatio": 0,
    "speckleWindowSize": 100,
    "speckleRange": 32,
    "disp12MaxDiff": -1,
}
#: StereoSGBM on colour images, P1 = 8 C w^2 and P2 = 32 C w^2 as OpenCV documents: the best
#: bad-2 of a sweep over blockSize 3-9, modes SGBM_3WAY/HH, speckleRange 2/32, uniquenessRatio
#: 0/5/10, disp12MaxDiff 1/off, speckleWindowSize 0/100
SGBM_SETTINGS = {
    "blockSize": 3,
    "P1": 8 * 3 * 3**2,
    "P2": 32 * 3 * 3**2,
    "disp12MaxDiff": 1,
    "uniquenessRatio": 0,
    "speckleWindowSize": 100,
    "speckleRange": 32,
    "preFilterCap": 63,
    "mode": "SGBM_3WAY",
}
#: census cost: the learned pipeline's steps, penalties for Hamming costs (0-62)
CENSUS = MatchSettings(max_disparity=NUM_DISPARITIES, p1=4.0, p2=40.0, gamma=10.0)


def opencv_bm(left: np.ndarray, right: np.ndarray, settings: dict = BM_SETTINGS) -> np.ndarray:
    import cv2

    gl = cv2.cvtColor(left, cv2.COLOR_RGB2GRAY)
    gr = cv2.cvtColor(right, cv2.COLOR_RGB2GRAY)
    bm = cv2.StereoBM_create(numDisparities=NUM_DISPARITIES, blockSize=settings["blockSize"])
    for key, value in settings.items():
        if key != "blockSize":
            getattr(bm, f"set{key[0].upper()}{key[1:]}")(value)
    raw = bm.compute(gl, gr).astype(np.float32) / 16.0
    return np.where(raw >= 0, raw, np.nan).astype(np.float32)


def opencv_sgbm(left: np.ndarray, right: np.ndarray, settings: dict = SGBM_SETTINGS) -> np.ndarray:
    import cv2

    kwargs = {k: v for k, v in settings.items() if k != "mode"}
    mode = getattr(cv2, f"STEREO_SGBM_MODE_{settings['mode']}")
    sgbm = cv2.StereoSGBM_create(minDisparity=0, numDisparities=NUM_DISPARITIES, mode=mode, **kwargs)
    raw = sgbm.compute(left[..., ::-1].copy(), right[..., ::-1].copy()).astype(np.float32) / 16.0
    return np.where(raw >= 0, raw, np.nan).astype(np.float32)


def run_benchmark(model: str | Path | None = None, settings: MatchSettings | None = None) -> dict:
    """``{"rows": [(name, metrics dict incl. "seconds"), ...], "maps": {name: disparity}, "gt": gt}``."""
    import skimage.data
    import torch

    from likewise.stereo.census import census_cost_volume
    from likewise.stereo.match import learned_cost_volume
    from likewise.stereo.pretrained import load_patch_net
    from likewise.stereo.sgm import sgm

    settings = settings or MatchSettings(max_disparity=NUM_DISPARITIES)
    left, right, gt = skimage.data.stereo_motorcycle()
    rows, maps = [], {}

    def record(name: str, disp: np.ndarray, seconds: float) -> None:
        rows.append((name, {**disparity_metrics(disp, gt), "seconds": seconds}))
        maps[name] = disp

    t = time.perf_counter()
    record("OpenCV StereoBM", opencv_bm(left, right), time.perf_counter() - t)
    t = time.perf_counter()
    record("OpenCV StereoSGBM", opencv_sgbm(left, right), time.perf_counter() - t)
    t = time.perf_counter()
    volume = census_cost_volume(grey(left), grey(right), NUM_DISPARITIES)
    record(
        "census + SGM + post-processing",
        disparity_from_volume(volume, CENSUS, grey(left)),
        time.perf_counter() - t,
    )
    del volume

    t = time.perf_counter()
    net = load_patch_net(model)
    volume = learned_cost_volume(left, right, net, settings.max_disparity)
    t_volume = time.perf_counter() - t
    t = time.perf_counter()
    record(
        "likewise learned, WTA",
        disparity_from_volume(volume, settings.wta()),
        t_volume + time.perf_counter() - t,
    )
    t = time.perf_counter()
    g = torch.from_numpy(grey(left)) if settings.gamma is not None else None
    aggregated = sgm(
        volume, settings.p1, settings.p2, paths=settings.paths, guide=g, gamma=settings.gamma or 1.0
    )
    t_sgm = t_volume + time.perf_counter() - t
    del volume
    steps = [
        ("+ SGM", dict(lr_check=False, subpixel=False, median=1, fill=False)),
        ("+ left-right check", dict(subpixel=False, median=1, fill=False)),
        ("+ sub-pixel", dict(median=1, fill=False)),
        ("+ fill", dict(median=1)),
        ("+ median = likewise full pipeline", {}),
    ]
    for name, change in steps:
        t = time.perf_counter()
        disp = disparity_from_volume(aggregated, replace(settings, sgm=False, **change))
        record(f"likewise learned {name}", disp, t_sgm + time.perf_counter() - t)
    return {"rows": rows, "maps": maps, "gt": gt}


def format_table(rows: list[tuple[str, dict]]) -> str:
    head = "| method | bad-0.5 | bad-1 | bad-2 | bad-4 | EPE (px) | coverage | time (s) |"
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, m in rows:
        lines.append(
            f"| {name} | {100 * m['bad-0.5']:.1f}% | {100 * m['bad-1']:.1f}% | {100 * m['bad-2']:.1f}% "
            f"| {100 * m['bad-4']:.1f}% | {m['epe']:.2f} | {100 * m['coverage']:.1f}% | {m['seconds']:.2f} |"
        )
    return "\n".join(lines)


__all__ = [
    "BM_SETTINGS",
    "CENSUS",
    "SGBM_SETTINGS",
    "format_table",
    "opencv_bm",
    "opencv_sgbm",
    "run_benchmark",
]
