"""Helpers for the `likewise serve` tests: a tiny exported model, and the server as a real process."""

from __future__ import annotations

import base64
import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

SRC = Path(__file__).resolve().parents[1] / "src"
TOKEN = "s3cret-token"
DIM = 8
CLASSES = ("a", "b", "c", "d")
#: seconds a server may take to answer /health after start (bounded wait)
START_TIMEOUT = 120


def gallery_embeddings() -> tuple[np.ndarray, np.ndarray]:
    """Four well-separated identities (10 vectors each, around the first four axes)."""
    rng = np.random.default_rng(0)
    emb = np.concatenate(
        [np.eye(DIM)[c] + 0.15 * rng.standard_normal((10, DIM)) for c in range(len(CLASSES))]
    )
    return emb.astype(np.float32), np.repeat(np.array(CLASSES), 10)


def axis_vector(i: int, noise: float = 0.0, seed: int = 0) -> list[float]:
    """The ``i``-th unit axis plus Gaussian ``noise``, as a JSON-ready list."""
    v = np.eye(DIM)[i] + noise * np.random.default_rng(seed).standard_normal(DIM)
    return v.astype(np.float32).tolist()


def make_model(path: Path) -> Path:
    """A small ConvNet on 1x8x8 images, saved with a matcher calibrated on its gallery."""
    import torch

    from likewise.export import save_model
    from likewise.index import Index
    from likewise.matching import Matcher
    from likewise.models import build_model

    torch.manual_seed(0)
    model = build_model("convnet", (1, 8, 8), embedding_dim=DIM, trunk_kwargs={"widths": [4, 8]}).eval()
    emb, labels = gallery_embeddings()
    index = Index(DIM)
    index.add(emb, labels=labels)
    matcher = Matcher.calibrated(index, emb, labels, ids=index.ids)
    return save_model(path, model, matcher=matcher)


def png(array: np.ndarray, fmt: str = "PNG") -> str:
    """uint8 image array -> base64 text of its PNG/JPEG file."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m likewise serve MODEL --store STORE ...` on a free loopback port."""

    def __init__(self, model: Path, store: str, *extra: str, token: str | None = TOKEN) -> None:
        self.model, self.store, self.extra, self.token = model, store, extra, token
        self.proc: subprocess.Popen | None = None
        self.log = Path(str(model) + f".{os.getpid()}.{time.monotonic_ns()}.log")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, token: str | None = "default"):
        import httpx

        token = self.token if token == "default" else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def start(self) -> Server:
        import httpx

        self.port = free_port()
        env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
        env.pop(("LIKEWISE_TOKEN"), None)
        cmd = [sys.executable, "-m", "likewise", "serve", str(self.model), "--store", self.store]
        cmd += ["--port", str(self.port), *self.extra]
        if self.token:
            cmd += ["--token", self.token]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"server did not answer within {START_TIMEOUT} s:\n{self.log.read_text()}")

    def stop(self) -> int:
        """A clean shutdown (SIGTERM); the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)
