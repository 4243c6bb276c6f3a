"""The HTTP API (FastAPI; OpenAPI at ``/docs``) over a :class:`likewise.serve.service.Service`.

Routes: ``POST /embed``, ``/search``, ``/match``, ``/verify``, ``/items``;
``DELETE /items/{id}``; ``GET /health`` (public), ``/stats``, ``/metrics``. Errors
are JSON ``{"detail": "..."}``: 401 (token), 404 (unknown id), 409 (an id already
used, a label of the other kind, no threshold, an empty gallery), 413 (body too
large), 415 (not JSON), 422 (invalid: unknown fields, NaN/inf, empty lists, wrong
dimensions, ``k`` out of range, undecodable or oversized images, a body that is not
valid JSON) and 503 with ``Retry-After`` (queue full). The server keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from fastapi import FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from likewise.serve.batching import Busy
from likewise.serve.guard import Guard
from likewise.serve.inputs import InputError, embeddings_matrix, split_inputs
from likewise.serve.metrics import Metrics, Timing
from likewise.serve.schemas import (
    EmbedRequest,
    EmbedResponse,
    ItemsRequest,
    ItemsResponse,
    MatchRequest,
    MatchResponse,
    SearchRequest,
    SearchResponse,
    VerifyRequest,
    VerifyResponse,
)
from likewise.serve.service import NotAvailable, Service
from likewise.serve.stores import Conflict

#: validation problems listed in one 422 answer
_SHOWN_ERRORS = 5


def _where(loc: tuple[Any, ...]) -> str:
    text = ""
    for part in loc[1:] if loc and loc[0] == "body" else loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "body"


def validation_detail(exc: RequestValidationError) -> str:
    """One readable line (the offending values are not echoed back)."""
    lines = []
    for error in exc.errors():
        if error.get("type") == "json_invalid":
            reason = (error.get("ctx") or {}).get("error", "")
            return f"the body is not valid JSON ({reason})" if reason else "the body is not valid JSON"
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        lines.append(f"{_where(tuple(error.get('loc', ())))}: {message}")
    more = len(lines) - _SHOWN_ERRORS
    return "; ".join(lines[:_SHOWN_ERRORS]) + (f"; and {more} more" if more > 0 else "")


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def create_app(service: Service, *, token: str | None = None, max_body: int = 32 << 20) -> Any:
    """The ASGI app: routes, then the guard (token, size, type), timed by the metrics."""

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        yield
        await service.close()

    app = FastAPI(
        title="likewise",
        description="Search and match with a trained likewise model.",
        lifespan=lifespan,
    )
    metrics = Metrics(
        items=lambda: len(service.store),
        queues={"embed": lambda: service.embedder.depth, "search": lambda: service.searcher.depth},
    )

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, validation_detail(exc))

    @app.exception_handler(InputError)
    async def _bad_input(_: Request, exc: InputError) -> JSONResponse:
        return _error(422, str(exc))

    @app.exception_handler(Conflict)
    async def _conflict(_: Request, exc: Conflict) -> JSONResponse:
        return _error(409, str(exc))

    @app.exception_handler(NotAvailable)
    async def _not_available(_: Request, exc: NotAvailable) -> JSONResponse:
        return _error(409, str(exc))

    @app.exception_handler(Busy)
    async def _busy(_: Request, exc: Busy) -> JSONResponse:
        return _error(503, str(exc), {"Retry-After": str(exc.retry_after)})

    model = service.model

    async def split(inputs: Any, name: str = "inputs") -> Any:
        """Decode and check inputs; images are decoded in a worker thread, off the event loop."""
        if any(item.image is not None for item in inputs):
            return await asyncio.to_thread(split_inputs, inputs, model.input_shape, service.dim, name)
        return split_inputs(inputs, model.input_shape, service.dim, name)

    async def queries(body: Any) -> Any:
        if body.embeddings is not None:
            return embeddings_matrix(body.embeddings, service.dim)
        return await service.embed(await split(body.inputs))

    @app.post("/embed", response_model=None, responses={200: {"model": EmbedResponse}})
    async def embed(body: EmbedRequest) -> Any:
        """Embed inputs with the model."""
        return {"embeddings": (await service.embed(await split(body.inputs))).tolist()}

    @app.post("/search", response_model=None, responses={200: {"model": SearchResponse}})
    async def search(body: SearchRequest) -> Any:
        """The k most similar gallery items of each query, best first."""
        hits = await service.search(await queries(body), body.k)
        return {"results": [[h._asdict() for h in row] for row in hits]}

    @app.post("/match", response_model=None, responses={200: {"model": MatchResponse}})
    async def match(body: MatchRequest) -> Any:
        """Who is this? A label, or "unknown", at the calibrated (or a target-``far``) threshold."""
        answers, threshold = await service.match(await queries(body), body.far)
        return {"matches": answers, "threshold": threshold}

    @app.post("/verify", response_model=None, responses={200: {"model": VerifyResponse}})
    async def verify(body: VerifyRequest) -> Any:
        """Are ``a`` and ``b`` the same? Their score against the pair-level threshold."""
        emb = await service.embed(await split([body.a, body.b], "[a, b]"))
        return service.verify(emb[0], emb[1])

    @app.post("/items", response_model=None, responses={200: {"model": ItemsResponse}})
    async def add_items(body: ItemsRequest) -> Any:
        """Add items to the gallery; answered once the write is durable."""
        items = body.items
        ids = await service.add(
            await split([item.input() for item in items], "items"),
            [item.label for item in items],
            [item.metadata for item in items],
            [item.id for item in items],
        )
        return {"ids": ids}

    @app.delete("/items/{item_id}")
    async def remove_item(item_id: int = Path(ge=0)) -> Any:
        """Delete one item (durably)."""
        if not await service.remove(item_id):
            return _error(404, f"no item with id {item_id}")
        return {"deleted": item_id}

    @app.get("/health")
    async def health() -> Any:
        return {"status": "ok"}

    @app.get("/stats")
    async def stats() -> Any:
        """Gallery size, model, uptime, request counts and latency percentiles."""
        return {
            "items": len(service.store),
            "dim": service.dim,
            "metric": service.metric,
            "model": service.name,
            "store": service.store.describe(),
            "threshold": service.threshold,
            "uptime_s": time.time() - service.started,
            "batches": {"embed": service.embedder.batches, "search": service.searcher.batches},
            **metrics.summary(),
        }

    @app.get("/metrics")
    async def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return Timing(Guard(app, token=token, max_body=max_body), metrics)
