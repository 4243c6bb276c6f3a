"""Benchmark: training from pairs only vs from class labels, at the same budget.

mnist5k: the digits 0-4 are the training classes (2,500 images), 5-9 are held out (2,500).
From the training labels, 20,000 pairs are drawn (10,000 similar: two images of one digit;
10,000 dissimilar: two images of different digits) and written as a pairs file; the
pairs run never sees a label. Both runs use ``likewise train`` with the same model (an MLP
on the 784 standardised pixels, hidden 256, 64-d head; ``--embed features``, the default, embeds
with the pooled trunk features), loss, optimiser, batch size (120) and number of optimizer steps:

* ``pairs``: ``data.pairs`` (whole pairs per batch, known negatives filled in, the rest of
  the batch's pairs unknown), the last epoch's weights;
* ``labels``: the class-balanced sampler (5 classes x 24 images), the usual
  ``likewise train`` run (best epoch on a 10 % validation split of the training digits).

Evaluated on the held-out digits with the exported models: leave-one-out MAP@R (cosine) and
the ROC-AUC of 20,000 held-out pairs drawn the same way (half similar), beside the raw
standardised pixels (cosine). Means and standard deviations over ``--seeds`` seeds (pairs,
sampling and initialisation all follow the seed).

Usage::

    python benchmarks/pairs.py                 # 3 seeds, ContrastiveLoss and MultiSimilarityLoss
    python benchmarks/pairs.py --seeds 1 --losses ContrastiveLoss   # a quick run
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

TRAIN_CLASSES = (0, 1, 2, 3, 4)
BATCH = 120
HIDDEN = 256
DIM = 64
EMBED = "features"


def draw_pairs(y: np.ndarray, items: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` pairs ``(a, b, similar)`` of ``items``: the first half similar, the rest dissimilar."""
    by = {c: items[y[items] == c] for c in np.unique(y[items])}
    classes = np.array(sorted(by))
    rows = []
    for k in range(n):
        if k < n // 2:
            c = rng.choice(classes)
            a, b = rng.choice(by[c], 2, replace=False)
        else:
            c1, c2 = rng.choice(classes, 2, replace=False)
            a, b = rng.choice(by[c1]), rng.choice(by[c2])
        rows.append((int(a), int(b), int(k < n // 2)))
    return np.array(rows, dtype=np.int64)


def write_csv(path: Path, rows: np.ndarray) -> Path:
    path.write_text("a,b,similar\n" + "".join(f"{a},{b},{s}\n" for a, b, s in rows), encoding="utf-8")
    return path


def base_config(loss: str, seed: int) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"name": loss}
    return {
        "model": {"trunk": "mlp", "embedding_dim": DIM, "trunk_kwargs": {"hidden": [HIDDEN]}, "embed": EMBED},
        "loss": kwargs,
        "optimizer": {"name": "adam", "lr": 1e-3},
        "eval": {"validation_fraction": 0.1, "heldout_curves": False},
        "export": {"index": False, "matcher": False},
        "trainer": {"progress_bar": False, "seed": seed, "threads": 2, "checkpoint_every_n_steps": 10_000},
    }


def embed(model_dir: Path, x: np.ndarray) -> np.ndarray:
    from likewise.export import load

    return load(model_dir).embed(x)


def evaluate(emb: np.ndarray, y: np.ndarray, pairs: np.ndarray) -> dict[str, float]:
    """Leave-one-out MAP@R of ``emb`` and ROC-AUC of the ``pairs`` (rows of ``emb``)."""
    from likewise.evaluation import retrieval_metrics, verification_metrics
    from likewise.train.pairs import pair_scores

    r = retrieval_metrics(emb, y, metric="cosine")
    v = verification_metrics(pair_scores(emb, pairs[:, 0], pairs[:, 1], "cosine"), pairs[:, 2])
    return {"map_at_r": float(r["map_at_r"]), "pair_roc_auc": float(v["roc_auc"])}


def run_once(loss: str, seed: int, epochs_pairs: int, n_pairs: int, tmp: Path) -> dict[str, Any]:
    from likewise.commands.train import quiet_lightning
    from likewise.data import load_mnist5k
    from likewise.pair_sampling import PairBatchSampler
    from likewise.train.config import validate_config
    from likewise.train.run import fit

    quiet_lightning()
    data = load_mnist5k()
    x = data.x.reshape(len(data.x), -1).astype(np.float32)
    y = data.y
    train_items = np.flatnonzero(np.isin(y, TRAIN_CLASSES))
    held_items = np.flatnonzero(~np.isin(y, TRAIN_CLASSES))
    rng = np.random.default_rng(seed)
    # the pairs run's items are the training images only (rows 0..2499 of its features file)
    x_train = x[train_items]
    train_pairs = draw_pairs(y[train_items], np.arange(len(train_items)), n_pairs, rng)
    held_pairs = draw_pairs(y[held_items], np.arange(len(held_items)), n_pairs, rng)
    np.save(tmp / "train_features.npy", x_train)
    write_csv(tmp / "pairs.csv", train_pairs)

    steps_pairs = len(PairBatchSampler(len(x_train), *train_pairs.T, BATCH)) * epochs_pairs
    cfg = base_config(loss, seed)
    cfg["data"] = {"dataset": str(tmp / "train_features.npy"), "pairs": str(tmp / "pairs.csv")}
    cfg["sampler"] = {"batch_size": BATCH}
    cfg["optimizer"]["epochs"] = epochs_pairs
    t0 = time.perf_counter()
    fit(validate_config(cfg), tmp / f"pairs_{loss}_{seed}")
    t_pairs = time.perf_counter() - t0

    # labels: the same images with their labels, the same number of steps
    np.save(tmp / "all_features.npy", x)
    np.save(tmp / "all_labels.npy", y)
    cfg = base_config(loss, seed)
    cfg["data"] = {
        "dataset": str(tmp / "all_features.npy"),
        "labels": str(tmp / "all_labels.npy"),
        "train_classes": list(TRAIN_CLASSES),
    }
    cfg["sampler"] = {"classes_per_batch": 5, "samples_per_class": BATCH // 5}
    from likewise.sampling import ClassBalancedBatchSampler

    per_class = len(train_items) // len(TRAIN_CLASSES) - round(0.1 * len(train_items) / len(TRAIN_CLASSES))
    labels_ids = np.repeat(np.arange(len(TRAIN_CLASSES)), per_class)  # after the 10 % validation split
    per_epoch = len(ClassBalancedBatchSampler(labels_ids, len(TRAIN_CLASSES), BATCH // len(TRAIN_CLASSES)))
    cfg["optimizer"]["epochs"] = max(1, round(steps_pairs / per_epoch))
    steps_labels = per_epoch * cfg["optimizer"]["epochs"]
    t0 = time.perf_counter()
    fit(validate_config(cfg), tmp / f"labels_{loss}_{seed}")
    t_labels = time.perf_counter() - t0

    mean, std = x_train.mean(0), x_train.std(0)
    raw = (x[held_items] - mean) / np.where(std > 1e-6, std, 1.0)
    out = {
        "pairs": evaluate(
            embed(tmp / f"pairs_{loss}_{seed}" / "model", x[held_items]), y[held_items], held_pairs
        ),
        "labels": evaluate(
            embed(tmp / f"labels_{loss}_{seed}" / "model", x[held_items]), y[held_items], held_pairs
        ),
        "raw": evaluate(raw, y[held_items], held_pairs),
        "steps": {"pairs": steps_pairs, "labels": steps_labels},
        "seconds": {"pairs": t_pairs, "labels": t_labels},
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--losses", nargs="+", default=["ContrastiveLoss", "MultiSimilarityLoss"])
    parser.add_argument("--epochs", type=int, default=1, help="epochs of the pairs run (labels: same steps)")
    parser.add_argument("--pairs", type=int, default=20_000)
    parser.add_argument("--embed", choices=["head", "features"], default="features", help="model.embed")
    parser.add_argument("--json", help="also write the raw results here")
    args = parser.parse_args()
    global EMBED
    EMBED = args.embed
    torch.set_num_threads(2)
    results: dict[str, list[dict[str, Any]]] = {}
    for loss in args.losses:
        for seed in range(args.seeds):
            with tempfile.TemporaryDirectory() as tmp:
                r = run_once(loss, seed, args.epochs, args.pairs, Path(tmp))
            results.setdefault(loss, []).append(r)
            print(f"{loss} seed {seed}: {json.dumps(r)}", flush=True)

    def cell(runs: list[dict[str, Any]], who: str, key: str) -> str:
        v = np.array([r[who][key] for r in runs])
        return f"{v.mean():.4f} ± {v.std():.4f}"

    print()
    print("| loss | supervision | steps | held-out MAP@R | held-out pair ROC-AUC | train s |")
    print("|---|---|---:|---:|---:|---:|")
    for loss, runs in results.items():
        for who, name in (("pairs", f"{args.pairs:,} pairs only"), ("labels", "class labels")):
            steps = runs[0]["steps"][who]
            secs = np.mean([r["seconds"][who] for r in runs])
            print(
                f"| {loss} | {name} | {steps} | {cell(runs, who, 'map_at_r')} | "
                f"{cell(runs, who, 'pair_roc_auc')} | {secs:.0f} |"
            )
    first = next(iter(results.values()))
    print(
        f"| — | raw pixels (standardised), cosine | 0 | {cell(first, 'raw', 'map_at_r')} | "
        f"{cell(first, 'raw', 'pair_roc_auc')} | — |"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
