"""Saving and loading patch networks as verified safetensors files.

The file holds the four convolutions' weights and biases (float16, to keep the shipped
model small) and string metadata: ``format``, ``version``, the architecture
(``in_channels``, ``hidden``, ``features``), free-form training notes, and ``sha256``, the
SHA-256 of the tensors' bytes in name order. :func:`load_patch_net` checks all of it -- the
format, the exact set of tensor names and shapes, finite values and the digest -- before
the weights are used; nothing is unpickled.

The model shipped with likewise (``likewise/stereo/patchnet.safetensors``) was written
by ``likewise stereo train --out src/likewise/stereo/patchnet.safetensors`` (docs/stereo.md).
"""

from __future__ import annotations

import hashlib
import os
from importlib import resources
from pathlib import Path

import torch

from likewise.stereo.network import PatchNet

FORMAT = "likewise-stereo-patchnet"
VERSION = "1"
SHIPPED = "patchnet.safetensors"


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        h.update(tensors[name].contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_patch_net(net: PatchNet, path: str | os.PathLike, notes: dict[str, str] | None = None) -> Path:
    """Write ``net`` (float16 weights + metadata) atomically to ``path``."""
    from safetensors.torch import save

    from likewise.io import atomic_write_bytes

    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory; give a file name for the model (.safetensors)")
    tensors = {k: v.detach().to(torch.float16).contiguous() for k, v in net.state_dict().items()}
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "in_channels": str(net.in_channels),
        "hidden": str(net.hidden),
        "features": str(net.features),
        "sha256": _digest(tensors),
    }
    for key, value in (notes or {}).items():
        meta.setdefault(f"note.{key}", str(value))
    return atomic_write_bytes(path, save(tensors, metadata=meta))


def shipped_model_path() -> Path:
    return Path(str(resources.files("likewise.stereo").joinpath(SHIPPED)))


def load_patch_net(path: str | os.PathLike | None = None) -> PatchNet:
    """A :class:`PatchNet` (eval mode, float32) from a verified file; the shipped model by default."""
    from safetensors import SafetensorError, safe_open

    path = shipped_model_path() if path is None else Path(path)
    if not path.exists():
        raise FileNotFoundError(2, "No such model file", str(path))
    if not path.is_file():
        raise ValueError(f"{path} is not a model file")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ValueError(f"{path} is not a readable safetensors file: {exc}") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a likewise stereo patch network (format {meta.get('format')!r})")
    if meta.get("version") != VERSION:
        raise ValueError(
            f"{path}: unsupported version {meta.get('version')!r} (this likewise reads {VERSION})"
        )
    try:
        arch = {k: int(meta[k]) for k in ("in_channels", "hidden", "features")}
        net = PatchNet(**arch)
    except (KeyError, ValueError) as exc:
        raise ValueError(f"{path}: bad architecture in the metadata ({exc})") from None
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    if found != expected:
        raise ValueError(f"{path}: tensors {found} do not fit the architecture {arch} (expected {expected})")
    if any(not torch.isfinite(v.float()).all() for v in tensors.values()):
        raise ValueError(f"{path}: the weights hold NaN or infinite values")
    if meta.get("sha256") != _digest(tensors):
        raise ValueError(f"{path}: the weights do not match their recorded SHA-256 (corrupted file?)")
    net.load_state_dict({k: v.float() for k, v in tensors.items()})
    return net.eval()


__all__ = ["FORMAT", "load_patch_net", "save_patch_net", "shipped_model_path"]
