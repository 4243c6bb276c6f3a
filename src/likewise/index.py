"""A FAISS-backed nearest-neighbour index with ids, labels and persistence.

``Index(dim, metric, kind)`` stores float32 vectors under int64 ids (and,
optionally, one class label per vector) and answers ``search(queries, k)``.

Metrics. Scores are always *similarities*: larger means closer.

* ``cosine``: inner product of L2-normalised vectors (stored vectors and queries
  are normalised; a zero vector stays zero and scores 0 against everything);
* ``dot``: raw inner product;
* ``euclidean``: the *negated* Euclidean distance ``-|q - x|_2`` (not squared),
  the convention of :func:`likewise.similarity.pairwise_similarity`, so that one
  threshold rule (``score >= t``) serves every metric.

Kinds.

* ``flat``: exact search (``IndexIDMap2`` over ``IndexFlatIP``/``IndexFlatL2``).
* ``hnsw``: graph search (``IndexIDMap2`` over ``IndexHNSWFlat``); params ``M``
  (default 32), ``ef_construction`` (200), ``ef_search`` (128; raised to ``k``
  when smaller). FAISS cannot delete from an HNSW graph, so :meth:`Index.remove`
  marks ids as *removed* (tombstones): they are excluded during the graph search
  (a FAISS ``IDSelector``), so results never contain them and still hold ``k``
  live neighbours. When tombstones exceed a quarter of the stored vectors, or a
  removed id is added again, the graph is rebuilt from the live vectors.
* ``ivf``: inverted lists (``IndexIVFFlat``); params ``nlist`` (default: chosen
  when trained, ``round(4 sqrt(n))`` capped at ``n // 39``, at least 1) and
  ``nprobe`` (default 32, capped at ``nlist``). IVF must be trained: by
  :meth:`Index.train`, or else on the vectors of the first :meth:`Index.add`.
  Training needs at least ``nlist`` vectors (a ``ValueError`` says so).

When fewer than ``k`` neighbours exist, the trailing columns of ``search`` hold
id ``-1`` and score ``-inf``. Ids are non-negative int64 (``-1`` is the
padding), unique within the index; by default consecutive, continuing after the
largest id ever used.

Persistence: :meth:`Index.save` writes a directory (atomically: built beside it
and renamed into place) holding ``index.faiss`` (``faiss.write_index``) and
``index.json`` (settings, ids, labels, tombstones); no pickle anywhere.
:meth:`Index.load` reads it back and checks it.

FAISS is imported lazily, so ``import likewise`` does not load it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from likewise.inputs import as_labels, as_matrix, integer_array, to_numpy
from likewise.io import atomic_directory, atomic_write_json

METRICS = ("cosine", "dot", "euclidean")
KINDS = ("flat", "hnsw", "ivf")
FORMAT = "likewise-index"
VERSION = 2
FAISS_FILE = "index.faiss"
#: index.json entries covered by its digest
_CONTENT_KEYS = (
    "files",
    "dim",
    "metric",
    "kind",
    "params",
    "next_id",
    "ids",
    "labels",
    "label_type",
    "removed",
)
_PARAMS = {
    "flat": {},
    "hnsw": {"M": 32, "ef_construction": 200, "ef_search": 128},
    "ivf": {"nlist": None, "nprobe": 32},
}
#: rebuild an HNSW graph when tombstones exceed this fraction of the stored vectors
_COMPACT_FRACTION = 0.25


# ----------------------------------------------------------------------------- input checks


def _as_ids(ids: Any, n: int) -> np.ndarray:
    arr = integer_array(ids, "ids")
    if arr.ndim != 1 or arr.shape[0] != n:
        raise ValueError(f"ids must be 1-D with one id per vector ({n}), got shape {arr.shape}")
    if arr.size and arr.min() < 0:
        raise ValueError(f"ids must be non-negative (-1 marks a missing neighbour), got {int(arr.min())}")
    uniq, counts = np.unique(arr, return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"duplicate ids in this batch: {uniq[counts > 1][:5].tolist()}")
    return arr


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    return int(k)


def _digest(content: dict[str, Any]) -> str:
    """SHA-256 of an index description's canonical JSON (detects an edited ``index.json``)."""
    import hashlib

    text = json.dumps(content, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _stored_ids(values: Any, name: str) -> np.ndarray:
    """Ids read from ``index.json``: integers, non-negative, unique."""
    if not isinstance(values, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in values
    ):
        raise ValueError(f"{name} must be a list of integers")
    arr = np.asarray(values, dtype=np.int64).reshape(-1)
    if arr.size and arr.min() < 0:
        raise ValueError(f"{name} must be non-negative")
    if np.unique(arr).size != arr.size:
        raise ValueError(f"{name} are not unique")
    return arr


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)  # float32 norms overflow near 1e19
    return (x / np.where(norms > 0, norms, 1.0)).astype(np.float32)


#: largest |value| for which float32 inner products and squared distances of ``dim`` terms stay finite
def _largest_safe_value(dim: int) -> float:
    return float(np.sqrt(np.finfo(np.float32).max / (4.0 * dim)))


# ----------------------------------------------------------------------------- the index


class Index:
    """Nearest-neighbour index over ``dim``-dimensional vectors (see the module doc).

    Args:
        dim: vector dimension.
        metric: ``"cosine"`` | ``"dot"`` | ``"euclidean"``.
        kind: ``"flat"`` (exact) | ``"hnsw"`` | ``"ivf"``.
        **params: kind-specific settings: hnsw ``M``, ``ef_construction``, ``ef_search``;
            ivf ``nlist``, ``nprobe``. Search-time ones can be changed later by
            :meth:`set_params`.

    Example::

        index = Index(128, metric="cosine", kind="hnsw")
        index.add(embeddings, labels=labels)
        scores, ids = index.search(queries, k=10)
    """

    def __init__(self, dim: int, metric: str = "cosine", kind: str = "flat", **params: Any) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim!r}")
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; expected one of {', '.join(METRICS)}")
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
        self.dim, self.metric, self.kind = int(dim), metric, kind
        self.params: dict[str, Any] = dict(_PARAMS[kind])
        self._set(params, construction=True)
        self._ids = np.empty(0, dtype=np.int64)  # live ids, insertion order
        self._labels: np.ndarray | None = None  # aligned with _ids, or None (no labels)
        self._removed = np.empty(0, dtype=np.int64)  # hnsw tombstones (still in the graph)
        self._next_id = 0
        self._sorted: tuple[np.ndarray, np.ndarray] | None = None  # (sorted ids, positions) cache
        self._faiss: Any = None
        if kind != "ivf" or self.params["nlist"] is not None:
            self._faiss = self._new_faiss()

    # -- settings ------------------------------------------------------------------

    def set_params(self, **params: Any) -> Index:
        """Change search-time settings (hnsw ``ef_search``, ivf ``nprobe``); returns self."""
        self._set(params, construction=False)
        return self

    def _set(self, params: dict[str, Any], construction: bool) -> None:
        allowed = (
            set(_PARAMS[self.kind]) if construction else {"ef_search", "nprobe"} & set(_PARAMS[self.kind])
        )
        for key, value in params.items():
            if key not in allowed:
                what = "parameters" if construction else "search-time parameters"
                raise ValueError(
                    f"unknown {what} for kind={self.kind!r}: {key!r} (allowed: {sorted(allowed) or 'none'})"
                )
            if value is None and key == "nlist":
                continue
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{key} must be a positive integer, got {value!r}")
            self.params[key] = int(value)

    # -- basic facts -----------------------------------------------------------------

    def __len__(self) -> int:
        """Number of live (not removed) vectors."""
        return int(self._ids.size)

    def __repr__(self) -> str:
        return f"Index(dim={self.dim}, metric={self.metric!r}, kind={self.kind!r}, n={len(self)})"

    @property
    def ids(self) -> np.ndarray:
        """Live ids in insertion order (a copy)."""
        return self._ids.copy()

    @property
    def labels(self) -> np.ndarray | None:
        """Labels aligned with :attr:`ids` (a copy), or None when the index has none."""
        return None if self._labels is None else self._labels.copy()

    @property
    def has_labels(self) -> bool:
        return self._labels is not None

    @property
    def is_trained(self) -> bool:
        """False only for an IVF index that has not been trained yet."""
        return self._faiss is not None and bool(self._faiss.is_trained)

    # -- building ------------------------------------------------------------------

    def _faiss_metric(self) -> int:
        import faiss

        return faiss.METRIC_L2 if self.metric == "euclidean" else faiss.METRIC_INNER_PRODUCT

    def _new_faiss(self) -> Any:
        import faiss

        if self.kind == "flat":
            flat = faiss.IndexFlatL2(self.dim) if self.metric == "euclidean" else faiss.IndexFlatIP(self.dim)
            return faiss.IndexIDMap2(flat)
        if self.kind == "hnsw":
            graph = faiss.IndexHNSWFlat(self.dim, self.params["M"], self._faiss_metric())
            graph.hnsw.efConstruction = self.params["ef_construction"]
            return faiss.IndexIDMap2(graph)
        quantizer = faiss.IndexFlatL2(self.dim) if self.metric == "euclidean" else faiss.IndexFlatIP(self.dim)
        ivf = faiss.IndexIVFFlat(quantizer, self.dim, self.params["nlist"], self._faiss_metric())
        ivf.cp.min_points_per_centroid = 1  # no FAISS warning on stderr for small training sets
        self._quantizer = quantizer  # keep the Python object alive as long as the IVF index
        return ivf

    def _prepare(self, x: Any, name: str) -> np.ndarray:
        v = as_matrix(x, name, self.dim)
        if self.metric == "cosine":
            return _normalise(v)
        largest, limit = float(np.abs(v).max()), _largest_safe_value(self.dim)
        if largest > limit:
            raise ValueError(
                f"{name} hold values up to {largest:.3g}: {self.metric} scores of {self.dim}-d vectors "
                f"overflow float32 above {limit:.3g}; scale the vectors down (or use metric='cosine')"
            )
        return v

    def train(self, x: Any) -> Index:
        """Train an IVF index on ``x`` ``[n, dim]`` (no-op for flat/hnsw); returns self.

        With ``nlist`` unset it becomes ``round(4 sqrt(n))``, capped at ``n // 39``.
        Raises ``ValueError`` if already trained or if ``n < nlist``.
        """
        v = self._prepare(x, "training vectors")
        if self.kind != "ivf":
            return self
        if self.is_trained:
            raise ValueError("this IVF index is already trained")
        self._train(v)
        return self

    def _train(self, v: np.ndarray) -> None:
        n = v.shape[0]
        if self.params["nlist"] is None:
            self.params["nlist"] = int(max(1, min(round(4 * np.sqrt(n)), n // 39)))
            self._faiss = self._new_faiss()
        nlist = self.params["nlist"]
        if n < nlist:
            raise ValueError(
                f"an IVF index with nlist={nlist} needs at least {nlist} training vectors, got {n}; "
                "train on more vectors, pass a smaller nlist, or use kind='flat'"
            )
        self._faiss.train(v)

    def add(self, embeddings: Any, ids: Any = None, labels: Any = None) -> np.ndarray:
        """Add vectors ``[n, dim]`` (NumPy or torch); returns their int64 ids.

        Args:
            embeddings: the vectors.
            ids: ``[n]`` non-negative unique int ids not already in the index
                (default: consecutive, after the largest id used so far).
            labels: ``[n]`` class labels (ints or strings). An index either has a label
                for every vector or none: once it holds vectors, every add must agree.

        An untrained IVF index is first trained on these vectors.
        """
        v = self._prepare(embeddings, "embeddings")
        n = v.shape[0]
        if ids is None:
            new_ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        else:
            new_ids = _as_ids(ids, n)
            clash = np.intersect1d(new_ids, self._ids)
            if clash.size:
                raise ValueError(f"ids already in the index: {clash[:5].tolist()}")
        new_labels = None if labels is None else as_labels(labels, "labels", n)
        self._check_label_kind(new_labels)
        if self.kind == "hnsw" and np.intersect1d(new_ids, self._removed).size:
            self.compact()
        if self._faiss is None or not self._faiss.is_trained:
            self._train(v)
        self._faiss.add_with_ids(v, new_ids)
        self._ids = np.concatenate([self._ids, new_ids])
        if new_labels is not None:
            self._labels = new_labels if self._labels is None else np.concatenate([self._labels, new_labels])
        self._next_id = max(self._next_id, int(new_ids.max()) + 1)
        self._sorted = None
        return new_ids

    def _check_label_kind(self, new: np.ndarray | None) -> None:
        if len(self) == 0:  # an empty index takes labelled or unlabelled vectors
            self._labels = None
            return
        if new is None and self._labels is not None:
            raise ValueError("this index stores a label for every vector: pass labels=")
        if new is not None and self._labels is None:
            raise ValueError("this index holds vectors without labels; it cannot take labelled ones")
        if new is not None and self._labels is not None:
            new_str, old_str = new.dtype.kind == "U", self._labels.dtype.kind == "U"
            if new_str != old_str:
                kinds = {True: "strings", False: "integers"}
                raise TypeError(f"labels are {kinds[new_str]} but the index holds {kinds[old_str]}")

    def remove(self, ids: Any) -> int:
        """Remove vectors by id; returns how many were removed. Unknown ids raise ``ValueError``."""
        arr = np.atleast_1d(to_numpy(ids, "ids"))
        if arr.size == 0:
            return 0
        arr = _as_ids(arr, arr.size)
        missing = np.setdiff1d(arr, self._ids)
        if missing.size:
            raise ValueError(f"ids not in the index: {missing[:5].tolist()}")
        keep = ~np.isin(self._ids, arr)
        if self.kind == "hnsw":
            self._removed = np.union1d(self._removed, arr)
        else:
            self._faiss.remove_ids(arr)
        self._ids = self._ids[keep]
        if self._labels is not None:
            self._labels = self._labels[keep]
        self._sorted = None
        if self.kind == "hnsw" and self._removed.size > _COMPACT_FRACTION * self._faiss.ntotal:
            self.compact()
        return int(arr.size)

    def compact(self) -> Index:
        """Rebuild an HNSW graph without its removed vectors (no-op otherwise); returns self."""
        import faiss

        if self.kind != "hnsw" or not self._removed.size:
            return self
        graph = faiss.downcast_index(self._faiss.index)
        stored_ids = faiss.vector_to_array(self._faiss.id_map)
        vectors = graph.reconstruct_n(0, graph.ntotal)
        live = ~np.isin(stored_ids, self._removed)
        fresh = self._new_faiss()
        if live.any():
            fresh.add_with_ids(np.ascontiguousarray(vectors[live]), stored_ids[live])
        self._faiss, self._removed = fresh, np.empty(0, dtype=np.int64)
        return self

    def vectors(self, ids: Any = None) -> np.ndarray:
        """The stored vectors ``[n, dim]`` (float32) of ``ids`` (default: all live ids, in :attr:`ids`
        order), as stored: L2-normalised for ``cosine``. Unknown ids raise ``ValueError``.

        An IVF index gets a hash-table id map for this (kept, and saved with the index)."""
        import faiss

        arr = self._ids if ids is None else np.atleast_1d(np.asarray(ids))
        if arr.size == 0:
            return np.zeros((0, self.dim), np.float32)
        arr = _as_ids(arr, arr.size)
        missing = np.setdiff1d(arr, self._ids)
        if missing.size:
            raise ValueError(f"ids not in the index: {missing[:5].tolist()}")
        if self.kind == "ivf" and self._faiss.direct_map.type != faiss.DirectMap.Hashtable:
            self._faiss.set_direct_map_type(faiss.DirectMap.Hashtable)
        return np.asarray(self._faiss.reconstruct_batch(arr), dtype=np.float32).reshape(arr.size, self.dim)

    # -- searching -----------------------------------------------------------------

    def search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` nearest stored vectors of each query.

        Returns:
            ``(scores, ids)``: float32 and int64 arrays ``[Q, k]``, best first. Scores are
            similarities (cosine / inner product / negated Euclidean distance). Missing
            neighbours (fewer than ``k`` stored) are id ``-1`` with score ``-inf``.
        """
        k = _check_k(k)
        q = self._prepare(queries, "queries")
        if len(self) == 0:
            raise ValueError("cannot search an empty index: add vectors first")
        # ``import faiss.contrib.torch_utils`` (pytorch-metric-learning does it) swaps ``search``
        # for a wrapper without ``params``; the original method is then kept as ``search_numpy``
        search = getattr(self._faiss, "search_numpy", self._faiss.search)
        raw, ids = search(q, k, params=self._search_params(k))
        scores = -np.sqrt(np.maximum(raw, 0)) if self.metric == "euclidean" else raw
        scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
        return scores, ids.astype(np.int64)

    def _search_params(self, k: int) -> Any:
        import faiss

        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW()
            params.efSearch = max(self.params["ef_search"], k)
            if self._removed.size:
                batch = faiss.IDSelectorBatch(self._removed)
                selector = faiss.IDSelectorNot(batch)
                params.sel = selector
                params._keep = (batch, selector)  # keep the selectors alive during the search
            return params
        if self.kind == "ivf":
            params = faiss.SearchParametersIVF()
            params.nprobe = min(self.params["nprobe"], self.params["nlist"])
            return params
        return None

    def labels_for(self, ids: Any, fill: Any = None) -> np.ndarray:
        """Labels of ``ids`` (any shape), same shape. Id ``-1`` (padding) gets ``fill``.

        ``fill`` defaults to ``-1`` for integer labels and ``""`` for string labels.
        Raises ``ValueError`` for an index without labels or ids not in it.
        """
        if self._labels is None:
            raise ValueError("this index has no labels (add them with add(..., labels=...))")
        arr = integer_array(ids, "ids")
        flat = arr.reshape(-1)
        if self._sorted is None:
            order = np.argsort(self._ids, kind="stable")
            self._sorted = (self._ids[order], order)
        sorted_ids, order = self._sorted
        if sorted_ids.size:
            pos = np.clip(np.searchsorted(sorted_ids, flat), 0, sorted_ids.size - 1)
            found = sorted_ids[pos] == flat
        else:
            pos, found = np.zeros_like(flat), np.zeros(flat.shape, dtype=bool)
        pad = flat == -1
        if (~found & ~pad).any():
            raise ValueError(f"ids not in the index: {flat[~found & ~pad][:5].tolist()}")
        if fill is None:
            fill = "" if self._labels.dtype.kind == "U" else -1
        out = np.empty(flat.shape, dtype=np.result_type(self._labels.dtype, np.asarray(fill).dtype))
        out[found] = self._labels[order[pos[found]]]
        out[pad] = fill
        return out.reshape(arr.shape)

    def search_labels(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`search` plus the neighbours' labels: ``(scores, ids, labels)``, each ``[Q, k]``."""
        if self._labels is None:
            raise ValueError("this index has no labels (add them with add(..., labels=...))")
        scores, ids = self.search(queries, k)
        return scores, ids, self.labels_for(ids)

    # -- persistence -----------------------------------------------------------------

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the index to directory ``path`` atomically.

        ``path`` may be new, an empty folder or an index written before (replaced once the
        new one is complete); with ``overwrite=True`` also another likewise artifact. Any
        other file or folder is refused with :class:`FileExistsError` (see
        :mod:`likewise.artifacts`).
        """
        with atomic_directory(path, "index", overwrite=overwrite) as tmp:
            self._write_into(tmp)
        return Path(path)

    def _write_into(self, directory: Path) -> None:
        import faiss

        from likewise.artifacts import file_record

        files = {}
        if self._faiss is not None:
            faiss.write_index(self._faiss, str(directory / FAISS_FILE))
            files[FAISS_FILE] = file_record(directory / FAISS_FILE)
        labels = label_type = None
        if self._labels is not None:
            labels = self._labels.tolist()
            label_type = "str" if self._labels.dtype.kind == "U" else "int"
        content = {
            "files": files,
            "dim": self.dim,
            "metric": self.metric,
            "kind": self.kind,
            "params": self.params,
            "next_id": self._next_id,
            "ids": self._ids.tolist(),
            "labels": labels,
            "label_type": label_type,
            "removed": self._removed.tolist(),
        }
        atomic_write_json(
            directory / "index.json",
            {"format": FORMAT, "version": VERSION, "digest": _digest(content), **content},
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> Index:
        """Read an index written by :meth:`save`, verifying it.

        The FAISS file must have the size and SHA-256 that ``index.json`` lists, ``index.json``
        its own digest (it was not edited), and the FAISS structure must agree with it: kind,
        metric, dimension, count and the ids in order. Raises ``FileNotFoundError`` when
        ``path`` does not exist and ``ValueError`` naming the file when anything disagrees.
        Nothing is unpickled.
        """
        import faiss

        from likewise.artifacts import verify_files

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(2, "No such file or directory", str(path))
        meta_file = path / "index.json"
        if not path.is_dir() or not meta_file.is_file():
            raise ValueError(f"{path} is not a likewise index (expected a directory with index.json)")
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{meta_file} is unreadable: {exc}") from exc
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"{path} is not a likewise index ({meta_file} has no format {FORMAT!r})")
        if meta.get("version") != VERSION:
            raise ValueError(
                f"{meta_file}: unsupported index version {meta.get('version')!r} (this likewise reads "
                f"{VERSION}; save the index again)"
            )
        content = {key: meta.get(key) for key in _CONTENT_KEYS}
        if meta.get("digest") != _digest(content):
            raise ValueError(f"{meta_file} was changed after it was written (its digest does not match)")
        files = meta.get("files")
        if files:
            verify_files(path, files, meta_file)
        try:
            index = cls(meta["dim"], meta["metric"], meta["kind"], **meta["params"])
            index._ids = _stored_ids(meta["ids"], "ids")
            index._removed = _stored_ids(meta["removed"], "removed")
            index._next_id = int(meta["next_id"])
            if meta["labels"] is not None:
                dtype = str if meta["label_type"] == "str" else np.int64
                index._labels = np.asarray(meta["labels"], dtype=dtype).reshape(-1)
                if index._labels.size != index._ids.size:
                    raise ValueError("labels and ids differ in length")
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ValueError(f"{meta_file} is not a valid likewise index description: {exc}") from exc
        if FAISS_FILE not in (files or {}):
            if index.kind != "ivf" or index.params["nlist"] is not None or index._ids.size:
                raise ValueError(f"{meta_file} lists no {FAISS_FILE}, which this index needs")
            return index
        if np.intersect1d(index._ids, index._removed).size:
            raise ValueError(f"{meta_file}: an id is listed both as live and as removed")
        faiss_path = path / FAISS_FILE
        try:
            index._faiss = faiss.read_index(str(faiss_path))
        except RuntimeError as exc:
            raise ValueError(f"{faiss_path} is not a readable FAISS index: {exc}") from exc
        index._check_structure(faiss_path)
        return index

    def _check_structure(self, faiss_path: Path) -> None:
        """``ValueError`` naming ``faiss_path`` unless the FAISS index read agrees with the description."""
        import faiss

        idx = self._faiss
        expected = {"flat": faiss.IndexFlat, "hnsw": faiss.IndexHNSWFlat, "ivf": faiss.IndexIVFFlat}[
            self.kind
        ]
        inner = faiss.downcast_index(idx.index) if self.kind != "ivf" and hasattr(idx, "id_map") else idx
        if self.kind != "ivf" and not isinstance(idx, faiss.IndexIDMap2):
            raise ValueError(f"{faiss_path} is not a {self.kind} index (it is a {type(idx).__name__})")
        if not isinstance(inner, expected):
            raise ValueError(f"{faiss_path} is not a {self.kind} index (it holds a {type(inner).__name__})")
        if idx.d != self.dim:
            raise ValueError(f"{faiss_path} has dimension {idx.d}, index.json says {self.dim}")
        if idx.metric_type != self._faiss_metric():
            raise ValueError(f"{faiss_path} was built for another metric than {self.metric!r}")
        stored, listed = int(idx.ntotal), self._ids.size + self._removed.size
        if stored != listed:
            raise ValueError(f"{faiss_path} holds {stored} vectors but index.json lists {listed}")
        if self.kind == "ivf":
            self.params["nlist"] = int(idx.nlist)
            lists = idx.invlists
            faiss_ids = np.concatenate(
                [np.zeros(0, np.int64)]
                + [
                    faiss.rev_swig_ptr(lists.get_ids(i), lists.list_size(i)).copy()
                    for i in range(idx.nlist)
                    if lists.list_size(i)
                ]
            )
            same = np.array_equal(np.sort(faiss_ids), np.sort(self._ids))
        else:
            faiss_ids = faiss.vector_to_array(idx.id_map)
            same = (
                np.array_equal(faiss_ids[~np.isin(faiss_ids, self._removed)], self._ids)
                and np.isin(self._removed, faiss_ids).all()
            )
        if not same:
            raise ValueError(f"{faiss_path} stores other ids than index.json lists (or in another order)")
