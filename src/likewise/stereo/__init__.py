"""Stereo correspondence from learned patch similarity (Zbontar & LeCun 2016, MC-CNN).

A small fully convolutional network embeds every pixel of both images
(:class:`PatchNet`, trained with likewise's triplet loss on synthetic pairs rendered from
scikit-image photographs); the cost volume of their dot products
(:func:`cost_volume`) is aggregated by semi-global matching (:func:`sgm`), and the
winner-takes-all disparity is checked, refined, filled and filtered
(:mod:`likewise.stereo.postprocess`). :func:`compute_disparity` does it all with the model
shipped in the package; :func:`bad_pixel_rate` and :func:`end_point_error` score a result.
The ``likewise stereo`` command wraps it (docs/stereo.md).
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> the module that defines it (imported on first access)
_LAZY = {
    "PatchNet": "likewise.stereo.network",
    "standardize": "likewise.stereo.network",
    "cost_volume": "likewise.stereo.cost_volume",
    "winner_takes_all": "likewise.stereo.cost_volume",
    "census_cost_volume": "likewise.stereo.census",
    "census_transform": "likewise.stereo.census",
    "sgm": "likewise.stereo.sgm",
    "left_right_check": "likewise.stereo.postprocess",
    "right_disparity": "likewise.stereo.postprocess",
    "subpixel": "likewise.stereo.postprocess",
    "fill_invalid": "likewise.stereo.postprocess",
    "median_filter": "likewise.stereo.postprocess",
    "bad_pixel_rate": "likewise.stereo.metrics",
    "end_point_error": "likewise.stereo.metrics",
    "coverage": "likewise.stereo.metrics",
    "disparity_metrics": "likewise.stereo.metrics",
    "synthetic_pair": "likewise.stereo.synthetic",
    "SyntheticPair": "likewise.stereo.synthetic",
    "TrainSettings": "likewise.stereo.training",
    "train_patch_net": "likewise.stereo.training",
    "save_patch_net": "likewise.stereo.pretrained",
    "load_patch_net": "likewise.stereo.pretrained",
    "MatchSettings": "likewise.stereo.match",
    "compute_disparity": "likewise.stereo.match",
    "disparity_from_volume": "likewise.stereo.match",
    "read_image": "likewise.stereo.images",
    "disparity_png": "likewise.stereo.images",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'likewise.stereo' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = list(_LAZY)
