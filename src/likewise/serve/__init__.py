"""``likewise serve``: an HTTP search-and-match service over an exported model.

* :mod:`~likewise.serve.app`: the routes (FastAPI) and :func:`create_app`;
* :mod:`~likewise.serve.schemas`: request bodies (pydantic: unknown fields, NaN/inf and
  empty lists refused);
* :mod:`~likewise.serve.inputs`: images and vectors -> model inputs, dimensions checked;
* :mod:`~likewise.serve.service`: model + store + thresholds, without HTTP;
* :mod:`~likewise.serve.batching`: micro-batching behind a bounded queue (503 when full);
* :mod:`~likewise.serve.guard`: bearer token, body-size limit, JSON-only bodies;
* :mod:`~likewise.serve.metrics`: Prometheus metrics and latency percentiles;
* :mod:`~likewise.serve.stores`: the embedded store (FAISS snapshot + fsync'd write log,
  :mod:`~likewise.serve.wal`) and Milvus (Lite or a server).

Needs the ``serve`` extra (fastapi, uvicorn, prometheus-client); Milvus the ``milvus`` extra.
Nothing here is imported by ``import likewise``.
"""

from __future__ import annotations

from typing import Any


def create_app(*args: Any, **kwargs: Any) -> Any:
    """:func:`likewise.serve.app.create_app` (imported on call: FastAPI loads only when serving)."""
    from likewise.serve.app import create_app as make

    return make(*args, **kwargs)


__all__ = ["create_app"]
