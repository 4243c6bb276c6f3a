"""Evaluate embeddings: retrieval, verification, downstream tasks and geometry.

Every function accepts NumPy arrays and torch tensors (CPU or GPU).

* retrieval: :func:`retrieval_metrics` (exact, streamed), :func:`average_precision`
* verification: :func:`verification_metrics`, :func:`verification_pairs`
"""

from likewise.evaluation.ranking import average_precision
from likewise.evaluation.retrieval import retrieval_metrics
from likewise.evaluation.verification import verification_metrics, verification_pairs

__all__ = [
    "average_precision",
    "retrieval_metrics",
    "verification_metrics",
    "verification_pairs",
]
