"""Synthetic stereo pairs with exact ground truth, from photographs bundled with scikit-image.

A scene is a stack of layers seen from two cameras a baseline apart. Each layer has a
texture (a random crop of a photograph: astronaut, coffee, chelsea, rocket, camera, ...;
never the Motorcycle stereo pair), a shape (the background fills the frame; the others are
random ellipses, rotated rectangles and star-shaped polygons) and a planar disparity field
``d_k(x, y) = a + b x + c y``, given in left-image pixels. The nearer layer (larger mean
disparity) is drawn over the farther ones, which gives piecewise-smooth disparity with
depth edges and occlusions.

The left view samples each layer at ``(x, y)``; the right view sees at ``x_r`` the layer
point ``x`` with ``x - d_k(x, y) = x_r``, i.e. ``x = (x_r + a + c y) / (1 - b)``. Both
views are rendered by bilinear sampling, so a left pixel that is visible in both views has
the colour of the right view at ``x - d`` (exactly, for integer fronto-parallel layers).
Photometric noise (gain, bias, gamma, Gaussian noise) is then applied to each view
independently.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

#: scikit-image photographs used as textures (not the Motorcycle pair used for evaluation)
SOURCES = (
    "astronaut",
    "coffee",
    "chelsea",
    "rocket",
    "immunohistochemistry",
    "camera",
    "coins",
    "brick",
    "grass",
    "gravel",
    "moon",
    "page",
    "text",
    "cell",
    "clock",
)


@dataclass
class SyntheticPair:
    """One rendered pair; images ``[H, W, 3]`` float32 in [0, 1], maps ``[H, W]``."""

    left: np.ndarray
    right: np.ndarray
    disparity: np.ndarray  # left-view ground truth (pixels)
    visible: np.ndarray  # bool: the left pixel is seen by the right camera (not occluded)


@functools.lru_cache(maxsize=1)
def load_sources() -> tuple[np.ndarray, ...]:
    """The texture photographs as float32 ``[H, W, 3]`` arrays in [0, 1]."""
    import skimage.data

    images = []
    for name in SOURCES:
        img = np.asarray(getattr(skimage.data, name)(), dtype=np.float32)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        images.append(img[..., :3] / 255.0)
    return tuple(images)


def _texture(rng: np.random.Generator, sources: tuple[np.ndarray, ...], h: int, w: int) -> torch.Tensor:
    """A random crop ``[3, h, w]``, rescaled (0.5x-1.5x) and possibly mirrored."""
    img = sources[rng.integers(len(sources))]
    scale = rng.uniform(0.5, 1.5)
    need_h, need_w = int(np.ceil(h / scale)) + 2, int(np.ceil(w / scale)) + 2
    t = torch.from_numpy(img).permute(2, 0, 1)
    if t.shape[1] < need_h or t.shape[2] < need_w:  # tile small photographs
        t = t.repeat(1, need_h // t.shape[1] + 1, need_w // t.shape[2] + 1)
    y0 = rng.integers(t.shape[1] - need_h + 1)
    x0 = rng.integers(t.shape[2] - need_w + 1)
    crop = t[:, y0 : y0 + need_h, x0 : x0 + need_w]
    crop = F.interpolate(crop[None], size=(h, w), mode="bilinear", align_corners=False)[0]
    if rng.random() < 0.5:
        crop = crop.flip(-1)
    if rng.random() < 0.3:
        crop = crop[torch.from_numpy(rng.permutation(3))]
    return crop


def _shape(rng: np.random.Generator, h: int, w: int, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """A random bool mask (ellipse, rotated rectangle or star polygon) on the canvas grid."""
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    rx, ry = rng.uniform(0.06, 0.3) * w, rng.uniform(0.08, 0.4) * h
    angle = rng.uniform(0, np.pi)
    u = (xs - cx) * np.cos(angle) + (ys - cy) * np.sin(angle)
    v = -(xs - cx) * np.sin(angle) + (ys - cy) * np.cos(angle)
    kind = rng.integers(3)
    if kind == 0:
        return (u / rx) ** 2 + (v / ry) ** 2 <= 1
    if kind == 1:
        return (np.abs(u) <= rx) & (np.abs(v) <= ry)
    radii = rng.uniform(0.5, 1.0, size=rng.integers(5, 10))
    theta = np.arctan2(v / ry, u / rx)
    pos = (theta + np.pi) / (2 * np.pi) * len(radii)
    k0 = np.floor(pos).astype(int) % len(radii)
    frac = pos - np.floor(pos)
    r = radii[k0] * (1 - frac) + radii[(k0 + 1) % len(radii)] * frac
    return np.hypot(u / rx, v / ry) <= r


def synthetic_pair(
    rng: np.random.Generator,
    height: int = 128,
    width: int = 192,
    max_disparity: float = 64.0,
    layers: int = 5,
    *,
    slant: bool = True,
    integer: bool = False,
    noise: bool = True,
) -> SyntheticPair:
    """Render one stereo pair (see the module docstring).

    ``slant=False`` makes every layer fronto-parallel; ``integer=True`` rounds the
    disparities to whole pixels; ``noise=False`` leaves the views without photometric noise.
    """
    if height < 16 or width < 16:
        raise ValueError(f"synthetic pairs are at least 16x16, got {height}x{width}")
    if not 4 <= max_disparity < width:
        raise ValueError(f"max_disparity must be in [4, width), got {max_disparity}")
    sources = load_sources()
    pad = int(np.ceil(max_disparity)) + 8
    cw = width + 2 * pad  # canvas: x in [-pad, width + pad)
    ys, xs = np.mgrid[0:height, 0:cw].astype(np.float64)
    xs -= pad
    planes = []
    back = rng.uniform(2.0, 0.45 * max_disparity)
    planes.append((back, np.ones((height, cw), dtype=bool)))
    for _ in range(rng.integers(1, layers + 1)):
        planes.append(
            (rng.uniform(back + 2.0, max_disparity - 2.0), _shape(rng, height, cw - 2 * pad, xs, ys))
        )
    planes.sort(key=lambda item: item[0])  # far to near: nearer layers are drawn later
    views = [np.zeros((3, height, width), np.float32) for _ in range(2)]
    disp = [np.full((height, width), np.nan) for _ in range(2)]
    layer_id = [np.full((height, width), -1) for _ in range(2)]
    grid_y = np.broadcast_to(np.arange(height, dtype=np.float64)[:, None], (height, width))
    grid_x = np.broadcast_to(np.arange(width, dtype=np.float64)[None, :], (height, width))
    for k, (mean_d, mask) in enumerate(planes):
        if slant:
            b = rng.uniform(-0.12, 0.12)
            c = rng.uniform(-0.12, 0.12)
        else:
            b = c = 0.0
        room = 0.4 * max(0.0, min(mean_d - 1.0, max_disparity - mean_d))  # keeps d in [1, max_disparity]
        b = float(np.clip(b, -room / (width / 2), room / (width / 2)))
        c = float(np.clip(c, -room / (height / 2), room / (height / 2)))
        a = mean_d - b * width / 2 - c * height / 2
        if integer:
            a = float(np.round(a))
        texture = _texture(rng, sources, height, cw)
        stack = torch.cat([texture, torch.from_numpy(mask[None].astype(np.float32))])
        for v, s in enumerate((0.0, 1.0)):
            x_src = (grid_x + s * (a + c * grid_y)) / (1.0 - s * b)  # layer point seen at (x, y)
            d_src = a + b * x_src + c * grid_y
            gx = 2.0 * (x_src + pad) / (cw - 1) - 1.0
            gy = 2.0 * grid_y / (height - 1) - 1.0
            grid = torch.from_numpy(np.stack([gx, gy], axis=-1)[None].astype(np.float32))
            sample = F.grid_sample(stack[None], grid, mode="bilinear", align_corners=True)[0].numpy()
            cover = sample[3] >= 0.5
            views[v][:, cover] = sample[:3, cover]
            disp[v][cover] = d_src[cover]
            layer_id[v][cover] = k
    left_disp = disp[0]
    x_r = np.rint(grid_x - left_disp).astype(int)
    inside = (x_r >= 0) & (x_r < width)
    rows = np.arange(height)[:, None]
    other = layer_id[1][rows, np.clip(x_r, 0, width - 1)]
    visible = inside & (other == layer_id[0])
    images = [np.clip(v.transpose(1, 2, 0), 0, 1) for v in views]
    if noise:
        images = [_photometric(rng, img) for img in images]
    return SyntheticPair(
        images[0].astype(np.float32), images[1].astype(np.float32), left_disp.astype(np.float32), visible
    )


def _photometric(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Gain, per-channel gain, bias, gamma and Gaussian noise."""
    gain = rng.uniform(0.8, 1.2) * rng.uniform(0.95, 1.05, size=3)
    out = img * gain + rng.uniform(-0.08, 0.08)
    out = np.clip(out, 0, 1) ** rng.uniform(0.8, 1.25)
    out = out + rng.normal(0, rng.uniform(0.0, 0.02), size=out.shape)
    return np.clip(out, 0, 1).astype(np.float32)


__all__ = ["SOURCES", "SyntheticPair", "load_sources", "synthetic_pair"]
