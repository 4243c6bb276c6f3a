"""``likewise embed MODEL_DIR INPUTS --out E.npy``: embeddings of inputs with an exported model."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "embed",
        help="embed inputs with a trained model directory",
        description="Embed inputs (.npy/.npz/.csv array or an image folder) "
        "with a model directory written by `likewise train`.",
    )
    p.add_argument("model", help="model directory (e.g. runs/demo/model)")
    p.add_argument("inputs", help="inputs: .npy (any shape [N, ...]), .npz[:key], .csv, or an image folder")
    p.add_argument("--out", required=True, help="where to write the embeddings (.npy)")
    p.add_argument("--batch-size", type=int, default=256)
    p.set_defaults(func=run)


def read_inputs(spec: str, input_shape: tuple[int, ...]) -> np.ndarray:
    from likewise.io import load_array, split_key

    path, key = split_key(spec)
    p = Path(path)
    if p.is_dir():
        from likewise.data import load_image_folder

        if len(input_shape) != 3:
            raise ValueError(
                f"{p} is an image folder but the model takes feature vectors {list(input_shape)}"
            )
        data = load_image_folder(p, image_size=tuple(input_shape[1:]), grayscale=input_shape[0] == 1)
        return data.x
    if not p.exists():
        raise FileNotFoundError(2, "No such file", str(p))
    if p.suffix.lower() == ".npy":
        try:
            return np.load(p, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise ValueError(f"{p} is not a readable .npy array: {exc}") from None
    return load_array(p, key)


def run(args: argparse.Namespace) -> int:
    from likewise.export import load
    from likewise.io import save_npy

    if not str(args.out).endswith(".npy"):
        raise ValueError(f"--out must name a .npy file, got {args.out}")
    model = load(args.model)
    x = read_inputs(args.inputs, model.input_shape)
    emb = model.embed(x, batch_size=args.batch_size)
    save_npy(args.out, emb)
    print(f"{emb.shape[0]} embeddings of dimension {emb.shape[1]} -> {args.out}")
    return 0
