"""Benchmark: leave-one-out retrieval metrics, likewise vs pytorch-metric-learning.

Data: ``n x 128`` float32 Gaussian blobs, ``n / 100`` classes of 100 (1,000 classes
at n = 100,000) unless a section says otherwise; one seed, generated identically
in every worker.

Each measurement runs in its own subprocess (``python benchmarks/evaluation.py
_worker ...``) so peak memory (``ru_maxrss``) is per method; a worker may get an
address-space cap (``RLIMIT_AS``) and every worker has a timeout. Both sides run
with 2 threads (torch and FAISS/OpenMP).

* likewise: ``retrieval_metrics(x, y)`` — the default: exact top-K ranks (P@1, R-precision,
  MAP@R, Recall@1/5/10), streamed with the default memory budget.
* likewise-mrr: the same with exact MRR added (``include=(..., "mrr", ...)``: a count over
  the whole row of each query whose first relevant reference lies beyond its top K).
* likewise-full: ``retrieval_metrics(x, y, include="all")`` — exact full ranking (adds mAP).
* likewise-faiss: ``retrieval_metrics(x, y, backend="faiss")`` — exact FAISS flat search
  of the top K (the same computation as PML's; no full-ranking mAP), streamed in blocks
  of 4,096 queries.
* PML: ``AccuracyCalculator(include=(precision_at_1, r_precision,
  mean_average_precision_at_r), k="max_bin_count").get_accuracy(x, y)`` on the
  L2-normalised embeddings (FAISS flat L2 = cosine ranking), the call the issue
  names as the status quo.

Sections:

0. the target: the default ``retrieval_metrics(x, y)`` against PML at 50,000 and 100,000 x 64
   (100 per class), side by side, ``--repeats`` times (``--target-only``: this section alone);
1. leave-one-out retrieval at the same size, then with large classes under the cap;
2. where PML runs out of memory: ``n`` doubles from ``--oom-start`` (25,000) with
   ``--oom-per-class`` (1,000) items per class — PML's memory grows with
   ``n x largest class`` — under the ``--cap-gb`` address-space cap, until PML
   fails (or ``--oom-max``); likewise then runs at that size under the same cap;
3. ``likewise.Index`` build time, search throughput and recall@10 for flat / hnsw /
   ivf: :func:`table` of ``benchmarks/index.py`` at 40,000 vectors (the full-size
   table is in ``docs/benchmarks_index.md``).

Usage::

    python benchmarks/evaluation.py            # full run (~15-20 min on 2 cores)
    python benchmarks/evaluation.py --quick    # small sizes, a smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import time

THREADS = 2
DIM = 128
SPREAD = 2.0  # noise std per dimension; class centres ~ N(0, I)


def make_data(n: int, n_classes: int, seed: int = 0, dim: int = DIM):
    import torch

    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(n_classes, dim, generator=g)
    labels = torch.arange(n) % n_classes
    labels = labels[torch.randperm(n, generator=g)]
    x = centers[labels] + SPREAD * torch.randn(n, dim, generator=g)
    return x, labels


def _rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def worker(impl: str, n: int, n_classes: int, dim: int = DIM) -> None:
    """Run one method once; print one JSON line."""
    os.environ["OMP_NUM_THREADS"] = str(THREADS)
    import torch

    torch.set_num_threads(THREADS)
    out: dict = {"impl": impl, "n": n, "classes": n_classes, "dim": dim}
    try:
        x, y = make_data(n, n_classes, dim=dim)
        if impl == "likewise-full":
            from likewise.evaluation import retrieval_metrics

            base = _rss_mb()
            t0, c0 = time.perf_counter(), time.process_time()
            metrics = retrieval_metrics(x, y, include="all")
        elif impl == "likewise-mrr":
            from likewise.evaluation import retrieval_metrics

            base = _rss_mb()
            t0, c0 = time.perf_counter(), time.process_time()
            metrics = retrieval_metrics(
                x, y, include=("precision_at_1", "r_precision", "map_at_r", "mrr", "recall_at_k")
            )
        elif impl in ("likewise", "likewise-faiss"):
            from likewise.evaluation import retrieval_metrics

            if impl == "likewise-faiss":
                import faiss

                faiss.omp_set_num_threads(THREADS)
            base = _rss_mb()
            t0, c0 = time.perf_counter(), time.process_time()
            metrics = retrieval_metrics(x, y, backend="faiss" if impl == "likewise-faiss" else "torch")
        elif impl == "pml":
            import faiss
            from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator

            faiss.omp_set_num_threads(THREADS)
            xn = torch.nn.functional.normalize(x, dim=1)
            calc = AccuracyCalculator(
                include=("precision_at_1", "r_precision", "mean_average_precision_at_r"),
                k="max_bin_count",
                device=torch.device("cpu"),
            )
            base = _rss_mb()
            t0, c0 = time.perf_counter(), time.process_time()
            metrics = calc.get_accuracy(xn, y)
        else:
            raise ValueError(impl)
        out["seconds"] = time.perf_counter() - t0
        out["cpu_seconds"] = time.process_time() - c0
        out["base_rss_mb"] = base
        out["metrics"] = {k: v for k, v in metrics.items() if isinstance(v, float)}
    except MemoryError as exc:
        out["error"] = f"MemoryError {exc}".strip()
    except RuntimeError as exc:  # torch reports allocation failures as RuntimeError
        out["error"] = f"RuntimeError: {str(exc).splitlines()[0][:200]}"
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out), flush=True)


def run_worker(
    impl: str, n: int, n_classes: int, cap_gb: float | None, timeout: float, dim: int = DIM
) -> dict:
    """Start a worker subprocess (optionally under an address-space cap) and parse its line."""

    def limit() -> None:
        if cap_gb is not None:
            cap = int(cap_gb * (1 << 30))
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    env = dict(os.environ, OMP_NUM_THREADS=str(THREADS), MKL_NUM_THREADS=str(THREADS))
    cmd = [sys.executable, os.path.abspath(__file__), "_worker", impl, str(n), str(n_classes), str(dim)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, preexec_fn=limit, env=env)
    except subprocess.TimeoutExpired:
        return {"impl": impl, "n": n, "classes": n_classes, "error": f"timeout after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if lines:
        res = json.loads(lines[-1])
    else:
        tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1][:200]
        res = {"impl": impl, "n": n, "classes": n_classes, "error": f"exit {proc.returncode}: {tail}"}
    res["wall_s"] = time.perf_counter() - t0
    res["cap_gb"] = cap_gb
    return res


def fmt_row(r: dict) -> str:
    m = r.get("metrics", {})
    p1 = m.get("precision_at_1")
    mapr = m.get("map_at_r", m.get("mean_average_precision_at_r"))
    cap = f"{r['cap_gb']:g} GiB" if r.get("cap_gb") else "none"
    status = r.get("error", "ok")
    secs = f"{r['seconds']:.1f}" if "seconds" in r else "-"
    peak = f"{r['peak_rss_mb']:.0f}" if "peak_rss_mb" in r else "-"
    base = f"{r['base_rss_mb']:.0f}" if "base_rss_mb" in r else "-"
    p1s = f"{p1:.4f}" if p1 is not None else "-"
    maprs = f"{mapr:.4f}" if mapr is not None else "-"
    return (
        f"| {r['impl']} | {r['n']:,} | {r['classes']:,} | {cap} | {secs} | {peak} | {base} | "
        f"{p1s} | {maprs} | {status} |"
    )


HEADER = (
    "| method | n | classes | memory cap | seconds | peak RSS MB | RSS before call MB | "
    "P@1 | MAP@R | status |\n|---|---|---|---|---|---|---|---|---|---|"
)


TARGET_DIM = 64


def target_section(quick: bool, repeats: int, timeout: float) -> list[str]:
    """The default ``retrieval_metrics(x, y)`` against PML at 50,000 and 100,000 x 64 (leave-one-out).

    Side by side: each repeat runs both, in alternating order (PML first, then likewise first),
    each in its own subprocess with 2 threads; ratios are taken within a repeat.
    """
    sizes = (5_000, 10_000) if quick else (50_000, 100_000)
    header = (
        "| n | repeat | method | seconds | CPU seconds | peak RSS MB | extra RSS MB | P@1 | R-precision | "
        "MAP@R |\n|---|---|---|---|---|---|---|---|---|---|"
    )
    rows, summary = [], []
    for n in sizes:
        ratios = []
        for rep in range(repeats):
            order = ("pml", "likewise", "likewise-mrr")
            order = order if rep % 2 == 0 else order[::-1]
            res = {impl: run_worker(impl, n, n // 100, None, timeout, dim=TARGET_DIM) for impl in order}
            for impl in order:
                r = res[impl]
                if "seconds" not in r:
                    rows.append(f"| {n:,} | {rep + 1} | {impl} | - | - | - | - | - | - | {r.get('error')} |")
                    continue
                m = r["metrics"]
                mapr = m.get("map_at_r", m.get("mean_average_precision_at_r"))
                extra = r["peak_rss_mb"] - r["base_rss_mb"]
                rows.append(
                    f"| {n:,} | {rep + 1} | {impl} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | "
                    f"{r['peak_rss_mb']:.0f} | {extra:.0f} | {m['precision_at_1']:.5f} | "
                    f"{m['r_precision']:.5f} | {mapr:.5f} |"
                )
            lw, pm, mrr = res["likewise"], res["pml"], res["likewise-mrr"]
            if "seconds" in lw and "seconds" in pm:
                diff = max(
                    abs(lw["metrics"][a] - pm["metrics"][b])
                    for a, b in (
                        ("precision_at_1", "precision_at_1"),
                        ("r_precision", "r_precision"),
                        ("map_at_r", "mean_average_precision_at_r"),
                    )
                )
                ratios.append(
                    (
                        lw["seconds"] / pm["seconds"],
                        lw["cpu_seconds"] / pm["cpu_seconds"],
                        lw["peak_rss_mb"] / pm["peak_rss_mb"],
                        (lw["peak_rss_mb"] - lw["base_rss_mb"])
                        / max(pm["peak_rss_mb"] - pm["base_rss_mb"], 1.0),
                        diff,
                        mrr["seconds"] / pm["seconds"] if "seconds" in mrr else float("nan"),
                    )
                )
        for i, (t, c, p, e, d, t_mrr) in enumerate(ratios, 1):
            summary.append(
                f"* n = {n:,}, repeat {i}: time ours / PML = **{t:.2f}** (CPU time {c:.2f}; with "
                f"exact MRR added, `likewise-mrr`: {t_mrr:.2f}); "
                f"peak RSS ours / PML = {p:.2f}; extra RSS (peak - before call) ours / PML = **{e:.2f}**; "
                f"largest |ours - PML| over P@1, R-precision, MAP@R: {d:.1e}"
            )
    title = (
        f"### Target: default `retrieval_metrics(x, y)` vs PML `AccuracyCalculator`, n x {TARGET_DIM}, "
        "100 per class, leave-one-out"
    )
    return [title, "", header, *rows, "", *summary, ""]


def retrieval_section(quick: bool, cap_gb: float, timeout: float) -> list[str]:
    out = []
    n = 20_000 if quick else 100_000
    impls = ("likewise", "likewise-full", "likewise-faiss", "pml")
    rows = [run_worker(impl, n, n // 100, None, timeout) for impl in impls]
    out += ["### Leave-one-out retrieval at the same size", "", HEADER, *map(fmt_row, rows), ""]
    pm = rows[-1]
    for lw in rows[:-1]:
        if "seconds" not in lw or "seconds" not in pm:
            continue
        agree = max(
            abs(lw["metrics"][a] - pm["metrics"][b])
            for a, b in (
                ("precision_at_1", "precision_at_1"),
                ("r_precision", "r_precision"),
                ("map_at_r", "mean_average_precision_at_r"),
            )
        )
        out.append(
            f"* {lw['impl']}: time / PML = {lw['seconds'] / pm['seconds']:.2f}; "
            f"peak RSS / PML = {lw['peak_rss_mb'] / pm['peak_rss_mb']:.2f}; "
            f"largest |likewise - PML| over P@1, R-precision, MAP@R: {agree:.2e}"
        )
    out.append("")

    # Larger classes: PML keeps a [Q, max class size] neighbour table (and several
    # int64/float64 copies of it); likewise's memory does not depend on the class size.
    n2 = 20_000 if quick else 100_000
    classes2 = 10 if quick else 50
    rows2 = [run_worker(impl, n2, classes2, cap_gb, timeout) for impl in ("pml", "likewise")]
    out += [
        f"### Same n, {n2 // classes2:,} items per class, both under a {cap_gb:g} GiB address-space cap",
        "",
        HEADER,
        *map(fmt_row, rows2),
        "",
    ]

    # Scale: likewise at 200,000 x 200,000 under the same cap.
    if not quick:
        big = run_worker("likewise", 200_000, 2_000, cap_gb, timeout * 3)
        out += ["### likewise at 200,000 x 200,000 (leave-one-out), same cap", "", HEADER, fmt_row(big), ""]
    return out


def oom_section(
    quick: bool, cap_gb: float, timeout: float, start: int, per_class: int, largest: int
) -> list[str]:
    """Double n until PML fails under the cap; then likewise at that n, same cap."""
    if quick:
        start, per_class, largest = 2_000, 100, 8_000
    rows, failed, n = [], None, start
    while n <= largest:
        r = run_worker("pml", n, max(2, n // per_class), cap_gb, timeout)
        rows.append(r)
        if "error" in r:
            failed = r
            break
        n *= 2
    out = [
        f"### Where PML runs out of memory: n doubled from {start:,} ({per_class:,} items per class), "
        f"{cap_gb:g} GiB address-space cap",
        "",
        HEADER,
        *map(fmt_row, rows),
    ]
    if failed is None:
        out += ["", f"PML did not fail up to n = {rows[-1]['n']:,} under the cap.", ""]
        return out
    lw = run_worker("likewise", failed["n"], failed["classes"], cap_gb, timeout * 3)
    out += [fmt_row(lw), ""]
    what = "timed out" if failed["error"].startswith("timeout") else "fails"
    if "error" in lw:
        out.append(
            f"PML {what} at n = {failed['n']:,}; likewise at the same n and cap failed too: {lw['error']}"
        )
    else:
        out.append(
            f"PML {what} first at n = {failed['n']:,} ({failed['error']}); likewise at the same n under the "
            f"same cap: {lw['seconds']:.1f} s, peak RSS {lw['peak_rss_mb']:,.0f} MB."
        )
    out.append("")
    return out


def index_section(quick: bool) -> list[str]:
    """Index build/search throughput and recall@10 (flat / hnsw / ivf): ``benchmarks/index.py``'s table."""
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    from index import table  # benchmarks/index.py, beside this script

    n, queries, repeats = (5_000, 200, 1) if quick else (40_000, 1_000, 2)
    with contextlib.redirect_stdout(sys.stderr):  # its progress rows go to stderr
        lines = table(n=n, queries=queries, clusters=max(10, n // 100), threads=THREADS, repeats=repeats)
    title = "### likewise.Index: build time, search throughput, recall@10 (benchmarks/index.py)"
    return [title, "", *lines, ""]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_worker":
        worker(
            sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]) if len(sys.argv) > 5 else DIM
        )
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    ap.add_argument("--cap-gb", type=float, default=4.0, help="address-space cap for the capped runs")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per worker")
    ap.add_argument("--oom-start", type=int, default=25_000, help="first n of the PML memory search")
    ap.add_argument("--oom-per-class", type=int, default=1_000, help="items per class in that search")
    ap.add_argument("--oom-max", type=int, default=400_000, help="largest n tried in that search")
    ap.add_argument("--repeats", type=int, default=2, help="side-by-side repeats of the target section")
    ap.add_argument("--target-only", action="store_true", help="only the target section (50k, 100k x 64)")
    args = ap.parse_args()
    started = datetime.datetime.now(datetime.timezone.utc)
    lines = [
        f"Command: `python benchmarks/evaluation.py{' --quick' if args.quick else ''}"
        f"{' --target-only' if args.target_only else ''} --repeats {args.repeats}` "
        f"({started:%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs visible, {THREADS} threads per method)",
        "",
    ]
    lines += target_section(args.quick, args.repeats, args.timeout * 2)
    print("\n".join(lines), flush=True)
    if args.target_only:
        return
    lines = retrieval_section(args.quick, args.cap_gb, args.timeout)
    lines += oom_section(
        args.quick, args.cap_gb, args.timeout, args.oom_start, args.oom_per_class, args.oom_max
    )
    lines += index_section(args.quick)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
