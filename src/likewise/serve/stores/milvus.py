"""The gallery in Milvus: Milvus Lite (``milvus:PATH.db``, embedded, file-backed) or a Milvus
server or cluster (``milvus://HOST:PORT``), through one client (``pymilvus``, extra ``milvus``).

One collection (default ``likewise``; ``?collection=NAME`` in the URI chooses another)
with fields ``id`` (INT64, primary), ``vector`` (FLOAT_VECTOR), ``label`` (the label as
JSON text, so integers and strings both round-trip) and ``metadata`` (JSON). It is
created with strong consistency, so a search sees every acknowledged write. Metrics:
``cosine`` stores L2-normalised vectors under ``IP``; ``dot`` is ``IP``; ``euclidean`` is
``L2``, whose squared distance is turned into ``-distance`` (the scores of
:mod:`likewise.index`). A write is acknowledged once Milvus acknowledged the insert or
delete (Milvus logs it before answering).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import numpy as np

from likewise.serve.stores.base import GalleryStore, Hit, check_label_kind, new_ids

DEFAULT_COLLECTION = "likewise"
_METRIC = {"cosine": "IP", "dot": "IP", "euclidean": "L2"}
#: rows per insert call when seeding and per page when listing ids
_PAGE = 4096
#: rows inserted between flushes: Milvus Lite searches rows not yet flushed (a "growing"
#: segment) by a slow path — 10 s for 10 queries over 100,000 such rows here, 0.4 s once flushed
FLUSH_ROWS = 4096


def parse_uri(spec: str) -> tuple[str, str]:
    """``milvus:PATH.db`` -> (``PATH.db``, collection); ``milvus://HOST:PORT`` -> (``http://HOST:PORT``,
    collection)."""
    parts = urlsplit(spec)
    collection = parse_qs(parts.query).get("collection", [DEFAULT_COLLECTION])[0]
    if not collection.replace("_", "").isalnum() or not collection[0].isalpha():
        raise ValueError(f"Milvus collection names are letters, digits and '_', got {collection!r}")
    if spec.startswith("milvus://"):
        if not parts.hostname or parts.port is None:
            raise ValueError(f"expected milvus://HOST:PORT, got {spec!r}")
        return f"http://{parts.hostname}:{parts.port}", collection
    path = spec[len("milvus:") :].split("?", 1)[0]
    if not path.endswith(".db"):
        raise ValueError(f"a Milvus Lite store is milvus:PATH.db, got {spec!r}")
    return path, collection


class MilvusStore(GalleryStore):
    """A gallery in a Milvus collection (see the module doc).

    Args:
        spec: ``milvus:PATH.db`` or ``milvus://HOST:PORT`` (optionally ``?collection=NAME``).
        dim, metric: the model's embedding size and similarity.
        initial: ``(ids, vectors, labels)`` that seed a *new* collection (the model's gallery), or ``None``.
    """

    def __init__(
        self,
        spec: str,
        dim: int,
        metric: str,
        initial: tuple[Sequence[int], np.ndarray, Sequence[Any]] | None = None,
    ) -> None:
        try:
            from pymilvus import MilvusClient
        except ImportError:
            raise ValueError("a Milvus store needs pymilvus (pip install 'likewise[milvus]')") from None
        if metric not in _METRIC:
            raise ValueError(f"unknown metric {metric!r}")
        self.spec, self.dim, self.metric = spec, int(dim), metric
        uri, self.collection = parse_uri(spec)
        self._lock = threading.RLock()
        self.client = MilvusClient(uri)
        c = self.collection
        if not self.client.has_collection(c):
            self._create()
            if initial is not None and len(initial[0]):
                ids, vectors, labels = initial
                for start in range(0, len(ids), _PAGE):
                    part = slice(start, start + _PAGE)
                    n = len(ids[part])
                    self._insert(self._prepare(vectors[part]), labels[part], [None] * n, ids[part])
                self.client.flush(c)
        else:
            fields = {f["name"]: f for f in self.client.describe_collection(c)["fields"]}
            have = fields.get("vector", {}).get("params", {}).get("dim")
            if set(fields) != {"id", "vector", "label", "metadata"} or int(have or -1) != self.dim:
                raise ValueError(
                    f"Milvus collection {c!r} is not a likewise gallery of {self.dim}-dimensional vectors"
                )
            self.client.load_collection(c)
        self._unflushed = 0
        self._ids = self._all_ids()
        self.next_id = int(max(self._ids)) + 1 if self._ids else 0
        self._kind: str | None = None
        if self._ids:
            row = self.client.get(c, ids=[next(iter(self._ids))], output_fields=["label"])
            self._kind = "int" if isinstance(json.loads(row[0]["label"]), int) else "str"

    def describe(self) -> str:
        return f"{self.spec}"

    def _create(self) -> None:
        from pymilvus import DataType, MilvusClient

        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("label", DataType.VARCHAR, max_length=1024)
        schema.add_field("metadata", DataType.JSON, nullable=True)
        params = self.client.prepare_index_params()
        params.add_index("vector", index_type="FLAT", metric_type=_METRIC[self.metric])
        self.client.create_collection(
            self.collection, schema=schema, index_params=params, consistency_level="Strong"
        )

    def _all_ids(self) -> set[int]:
        it = self.client.query_iterator(
            self.collection, batch_size=_PAGE, filter="id >= 0", output_fields=["id"]
        )
        ids: set[int] = set()
        try:
            while page := it.next():
                ids.update(int(r["id"]) for r in page)
        finally:
            it.close()
        return ids

    def _prepare(self, vectors: np.ndarray) -> np.ndarray:
        v = np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        if self.metric == "cosine":
            norms = np.linalg.norm(v, axis=1, keepdims=True)
            v = v / np.where(norms > 0, norms, 1.0).astype(np.float32)
        return v

    def _insert(
        self, v: np.ndarray, labels: Sequence[Any], metadata: Sequence[Any], ids: Sequence[int]
    ) -> None:
        rows = [
            {"id": int(i), "vector": row.tolist(), "label": json.dumps(label), "metadata": md}
            for i, row, label, md in zip(ids, v, labels, metadata)
        ]
        self.client.insert(self.collection, rows)

    def __len__(self) -> int:
        return len(self._ids)

    def add(
        self,
        vectors: np.ndarray,
        labels: Sequence[Any],
        metadata: Sequence[dict[str, Any] | None],
        ids: Sequence[int | None],
    ) -> list[int]:
        labels = [x.item() if isinstance(x, np.generic) else x for x in labels]
        with self._lock:
            kind = check_label_kind(labels, self._kind if self._ids else None)
            out, nxt = new_ids(ids, self.next_id, lambda given: [i for i in given if i in self._ids])
            self._insert(self._prepare(vectors), labels, metadata, out)
            self._ids.update(out)
            self.next_id, self._kind = nxt, kind
            self._unflushed += len(out)
            if self._unflushed >= FLUSH_ROWS:  # seal the new rows, so that searches stay fast
                self.client.flush(self.collection)
                self._unflushed = 0
        return out

    def remove(self, item_id: int) -> bool:
        with self._lock:
            if item_id not in self._ids:
                return False
            self.client.delete(self.collection, ids=[int(item_id)])
            self._ids.discard(item_id)
        return True

    def search(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        with self._lock:
            n = len(self._ids)
        if n == 0:
            return [[] for _ in range(len(queries))]
        q = self._prepare(queries)
        found = self.client.search(
            self.collection,
            data=q.tolist(),
            limit=min(k, n),
            output_fields=["label", "metadata"],
            search_params={"metric_type": _METRIC[self.metric]},
            consistency_level="Strong",
        )
        out = []
        for row in found:
            hits = []
            for h in row:
                d = float(h["distance"])
                score = -float(np.sqrt(max(d, 0.0))) if self.metric == "euclidean" else d
                entity = h["entity"]
                hits.append(Hit(int(h["id"]), json.loads(entity["label"]), score, entity.get("metadata")))
            out.append(hits)
        return out

    def close(self) -> None:
        with self._lock:
            if self._unflushed:
                self.client.flush(self.collection)
            self.client.close()
