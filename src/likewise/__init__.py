"""likewise: similarity learning in PyTorch.

Losses, miners and samplers (``likewise.losses``, ``likewise.mining``,
``likewise.sampling``), evaluation (``likewise.evaluation``), search
(``likewise.Index``), linear metric learning (``likewise.linear``), training
(``likewise.train``) and the ``likewise`` command.
"""

from likewise.similarity import pairwise_distance, pairwise_similarity, relation_masks

__version__ = "0.1.0"

__all__ = ["__version__", "pairwise_distance", "pairwise_similarity", "relation_masks"]
