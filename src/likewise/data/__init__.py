"""Data: bundled real data sets, users' image folders and arrays, deterministic splits."""

from __future__ import annotations

from pathlib import Path

from likewise.data.arrays import ArrayDataset, LabeledArrays, encode_labels, load_array_dataset
from likewise.data.bundled import BUNDLED, load_bundled, load_digits, load_mnist5k
from likewise.data.folder import load_image_folder, load_images
from likewise.data.pairs import PairRelation, read_pairs, read_triplets
from likewise.data.splits import class_disjoint_split, stratified_split


def load_data(
    spec: str | Path,
    labels: str | Path | None = None,
    *,
    image_size: int | tuple[int, int] | None = None,
    grayscale: bool = False,
) -> LabeledArrays:
    """Load a data set named by ``spec``.

    ``"digits"`` / ``"mnist5k"`` (bundled), a directory (image folder, one
    sub-folder per class) or a features file (``.npy``/``.npz``/``.csv``) with a
    ``labels`` file.
    """
    text = str(spec)
    if text in BUNDLED:
        return load_bundled(text)
    path = Path(text.rpartition(":")[0] if text.lower().rpartition(":")[0].endswith(".npz") else text)
    if path.is_dir():
        return load_image_folder(path, image_size=image_size, grayscale=grayscale)
    if not path.exists():
        raise FileNotFoundError(
            2, f"No such file or directory (and not a bundled data set {' / '.join(BUNDLED)})", str(path)
        )
    return load_array_dataset(text, labels)


__all__ = [
    "ArrayDataset",
    "BUNDLED",
    "LabeledArrays",
    "PairRelation",
    "class_disjoint_split",
    "encode_labels",
    "load_array_dataset",
    "load_bundled",
    "load_data",
    "load_digits",
    "load_image_folder",
    "load_images",
    "load_mnist5k",
    "read_pairs",
    "read_triplets",
    "stratified_split",
]
