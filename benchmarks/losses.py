"""Loss speed and memory: likewise vs pytorch-metric-learning (PML) vs the bare GEMM floor.

For every loss and batch size ``B`` (embeddings ``[B, D]``, ``D = 128``, 2 threads) one
forward + backward pass is timed for

* ``likewise``: the loss of :mod:`likewise.losses` (imported lazily; "not available" if missing);
* ``PML``: pytorch-metric-learning's loss of the same name and default keywords;
* ``floor``: the matmuls that build the similarity matrix and its gradient, nothing else:
  ``S = X Y^T`` forward, ``dS Y`` and ``dS^T X`` backward (``Y = X``, ``N = B`` for the
  batch losses; ``Y`` = the ``C`` class proxies for Proxy-Anchor / ArcFace).

Labels: ``B / 4`` classes of 4 samples each (shuffled); NT-Xent gets two views,
``arange(B / 2).repeat(2)``; LogRatio gets continuous labels ``[B, 1]``. The row
``semihard_triplet`` is semi-hard mining + triplet loss: likewise
``TripletMarginLoss(margin=0.2, miner=SemiHardMiner(0.2))`` against PML
``TripletMarginMiner(margin=0.2, type_of_triplets="semihard")`` + ``TripletMarginLoss(margin=0.2)``
(mining inside the timed region for both). NT-Xent is also run at ``B = 512``.

Every measurement runs in its own forked child process (imports are shared, so no start-up
cost) with an address-space cap (``--mem-cap-gb``, default 16) and a time limit
(``--limit-s``, default 60 s for the first pass): a child that runs out of memory reports
"out of memory", one that runs past the limit is stopped and reported as "> 60 s", and the
benchmark goes on. Time: warm-up passes (three when a pass takes under 0.5 s), then the median
of repeated passes (at least 3, until ``--budget-s`` seconds, at most 60; a first pass over
5 s is used alone). The floor is timed in likewise's child, its passes alternating with the
loss's, so the ``likewise/floor`` ratio compares the two under the same machine state; PML
runs right after in its own child. Peak memory: the child's peak resident set size
(``getrusage`` max RSS) above its level after building the inputs, taken before the floor runs.

OpenMP: the wait policy is left as PyTorch users get it (``OMP_WAIT_POLICY`` unset: idle
threads spin for a while, then sleep) unless the environment sets one; the header names it.
With ``OMP_WAIT_POLICY=PASSIVE`` every parallel region first wakes the sleeping pool
(50-100 us on a 2-CPU VM), which penalises losses made of many moderate element-wise
ops against the three large GEMMs of the floor; with ``ACTIVE``, or on a machine busy with
other work, spinning threads compete for the cores. Run it on an otherwise idle machine.

    python benchmarks/losses.py                                  # everything (~10-15 min)
    python benchmarks/losses.py --sizes 1024 --losses ntxent,circle
    python benchmarks/losses.py --no-pml                         # likewise and the floor only
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import select
import signal
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("MKL_NUM_THREADS", "2")
# OpenMP wait policy: PyTorch's default (OMP_WAIT_POLICY unset: idle threads spin a while,
# then sleep) unless the environment sets one. See the module docstring.

import torch  # noqa: E402

# name -> (class name, likewise kwargs, PML has it, labels kind)
LOSSES: dict[str, tuple[str, dict[str, Any], bool, str]] = {
    "contrastive": ("ContrastiveLoss", {}, True, "classes"),
    "triplet": ("TripletMarginLoss", {}, True, "classes"),
    "semihard_triplet": ("TripletMarginLoss", {"margin": 0.2}, True, "classes"),
    "lifted_structure": ("LiftedStructureLoss", {}, True, "classes"),
    "multi_similarity": ("MultiSimilarityLoss", {}, True, "classes"),
    "ntxent": ("NTXentLoss", {"temperature": 0.07}, True, "views"),
    "supcon": ("SupConLoss", {"temperature": 0.1}, True, "classes"),
    "soft_nearest_neighbor": ("SoftNearestNeighborLoss", {}, False, "classes"),
    "npairs": ("NPairsLoss", {}, True, "classes"),
    "circle": ("CircleLoss", {}, True, "classes"),
    "fastap": ("FastAPLoss", {}, True, "classes"),
    "proxy_anchor": ("ProxyAnchorLoss", {}, True, "classes"),
    "arcface": ("ArcFaceLoss", {}, True, "classes"),
    "log_ratio": ("LogRatioLoss", {}, False, "continuous"),
}
PROXY_LOSSES = ("proxy_anchor", "arcface")
#: where the passes run (``--device``); set before any child is forked
DEVICE = torch.device("cpu")
EXTRA_SIZES = {"ntxent": (512,)}
SAMPLES_PER_CLASS = 4


class NotAvailable(Exception):
    pass


# ----------------------------------------------------------------------------- building cases


def likewise_class(name: str) -> type:
    from likewise.losses import LOSSES as REGISTRY

    if name not in REGISTRY:
        raise NotAvailable(name)
    return REGISTRY[name]


def make_inputs(kind: str, b: int, d: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, d, generator=g)
    if kind == "views":
        labels = torch.arange(b // 2).repeat(2)
    elif kind == "continuous":
        labels = torch.randn(b, 1, generator=g)
    else:
        labels = (torch.arange(b) // SAMPLES_PER_CLASS)[torch.randperm(b, generator=g)]
    return x.to(DEVICE).requires_grad_(True), labels.to(DEVICE)


def _sync() -> None:
    """Wait for the device (a CUDA pass is timed when it has finished, not when it is queued)."""
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def num_classes(b: int) -> int:
    return max(1, b // SAMPLES_PER_CLASS)


def make_step(impl: str, loss: str, b: int, d: int) -> tuple[Callable[[], None], torch.Tensor]:
    """A closure running one forward + backward pass, and the embeddings it uses."""
    cls_name, kwargs, _, kind = LOSSES[loss]
    x, labels = make_inputs(kind, b, d)
    kwargs = dict(kwargs)
    if loss in PROXY_LOSSES:
        kwargs.update(num_classes=num_classes(b), embedding_size=d)
    miner: Any = None
    if impl == "likewise":
        if loss == "semihard_triplet":
            from likewise.mining import SemiHardMiner

            kwargs["miner"] = SemiHardMiner(0.2)
        fn = likewise_class(cls_name)(**kwargs)
    else:
        from pytorch_metric_learning import losses as pml_losses
        from pytorch_metric_learning import miners as pml_miners

        fn = getattr(pml_losses, cls_name)(**kwargs)
        if loss == "semihard_triplet":
            miner = pml_miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")

    fn = fn.to(DEVICE)

    def step() -> None:
        x.grad = None
        for p in fn.parameters():
            p.grad = None
        if miner is not None:
            value = fn(x, labels, miner(x, labels))
        else:
            value = fn(x, labels)
        value.backward()
        _sync()

    return step, x


def make_floor(loss: str, b: int, d: int) -> Callable[[], None]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(b, d, generator=g)
    y = torch.randn(num_classes(b), d, generator=g) if loss in PROXY_LOSSES else x
    ds = torch.randn(b, y.shape[0], generator=g)
    x, y, ds = x.to(DEVICE), y.to(DEVICE), ds.to(DEVICE)

    def step() -> None:
        x @ y.T  # S
        ds @ y  # dS/dX
        ds.T @ x  # dS/dY (the second half of dX when Y = X)
        _sync()

    return step


# ----------------------------------------------------------------------------- measuring


def _alarm(signum: int, frame: Any) -> None:
    raise TimeoutError


def measure(
    build: Callable[[], Callable[[], None]],
    limit_s: float,
    budget_s: float,
    build_floor: Callable[[], Callable[[], None]] | None = None,
) -> dict[str, Any]:
    """Run in the child: build, warm up (under the time limit), then time repeats.

    With ``build_floor`` the floor is timed in the same process, its passes alternating with
    the loss's, so that both medians see the same machine state (``floor_seconds``). Peak
    memory is taken after the loss's warm-up, before the floor runs.
    """
    floor = build_floor() if build_floor is not None else None
    step = build()
    cuda = DEVICE.type == "cuda"
    if cuda:  # device memory: the allocator's peak above the inputs
        torch.cuda.reset_peak_memory_stats(DEVICE)
        base_kb = torch.cuda.memory_allocated(DEVICE) / 1024
    else:
        base_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(int(limit_s))
    try:
        t0 = time.perf_counter()
        step()
        first = time.perf_counter() - t0
    finally:
        signal.alarm(0)
    times = [first] if first > 5 else []
    if first <= 0.5:  # fast steps: two more warm-up passes (allocator, caches, thread pool)
        step()
        step()
    peak_kb = (
        torch.cuda.max_memory_allocated(DEVICE) / 1024
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    )
    floor_times: list[float] = []
    if floor is not None:
        floor()
        floor()
    while not times or (len(times) < 3 or sum(times) < budget_s) and len(times) < 60 and first <= 5:
        if floor is not None:
            t0 = time.perf_counter()
            floor()
            floor_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    out = {"seconds": statistics.median(times), "peak_mb": (peak_kb - base_kb) / 1024, "reps": len(times)}
    if floor_times:
        out["floor_seconds"] = statistics.median(floor_times)
    return out


def _is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "can't allocate memory" in text or "out of memory" in text


def _child(
    build: Callable[[], Callable[[], None]],
    threads: int,
    mem_cap_gb: float,
    limit_s: float,
    budget_s: float,
    build_floor: Callable[[], Callable[[], None]] | None = None,
) -> dict[str, Any]:
    try:
        if DEVICE.type != "cuda":  # CUDA maps more address space than any sane cap
            cap = int(mem_cap_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        torch.set_num_threads(threads)
        return measure(build, limit_s, budget_s, build_floor)
    except NotAvailable:
        return {"error": "not available"}
    except TimeoutError:
        return {"error": f"> {limit_s:g} s"}
    except BaseException as exc:  # noqa: BLE001 - report anything, keep the benchmark alive
        signal.alarm(0)
        return {"error": "out of memory" if _is_oom(exc) else f"{type(exc).__name__}: {exc}"[:120]}


def run_forked(
    build: Callable[[], Callable[[], None]],
    *,
    threads: int,
    mem_cap_gb: float,
    limit_s: float,
    budget_s: float,
    build_floor: Callable[[], Callable[[], None]] | None = None,
) -> dict[str, Any]:
    """``measure`` in a forked child with a memory cap and a time limit; never raises.

    The parent only imports: it must never run a parallel torch op itself, or the
    OpenMP pool it starts would not survive the fork.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns
        try:
            os.close(read_fd)
            result = _child(build, threads, mem_cap_gb, limit_s, budget_s, build_floor)
            os.write(write_fd, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    deadline = time.monotonic() + limit_s + budget_s + 30
    chunks = []
    while True:
        ready, _, _ = select.select([read_fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(read_fd)
            return {"error": f"> {limit_s:g} s"}
        chunk = os.read(read_fd, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(read_fd)
    _, status = os.waitpid(pid, 0)
    if not chunks:
        sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
        return {"error": "out of memory (killed)" if sig == signal.SIGKILL else f"child died ({status})"}
    return json.loads(b"".join(chunks))


# ----------------------------------------------------------------------------- table


def fmt_time(r: dict[str, Any]) -> str:
    return r["error"] if "error" in r else f"{1000 * r['seconds']:.1f}"


def fmt_mem(r: dict[str, Any]) -> str:
    return "" if "error" in r else f"{r['peak_mb']:.0f}"


def ratio(a: dict[str, Any], b: dict[str, Any]) -> str:
    if "error" in a or "error" in b or b["seconds"] <= 0:
        return ""
    return f"{a['seconds'] / b['seconds']:.2f}"


def _device_name() -> str:
    """The CUDA device's name, asked in a subprocess (the parent must not initialise CUDA
    before it forks the measuring children)."""
    import subprocess

    code = "import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else '')"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="256,1024,4096", help="batch sizes, comma separated")
    parser.add_argument("--losses", default=",".join(LOSSES), help="losses, comma separated")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mem-cap-gb", type=float, default=16.0)
    parser.add_argument("--limit-s", type=float, default=60.0)
    parser.add_argument("--budget-s", type=float, default=1.0)
    parser.add_argument("--no-pml", action="store_true")
    parser.add_argument("--json", help="also write the raw results to this file")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (memory: the allocator's peak)")
    args = parser.parse_args(argv)
    global DEVICE
    DEVICE = torch.device(args.device)
    device_name = _device_name() if DEVICE.type == "cuda" else ""
    if DEVICE.type == "cuda" and not device_name:
        parser.error("--device cuda: no CUDA device here")
    sizes = [int(s) for s in args.sizes.split(",") if s]
    names = [s for s in args.losses.split(",") if s]
    unknown = [n for n in names if n not in LOSSES]
    if unknown:
        parser.error(f"unknown loss {unknown[0]!r}; choose from {', '.join(LOSSES)}")

    import pytorch_metric_learning

    import likewise  # noqa: F401 - import everything once, before forking

    for name in names:
        try:
            likewise_class(LOSSES[name][0])
        except NotAvailable:
            pass
    from pytorch_metric_learning import losses as _pml_losses  # noqa: F401
    from pytorch_metric_learning import miners as _pml_miners  # noqa: F401

    opts = {"threads": args.threads, "mem_cap_gb": args.mem_cap_gb}
    opts.update(limit_s=args.limit_s, budget_s=args.budget_s)
    print(f"# likewise losses benchmark, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    print(
        f"# torch {torch.__version__}, pytorch-metric-learning {pytorch_metric_learning.__version__}, "
        f"python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{args.threads} threads, D={args.dim}, float32, memory cap {args.mem_cap_gb:g} GB, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset (default)')}"
    )
    if DEVICE.type == "cuda":
        print(f"# device: {device_name}, memory: the CUDA allocator's peak above the inputs")
    print(f"# command: python benchmarks/losses.py {' '.join(sys.argv[1:] if argv is None else argv)}")
    print("# times: ms per forward+backward (median); memory: peak RSS above the inputs, MB")
    print()
    columns = ["loss", "B", "likewise ms", "PML ms", "floor ms", "likewise/floor", "PML/likewise"]
    print("| " + " | ".join([*columns, "likewise MB", "PML MB"]) + " |")
    print("|" + "---|" * 9)
    results = []
    for name in names:
        for b in sorted(set(sizes) | set(EXTRA_SIZES.get(name, ()))):
            d = args.dim
            ours = run_forked(
                lambda name=name, b=b, d=d: make_step("likewise", name, b, d)[0],
                build_floor=lambda name=name, b=b, d=d: make_floor(name, b, d),
                **opts,
            )
            if "floor_seconds" in ours:  # timed in the same child, alternating with likewise
                floor: dict[str, Any] = {"seconds": ours["floor_seconds"]}
            else:  # likewise failed: the floor on its own
                floor = run_forked(lambda name=name, b=b, d=d: make_floor(name, b, d), **opts)
            if args.no_pml:
                pml: dict[str, Any] = {"error": "not run"}
            elif not LOSSES[name][2]:
                pml = {"error": "n/a"}
            else:
                pml = run_forked(lambda name=name, b=b, d=d: make_step("pml", name, b, d)[0], **opts)
            row = [name, str(b), fmt_time(ours), fmt_time(pml), fmt_time(floor), ratio(ours, floor)]
            row += [ratio(pml, ours), fmt_mem(ours), fmt_mem(pml)]
            print("| " + " | ".join(row) + " |", flush=True)
            results.append({"loss": name, "B": b, "likewise": ours, "pml": pml, "floor": floor})
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
