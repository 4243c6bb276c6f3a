"""The service without HTTP: a loaded model, a gallery store, thresholds, micro-batched calls.

Thresholds. ``/match`` answers with the open-set rule of :class:`likewise.Matcher`
(``k`` neighbours scoring ``>= threshold`` vote; most votes wins, a tie goes to
the best-scored label; none above the threshold is "unknown"), using the
threshold and ``k`` of the matcher saved with the model. Its calibration data is
the model's gallery (the matcher was calibrated on it leave-one-out), so a request
may set a target open-set false-accept rate ``far``: the threshold is then
re-calibrated on that gallery with :func:`likewise.matching.calibrate` (cached per
``far``). ``/verify`` compares two inputs with the *pair-level* threshold
(:func:`likewise.matching.calibrate_from_embeddings`, best F1 on the pairs of the
same gallery): a threshold for the best of a gallery is not one for a single pair.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from likewise.serve.batching import MicroBatcher
from likewise.serve.inputs import Split
from likewise.serve.stores import GalleryStore, Hit, open_store

#: different ``far`` values whose thresholds are kept
_FAR_CACHE = 64


class NotAvailable(Exception):
    """What the request needs is missing (no calibrated matcher, an empty gallery): HTTP 409."""


def decide(hits: Sequence[Hit], threshold: float) -> dict[str, Any]:
    """The open-set answer for one query's neighbours (best first), as :meth:`Matcher.match`."""
    accepted = [h for h in hits if h.score >= threshold]
    if not accepted:
        best = hits[0]
        return {"answer": "unknown", "label": None, "score": best.score, "id": best.id}
    votes = Counter(h.label for h in accepted)
    most = max(votes.values())
    winner = next(h for h in accepted if votes[h.label] == most)
    return {"answer": winner.label, "label": winner.label, "score": winner.score, "id": winner.id}


def similarity(a: np.ndarray, b: np.ndarray, metric: str) -> float:
    """The score of one pair, as :class:`likewise.Index` scores: cosine, dot, or -Euclidean distance."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    if metric == "euclidean":
        return -float(np.linalg.norm(a64 - b64))
    if metric == "cosine":
        na, nb = np.linalg.norm(a64), np.linalg.norm(b64)
        return float(a64 @ b64 / (na * nb)) if na > 0 and nb > 0 else 0.0
    return float(a64 @ b64)


def _gallery_dir(model_dir: Path) -> Path | None:
    """The model's gallery index directory (its matcher's, else its own), checked by ``Index.load``."""
    for sub in ("matcher/index", "index"):
        if (model_dir / sub).is_dir():
            return model_dir / sub
    return None


class Service:
    """Model + store + thresholds (see the module doc).

    Args:
        model_dir: an exported model directory (:func:`likewise.export.save_model`).
        store: the gallery store spec (a directory, ``milvus:PATH.db`` or ``milvus://HOST:PORT``).
        max_batch: most rows per model call / index search.
        max_wait_ms: how long a batch waits for more requests.
        max_queue: most requests waiting per batcher before answering 503.
        compact_every: embedded store: writes between snapshots.
    """

    def __init__(
        self,
        model_dir: str | Path,
        store: str | Path = "likewise-store",
        *,
        max_batch: int = 64,
        max_wait_ms: float = 2.0,
        max_queue: int = 256,
        compact_every: int = 10_000,
    ) -> None:
        from likewise.export import load
        from likewise.index import Index

        self.model = load(model_dir)
        self.dim, self.metric = self.model.embedding_dim, self.model.distance
        self.name = f"{Path(model_dir).resolve().name} ({self.model.meta['model']['trunk']})"
        matcher = self.model.matcher
        self.threshold: float | None = matcher.threshold if matcher is not None else None
        self.match_k = matcher.k if matcher is not None else 1
        self.calibration = matcher.calibration if matcher is not None else None
        self._calibration_index = matcher.index if matcher is not None else None
        self._far_thresholds: dict[float, float] = {}
        self.pair_threshold = self._pair_threshold()
        gallery_dir = _gallery_dir(self.model.path)
        seed = Index.load(gallery_dir) if gallery_dir is not None else None  # a copy the store may change
        options = {} if str(store).startswith("milvus:") else {"compact_every": compact_every}
        self.store: GalleryStore = open_store(store, self.dim, self.metric, gallery=seed, **options)
        batch = {"max_batch": max_batch, "max_wait_s": max_wait_ms / 1000.0, "max_queue": max_queue}
        self.embedder = MicroBatcher(self._embed_jobs, name="embed", **batch)
        self.searcher = MicroBatcher(self._search_jobs, name="search", **batch)
        self.started = time.time()

    # -- batched calls (worker threads) ------------------------------------------

    def _embed_jobs(self, jobs: Sequence[np.ndarray]) -> list[np.ndarray]:
        out = self.model.embed(np.concatenate(jobs), batch_size=max(1, sum(len(j) for j in jobs)))
        return np.split(out, np.cumsum([len(j) for j in jobs])[:-1])

    def _search_jobs(self, jobs: Sequence[tuple[np.ndarray, int]]) -> list[list[list[Hit]]]:
        k = max(job[1] for job in jobs)
        hits = self.store.search(np.concatenate([job[0] for job in jobs]), k)
        out, start = [], 0
        for q, kk in jobs:
            out.append([row[:kk] for row in hits[start : start + len(q)]])
            start += len(q)
        return out

    # -- requests ------------------------------------------------------------------

    async def embed(self, split: Split) -> np.ndarray:
        """All embeddings of a request's inputs, in order (model inputs run micro-batched)."""
        raw = await self.embedder.submit(split.raw, len(split.raw)) if len(split.raw) else split.raw[:0]
        return split.assemble(np.asarray(raw, np.float32).reshape(-1, self.dim))

    async def search(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        if len(self.store) == 0:
            raise NotAvailable("the gallery is empty: add items with POST /items first")
        return await self.searcher.submit((queries, k), len(queries))

    async def match(self, queries: np.ndarray, far: float | None) -> tuple[list[dict[str, Any]], float]:
        threshold = await self.threshold_for(far)
        hits = await self.search(queries, self.match_k)
        if not all(hits):  # emptied by deletes since the check in search
            raise NotAvailable("the gallery is empty: add items with POST /items first")
        return [decide(row, threshold) for row in hits], threshold

    async def threshold_for(self, far: float | None) -> float:
        if far is None:
            if self.threshold is None:
                raise NotAvailable("the model has no calibrated matcher, so /match has no threshold")
            return self.threshold
        if self._calibration_index is None:
            raise NotAvailable("the model has no calibration data, so a target 'far' cannot be set")
        if far not in self._far_thresholds:
            value = await asyncio.to_thread(self._calibrate, far)
            if len(self._far_thresholds) >= _FAR_CACHE:
                self._far_thresholds.pop(next(iter(self._far_thresholds)))
            self._far_thresholds[far] = value
        return self._far_thresholds[far]

    def _calibrate(self, far: float) -> float:
        from likewise.matching import calibrate

        index = self._calibration_index
        matcher = calibrate(
            index, index.vectors(), index.labels, target="far", far=far, k=self.match_k, ids=index.ids
        )
        return matcher.threshold

    def _pair_threshold(self) -> float | None:
        index = self._calibration_index
        if index is None or np.unique(index.labels).size < 2:
            return None
        from likewise.matching import calibrate_from_embeddings

        value = calibrate_from_embeddings(index.vectors(), index.labels, metric=self.metric, target="f1")
        return value if math.isfinite(value) else None

    def verify(self, a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
        score = similarity(a, b, self.metric)
        t = self.pair_threshold
        return {"score": score, "same": None if t is None else bool(score >= t), "threshold": t}

    async def add(
        self, split: Split, labels: list[Any], metadata: list[Any], ids: list[int | None]
    ) -> list[int]:
        vectors = await self.embed(split)
        return await asyncio.to_thread(self.store.add, vectors, labels, metadata, ids)

    async def remove(self, item_id: int) -> bool:
        return await asyncio.to_thread(self.store.remove, item_id)

    async def close(self) -> None:
        await self.embedder.close()
        await self.searcher.close()
        await asyncio.to_thread(self.store.close)
