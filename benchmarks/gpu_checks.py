"""GPU checks of every loss and miner: CUDA agrees with the CPU, and which ones synchronise.

For every registered loss (``likewise.losses.LOSSES`` and ``TWO_VIEW_LOSSES``) and every
miner, on the same float32 inputs:

* **agreement**: the loss value and the gradient of the embeddings on ``--device`` against
  the CPU (largest relative difference; the miners: the same mined tuples, except
  ``DistanceWeightedMiner``, which samples from each device's own random stream);
* **host synchronisation**: one more forward + backward under
  ``torch.cuda.set_sync_debug_mode("error")``, which raises at the first operation that
  waits for the GPU from the host (``.item()``, ``bool(t)``, a data-dependent shape such as
  ``nonzero``); the table names that operation, or "none".

Prints one Markdown table. Only torch and likewise are imported (no PML, no FAISS), so it
runs under a GPU image's own python3 with ``PYTHONPATH=src``. ``--device cpu`` runs the
same code on the CPU (agreement 0, no synchronisation check): a smoke test of this script.

    python benchmarks/gpu_checks.py                 # on a CUDA machine
"""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable
from typing import Any

import torch

B, D, CLASSES = 64, 32, 8


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, generator=g)
    labels = (torch.arange(B) % CLASSES)[torch.randperm(B, generator=g)]
    continuous = torch.randn(B, 3, generator=g)
    return x, labels, continuous


def _cases() -> list[tuple[str, Callable[[], torch.nn.Module], str]]:
    """(name, constructor, call kind) for every loss and miner."""
    from likewise import mining
    from likewise.losses import LOSSES, TWO_VIEW_LOSSES

    cases: list[tuple[str, Callable[[], torch.nn.Module], str]] = []
    for name, cls in sorted(LOSSES.items()):
        params = inspect.signature(cls.__init__).parameters
        kwargs: dict[str, Any] = {}
        if "num_classes" in params:
            kwargs["num_classes"] = CLASSES
        if "embedding_size" in params:
            kwargs["embedding_size"] = D
        kind = "continuous" if cls.label_kind == "continuous" else "labels"
        cases.append((name, lambda cls=cls, kwargs=kwargs: cls(**kwargs), kind))
    for name, cls in sorted(TWO_VIEW_LOSSES.items()):
        args = (D,) if name == "DINOLoss" else ()
        cases.append((name, lambda cls=cls, args=args: cls(*args), "two_view"))
    for name, cls in sorted(mining.MINERS.items()):
        cases.append((name, cls, "miner"))
    return cases


def _run(build: Callable[[], torch.nn.Module], kind: str, device: torch.device) -> tuple[Any, Any]:
    """One forward (+ backward for losses) on ``device``: (value or mined tuples, gradient)."""
    torch.manual_seed(0)  # proxies and prototypes start equal on both devices
    module = build().to(device)
    x, labels, continuous = (t.to(device) for t in _inputs())
    if kind == "miner":  # Triplets / PairMask dataclasses of tensors
        mined = module(x, labels)
        return tuple(getattr(mined, f).cpu() for f in mined.__dataclass_fields__), None
    x.requires_grad_(True)
    if kind == "two_view":
        y = (x.detach() * 0.9 + 0.1).requires_grad_(True)
        value = module(x, y)
    else:
        value = module(x, continuous if kind == "continuous" else labels)
    value.backward()
    return value.detach().cpu(), x.grad.detach().cpu()


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-12))


def check(device: torch.device) -> list[str]:
    rows = ["| loss / miner | value: rel. diff vs CPU | gradient: rel. diff vs CPU | host synchronisation |"]
    rows.append("|---|---|---|---|")
    for name, build, kind in _cases():
        try:
            ref_v, ref_g = _run(build, kind, torch.device("cpu"))
            got_v, got_g = _run(build, kind, device)
            if kind == "miner":
                same = len(ref_v) == len(got_v) and all(torch.equal(a, b) for a, b in zip(ref_v, got_v))
                value, grad = ("same tuples" if same else "DIFFERENT tuples"), "-"
            else:
                value, grad = f"{_relative(got_v, ref_v):.1e}", f"{_relative(got_g, ref_g):.1e}"
        except Exception as exc:  # noqa: BLE001 - report and go on
            rows.append(f"| {name} | error: {type(exc).__name__}: {str(exc)[:80]} | | |")
            continue
        sync = "-"
        if device.type == "cuda":
            torch.cuda.set_sync_debug_mode("error")
            try:
                _run(build, kind, device)
                sync = "none"
            except RuntimeError as exc:
                sync = str(exc).splitlines()[0][:100].replace("|", "/")
            finally:
                torch.cuda.set_sync_debug_mode("default")
        rows.append(f"| {name} | {value} | {grad} | {sync} |")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    device = torch.device(ap.parse_args().device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_checks.py: no CUDA device here (use --device cpu for a smoke test)")
    print(
        f"# {torch.__version__}, device {device}"
        + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
    )
    print(f"# inputs: B = {B}, D = {D}, {CLASSES} classes, float32")
    print("\n".join(check(device)))


if __name__ == "__main__":
    main()
