"""Images from a folder: a labelled image folder (one sub-folder per class), or any folder of images.

Images are read with Pillow, converted to RGB (or grayscale) and scaled to [0, 1]:
``x`` is ``[N, C, H, W]`` float32. Every image is resized (bilinear) to
``image_size``; without one, to the size of the first readable image, so images of
other sizes are resized to that one, never refused. Unreadable or corrupt files are
skipped and reported in ``skipped`` (path, reason), never a crash.

* :func:`load_image_folder` — one sub-folder per class (its name is the class name);
  empty class folders are skipped and reported too. An error is raised when nothing
  readable is left or fewer than two classes remain.
* :func:`load_images` — every image under a folder (sub-folders included, no labels),
  in sorted path order, with the file each row came from (for ``likewise embed``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from likewise.data.arrays import LabeledArrays

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _size(image_size: tuple[int, int] | int | None) -> tuple[int, int] | None:
    if isinstance(image_size, int):
        return (image_size, image_size)
    return None if image_size is None else (int(image_size[0]), int(image_size[1]))


def _image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively, hidden entries left out), sorted."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    )


class _Reader:
    """Reads images as ``[C, H, W]`` arrays, all of one size (the first image's, by default)."""

    def __init__(self, image_size: tuple[int, int] | int | None, grayscale: bool) -> None:
        self.size = _size(image_size)
        self.grayscale = grayscale

    def __call__(self, file: Path) -> np.ndarray | str:
        """The image, or the reason it could not be read."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(file) as img:
                img = img.convert("L" if self.grayscale else "RGB")
                if self.size is None:
                    self.size = (img.height, img.width)
                if (img.height, img.width) != self.size:
                    img = img.resize((self.size[1], self.size[0]), Image.BILINEAR)
                arr = np.asarray(img, dtype=np.float32) / 255.0
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            return f"unreadable image: {exc}"
        return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def load_image_folder(
    root: str | Path,
    *,
    image_size: tuple[int, int] | int | None = None,
    grayscale: bool = False,
) -> LabeledArrays:
    """A labelled image folder: ``root/<class name>/**/<image>``."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(2, "No such directory", str(root))
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise ValueError(f"{root}: no class sub-folders (expected one folder per class)")
    read = _Reader(image_size, grayscale)
    images: list[np.ndarray] = []
    labels: list[int] = []
    names: list[str] = []
    skipped: list[tuple[str, str]] = []
    for class_dir in class_dirs:
        got = 0
        for file in _image_files(class_dir):
            arr = read(file)
            if isinstance(arr, str):
                skipped.append((str(file), arr))
                continue
            images.append(arr)
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


def load_images(
    root: str | Path,
    *,
    image_size: tuple[int, int] | int | None = None,
    grayscale: bool = False,
) -> tuple[np.ndarray, list[str], list[tuple[str, str]]]:
    """Every image under ``root`` (no labels): ``(x [N, C, H, W], files, skipped)``.

    ``files[i]`` is the path of row ``i`` relative to ``root``; ``skipped`` lists the
    unreadable files as ``(path relative to root, reason)``. ``ValueError`` when no image
    can be read.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(2, "No such directory", str(root))
    read = _Reader(image_size, grayscale)
    images: list[np.ndarray] = []
    files: list[str] = []
    skipped: list[tuple[str, str]] = []
    candidates = _image_files(root)
    for file in candidates:
        arr = read(file)
        rel = file.relative_to(root).as_posix()
        if isinstance(arr, str):
            skipped.append((rel, arr))
        else:
            images.append(arr)
            files.append(rel)
    if not images:
        found = f"{len(candidates)} image files, none readable" if candidates else "no image files"
        raise ValueError(f"{root}: {found} ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return np.stack(images).astype(np.float32), files, skipped
