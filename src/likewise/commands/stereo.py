"""``likewise stereo``: disparity maps from a rectified stereo pair with learned patch similarity.

    likewise stereo LEFT RIGHT --out DISP.npy [--max-disparity D] [--png DISP.png] [--model M]
    likewise stereo train --out MODEL.safetensors [--steps N] [--seed S]
    likewise stereo benchmark [--model M]

The first form writes the left image's disparity map (float32 ``[H, W]``, NaN where no
disparity was found) with the model shipped in the package (or ``--model``); the second
trains a patch network from scratch on synthetic pairs (the shipped model came from it);
the third prints the Motorcycle benchmark table (docs/stereo.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

MODES = ("train", "benchmark")


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "stereo",
        help="disparity from a rectified stereo pair (learned patch similarity + SGM)",
        description="likewise stereo LEFT RIGHT --out DISP.npy: disparity of the left image "
        "(float32, NaN where none). `likewise stereo train --out M.safetensors` trains the patch "
        "network on synthetic pairs; `likewise stereo benchmark` prints the Motorcycle table.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="LEFT RIGHT | train | benchmark",
        help="the left and right image files, or `train` / `benchmark`",
    )
    p.add_argument("--out", help="output: DISP.npy (matching) or MODEL.safetensors (train)")
    p.add_argument("--png", help="matching: also write a colour-mapped disparity PNG here")
    p.add_argument(
        "--max-disparity",
        type=int,
        default=128,
        help="matching: disparities 0 <= d < D are searched (default 128)",
    )
    p.add_argument("--model", help="matching/benchmark: a patch network file (default: the shipped model)")
    p.add_argument("--steps", type=int, default=None, help="train: optimisation steps (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="train: random seed (default 0)")
    p.add_argument(
        "--pairs", type=int, default=None, help="train: synthetic pairs kept in the pool (default 48)"
    )
    p.add_argument(
        "--hard-negatives",
        action="store_true",
        help="train: only each anchor's hardest negative of the batch (BatchHardMiner)",
    )
    p.set_defaults(func=run)


def _check_output(path: str | None, suffix: str, flag: str = "--out") -> Path:
    """An output path that may be written: the right suffix, not a folder, nothing but an
    earlier file of the same format there (:func:`likewise.artifacts.check_output_file`)."""
    from likewise.artifacts import check_output_file

    if not path:
        raise ValueError(f"{flag} is required")
    out = Path(path)
    if out.suffix.lower() != suffix:
        raise ValueError(f"{flag} must end with {suffix}, got {path}")
    if out.is_dir():
        raise ValueError(f"{flag} {path} is a directory; refusing to write over it")
    check_output_file(out, suffix.lstrip("."))
    return out


def run(args: argparse.Namespace) -> int:
    first = args.inputs[0]
    if first in MODES and len(args.inputs) == 1:
        return _train(args) if first == "train" else _benchmark(args)
    if len(args.inputs) != 2:
        raise ValueError(
            f"expected LEFT RIGHT (two image files), `train` or `benchmark`; got {len(args.inputs)} arguments"
        )
    return _match(args)


def _match(args: argparse.Namespace) -> int:
    from likewise.io import save_npy
    from likewise.stereo.images import disparity_png, read_image
    from likewise.stereo.match import MatchSettings, compute_disparity
    from likewise.stereo.pretrained import load_patch_net

    out = _check_output(args.out, ".npy")
    png = _check_output(args.png, ".png", "--png") if args.png else None
    inputs = {Path(p).resolve() for p in args.inputs}
    if any(p.resolve() in inputs for p in (out, png) if p is not None):
        raise ValueError("the outputs must differ from the input images")
    left, right = (read_image(p) for p in args.inputs)
    net = load_patch_net(args.model)
    disp = compute_disparity(left, right, net, MatchSettings(max_disparity=args.max_disparity))
    save_npy(out, disp)
    if png is not None:
        disparity_png(disp, png, vmax=args.max_disparity)
    print(
        f"wrote {out} ({disp.shape[0]}x{disp.shape[1]}, disparity for "
        f"{100 * float((disp == disp).mean()):.1f}% of pixels)",
        file=sys.stderr,
    )
    return 0


def _train(args: argparse.Namespace) -> int:
    import time

    from likewise.commands.train import quiet_lightning
    from likewise.stereo.pretrained import save_patch_net
    from likewise.stereo.training import TrainSettings, train_patch_net

    out = _check_output(args.out, ".safetensors")
    given = {"steps": args.steps, "pairs": args.pairs}
    settings = TrainSettings(
        seed=args.seed,
        hard_negatives=args.hard_negatives,
        **{k: v for k, v in given.items() if v is not None},
    )
    start = time.perf_counter()
    quiet_lightning()
    net, summary = train_patch_net(settings)
    notes = {
        "command": f"likewise stereo train --steps {settings.steps} --seed {settings.seed}"
        + (" --hard-negatives" if settings.hard_negatives else ""),
        "data": "synthetic pairs from skimage.data photographs (no Motorcycle)",
        "final_loss": f"{summary['final_loss']:.4f}",
    }
    save_patch_net(net, out, notes)
    print(
        f"wrote {out} after {settings.steps} steps in {time.perf_counter() - start:.0f} s "
        f"(final loss {summary['final_loss']:.4f})",
        file=sys.stderr,
    )
    return 0


def _benchmark(args: argparse.Namespace) -> int:
    from likewise.stereo.benchmark import format_table, run_benchmark

    result = run_benchmark(args.model)
    print(format_table(result["rows"]))
    return 0
