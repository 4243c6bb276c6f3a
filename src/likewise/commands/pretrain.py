"""``likewise pretrain``: self-supervised pre-training of an encoder.

``likewise pretrain --method NAME --data mnist1d|mnist5k|DIR|FILE.npy [--epochs N] [--out DIR]``
runs the method with its defaults for that data; ``likewise pretrain CONFIG.yaml`` takes
a full config (see docs/ssl.md). Writes metrics.json, model/ and report.html under --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    from likewise.ssl import METHODS

    p = subparsers.add_parser(
        "pretrain",
        help="self-supervised pre-training (SimCLR, MoCo, BYOL, SimSiam, SwAV, DINO, Barlow Twins, VICReg)",
        description="Pre-train an encoder without labels; see docs/ssl.md.",
    )
    p.add_argument("config", nargs="?", help="YAML config (instead of --method / --data)")
    p.add_argument("--method", choices=sorted(METHODS), help="the method, with its defaults for --data")
    p.add_argument("--data", help="mnist1d, mnist5k, digits, an image folder, or FILE.npy / FILE.npz")
    p.add_argument("--epochs", type=int, help="training epochs (overrides the default / the config)")
    p.add_argument("--out", help="output directory (default: runs/pretrain-<method>-<data>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--devices", type=int, help="processes / GPUs (DDP when > 1)")
    p.add_argument("--seed", type=int, help="training seed (trainer.seed)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def build_config(args: argparse.Namespace) -> Any:
    from likewise.train.pretrain_config import default_config, load_pretrain_config, validate_pretrain_config

    if args.config is not None:
        if args.method or args.data:
            raise ValueError("give either a CONFIG file or --method and --data, not both")
        config = load_pretrain_config(args.config)
    else:
        if not args.method or not args.data:
            raise ValueError("give --method NAME and --data DATA (or a CONFIG file)")
        config = validate_pretrain_config(default_config(args.method, args.data))
    if args.epochs is not None:
        if args.epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
        config.optimizer.epochs = args.epochs
    if args.devices is not None:
        if args.devices < 1:
            raise ValueError(f"--devices must be >= 1, got {args.devices}")
        config.trainer.devices = args.devices
    if args.seed is not None:
        config.trainer.seed = args.seed
    if args.no_progress:
        config.trainer.progress_bar = False
    return config


def summary(result: dict[str, Any], out: Path) -> list[str]:
    def fmt(key: str) -> str:
        value = result.get(key)
        return "n/a" if value is None else f"{value:.4f}"

    lines = [
        f"{result['method']} on {result['data']}, {result['epochs']} epochs, "
        f"{fmt('seconds_per_epoch')} s per epoch",
        f"  knn_accuracy {fmt('knn_accuracy')}   linear_probe_accuracy {fmt('linear_probe_accuracy')}   "
        f"effective_rank {fmt('effective_rank')}   projection kNN {fmt('projection_knn_accuracy')}   "
        f"raw-input kNN {fmt('raw_knn_accuracy')}",
    ]
    if result.get("collapsed"):
        lines.append("  the representation COLLAPSED (see report.html)")
    elif result.get("collapse_warning_epoch") is not None:
        epoch = result["collapse_warning_epoch"]
        lines.append(f"  the representation looked collapsed at epoch {epoch}, then recovered (report.html)")
    lines.append(f"model: {out / 'model'}   metrics: {out / 'metrics.json'}   report: {out / 'report.html'}")
    return lines


def run(args: argparse.Namespace) -> int:
    config = build_config(args)
    if args.out:
        out = Path(args.out)
    elif args.config:
        out = Path("runs") / Path(args.config).stem
    else:
        out = Path("runs") / f"pretrain-{config.method.name}-{Path(config.data.dataset).stem}"
    from likewise.commands.train import quiet_lightning

    quiet_lightning()
    from likewise.train.pretrain import fit_pretrain

    result = fit_pretrain(config, out, resume=args.resume)
    if result:
        print("\n".join(summary(result, out)))
    return 0
