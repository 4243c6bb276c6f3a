"""``likewise serve MODEL_DIR``: the HTTP search-and-match service (see :mod:`likewise.serve`).

    likewise serve MODEL_DIR [--store PATH|milvus:PATH.db|milvus://HOST:PORT] [--host 127.0.0.1]
                   [--port 8000] [--token TOKEN] [--max-body-mb 32] [--max-batch 64] [--max-queue 256]

The token may also come from the environment variable ``LIKEWISE_TOKEN`` (a command
line is visible to other users of the machine; the environment is not).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

TOKEN_VARIABLE = "LIKEWISE_TOKEN"


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
        return value

    return parse


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "serve",
        help="serve search, match and verification over HTTP",
        description="Serve an exported model over HTTP: embed, search, match, verify, add and delete "
        "gallery items (OpenAPI at /docs).",
    )
    p.add_argument("model", help="an exported model directory (likewise demo/train)")
    p.add_argument(
        "--store",
        default="likewise-store",
        help="gallery: a directory (embedded FAISS + write log; default ./likewise-store), "
        "milvus:PATH.db (Milvus Lite) or milvus://HOST:PORT",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token", help=f"bearer token required on every route but /health (or ${TOKEN_VARIABLE})")
    p.add_argument("--max-body-mb", type=_positive(float), default=32.0, help="largest request body (413)")
    p.add_argument("--max-batch", type=_positive(int), default=64, help="most rows per model call / search")
    p.add_argument("--max-wait-ms", type=float, default=2.0, help="how long a batch waits for more requests")
    p.add_argument("--max-queue", type=_positive(int), default=256, help="requests waiting before 503")
    p.add_argument(
        "--threads", type=_positive(int), help="threads for the model and FAISS (default: their own default)"
    )
    p.add_argument("--compact-every", type=_positive(int), default=10_000, help="writes between snapshots")
    p.add_argument(
        "--log-level", default="warning", choices=("critical", "error", "warning", "info", "debug")
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from likewise.serve.app import create_app
    except ImportError as exc:
        raise ValueError(
            f"likewise serve needs the serve extra (pip install 'likewise[serve]'): {exc}"
        ) from None
    from likewise.serve.service import Service

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port must be in 0..65535, got {args.port}")
    if args.max_wait_ms < 0:
        raise ValueError(f"--max-wait-ms must be >= 0, got {args.max_wait_ms}")
    token = args.token or os.environ.get(TOKEN_VARIABLE) or None
    if args.threads:
        import faiss
        import torch

        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    service = Service(
        args.model,
        args.store,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        max_queue=args.max_queue,
        compact_every=args.compact_every,
    )
    app = create_app(service, token=token, max_body=int(args.max_body_mb * (1 << 20)))
    if not token and args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"likewise serve: warning: listening on {args.host} without --token", file=sys.stderr)
    print(
        f"likewise serve: {service.name}, {len(service.store)} items in {service.store.describe()}, "
        f"http://{args.host}:{args.port} (docs at /docs){', token required' if token else ''}",
        file=sys.stderr,
        flush=True,
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, timeout_graceful_shutdown=10)
    return 0
