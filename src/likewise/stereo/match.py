"""Dense stereo matching: learned features -> cost volume -> SGM -> post-processing.

:func:`compute_disparity` runs the whole pipeline on a rectified pair (the left image is
the reference, a left pixel ``(x, y)`` matches the right pixel ``(x - d, y)``)::

    f_L, f_R = net.dense(standardize(I_L)), net.dense(standardize(I_R))   # once per image
    V        = cost_volume(f_L, f_R, D)                                   # [D, H, W]
    S        = sgm(V, P1, P2, guide=grey(I_L))                            # optional
    d        = argmin_d S  (+ sub-pixel parabola)
    d[left-right check fails] = NaN ; fill from the background ; median

Every step after the cost volume is optional (:class:`MatchSettings`), so each one's
effect can be measured; :func:`disparity_from_volume` applies them to any cost volume
(the census baseline uses it with its own penalties).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from likewise.stereo.cost_volume import check_disparities, cost_volume
from likewise.stereo.network import PATCH, PatchNet, standardize
from likewise.stereo.parallel import pieces, run_all
from likewise.stereo.postprocess import (
    fill_invalid,
    left_right_check,
    median_filter,
    right_disparity,
    subpixel,
)
from likewise.stereo.sgm import sgm


@dataclass(frozen=True)
class MatchSettings:
    """What runs after the cost volume (defaults: the shipped pipeline)."""

    max_disparity: int = 128  # disparities 0 <= d < max_disparity are searched
    sgm: bool = True
    paths: int = 8
    p1: float = 0.05
    p2: float = 0.6
    gamma: float | None = 10.0  # P2 lowered across intensity edges; None = constant P2
    lr_check: bool = True
    lr_tolerance: float = 1.0
    subpixel: bool = True
    median: int = 5  # 1 = no median filter
    fill: bool = True

    def wta(self) -> MatchSettings:
        """Winner-takes-all only: no SGM, no check, no refinement."""
        return replace(self, sgm=False, lr_check=False, subpixel=False, median=1, fill=False)


def grey(image: np.ndarray) -> np.ndarray:
    """Intensities ``[H, W]`` (0-255 scale for 8-bit input) of ``[H, W]`` / ``[H, W, C]``."""
    image = np.asarray(image, dtype=np.float32)
    return image if image.ndim == 2 else image[..., :3].mean(axis=2)


def check_pair(left: np.ndarray, right: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validated ``[H, W, 3]`` float32 views (grey images repeated, alpha dropped)."""
    out = []
    for name, image in (("left", left), ("right", right)):
        image = np.asarray(image)
        if image.ndim == 3 and image.shape[2] in (1, 3, 4):
            image = image[..., :3]
            if image.shape[2] == 1:
                image = np.repeat(image, 3, axis=2)
        elif image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        else:
            raise ValueError(f"the {name} image must be [H, W] or [H, W, 1/3/4], got shape {image.shape}")
        if not np.issubdtype(image.dtype, np.number) or image.dtype == np.bool_:
            raise TypeError(f"the {name} image must hold numbers, got {image.dtype}")
        image = image.astype(np.float32)
        if not np.isfinite(image).all():
            raise ValueError(f"the {name} image holds NaN or infinite values")
        if min(image.shape[:2]) < PATCH:
            raise ValueError(f"the {name} image is {image.shape[:2]}; stereo needs at least {PATCH}x{PATCH}")
        out.append(image)
    if out[0].shape != out[1].shape:
        raise ValueError(f"left and right images differ in size: {out[0].shape[:2]} and {out[1].shape[:2]}")
    return out[0], out[1]


def disparity_from_volume(
    volume: Tensor, settings: MatchSettings, guide: np.ndarray | None = None
) -> np.ndarray:
    """Disparity ``[H, W]`` float32 (NaN where none) from a cost volume ``[D, H, W]``."""
    s = settings
    if s.sgm:
        g = None if (guide is None or s.gamma is None) else torch.from_numpy(np.asarray(guide, np.float32))
        volume = sgm(volume, s.p1, s.p2, paths=s.paths, guide=g, gamma=s.gamma or 1.0)
    best = volume.argmin(0)
    disp = (subpixel(volume, best) if s.subpixel else best.float()).numpy().astype(np.float32)
    if s.lr_check:
        ok = left_right_check(best.numpy(), right_disparity(volume).numpy(), s.lr_tolerance)
        disp[~ok] = np.nan
    if s.fill:
        disp = fill_invalid(disp)
    if s.median > 1:
        disp = median_filter(disp, s.median)
    return disp


def learned_cost_volume(left: np.ndarray, right: np.ndarray, net: PatchNet, max_disparity: int) -> Tensor:
    """``V [D, H, W]`` from the network's features, each image embedded once."""
    left, right = check_pair(left, right)
    check_disparities(max_disparity, left.shape[1])
    net.eval()

    def features(image: np.ndarray) -> Tensor:
        with torch.inference_mode():
            return net.dense(standardize(image))

    with pieces() as workers:  # the two images side by side, one core each
        fl, fr = run_all([lambda: features(left), lambda: features(right)], workers)
    return cost_volume(fl, fr, max_disparity)


def compute_disparity(
    left: np.ndarray, right: np.ndarray, net: PatchNet | None = None, settings: MatchSettings | None = None
) -> np.ndarray:
    """Disparity of the left image ``[H, W]`` float32, NaN where none (see the module docstring).

    ``net``: a :class:`PatchNet`; the model shipped with likewise by default.
    """
    settings = settings or MatchSettings()
    left, right = check_pair(left, right)
    check_disparities(settings.max_disparity, left.shape[1])
    if net is None:
        from likewise.stereo.pretrained import load_patch_net

        net = load_patch_net()
    volume = learned_cost_volume(left, right, net, settings.max_disparity)
    return disparity_from_volume(volume, settings, guide=grey(left))


__all__ = ["MatchSettings", "check_pair", "compute_disparity", "disparity_from_volume", "learned_cost_volume"]
