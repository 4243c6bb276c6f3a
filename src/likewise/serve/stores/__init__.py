"""Gallery stores: :class:`EmbeddedStore` (FAISS snapshot + write log) and :class:`MilvusStore`."""

from __future__ import annotations

import os
from typing import Any

from likewise.serve.stores.base import Conflict, GalleryStore, Hit


def open_store(
    spec: str | os.PathLike, dim: int, metric: str, gallery: Any = None, **options: Any
) -> GalleryStore:
    """The store named by ``spec``: ``milvus:PATH.db`` / ``milvus://HOST:PORT`` (Milvus), else a
    directory (the embedded store). ``gallery``: a labelled :class:`likewise.Index` that seeds a
    new store (the model's gallery); ``options`` go to :class:`EmbeddedStore` (``compact_every``).
    """
    spec = os.fspath(spec)
    seed = gallery if gallery is not None and gallery.has_labels and len(gallery) else None
    if spec.startswith("milvus:"):
        from likewise.serve.stores.milvus import MilvusStore

        initial = None
        if seed is not None:
            initial = (seed.ids.tolist(), seed.vectors(), seed.labels.tolist())
        return MilvusStore(spec, dim, metric, initial=initial)
    from likewise.serve.stores.embedded import EmbeddedStore

    return EmbeddedStore(spec, dim, metric, initial=seed, **options)


__all__ = ["Conflict", "GalleryStore", "Hit", "open_store"]
