"""``likewise demo [--out DIR]``: the main job, end to end, on data that ships with the install.

Trains a small ConvNet (SupCon loss on two augmented views) on mnist5k digits 0-4
(10% of them held out as the validation split that selects the best epoch), evaluates
retrieval on the unseen digits 5-9, builds an index and calibrates a matcher on them,
and writes ``metrics.json``, ``report.html`` and the model directory under ``--out``. The
recipe is :data:`DEMO_CONFIG` (the same as ``configs/demo.yaml``).

Running the demo again with the same ``--out`` replaces the previous demo output, once
the new run has succeeded (it trains in a temporary sibling directory, then swaps);
``--resume`` continues an interrupted one in place instead.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

#: the demo's training recipe; configs/demo.yaml holds the same settings
DEMO_CONFIG: dict[str, Any] = {
    "data": {"dataset": "mnist5k", "split": "class_disjoint", "train_classes": [0, 1, 2, 3, 4], "seed": 0},
    "model": {
        "trunk": "convnet",
        "trunk_kwargs": {"widths": [24, 48, 96]},
        "pooling": "max",
        "embedding_dim": 64,
        "normalize": True,
        "embed": "features",
    },
    "loss": {"name": "SupConLoss", "temperature": 0.1},
    "sampler": {"kind": "random", "batch_size": 256},
    "augment": {"views": 2, "degrees": 15, "scale": 0.15, "translate": 0.1},
    "optimizer": {"name": "adamw", "lr": 0.002, "weight_decay": 0.0001, "epochs": 8, "scheduler": "onecycle"},
    "eval": {"every_n_epochs": 2, "metric": "map_at_r", "validation_fraction": 0.1},
    "trainer": {"seed": 0, "checkpoint_every_n_steps": 20, "log_every_n_steps": 3},
}
#: held-out targets of the demo (issue 4)
TARGETS = {"map_at_r": 0.50, "precision_at_1": 0.95}


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "demo",
        help="train on digits 0-4, evaluate on unseen digits 5-9, index, match, report",
        description="Train on mnist5k digits 0-4 and evaluate retrieval on the unseen digits 5-9.",
    )
    p.add_argument("--out", default="runs/demo", help="output directory (default: runs/demo)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted demo in --out")
    p.add_argument("--epochs", type=int, help="override the number of epochs (quick look: 1)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def demo_config(epochs: int | None = None, progress_bar: bool = True) -> Any:
    from likewise.train.config import validate_config

    config = validate_config(DEMO_CONFIG)
    if epochs is not None:
        if epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {epochs}")
        config.optimizer.epochs = epochs
    config.trainer.progress_bar = progress_bar
    return config


def write_demo_report(out: Path, result: dict[str, Any], config: Any) -> Path:
    """report.html: metrics, 2-D map, verification histogram and retrieval examples of digits 5-9."""
    from likewise.export import load
    from likewise.report import write_report
    from likewise.train.data import prepare_data

    data = prepare_data(config.data)
    model = load(out / "model")
    emb = model.embed(data.test.x)
    labels = [data.test.class_names[i] for i in data.test.y]
    metrics = {"held-out retrieval (digits 5-9)": result["heldout"]}
    options: dict[str, Any] = {
        "metric": config.eval.distance,
        "title": "likewise demo: unseen digits 5-9",
        "subtitle": f"trained on digits 0-4, best epoch {result['best_epoch']} "
        f"(chosen on {result.get('selected_on', 'heldout')} {config.eval.metric})",
    }
    if "threshold" in result.get("matching", {}):
        unknown = ", ".join(result["matching"].get("unknown_classes") or []) or "none"
        metrics[f"matcher (held-out queries; never enrolled: {unknown})"] = result["matching"]["queries"]
        options["threshold"] = result["matching"]["threshold"]
    return write_report(
        out / "report.html", metrics, embeddings=emb, labels=labels, images=data.test.x, **options
    )


#: what a demo run writes at the top of --out (a directory holding only these may be replaced)
DEMO_OUTPUTS = frozenset({"config.yaml", "checkpoints", "logs", "model", "metrics.json", "report.html"})


def previous_demo(out: Path, config: Any) -> bool:
    """Whether ``out`` holds an earlier demo run, to be replaced.

    ``ValueError`` if it holds a run that is not a demo (another recipe's ``config.yaml``), or
    a run together with files the demo did not write: those are never deleted.
    """
    import yaml

    if not out.is_dir():
        return False
    entries = {p.name for p in out.iterdir()}
    if not {"metrics.json", "checkpoints"} & entries:
        return False
    others = sorted(entries - DEMO_OUTPUTS)
    if others:
        raise ValueError(
            f"{out} holds a previous run and other files ({', '.join(others[:3])}); "
            "move them, pass --resume, or choose another --out"
        )
    saved = out / "config.yaml"
    try:
        before = yaml.safe_load(saved.read_text(encoding="utf-8")) if saved.exists() else None
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        before = {}
    now = config.to_dict()
    if before is None:  # stopped before it wrote its config: nothing was trained
        same = not (out / "checkpoints" / "last.ckpt").exists()
    else:
        same = isinstance(before, dict) and all(before.get(k) == now[k] for k in ("data", "model", "loss"))
    if not same:
        raise ValueError(
            f"{out} holds a training run that is not a demo run; choose another --out "
            "(the demo replaces only its own output)"
        )
    return True


def run(args: argparse.Namespace) -> int:
    from likewise.commands.train import quiet_lightning, summary_lines
    from likewise.io import atomic_directory
    from likewise.train.run import fit

    config = demo_config(args.epochs, progress_bar=not args.no_progress)
    out = Path(args.out)
    quiet_lightning()
    start = time.perf_counter()
    if not args.resume and previous_demo(out, config):
        # a fresh demo replacing the last one: built aside, swapped in only once it succeeded
        with atomic_directory(out, "run") as tmp:
            result = fit(config, tmp)
            write_demo_report(tmp, result, config)
    else:
        result = fit(config, out, resume=args.resume)
        write_demo_report(out, result, config)
    report = out / "report.html"
    elapsed = time.perf_counter() - start
    m = result["heldout"]
    verdict = ", ".join(f"{k} {m[k]:.3f} {'>=' if m[k] >= t else '<'} {t:.2f}" for k, t in TARGETS.items())
    print("\n".join(summary_lines(result, out)))
    print(f"targets: {verdict}")
    print(f"report: {report}   ({elapsed:.0f} s)")
    return 0
