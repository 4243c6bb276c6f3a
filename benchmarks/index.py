"""likewise.Index: build time, search throughput and recall@10 (against flat) for flat / hnsw / ivf.

Data: ``--n`` (100,000) database vectors and ``--queries`` (2,000) query vectors of
``--dim`` (128) dimensions, drawn from the same mixture of ``--clusters`` (1,000)
Gaussian clusters: centres N(0, I), within-cluster noise N(0, spread^2 I) per
coordinate, seed 0; metric cosine. ``--spread`` 1.0 gives clusters that overlap
somewhat; 2.0 (the generator of ``benchmarks/evaluation.py``) makes neighbourhoods
much less clustered, the hard case for approximate search. FAISS and torch use
``--threads`` (2) threads.

* build: seconds for ``Index(...)`` + ``add`` (IVF: k-means training included);
* search: queries per second for ``search(queries, k=10)`` over all queries in one call
  (the best of ``--repeats`` runs);
* recall@10: |approximate top-10 ∩ exact top-10| / 10, averaged over queries, the exact
  top-10 coming from the flat index in the same run. The search-time knob (hnsw
  ``ef_search``, ivf ``nprobe``) is swept to show the trade-off; the row marked
  ``(default)`` is what ``Index(dim, kind=...)`` does without parameters.

    python benchmarks/index.py                  # the table in docs/benchmarks_index.md
    python benchmarks/index.py --spread 2.0     # the harder data
    python benchmarks/index.py --n 20000        # quicker

:func:`table` returns the same table as Markdown lines, for other scripts to include.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import time

import numpy as np


def clustered(n: int, centres: np.ndarray, spread: float, rng: np.random.Generator) -> np.ndarray:
    assign = rng.integers(0, centres.shape[0], n)
    return (centres[assign] + spread * rng.standard_normal((n, centres.shape[1]))).astype(np.float32)


def timed(fn, repeats: int = 1) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def recall_at(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / exact.shape[1] for a, b in zip(found, exact)]))


def table(
    n: int = 100_000,
    dim: int = 128,
    queries: int = 2_000,
    clusters: int = 1_000,
    spread: float = 1.0,
    threads: int = 2,
    repeats: int = 3,
) -> list[str]:
    """Run the benchmark; Markdown lines (a header line and the table)."""
    import faiss
    import torch

    from likewise.index import Index

    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((clusters, dim))
    x = clustered(n, centres, spread, rng)
    q = clustered(queries, centres, spread, rng)
    lines = [
        f"{n:,} x {dim} vectors in {clusters:,} clusters (spread {spread}), {queries:,} queries, "
        f"k=10, cosine, "
        f"{threads} threads; faiss {faiss.__version__}, torch {torch.__version__}, {os.cpu_count()} CPUs, "
        f"{platform.machine()}, {datetime.date.today().isoformat()}",
        "",
        "| kind | setting | build (s) | search (queries/s) | recall@10 vs flat |",
        "|---|---|---:|---:|---:|",
    ]

    def row(kind: str, setting: str, build_s: float, search_s: float, recall: float) -> None:
        lines.append(f"| {kind} | {setting} | {build_s:.2f} | {queries / search_s:,.0f} | {recall:.4f} |")
        print(lines[-1], flush=True)

    build_s, flat = timed(lambda: _built(Index(dim, kind="flat"), x))
    search_s, (_, exact) = timed(lambda: flat.search(q, 10), repeats)
    row("flat", "exact", build_s, search_s, recall_at(exact, exact))

    build_s, hnsw = timed(lambda: _built(Index(dim, kind="hnsw"), x))
    for ef in (32, 64, 128, 256):
        hnsw.set_params(ef_search=ef)
        search_s, (_, ids) = timed(lambda: hnsw.search(q, 10), repeats)
        tag = " (default)" if ef == 128 else ""
        row("hnsw", f"M=32, ef_search={ef}{tag}", build_s, search_s, recall_at(ids, exact))

    build_s, ivf = timed(lambda: _built(Index(dim, kind="ivf"), x))
    nlist = ivf.params["nlist"]
    for nprobe in (8, 16, 32, 64, 128):
        ivf.set_params(nprobe=nprobe)
        search_s, (_, ids) = timed(lambda: ivf.search(q, 10), repeats)
        tag = " (default)" if nprobe == 32 else ""
        row("ivf", f"nlist={nlist}, nprobe={nprobe}{tag}", build_s, search_s, recall_at(ids, exact))
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--clusters", type=int, default=1_000)
    parser.add_argument("--spread", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    lines = table(args.n, args.dim, args.queries, args.clusters, args.spread, args.threads, args.repeats)
    print()
    print("\n".join(lines))


def _built(index, x):
    index.add(x)
    return index


if __name__ == "__main__":
    main()
