"""A 2-D map of embeddings coloured by label (t-SNE from scikit-learn; UMAP when installed).

Large inputs are subsampled (``max_points``, seeded, without replacement) before
projecting: a map of a couple of thousand points already shows the structure.
t-SNE runs single-threaded (OpenMP and BLAS limited to one thread): the result
is reproducible for a seed, and it does not slow to a crawl on a machine whose
cores are busy (OpenMP threads spin while waiting for each other); about 10-30 s
for 2,000 points.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from likewise.report._figure import new_figure, to_numpy

METHODS = ("auto", "tsne", "umap", "pca")
_PRETTY = {"tsne": "t-SNE", "umap": "UMAP", "pca": "PCA"}


def _umap_available() -> bool:
    try:
        import umap  # noqa: F401
    except ImportError:
        return False
    return True


def project_2d(
    embeddings: Any, *, method: str = "auto", max_points: int = 2000, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, str]:
    """Project (a seeded subsample of) embeddings to 2-D.

    Args:
        embeddings: ``[n, D]`` NumPy array or tensor.
        method: ``"auto"`` (UMAP if importable, else t-SNE), ``"tsne"``, ``"umap"``, ``"pca"``.
            Fewer than 10 points always use PCA (t-SNE needs perplexity < n).
        max_points: subsample to at most this many points.
        seed: seed of the subsample and of the projection.

    Returns:
        ``(coords [m, 2], rows [m], method used)``; ``rows`` index the input.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    x = to_numpy(embeddings, "embeddings").astype(np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"embeddings must be [n >= 2, D], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or infinite values")
    if isinstance(max_points, bool) or not isinstance(max_points, int) or max_points < 2:
        raise ValueError(f"max_points must be an integer >= 2, got {max_points!r}")
    rng = np.random.default_rng(seed)
    rows = np.arange(x.shape[0])
    if x.shape[0] > max_points:
        rows = np.sort(rng.choice(x.shape[0], size=max_points, replace=False))
    x = x[rows]
    if method == "auto":
        method = "umap" if _umap_available() else "tsne"
    if method == "umap" and not _umap_available():
        raise ValueError("method='umap' needs the umap-learn package, which is not installed")
    if x.shape[0] < 10 or x.shape[1] <= 2:
        method = "pca"
    if method == "pca":
        centred = x - x.mean(0)
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        coords = centred @ vt[:2].T
        if coords.shape[1] < 2:
            coords = np.c_[coords, np.zeros(len(coords))]
    elif method == "tsne":
        from sklearn.manifold import TSNE
        from threadpoolctl import threadpool_limits

        perplexity = float(min(30.0, (x.shape[0] - 1) / 3))
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed)
        with threadpool_limits(limits=1):  # reproducible, and no OpenMP spinning on a busy machine
            coords = tsne.fit_transform(x)
    else:
        import umap

        coords = umap.UMAP(n_components=2, random_state=seed).fit_transform(x)
    return np.asarray(coords, dtype=np.float64), rows, method


def plot_embedding_map(
    embeddings: Any, labels: Any, *, method: str = "auto", max_points: int = 2000, seed: int = 0
) -> Any:
    """Scatter plot of :func:`project_2d`, one colour per label (legend up to 20 labels)."""
    y = to_numpy(labels, "labels").reshape(-1)
    n = to_numpy(embeddings, "embeddings").shape[0]
    if y.shape[0] != n:
        raise ValueError(f"labels has {y.shape[0]} entries but there are {n} embeddings")
    coords, rows, used = project_2d(embeddings, method=method, max_points=max_points, seed=seed)
    y = y[rows]
    classes, codes = np.unique(y, return_inverse=True)
    codes = codes.reshape(-1)
    fig = new_figure(6.5, 5.5)
    ax = fig.subplots()
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(classes) <= 10 else "tab20"]
    colours = cmap(codes % cmap.N)
    ax.scatter(
        coords[:, 0], coords[:, 1], c=colours, s=10 if len(rows) > 500 else 22, alpha=0.85, linewidths=0
    )
    if len(classes) <= 20:
        for c, name in enumerate(classes):
            ax.scatter([], [], color=cmap(c % cmap.N), s=30, label=str(name))
        ax.legend(title="label", fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    sub = f"{len(rows):,} of {n:,} points" if len(rows) < n else f"{n:,} points"
    ax.set_title(
        f"Embeddings in 2-D ({_PRETTY[used]}, {sub}, {len(classes)} labels)\n"
        "one colour per label: tight, separate clusters are good",
        fontsize=10,
    )
    ax.set_xticks([])
    ax.set_yticks([])
    return fig
