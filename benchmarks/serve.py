"""Benchmark: ``likewise serve`` under load, embedded store vs Milvus Lite, in one run.

The server is a separate process (``python -m likewise serve``) on 127.0.0.1; this
script is the load generator (asyncio + httpx): ``--clients`` concurrent clients
(16 and 64) send a fixed number of requests (``--requests`` per row), each one
28x28 PNG image (base64) to ``/search`` (k = 10) or ``/match``, so every request
runs the model (micro-batched across requests) and a search of the gallery.

Model: the ``likewise demo`` architecture (ConvNet widths 24/48/96, max pooling, 64-d
features, 1x28x28 inputs) with its weights as initialised, unless ``--model DIR``
names an exported model (e.g. ``likewise demo --out runs/demo`` -> ``runs/demo/model``);
its matcher is calibrated on a gallery of 1,000 labelled embeddings (100 identities),
which seeds the store. ``--gallery`` (default 100,000) items in all: the rest are
bulk-inserted with ``POST /items`` (``--insert-batch`` items per request, each answered
once durable), which gives the bulk-insert rate.

Reported per store: insert rate (items/s), then per endpoint and client count:
requests/s, p50/p99 latency (ms, as the clients see it), errors (must be 0), the
mean rows per model call (micro-batching), and the req/s ratio Milvus Lite /
embedded of the same row. A floor is measured in the same run: the same model
call and FAISS search, one request at a time, in this process without HTTP.

Threads: the server and the floor run torch and FAISS with ``--threads`` (default 1):
on 2 shared cores, with the load generator beside them, more threads made each model
call 40x slower (OpenMP workers spinning against each other).

Usage::

    python benchmarks/serve.py                       # 100,000 items, 16 and 64 clients
    python benchmarks/serve.py --gallery 20000 --requests 300   # quick look
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src"


def make_model(path: Path, n_ids: int = 100, per_id: int = 10) -> Path:
    """The demo's architecture, its matcher calibrated on ``n_ids x per_id`` labelled embeddings."""
    import torch

    from likewise.commands.demo import DEMO_CONFIG
    from likewise.export import save_model
    from likewise.index import Index
    from likewise.matching import Matcher
    from likewise.models import build_model

    torch.manual_seed(0)
    spec = DEMO_CONFIG["model"]
    model = build_model(
        spec["trunk"],
        (1, 28, 28),
        embedding_dim=spec["embedding_dim"],
        pooling=spec["pooling"],
        normalize=spec["normalize"],
        trunk_kwargs=spec["trunk_kwargs"],
        embed=spec["embed"],
    ).eval()
    dim = model.config.get("output_dim") or spec["embedding_dim"]
    emb, labels = clustered(n_ids * per_id, n_ids, int(dim), seed=1)
    index = Index(int(dim))
    index.add(emb, labels=labels)
    matcher = Matcher.calibrated(index, emb, labels, ids=index.ids)
    return save_model(path, model, matcher=matcher)


def clustered(n: int, n_ids: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_ids, dim))
    y = rng.integers(0, n_ids, n)
    x = centres[y] + 0.6 * rng.standard_normal((n, dim))
    return x.astype(np.float32), np.array([f"id{i}" for i in y])


def images(n: int, seed: int = 2) -> list[str]:
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray((rng.random((28, 28)) * 255).astype(np.uint8)).save(buf, format="PNG")
        out.append(base64.b64encode(buf.getvalue()).decode())
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, model: Path, store: str, log: Path, max_batch: int, threads: int) -> None:
        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": str(SRC)}
        cmd = [sys.executable, "-m", "likewise", "serve", str(model), "--store", store]
        cmd += ["--port", str(self.port), "--max-batch", str(max_batch), "--max-queue", "1024"]
        cmd += ["--threads", str(threads)]
        self.log = open(log, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.url = f"http://127.0.0.1:{self.port}"
        import httpx

        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {Path(log).read_text()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def bulk_insert(url: str, n: int, dim: int, batch: int) -> tuple[float, int]:
    """Insert ``n`` clustered embeddings, ``batch`` per request; (items/s, errors)."""
    import httpx

    x, y = clustered(n, 1000, dim, seed=3)
    errors = 0
    with httpx.Client(base_url=url, timeout=300) as c:
        start = time.perf_counter()
        for i in range(0, n, batch):
            items = [
                {"label": str(label), "embedding": row.tolist()}
                for row, label in zip(x[i : i + batch], y[i : i + batch])
            ]
            errors += c.post("/items", json={"items": items}).status_code != 200
        elapsed = time.perf_counter() - start
    return n / elapsed, errors


async def load(url: str, path: str, bodies: list[dict], clients: int) -> dict:
    """Send every body once, from ``clients`` concurrent clients (aiohttp: a light client, so
    that the generator takes little of the CPU it shares with the server); latency as seen by
    the clients. Errors: any answer but 200, or a failed connection (counted by kind)."""
    import aiohttp

    latencies: list[float] = []
    errors: Counter[str] = Counter()
    queue = iter(bodies)

    async def client(session: aiohttp.ClientSession) -> None:
        for body in queue:
            t = time.perf_counter()
            try:
                async with session.post(url + path, json=body) as r:
                    await r.read()
                    if r.status != 200:
                        errors[str(r.status)] += 1
            except aiohttp.ClientError as exc:
                errors[type(exc).__name__] += 1
            latencies.append(time.perf_counter() - t)

    connector = aiohttp.TCPConnector(limit=clients)
    timeout = aiohttp.ClientTimeout(total=300)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        start = time.perf_counter()
        await asyncio.gather(*(client(session) for _ in range(clients)))
        elapsed = time.perf_counter() - start
    ms = np.asarray(latencies) * 1000
    return {
        "rps": len(bodies) / elapsed,
        "p50": float(np.percentile(ms, 50)),
        "p99": float(np.percentile(ms, 99)),
        "errors": sum(errors.values()),
        "kinds": dict(errors),
    }


def floor(model_dir: Path, gallery: int, pictures: list[str], k: int = 10) -> float:
    """Requests/s of the same work in-process, one at a time, no HTTP (decode, embed, search)."""
    from likewise.export import load as load_model
    from likewise.index import Index
    from likewise.serve.inputs import decode_image

    model = load_model(model_dir)
    x, _ = clustered(gallery, 1000, model.embedding_dim, seed=3)
    index = Index(model.embedding_dim)
    index.add(x)
    start = time.perf_counter()
    for text in pictures:
        q = model.embed(decode_image(text, (1, 28, 28))[None])
        index.search(q, k)
    return len(pictures) / (time.perf_counter() - start)


def run_store(name: str, store: str, model: Path, args: argparse.Namespace, work: Path, pictures) -> list:
    import httpx

    from likewise.export import load as load_model

    dim = load_model(model).embedding_dim
    server = Server(model, store, work / f"{name}.log", args.max_batch, args.threads)
    rows = []
    try:
        with httpx.Client(base_url=server.url, timeout=60) as c:
            seeded = c.get("/stats").json()["items"]
        rate, errors = bulk_insert(server.url, args.gallery - seeded, dim, args.insert_batch)
        with httpx.Client(base_url=server.url, timeout=60) as c:
            items = c.get("/stats").json()["items"]
        print(f"{name}: {items} items; bulk insert {rate:,.0f} items/s ({errors} errors)", flush=True)
        rows.append((name, "POST /items", "-", args.gallery - seeded, errors, rate, None, None, None))
        for path in ("/search", "/match"):
            bodies = [{"inputs": [{"image": p}]} | ({"k": 10} if path == "/search" else {}) for p in pictures]
            for clients in args.clients:
                with httpx.Client(base_url=server.url, timeout=60) as c:
                    before = c.get("/stats").json()["batches"]["embed"]
                r = asyncio.run(load(server.url, path, bodies, clients))
                with httpx.Client(base_url=server.url, timeout=60) as c:
                    calls = c.get("/stats").json()["batches"]["embed"] - before
                per_call = len(bodies) / max(calls, 1)
                row = (name, path, clients, len(bodies), r["errors"], r["rps"], r["p50"], r["p99"], per_call)
                rows.append(row)
                print(
                    f"{name} {path} {clients} clients: {r['rps']:.0f} req/s, p50 {r['p50']:.1f} ms, "
                    f"p99 {r['p99']:.1f} ms, {r['errors']} errors {r['kinds'] or ''}, "
                    f"{per_call:.1f} rows/model call",
                    flush=True,
                )
    finally:
        server.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, help="an exported model (default: the demo's shape)")
    parser.add_argument("--gallery", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=1000, help="requests per row")
    parser.add_argument("--clients", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--insert-batch", type=int, default=1000)
    parser.add_argument("--max-batch", type=int, default=64)
    parser.add_argument("--stores", nargs="+", default=["embedded", "milvus-lite"])
    parser.add_argument("--threads", type=int, default=1, help="server (and floor) threads for torch/FAISS")
    args = parser.parse_args()
    import faiss
    import torch

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="likewise-serve-bench-"))
    try:
        model = args.model or make_model(work / "model")
        pictures = images(args.requests)
        fl = floor(model, args.gallery, pictures[:200])
        print(f"floor (in-process, one request at a time, no HTTP): {fl:.0f} req/s", flush=True)
        rows = []
        for name in args.stores:
            store = str(work / "store") if name == "embedded" else f"milvus:{work / 'gallery.db'}"
            rows += run_store(name, store, model, args, work, pictures)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = {(r[1], r[2]): r[5] for r in rows if r[0] == "embedded"}
    print()
    print(f"gallery {args.gallery:,} items, {args.requests} requests per row, --max-batch {args.max_batch}")
    print(f"floor: {fl:.0f} req/s (decode + embed + FAISS search in-process, one at a time, no HTTP)")
    print()
    print(
        "| store | route | clients | requests | errors | req/s (items/s) | p50 ms | p99 ms "
        "| rows/model call | vs embedded | vs floor |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, path, clients, n, errors, rps, p50, p99, per_call in rows:
        ratio = rps / base[(path, clients)] if (path, clients) in base else float("nan")
        cells = [
            name,
            path,
            str(clients),
            f"{n:,}",
            str(errors),
            f"{rps:,.0f}",
            "-" if p50 is None else f"{p50:.1f}",
            "-" if p99 is None else f"{p99:.1f}",
            "-" if per_call is None else f"{per_call:.1f}",
            f"{ratio:.2f}",
            "-" if p50 is None else f"{rps / fl:.2f}",
        ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
