"""Self-supervised pre-training on MNIST-1D, every method, likewise vs lightly 1.6 side by side.

Both sides train the notebook's encoder (``_ssl_common.Encoder``: three Conv1d of 25
channels, 125-d output) with the same views (the notebook's recipe), the same heads
(125 -> 125 -> 16 projectors), optimiser (Adam, lr 0.01, cosine), batch (100) and epochs,
in one run, method after method. Each side trains in a fresh process with one thread
(``OMP_NUM_THREADS=1``): likewise runs this script with ``--child``, lightly runs
``_ssl_lightly.py`` in its own virtual environment (it needs torchvision and torch 2.14; it
is never imported by likewise). The two sides of a method train at the same time (this
machine has two cores), so load from elsewhere hits both alike. The
same code then evaluates both encoders: cosine kNN (k = 10, training split as gallery) and a
logistic-regression linear probe on the encoder's output, its effective rank, kNN on the
projection, and training seconds per epoch (median over epochs).

    python benchmarks/pretraining.py --epochs 200 --lightly-python /work/lightly-venv/bin/python
    python benchmarks/pretraining.py --methods simclr,byol --epochs 50 --seeds 0,1

``--mnist5k``: instead, the command ``likewise pretrain --method NAME --data mnist5k`` with its
defaults (4,000 / 1,000 stratified; all cores) for each method, one after the other: kNN, linear
probe, minutes from start to exit, and the load average before and after each run.

    python benchmarks/pretraining.py --mnist5k
    python benchmarks/pretraining.py --mnist5k --methods simclr,byol --epochs 2 --threads 1
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# keep this folder off the path (a script here once shadowed the standard library's ``ssl``)
_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if str(Path(p or ".").resolve()) != _HERE]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from likewise import ssl  # noqa: E402
from likewise.train.pretrain_config import SMALL_HEADS  # noqa: E402

_spec = importlib.util.spec_from_file_location("_ssl_common", Path(_HERE) / "_ssl_common.py")
_common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_common)
Encoder, embed, train = _common.Encoder, _common.embed, _common.train

#: likewise methods with the heads of the lightly side (projectors 125 -> 125 -> 16): the small-data
#: heads of ``likewise pretrain --data mnist1d``, with SwAV's batch norm (lightly's head has it)
_LIGHTLY_SIDE = {"swav": {"batch_norm": True}}
LIKEWISE = {
    name: (ssl.METHODS[name], {**SMALL_HEADS[name], **_LIGHTLY_SIDE.get(name, {})}) for name in SMALL_HEADS
}


def evaluate(f_tr, f_te, p_tr, p_te, y_tr, y_te) -> dict[str, float]:
    from threadpoolctl import threadpool_limits

    from likewise.evaluation import effective_rank
    from likewise.evaluation.classification import knn_accuracy, linear_probe

    with threadpool_limits(limits=1):
        probe = linear_probe(f_tr, y_tr, f_te, y_te)["accuracy"]
    return {
        "knn": knn_accuracy(f_tr, y_tr, f_te, y_te, k=10, metric="cosine"),
        "linear": probe,
        "effective_rank": effective_rank(f_te),
        "projection_knn": knn_accuracy(p_tr, y_tr, p_te, y_te, k=10, metric="cosine"),
    }


def train_likewise_child(args: argparse.Namespace) -> None:
    """The likewise side of one run, in its own process (as lightly's is): train, then save the
    features and the epoch times where the parent evaluates both sides alike."""
    torch.set_num_threads(1)
    name, npz, out = args.child
    data = np.load(npz)
    torch.manual_seed(args.seed)
    cls, kwargs = LIKEWISE[name]
    method = cls(Encoder(), 125, **kwargs)
    params = [p for p in method.parameters() if p.requires_grad]
    seconds = train(
        method,
        params,
        data["x"],
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        after_step=method.update,
    )
    method.eval()
    np.savez(
        out,
        f_train=embed(method.encoder, data["x"]),
        f_test=embed(method.encoder, data["x_test"]),
        p_train=embed(method.project, data["x"]),
        p_test=embed(method.project, data["x_test"]),
        seconds=np.asarray(seconds),
    )


def start_side(side: str, name: str, npz: Path, out: Path, args: argparse.Namespace, seed: int):
    """Start one side's training of ``name`` in a fresh process with one thread (``OMP_NUM_THREADS=1``):
    likewise here, lightly in its own venv (``_ssl_lightly.py``). None for lightly's Naive or without
    lightly. Both sides thus start alike: a new interpreter, no thread pools left by earlier work."""
    import os

    common = ["--epochs", str(args.epochs), "--seed", str(seed), "--batch-size", str(args.batch_size)]
    common += ["--lr", str(args.lr)]
    if side == "lightly":
        if name == "naive" or not args.lightly_python:
            return None
        cmd = [args.lightly_python, str(Path(__file__).parent / "_ssl_lightly.py"), name, str(npz), str(out)]
        env = {"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    else:
        cmd = [sys.executable, str(Path(__file__)), "--child", name, str(npz), str(out)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(cmd + common, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish_side(side: str, name: str, proc, out: Path, data: dict) -> dict[str, float] | None:
    """Wait for :func:`start_side`'s run and evaluate its encoder (the same code for both sides)."""
    if proc is None:
        return None
    _, stderr = proc.communicate()
    if proc.returncode != 0:
        print(f"{side} {name} failed: {stderr[-800:]}", file=sys.stderr)
        return None
    r = np.load(out)
    result = evaluate(r["f_train"], r["f_test"], r["p_train"], r["p_test"], data["y"], data["y_test"])
    return {**result, "s_per_epoch": float(np.median(r["seconds"]))}


def raw_knn(data: dict) -> dict[str, float]:
    from likewise.evaluation.classification import knn_accuracy

    return {
        metric: knn_accuracy(data["x"], data["y"], data["x_test"], data["y_test"], k=10, metric=metric)
        for metric in ("cosine", "euclidean")
    }


def mnist1d_side_by_side(args: argparse.Namespace) -> dict:
    from likewise.train.pretrain_config import PretrainDataConfig
    from likewise.train.pretrain_data import prepare_pretrain_data

    d = prepare_pretrain_data(PretrainDataConfig(dataset="mnist1d", standardize=False))
    data = {"x": d.x_train, "y": d.y_train, "x_test": d.x_test, "y_test": d.y_test}
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        npz = Path(tmp) / "mnist1d.npz"
        np.savez(npz, **data)
        for name in args.methods:
            per_seed = []
            for seed in args.seeds:
                # both sides train at the same time, one thread each (two cores): whatever else
                # loads the machine slows both alike
                outs = {side: Path(tmp) / f"{side}_{name}_{seed}.npz" for side in ("likewise", "lightly")}
                procs = {side: start_side(side, name, npz, outs[side], args, seed) for side in outs}
                lw = finish_side("likewise", name, procs["likewise"], outs["likewise"], data)
                li = finish_side("lightly", name, procs["lightly"], outs["lightly"], data)
                per_seed.append({"likewise": lw, "lightly": li})
                print(f"{name} seed {seed}: likewise {lw}  lightly {li}", file=sys.stderr, flush=True)
            rows[name] = per_seed
    return {"raw_knn": raw_knn(data), "methods": rows}


def _mean(runs: list[dict], side: str, key: str) -> float | None:
    values = [r[side][key] for r in runs if r[side] is not None]
    return float(np.mean(values)) if values else None


def table(result: dict) -> str:
    def f(v, pct=True):
        return "-" if v is None else (f"{100 * v:.1f}" if pct else f"{v:.2f}")

    lines = [
        "| method | kNN likewise | kNN lightly | linear likewise | linear lightly | eff. rank likewise "
        "| eff. rank lightly | proj. kNN likewise | s/epoch likewise | s/epoch lightly | time ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, runs in result["methods"].items():
        lw_t, li_t = _mean(runs, "likewise", "s_per_epoch"), _mean(runs, "lightly", "s_per_epoch")
        ratio = "-" if li_t is None else f"{lw_t / li_t:.2f}"
        cells = [
            f(_mean(runs, "likewise", "knn")),
            f(_mean(runs, "lightly", "knn")),
            f(_mean(runs, "likewise", "linear")),
            f(_mean(runs, "lightly", "linear")),
            f(_mean(runs, "likewise", "effective_rank"), False),
            f(_mean(runs, "lightly", "effective_rank"), False),
            f(_mean(runs, "likewise", "projection_knn")),
            f(lw_t, False),
            f(li_t, False),
            ratio,
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    raw = result["raw_knn"]
    lines.append(
        f"\nraw-input kNN (k = 10): cosine {100 * raw['cosine']:.1f}%, "
        f"euclidean {100 * raw['euclidean']:.1f}%"
    )
    return "\n".join(lines)


def mnist5k(args: argparse.Namespace) -> dict:
    """Each method's ``likewise pretrain --method NAME --data mnist5k`` command, one after the other,
    timed from start to exit (imports, training, evaluation, export, report): the defaults, all
    cores (torch's default threads), the load average read before and after each run."""
    import os

    rows = {}
    for name in args.methods:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run"
            cmd = [sys.executable, "-m", "likewise", "pretrain", "--method", name, "--data", "mnist5k"]
            cmd += ["--out", str(out), "--no-progress"]
            if args.epochs is not None:
                cmd += ["--epochs", str(args.epochs)]
            env = dict(os.environ)
            if args.threads:  # torch's intra-op threads (OMP_NUM_THREADS), e.g. 1 on a shared machine
                env["OMP_NUM_THREADS"] = str(args.threads)
            load_before = os.getloadavg()[0]
            start = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True, env=env)
            minutes = (time.perf_counter() - start) / 60
            load_after = os.getloadavg()[0]
            if done.returncode != 0:
                print(f"mnist5k {name} failed: {done.stderr[-800:]}", file=sys.stderr, flush=True)
                continue
            r = json.loads((out / "metrics.json").read_text())
        rows[name] = {
            "knn": r.get("knn_accuracy"),
            "linear": r.get("linear_probe_accuracy"),
            "projection_knn": r.get("projection_knn_accuracy"),
            "raw_knn": r.get("raw_knn_accuracy"),
            "effective_rank": r["effective_rank"],
            "epochs": r["epochs"],
            "seconds_per_epoch": r["seconds_per_epoch"],
            "minutes": minutes,
            "load": (load_before, load_after),
        }
        print(f"mnist5k {name}: {rows[name]}", file=sys.stderr, flush=True)
    return rows


def mnist5k_table(rows: dict) -> str:
    def pct(v):
        return "-" if v is None else f"{100 * v:.1f}"

    lines = [
        "| method | kNN | linear probe | proj. kNN | eff. rank | epochs | s/epoch | minutes "
        "| load before/after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        cells = [
            pct(r["knn"]),
            pct(r["linear"]),
            pct(r["projection_knn"]),
            f"{r['effective_rank']:.1f}",
            str(r["epochs"]),
            f"{r['seconds_per_epoch']:.2f}",
            f"{r['minutes']:.1f}",
            "{:.1f} / {:.1f}".format(*r["load"]),
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    raws = [r["raw_knn"] for r in rows.values() if r["raw_knn"] is not None]
    if raws:
        lines.append(f"\nraw-pixel kNN (k = 10, euclidean): {100 * raws[0]:.1f}%")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=",".join(LIKEWISE))
    ap.add_argument("--epochs", type=int, help="default: 200 on MNIST-1D, the command's own on mnist5k")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--lightly-python", default="/work/lightly-venv/bin/python")
    ap.add_argument("--mnist5k", action="store_true")
    ap.add_argument("--threads", type=int, help="mnist5k: torch threads per run (default: all cores)")
    ap.add_argument("--json", help="write the raw results here")
    ap.add_argument("--child", nargs=3, metavar=("NAME", "NPZ", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)  # the child's seed
    args = ap.parse_args()
    if args.child:
        args.epochs = 200 if args.epochs is None else args.epochs
        train_likewise_child(args)
        return
    args.methods = [m for m in args.methods.split(",") if m]
    args.seeds = [int(s) for s in args.seeds.split(",")]
    if args.lightly_python and not Path(args.lightly_python).exists():
        print(f"no lightly environment at {args.lightly_python}: likewise only", file=sys.stderr)
        args.lightly_python = None
    if args.mnist5k:
        rows = mnist5k(args)
        print(mnist5k_table(rows))
        result: dict = {"mnist5k": rows}
    else:
        args.epochs = 200 if args.epochs is None else args.epochs
        torch.set_num_threads(1)
        result = mnist1d_side_by_side(args)
        print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
