"""likewise: similarity learning in PyTorch.

Losses, miners and samplers (``likewise.losses``, ``likewise.mining``,
``likewise.sampling``), evaluation (``likewise.evaluation``), search
(``likewise.Index``), calibrated matching (``likewise.Matcher``), linear metric
learning (``likewise.linear``), training (``likewise.train``), self-supervised
pre-training (``likewise.ssl``), exported models
(``likewise.load``) and the ``likewise`` command.

The names below are imported on first use, so ``import likewise`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from likewise.similarity import pairwise_distance, pairwise_similarity, relation_masks

__version__ = "0.1.0"

#: public name -> the module that defines it (imported on first access)
_LAZY = {
    "Index": "likewise.index",
    "Matcher": "likewise.matching.matcher",
    "calibrate": "likewise.matching.open_set",
    "calibrate_threshold": "likewise.evaluation.verification",
    "calibrate_from_embeddings": "likewise.evaluation.verification",
    "load": "likewise.export",
    "save_model": "likewise.export",
    "ExportedModel": "likewise.export",
    "retrieval_metrics": "likewise.evaluation",
    "verification_metrics": "likewise.evaluation",
    "verification_pairs": "likewise.evaluation",
    "average_precision": "likewise.evaluation",
    "build_model": "likewise.models",
    "EmbeddingModel": "likewise.models",
    "MemoryQueue": "likewise.memory",
    "CrossBatchMemory": "likewise.memory",
    "ClassBalancedBatchSampler": "likewise.sampling",
    "PairBatchSampler": "likewise.pair_sampling",
    "PairRelation": "likewise.data.pairs",
}
_SUBMODULES = (
    "augment",
    "data",
    "distributed",
    "evaluation",
    "export",
    "index",
    "linear",
    "losses",
    "matching",
    "memory",
    "mining",
    "models",
    "report",
    "sampling",
    "serve",
    "similarity",
    "ssl",
    "stereo",
    "train",
)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"likewise.{name}")
    raise AttributeError(f"module 'likewise' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))


__all__ = ["__version__", "pairwise_distance", "pairwise_similarity", "relation_masks", *_LAZY]
