"""An image folder: one sub-folder per class, PNG/JPEG/BMP/GIF/TIFF images inside.

Images are read with Pillow, converted to RGB (or grayscale), resized to
``image_size`` (default: the size of the first readable image; all images must
then share it) and scaled to [0, 1]: ``x`` is ``[N, C, H, W]`` float32.
Unreadable or corrupt files are skipped and reported in ``skipped`` (path,
reason), never a crash; empty class folders are skipped and reported too. An
error is raised when nothing readable is left or fewer than two classes remain.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from likewise.data.arrays import LabeledArrays

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def load_image_folder(
    root: str | Path,
    *,
    image_size: tuple[int, int] | int | None = None,
    grayscale: bool = False,
) -> LabeledArrays:
    from PIL import Image, UnidentifiedImageError

    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(2, "No such directory", str(root))
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise ValueError(f"{root}: no class sub-folders (expected one folder per class)")
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    images: list[np.ndarray] = []
    labels: list[int] = []
    names: list[str] = []
    skipped: list[tuple[str, str]] = []
    for class_dir in class_dirs:
        files = sorted(p for p in class_dir.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        got = 0
        for file in files:
            try:
                with Image.open(file) as img:
                    img = img.convert("L" if grayscale else "RGB")
                    if image_size is None:
                        image_size = (img.height, img.width)
                    if (img.height, img.width) != tuple(image_size):
                        img = img.resize((image_size[1], image_size[0]), Image.BILINEAR)
                    arr = np.asarray(img, dtype=np.float32) / 255.0
            except (OSError, UnidentifiedImageError, ValueError) as exc:
                skipped.append((str(file), f"unreadable image: {exc}"))
                continue
            images.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
            labels.append(len(names))
            got += 1
        if got == 0:
            skipped.append((str(class_dir), "class folder has no readable image"))
            continue
        names.append(class_dir.name)
    if not images:
        raise ValueError(f"{root}: no readable images found")
    if len(names) < 2:
        raise ValueError(f"{root}: need at least two classes with images, found {len(names)}")
    x = np.stack(images).astype(np.float32)
    return LabeledArrays(x, np.asarray(labels, dtype=np.int64), names, name=root.name, skipped=skipped)
