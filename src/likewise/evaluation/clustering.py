"""Clustering quality of embeddings: k-means, then agreement of clusters with labels.

* NMI: normalised mutual information, ``I(Y; K) / mean(H(Y), H(K))`` (arithmetic mean,
  scikit-learn's default; Vinh, Epps & Bailey 2010);
* AMI: NMI adjusted for chance (0 for random clusters);
* ARI: adjusted Rand index (Hubert & Arabie 1985).

With ``metric="cosine"`` the embeddings are L2-normalised before k-means (so the
clusters follow the angle, as retrieval with cosine similarity does).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from likewise.evaluation._inputs import (
    embeddings_tensor,
    range_exponent,
    scale_by_power_of_two,
)
from likewise.inputs import labels_array


def clustering_scores(
    embeddings: Any,
    labels: Any,
    n_clusters: int | None = None,
    *,
    metric: str = "cosine",
    n_init: int = 3,
    seed: int = 0,
) -> dict[str, float]:
    """k-means on ``embeddings [n, D]`` -> ``{"nmi", "ami", "ari", "n_clusters"}``.

    ``n_clusters`` defaults to the number of distinct labels.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score, normalized_mutual_info_score

    t = embeddings_tensor(embeddings, "embeddings", "cpu").double()
    # huge or tiny values: rescale exactly by a power of two (k-means is scale-equivariant)
    x = scale_by_power_of_two(t, range_exponent(t)).numpy()
    y = labels_array(labels, "labels", x.shape[0])
    if not isinstance(metric, str):
        raise TypeError(f"metric must be a string, got {type(metric).__name__}")
    if metric not in ("cosine", "euclidean"):
        raise ValueError(f"metric must be 'cosine' or 'euclidean' for k-means, got {metric!r}")
    if n_clusters is None:
        n_clusters = int(np.unique(y).size)
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, int | np.integer):
        raise TypeError(f"n_clusters must be a positive integer, got {n_clusters!r}")
    if n_clusters < 1:
        raise ValueError(f"n_clusters must be a positive integer, got {n_clusters!r}")
    if isinstance(n_init, bool) or not isinstance(n_init, int | np.integer):
        raise TypeError(f"n_init must be a positive integer, got {n_init!r}")
    if n_init < 1:
        raise ValueError(f"n_init must be a positive integer, got {n_init!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    if n_clusters > x.shape[0]:
        raise ValueError(f"n_clusters={n_clusters} exceeds the number of embeddings ({x.shape[0]})")
    if metric == "cosine":
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        x = x / np.where(norm > 0, norm, 1.0)
    pred = KMeans(n_clusters=int(n_clusters), n_init=n_init, random_state=seed).fit_predict(x)
    return {
        "nmi": float(normalized_mutual_info_score(y, pred)),
        "ami": float(adjusted_mutual_info_score(y, pred)),
        "ari": float(adjusted_rand_score(y, pred)),
        "n_clusters": int(n_clusters),
    }
