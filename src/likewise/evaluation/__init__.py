"""Evaluate embeddings: retrieval, verification, downstream tasks and geometry.

Every function accepts NumPy arrays and torch tensors (CPU or GPU).

* retrieval: :func:`retrieval_metrics` (exact, streamed), :func:`average_precision`
* verification: :func:`verification_metrics`, :func:`verification_pairs`,
  :func:`calibrate_threshold`, :func:`calibrate_from_embeddings`
* downstream: :func:`knn_accuracy`, :func:`knn_predict`, :func:`linear_probe`,
  :func:`clustering_scores`
* geometry: :func:`alignment`, :func:`uniformity`, :func:`effective_rank`,
  :func:`per_dimension_std`, :func:`collapse_indicators`
"""

from likewise.evaluation.classification import knn_accuracy, knn_predict, linear_probe
from likewise.evaluation.clustering import clustering_scores
from likewise.evaluation.geometry import (
    alignment,
    collapse_indicators,
    effective_rank,
    per_dimension_std,
    uniformity,
)
from likewise.evaluation.ranking import average_precision
from likewise.evaluation.retrieval import retrieval_metrics
from likewise.evaluation.verification import (
    calibrate_from_embeddings,
    calibrate_threshold,
    verification_metrics,
    verification_pairs,
)

__all__ = [
    "alignment",
    "average_precision",
    "calibrate_from_embeddings",
    "calibrate_threshold",
    "clustering_scores",
    "collapse_indicators",
    "effective_rank",
    "knn_accuracy",
    "knn_predict",
    "linear_probe",
    "per_dimension_std",
    "retrieval_metrics",
    "uniformity",
    "verification_metrics",
    "verification_pairs",
]
