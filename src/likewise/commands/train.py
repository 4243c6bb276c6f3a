"""``likewise train CONFIG [--out DIR] [--resume] [--devices N]``: train from a YAML config."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "train",
        help="train an embedding model from a YAML config",
        description="Train an embedding model from a YAML config (see docs/training.md).",
    )
    p.add_argument("config", help="YAML config file")
    p.add_argument("--out", help="output directory (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--devices", type=int, help="processes / GPUs (DDP when > 1); overrides trainer.devices")
    p.add_argument(
        "--num-nodes", type=int, help="machines, each started with torchrun; overrides trainer.num_nodes"
    )
    p.add_argument("--epochs", type=int, help="override optimizer.epochs")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it is drawn on stderr)")
    p.set_defaults(func=run)


def quiet_lightning() -> None:
    """Keep Lightning's informational banners off the terminal (warnings still show)."""
    import logging
    import warnings

    import lightning.pytorch  # noqa: F401 - it sets its loggers' levels on import

    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)


def summary_lines(result: dict[str, Any], out: Path) -> list[str]:
    if "supervision" in result:  # pairs / triplets run (likewise.train.pairs)
        kind, n_items = result["supervision"], result["n_items"]
        lines = [f"trained from {result['n_train_pairs']} pairs ({kind} file) of {n_items} items"]
        for name, key in (("held-out pairs", "heldout_pairs"), ("raw features", "raw_features_pairs")):
            if key in result:
                m = result[key]
                lines.append(
                    f"  {name}: roc_auc {m['roc_auc']:.4f}   "
                    f"average_precision {m['average_precision']:.4f}   eer {m['eer']:.4f}   "
                    f"tar_at_far_1e-03 {m['tar_at_far_1e-03']:.4f}"
                )
        report = out / "report.html"
        lines.append(f"model: {out / 'model'}   metrics: {out / 'metrics.json'}   report: {report}")
        return lines
    m = result["heldout"]
    if result.get("selected_on") == "validation":
        chosen = f"best epoch {result['best_epoch']} (chosen on {result['n_validation']} validation samples)"
    else:
        chosen = f"best epoch {result['best_epoch']} (chosen on these classes: optimistic)"
    lines = [
        f"held-out classes {', '.join(result['heldout_classes'])} ({result['n_heldout']} samples), {chosen}:",
        f"  precision_at_1 {m['precision_at_1']:.4f}   r_precision {m['r_precision']:.4f}   "
        f"map_at_r {m['map_at_r']:.4f}",
    ]
    if "matching" in result and "threshold" in result["matching"]:
        q, unknown = result["matching"]["queries"], result["matching"].get("unknown_classes") or []
        line = (
            f"  matcher threshold {result['matching']['threshold']:.4f}: accuracy {q['accuracy']:.4f} "
            f"on {int(q['n_queries'])} held-out queries"
        )
        if unknown:
            line += (
                f"; class {', '.join(unknown)} never enrolled: {q['false_accept_rate']:.4f} of its "
                "queries wrongly given a label"
            )
        lines.append(line)
    lines.append(f"model: {out / 'model'}   metrics: {out / 'metrics.json'}")
    return lines


def run(args: argparse.Namespace) -> int:
    from likewise.train.config import load_config

    config = load_config(args.config)
    if args.devices is not None:
        if args.devices < 1:
            raise ValueError(f"--devices must be >= 1, got {args.devices}")
        config.trainer.devices = args.devices
    if args.num_nodes is not None:
        if args.num_nodes < 1:
            raise ValueError(f"--num-nodes must be >= 1, got {args.num_nodes}")
        config.trainer.num_nodes = args.num_nodes
    if args.epochs is not None:
        if args.epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
        config.optimizer.epochs = args.epochs
    if args.no_progress:
        config.trainer.progress_bar = False
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    quiet_lightning()
    from likewise.train.run import fit

    result = fit(config, out, resume=args.resume)
    if result:
        print("\n".join(summary_lines(result, out)))
    return 0
