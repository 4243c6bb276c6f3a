"""Request counts and latencies: Prometheus metrics (``/metrics``) and percentiles (``/stats``).

An ASGI middleware times every request by route (the route's template, e.g.
``/items/{id}``; paths of no route count as ``other``) and status. Prometheus gets
``likewise_requests_total{route,status}``, ``likewise_request_seconds{route}`` (a
histogram), ``likewise_gallery_items`` and ``likewise_queue_depth{batcher}``, in a
registry of the app's own. ``/stats`` reports p50/p90/p99 over the last
:data:`WINDOW` requests of each route (exact percentiles of that window).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable
from typing import Any

import numpy as np

#: latencies kept per route for the percentiles of /stats
WINDOW = 10_000
ROUTES = ("/embed", "/search", "/match", "/verify", "/items", "/items/{id}", "/health", "/stats", "/metrics")


def route_of(path: str) -> str:
    if path in ROUTES:
        return path
    if path.startswith("/items/") and path.count("/") == 2:
        return "/items/{id}"
    return "other"


class Metrics:
    """Counters and latency windows, with a Prometheus registry of their own."""

    def __init__(self, items: Callable[[], float], queues: dict[str, Callable[[], float]]) -> None:
        from prometheus_client import CollectorRegistry, Gauge, Histogram
        from prometheus_client import Counter as PCounter

        self.registry = CollectorRegistry()
        self.requests = PCounter(
            "likewise_requests", "HTTP requests", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "likewise_request_seconds",
            "HTTP request latency (seconds)",
            ["route"],
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        Gauge("likewise_gallery_items", "items in the gallery", registry=self.registry).set_function(items)
        depth = Gauge("likewise_queue_depth", "requests waiting", ["batcher"], registry=self.registry)
        for name, fn in queues.items():
            depth.labels(name).set_function(fn)
        self.counts: Counter[tuple[str, int]] = Counter()
        self.windows: dict[str, deque[float]] = defaultdict(lambda: deque(maxlen=WINDOW))

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        self.counts[(route, status)] += 1
        self.windows[route].append(seconds)

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    def summary(self) -> dict[str, Any]:
        """``requests`` (route -> status -> count) and ``latency_ms`` (route -> p50/p90/p99, n)."""
        requests: dict[str, dict[str, int]] = defaultdict(dict)
        for (route, status), n in sorted(self.counts.items()):
            requests[route][str(status)] = n
        latency = {}
        for route, window in sorted(self.windows.items()):
            ms = np.asarray(window, dtype=np.float64) * 1000.0
            p50, p90, p99 = np.percentile(ms, [50, 90, 99])
            latency[route] = {"p50": float(p50), "p90": float(p90), "p99": float(p99), "n": int(ms.size)}
        return {"requests": dict(requests), "latency_ms": latency}


class Timing:
    """ASGI middleware recording every HTTP request in a :class:`Metrics`."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start, status = time.perf_counter(), 500

        async def recording_send(message: Any) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            self.metrics.observe(route_of(scope["path"]), status, time.perf_counter() - start)
