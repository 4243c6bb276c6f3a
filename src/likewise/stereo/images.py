"""Reading stereo images and writing colour-mapped disparity PNGs."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np


def read_image(path: str | os.PathLike) -> np.ndarray:
    """``[H, W, 3]`` uint8 (or ``[H, W]`` for grey) pixels of an image file.

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for anything that is
    not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(2, "No such file", str(path))
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not an image")
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("L", "RGB"):
                img = img.convert("RGB")
            return np.asarray(img)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"{path} is not a readable image ({type(exc).__name__})") from None


def colorize(disp: np.ndarray, vmax: float | None = None) -> np.ndarray:
    """``[H, W, 3]`` uint8: disparities through matplotlib's "magma" colour map, missing = black."""
    from matplotlib import colormaps

    disp = np.asarray(disp, dtype=np.float32)
    valid = np.isfinite(disp)
    top = vmax if vmax is not None else (float(disp[valid].max()) if valid.any() else 1.0)
    scaled = np.clip(np.where(valid, disp, 0) / max(top, 1e-6), 0, 1)
    rgb = (colormaps["magma"](scaled)[..., :3] * 255).astype(np.uint8)
    rgb[~valid] = 0
    return rgb


def disparity_png(disp: np.ndarray, path: str | os.PathLike, vmax: float | None = None) -> Path:
    """Write the colour-mapped disparity as a PNG, atomically."""
    from PIL import Image

    from likewise.io import atomic_write_bytes

    buf = io.BytesIO()
    Image.fromarray(colorize(disp, vmax)).save(buf, format="PNG", optimize=True)
    return atomic_write_bytes(path, buf.getvalue())


__all__ = ["colorize", "disparity_png", "read_image"]
