"""The embedded gallery: a :class:`likewise.Index` snapshot plus a durable write log.

Layout of the store directory::

    store.json              format, version, dim, metric (written once, when created)
    snapshot-<seq>/         index/ (an Index directory) and items.json (metadata, next id, seq)
    wal-<first seq>.log     write-log segments (:mod:`likewise.serve.wal`), records after the snapshot

Every write gets the next sequence number ``seq`` and is appended to the current
log segment and fsync'd *before* it is applied to the in-memory index and
acknowledged. On start the newest snapshot is loaded and the records with a larger
``seq`` are replayed; a torn record at the end of the last segment (a crash during
an append: a write never acknowledged) is cut off.

Compaction (after ``compact_every`` writes since the snapshot, and on a clean
close): the log is rotated to a new segment, the index is written as a *new*
``snapshot-<seq>`` directory (built aside and renamed into place: complete or
absent), and only then are the older snapshot and segments deleted. A crash at any
point leaves either the old snapshot with all its segments or the new snapshot, so
the store always loads and holds every acknowledged write.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from likewise.index import Index
from likewise.io import atomic_directory, atomic_write_json, fsync_directory
from likewise.serve.stores.base import Conflict, GalleryStore, Hit, check_label_kind, new_ids
from likewise.serve.wal import WriteLog, read_records

FORMAT = "likewise-store"
VERSION = 1
_SNAPSHOT = re.compile(r"^snapshot-(\d{20})$")
_SEGMENT = re.compile(r"^wal-(\d{20})\.log$")


def _vectors_b64(v: np.ndarray) -> str:
    import base64

    return base64.b64encode(np.ascontiguousarray(v, dtype="<f4").tobytes()).decode("ascii")


def _vectors_from_b64(text: str, dim: int) -> np.ndarray:
    import base64

    return np.frombuffer(base64.b64decode(text), dtype="<f4").reshape(-1, dim).astype(np.float32)


class EmbeddedStore(GalleryStore):
    """A gallery kept in a directory (see the module doc).

    Args:
        path: the store directory; created if missing. An existing directory must be a store.
        dim, metric: the model's embedding size and similarity.
        initial: an :class:`Index` that seeds a *new* store (the model's gallery), or ``None``.
        compact_every: writes between compactions.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        dim: int,
        metric: str,
        initial: Index | None = None,
        compact_every: int = 10_000,
    ) -> None:
        self.path, self.dim, self.metric = Path(path), int(dim), metric
        self.compact_every = int(compact_every)
        self._lock = threading.RLock()
        self._create_or_check(initial)
        self._load()

    def describe(self) -> str:
        return f"embedded:{self.path}"

    # -- opening -----------------------------------------------------------------

    def _create_or_check(self, initial: Index | None) -> None:
        meta_file = self.path / "store.json"
        if self.path.exists() and not self.path.is_dir():
            raise ValueError(f"store {self.path} exists and is not a directory")
        if self.path.is_dir() and any(self.path.iterdir()) and not meta_file.is_file():
            raise ValueError(
                f"{self.path} is not empty and not a likewise store (no store.json); choose another"
            )
        if not meta_file.is_file():
            self.path.mkdir(parents=True, exist_ok=True)
            index = Index(self.dim, metric=self.metric)
            if initial is not None and len(initial):
                if initial.dim != self.dim:
                    raise ValueError(
                        f"the model's gallery has dimension {initial.dim}, its embeddings {self.dim}"
                    )
                index = initial
            ids = index.ids
            self._write_snapshot(index, {}, seq=0, next_id=int(ids.max()) + 1 if ids.size else 0)
            meta = {"format": FORMAT, "version": VERSION, "dim": self.dim, "metric": self.metric}
            atomic_write_json(meta_file, meta)
            fsync_directory(self.path)
            return
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{meta_file} is unreadable: {exc}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise ValueError(f"{self.path} is not a likewise store of version {VERSION}")
        if meta.get("dim") != self.dim or meta.get("metric") != self.metric:
            raise ValueError(
                f"store {self.path} holds {meta.get('dim')}-dimensional {meta.get('metric')} vectors; "
                f"the model makes {self.dim}-dimensional {self.metric} ones"
            )

    def _entries(self, pattern: re.Pattern) -> list[tuple[int, Path]]:
        found = [(m, p) for p in self.path.iterdir() if (m := pattern.match(p.name))]
        return sorted((int(m.group(1)), p) for m, p in found)

    def _load(self) -> None:
        for leftover in self.path.glob(".snapshot-*"):  # an interrupted compaction's temporary
            shutil.rmtree(leftover, ignore_errors=True)
        snapshots = self._entries(_SNAPSHOT)
        if not snapshots:
            raise ValueError(f"store {self.path} has no snapshot")
        self.seq, snap = snapshots[-1]
        self.index = Index.load(snap / "index")
        try:
            items = json.loads((snap / "items.json").read_text(encoding="utf-8"))
            self.metadata = {int(k): v for k, v in items["metadata"].items()}
            self.next_id = int(items["next_id"])
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{snap}/items.json is unreadable: {exc}") from None
        segments = self._entries(_SEGMENT)
        self.replayed = 0
        for _, segment in segments[:-1]:
            self._replay(read_records(segment)[0])
        if segments:
            self._log, records = WriteLog.open(segments[-1][1])
            self._replay(records)
        else:
            self._log = self._new_segment()
        self.pending = self.replayed  # writes not yet in a snapshot
        self._compacting = False

    def _replay(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            if record["seq"] <= self.seq:
                continue
            self._apply(record)
            self.seq = record["seq"]
            self.replayed += 1

    def _new_segment(self) -> WriteLog:
        log, _ = WriteLog.open(self.path / f"wal-{self.seq + 1:020d}.log")
        return log

    # -- writes ------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.index)

    def _label_kind(self) -> str | None:
        labels = self.index.labels
        if labels is None or not len(self.index):
            return None
        return "str" if labels.dtype.kind == "U" else "int"

    def _apply(self, record: dict[str, Any]) -> None:
        ids = np.asarray(record["ids"], dtype=np.int64)
        if record["op"] == "add":
            vectors = _vectors_from_b64(record["vectors"], self.dim)
            self.index.add(vectors, ids=ids, labels=record["labels"])
            for i, md in zip(record["ids"], record["metadata"]):
                if md is not None:
                    self.metadata[i] = md
            self.next_id = max(self.next_id, int(ids.max()) + 1)
        elif record["op"] == "remove":
            self.index.remove(ids)
            for i in record["ids"]:
                self.metadata.pop(i, None)
        else:
            raise ValueError(f"unknown write-log operation {record['op']!r}")

    def _write(self, record: dict[str, Any]) -> None:
        """Log (fsync'd), then apply: the caller holds the lock and has checked the record."""
        record["seq"] = self.seq + 1
        self._log.append(record)
        self.seq = record["seq"]
        self._apply(record)
        self.pending += 1
        if self.pending >= self.compact_every and not self._compacting:
            self._compacting = True
            threading.Thread(target=self.compact, name="likewise-compact", daemon=True).start()

    def add(
        self,
        vectors: np.ndarray,
        labels: Sequence[Any],
        metadata: Sequence[dict[str, Any] | None],
        ids: Sequence[int | None],
    ) -> list[int]:
        vectors = np.asarray(vectors, dtype=np.float32).reshape(-1, self.dim)
        labels = [x.item() if isinstance(x, np.generic) else x for x in labels]
        with self._lock:
            check_label_kind(labels, self._label_kind())
            stored = self.index.ids
            out, _ = new_ids(ids, self.next_id, lambda given: np.intersect1d(given, stored).tolist())
            if self.metric == "cosine":  # stored as the index stores them
                norms = np.linalg.norm(vectors, axis=1, keepdims=True)
                vectors = vectors / np.where(norms > 0, norms, 1.0).astype(np.float32)
            self._write(
                {
                    "op": "add",
                    "ids": out,
                    "labels": labels,
                    "metadata": list(metadata),
                    "vectors": _vectors_b64(vectors),
                }
            )
        return out

    def remove(self, item_id: int) -> bool:
        with self._lock:
            if not len(self.index) or not np.isin(item_id, self.index.ids):
                return False
            self._write({"op": "remove", "ids": [int(item_id)]})
        return True

    # -- reads -------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int) -> list[list[Hit]]:
        with self._lock:
            n = len(self.index)
            if n == 0:
                return [[] for _ in range(len(queries))]
            scores, ids, labels = self.index.search_labels(queries, min(k, n))
            metadata = self.metadata
            return [
                [
                    Hit(
                        int(i),
                        label.item() if isinstance(label, np.generic) else label,
                        float(s),
                        metadata.get(int(i)),
                    )
                    for s, i, label in zip(rs, ri, rl)
                    if i >= 0
                ]
                for rs, ri, rl in zip(scores, ids, labels)
            ]

    # -- snapshots ---------------------------------------------------------------

    def _write_snapshot(self, index: Index, metadata: dict[int, Any], seq: int, next_id: int) -> None:
        with atomic_directory(self.path / f"snapshot-{seq:020d}", "snapshot") as tmp:
            index.save(tmp / "index")
            items = {"seq": seq, "next_id": next_id, "metadata": {str(k): v for k, v in metadata.items()}}
            atomic_write_json(tmp / "items.json", items)
        fsync_directory(self.path)

    def compact(self) -> None:
        """Write a new snapshot holding every write so far, then drop the older snapshot and log."""
        with self._lock:
            try:
                if self.pending == 0:
                    return
                self._log.close()
                self._log = self._new_segment()  # later writes go after the new snapshot's seq
                self._write_snapshot(self.index, self.metadata, self.seq, self.next_id)
                self.pending = 0
                for seq, snap in self._entries(_SNAPSHOT):
                    if seq < self.seq:
                        shutil.rmtree(snap, ignore_errors=True)
                for _, segment in self._entries(_SEGMENT):
                    if segment != self._log.path:
                        segment.unlink(missing_ok=True)
                fsync_directory(self.path)
            finally:
                self._compacting = False

    def close(self) -> None:
        with self._lock:
            self.compact()
            self._log.close()


__all__ = ["Conflict", "EmbeddedStore"]
