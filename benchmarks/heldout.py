"""Benchmark: held-out retrieval on unseen classes, likewise's recipe vs pytorch-metric-learning losses.

Protocol ("A Metric Learning Reality Check", Musgrave et al. 2020): mnist5k, train on digits
0-4, leave-one-out retrieval on the unseen digits 5-9 (P@1, R-precision, MAP@R, cosine).

* ``likewise``: ``likewise demo``'s recipe (configs/demo.yaml) run by the likewise trainer
  (Lightning loop, periodic held-out evaluation, checkpoints, export), timed end to end.
* PML baselines: the *same* trunk (the demo's ConvNet, widths 24/48/96, max pooling, 64-d
  head), the same data pipeline (standardised inputs, two augmented views of 256 random
  digits per step), optimiser (AdamW, one-cycle, lr 2e-3, weight decay 1e-4) and number
  of epochs, trained by a plain loop with PML's ``ContrastiveLoss``,
  ``TripletMarginLoss`` + ``MiningFunction.TripletMarginMiner("semihard")`` and
  ``MultiSimilarityLoss`` + ``MultiSimilarityMiner`` (default arguments). They are
  evaluated twice: on the head's output (PML's usual embedding) and on the pooled trunk
  features (what likewise's recipe embeds with), so the loss and the choice of embedding
  can be told apart.

Throughput: samples/s of ``likewise train`` on the demo recipe for one epoch with 1 process
(2 threads) and with 2 DDP processes (gloo, 1 thread each), the whole command timed.

Usage::

    python benchmarks/heldout.py               # everything (~25 min on 2 cores)
    python benchmarks/heldout.py --epochs 1    # a quick smoke run
"""

from __future__ import annotations

import argparse
import copy
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent


def demo_config(epochs: int | None) -> Any:
    from likewise.commands.demo import DEMO_CONFIG
    from likewise.train.config import validate_config

    raw = copy.deepcopy(DEMO_CONFIG)
    if epochs is not None:
        raw["optimizer"]["epochs"] = epochs
    raw["trainer"]["progress_bar"] = False
    return validate_config(raw)


def run_likewise(config: Any) -> dict[str, Any]:
    from likewise.commands.train import quiet_lightning
    from likewise.train.run import fit

    quiet_lightning()
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        result = fit(config, Path(tmp) / "run")
        seconds = time.perf_counter() - start
    return {"metrics": result["heldout"], "seconds": seconds}


def pml_losses() -> dict[str, tuple[Any, Any]]:
    from pytorch_metric_learning import losses, miners

    return {
        "PML ContrastiveLoss": (losses.ContrastiveLoss(), None),
        "PML TripletMarginLoss + semi-hard miner": (
            losses.TripletMarginLoss(),
            miners.TripletMarginMiner(type_of_triplets="semihard"),
        ),
        "PML MultiSimilarityLoss + miner": (losses.MultiSimilarityLoss(), miners.MultiSimilarityMiner()),
    }


def run_pml(config: Any, loss: Any, miner: Any) -> dict[str, Any]:
    """The demo's trunk, data pipeline, optimiser and epochs, with a PML loss in a plain loop."""
    from likewise.augment import Views, build_augmentation
    from likewise.evaluation import retrieval_metrics
    from likewise.train.data import prepare_data
    from likewise.train.run import build_embedding_model

    torch.manual_seed(config.trainer.seed)
    start = time.perf_counter()
    # the same training samples as likewise's run (its validation part is held out of both)
    data = prepare_data(config.data, validation_fraction=config.eval.validation_fraction)
    head_config = config.model_copy(deep=True)
    head_config.model.embed = "head"
    model = build_embedding_model(head_config, data.input_shape)
    mean, std = torch.from_numpy(data.mean), torch.from_numpy(data.std)
    x = (torch.from_numpy(data.train.x).float() - mean) / std
    y = torch.from_numpy(data.train_label_ids).long()
    opt_cfg, aug, bs = config.optimizer, config.augment, config.sampler.batch_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=opt_cfg.lr, weight_decay=opt_cfg.weight_decay)
    steps_per_epoch = len(x) // bs
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=opt_cfg.lr, total_steps=opt_cfg.epochs * steps_per_epoch
    )
    views = Views(
        build_augmentation("light", degrees=aug.degrees, scale=aug.scale, translate=aug.translate), aug.views
    )
    generator = torch.Generator().manual_seed(config.trainer.seed)
    model.train()
    for _ in range(opt_cfg.epochs):
        order = torch.randperm(len(x), generator=generator)
        for step in range(steps_per_epoch):
            rows = order[step * bs : (step + 1) * bs]
            xb, yb = views(x[rows]), y[rows].repeat(aug.views)
            emb = model(xb)
            value = loss(emb, yb, miner(emb, yb)) if miner is not None else loss(emb, yb)
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
            schedule.step()
    seconds = time.perf_counter() - start
    model.eval()
    x_test = (torch.from_numpy(data.test.x).float() - mean) / std
    with torch.no_grad():
        head = torch.cat([model(c) for c in x_test.split(512)])
        features = torch.cat([model.features(c) for c in x_test.split(512)])
    return {
        "metrics": retrieval_metrics(head, data.test.y),
        "features": retrieval_metrics(features, data.test.y),
        "seconds": seconds,
    }


def throughput(devices: int, epochs: int) -> float:
    """Training samples/s of ``likewise train`` on the demo recipe (whole command timed)."""
    import yaml

    from likewise.commands.demo import DEMO_CONFIG

    raw = copy.deepcopy(DEMO_CONFIG)
    raw["optimizer"]["epochs"] = epochs
    raw["eval"]["every_n_epochs"] = 1000  # no held-out evaluation inside the epoch loop
    raw["export"] = {"index": False, "matcher": False}
    raw["trainer"]["threads"] = max(1, 2 // devices)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "throughput.yaml"
        cfg.write_text(yaml.safe_dump(raw))
        cmd = [sys.executable, "-m", "likewise", "train", str(cfg), "--out", f"{tmp}/run", "--no-progress"]
        cmd += ["--devices", str(devices)]
        env = dict(os.environ, OMP_NUM_THREADS=str(max(1, 2 // devices)))
        start = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, cwd=ROOT, capture_output=True)
        seconds = time.perf_counter() - start
    from likewise.train.config import validate_config
    from likewise.train.data import prepare_data

    n_train = len(prepare_data(validate_config(raw).data).train)
    views = raw["augment"]["views"]
    per_epoch = (n_train // raw["sampler"]["batch_size"]) * raw["sampler"]["batch_size"] * views
    return epochs * per_epoch / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, help="override the recipe's epochs (smoke runs)")
    parser.add_argument("--throughput-epochs", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(2)
    config = demo_config(args.epochs)
    print(
        f"mnist5k, train digits 0-4, held-out digits 5-9; {config.optimizer.epochs} epochs; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        flush=True,
    )
    rows: list[tuple[str, str, dict[str, float], float]] = []
    from likewise.evaluation import retrieval_metrics
    from likewise.train.data import prepare_data

    test = prepare_data(config.data).test
    rows.append(("raw pixels", "-", retrieval_metrics(test.x.reshape(len(test.x), -1), test.y), 0.0))
    result = run_likewise(config)
    rows.append(("likewise demo recipe (SupCon)", "pooled features", result["metrics"], result["seconds"]))
    print(f"likewise done in {result['seconds']:.0f} s", flush=True)
    for name, (loss, miner) in pml_losses().items():
        out = run_pml(config, loss, miner)
        rows.append((name, "head", out["metrics"], out["seconds"]))
        rows.append((name, "pooled features", out["features"], out["seconds"]))
        print(f"{name} done in {out['seconds']:.0f} s", flush=True)

    print()
    print("| method | embedding | P@1 | R-precision | MAP@R | wall time (s) |")
    print("|---|---|---|---|---|---|")
    for name, emb, m, seconds in rows:
        wall = f"{seconds:.0f}" if seconds else "-"
        print(
            f"| {name} | {emb} | {m['precision_at_1']:.4f} | {m['r_precision']:.4f} | "
            f"{m['map_at_r']:.4f} | {wall} |"
        )
    print()
    print("likewise wall time: the whole trainer (held-out evaluations, checkpoints, model export);")
    print("PML wall time: the plain training loop only.")

    one = throughput(1, args.throughput_epochs)
    two = throughput(2, args.throughput_epochs)
    print()
    print("| processes | training samples/s | ratio |")
    print("|---|---|---|")
    print(f"| 1 (2 threads) | {one:.0f} | 1.00 |")
    print(f"| 2 DDP, gloo (1 thread each) | {two:.0f} | {two / one:.2f} |")


if __name__ == "__main__":
    main()
