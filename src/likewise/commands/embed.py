"""``likewise embed MODEL_DIR INPUTS --out E.npy``: embeddings of inputs with an exported model.

``INPUTS`` is an array file (``.npy``, ``.npz[:key]``, ``.csv``) or a folder of images:
every image under it, sub-folders included (class sub-folders are not needed), resized to
the model's input size. For a folder, ``E.files.txt`` next to ``E.npy`` lists the file of
every row (paths relative to the folder, one per line), and unreadable images are skipped
and counted on stderr.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "embed",
        help="embed inputs with a trained model directory",
        description="Embed inputs (.npy/.npz/.csv array or a folder of images) "
        "with a model directory written by `likewise train`.",
    )
    p.add_argument("model", help="model directory (e.g. runs/demo/model)")
    p.add_argument(
        "inputs", help="inputs: .npy (any shape [N, ...]), .npz[:key], .csv, or a folder of images"
    )
    p.add_argument(
        "--out",
        required=True,
        help="where to write the embeddings (.npy); for a folder also OUT.files.txt, the file of each row",
    )
    p.add_argument("--batch-size", type=int, default=256)
    p.set_defaults(func=run)


def files_path(out: str | Path) -> Path:
    """``E.npy`` -> ``E.files.txt``: the list of the files the rows came from."""
    return Path(out).with_suffix(".files.txt")


def read_inputs(
    spec: str, input_shape: tuple[int, ...]
) -> tuple[np.ndarray, list[str] | None, list[tuple[str, str]]]:
    """``(x, files, skipped)``: ``files`` (row sources) and ``skipped`` only for a folder."""
    from likewise.io import load_array, load_npy, split_key

    path, key = split_key(spec)
    p = Path(path)
    if p.is_dir():
        from likewise.data import load_images

        if len(input_shape) != 3:
            raise ValueError(
                f"{p} is an image folder but the model takes feature vectors {list(input_shape)}"
            )
        x, files, skipped = load_images(p, image_size=tuple(input_shape[1:]), grayscale=input_shape[0] == 1)
        if x.shape[1] != input_shape[0]:
            raise ValueError(
                f"the model takes {input_shape[0]}-channel images, the folder gives {x.shape[1]}"
            )
        return x, files, skipped
    if p.suffix.lower() == ".npy":
        return load_npy(p), None, []
    return load_array(p, key), None, []


def run(args: argparse.Namespace) -> int:
    from likewise.artifacts import check_output_file
    from likewise.export import load
    from likewise.io import atomic_write_text, save_npy

    if not str(args.out).endswith(".npy"):
        raise ValueError(f"--out must name a .npy file, got {args.out}")
    check_output_file(args.out, "npy")
    model = load(args.model)
    x, files, skipped = read_inputs(args.inputs, model.input_shape)
    if skipped:
        shown = ", ".join(name for name, _ in skipped[:3]) + (", ..." if len(skipped) > 3 else "")
        plural = "s" if len(skipped) != 1 else ""
        print(f"likewise embed: skipped {len(skipped)} unreadable image{plural}: {shown}", file=sys.stderr)
    emb = model.embed(x, batch_size=args.batch_size)
    if files is not None:
        check_output_file(files_path(args.out), "text")
        atomic_write_text(files_path(args.out), "".join(f"{name}\n" for name in files))
    save_npy(args.out, emb)
    listed = f" (files: {files_path(args.out)})" if files is not None else ""
    print(f"{emb.shape[0]} embeddings of dimension {emb.shape[1]} -> {args.out}{listed}")
    return 0
