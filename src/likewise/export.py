"""A trained embedding model as a self-contained directory, and :func:`load` to use it.

Layout of a model directory::

    model.json          format, version, model architecture (``build_model`` arguments),
                        preprocessing (input shape, mean, std), embedding dimension,
                        normalisation, distance, class names, training config (for reference)
    model.safetensors   the weights (a state dict; no pickled code)
    index/              optional: a likewise.Index of reference embeddings
    matcher/            optional: a calibrated likewise.matching.Matcher (with its index)

``load(dir).embed(inputs)`` needs only the library's models (``likewise.models``),
not the trainer: it rebuilds the architecture, loads the weights and applies the
same preprocessing as training, ``(x - mean) / std``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    PositiveInt,
    ValidationError,
    model_validator,
)
from torch import nn

from likewise.artifacts import file_record
from likewise.io import atomic_directory, atomic_write_bytes, atomic_write_json

FORMAT = "likewise-model"
VERSION = 1
ARCH_KEYS = (
    "trunk",
    "input_shape",
    "embedding_dim",
    "pooling",
    "normalize",
    "projection_dim",
    "trunk_kwargs",
    "embed",
)


def save_model(
    path: str | os.PathLike,
    model: nn.Module,
    *,
    mean: np.ndarray | None = None,
    std: np.ndarray | None = None,
    distance: str = "cosine",
    class_names: list[str] | None = None,
    train_config: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    index: Any = None,
    matcher: Any = None,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` (a :class:`likewise.models.EmbeddingModel` built by ``build_model``)
    and its preprocessing to the directory ``path``, atomically.

    ``path`` may be new, an empty folder or a model directory written before; with
    ``overwrite=True`` also another likewise artifact; anything else raises
    :class:`FileExistsError`. Weights must be finite.
    """
    from safetensors.torch import save

    arch = dict(getattr(model, "config", {}) or {})
    missing = [k for k in ("trunk", "input_shape", "embedding_dim") if arch.get(k) is None]
    if missing or not isinstance(arch.get("trunk"), str) or arch["trunk"] not in _trunk_names():
        raise ValueError(
            "save_model needs a model made by likewise.models.build_model from a trunk name "
            f"(its .config lacks {', '.join(missing) or 'a known trunk name'})"
        )
    input_shape = [int(s) for s in arch["input_shape"]]
    mean_arr = np.zeros(1, np.float32) if mean is None else np.asarray(mean, np.float32)
    std_arr = np.ones(1, np.float32) if std is None else np.asarray(std, np.float32)
    if np.any(std_arr <= 0) or not np.all(np.isfinite(std_arr)) or not np.all(np.isfinite(mean_arr)):
        raise ValueError("std must be positive and finite, mean finite")
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "model": {k: arch.get(k) for k in ARCH_KEYS},
        "preprocessing": {
            "input_shape": input_shape,
            "mean": mean_arr.tolist(),
            "mean_shape": list(mean_arr.shape),
            "std": std_arr.tolist(),
            "std_shape": list(std_arr.shape),
        },
        "embedding_dim": int(arch.get("output_dim") or arch["embedding_dim"]),
        "normalize": bool(arch.get("normalize", True)),
        "distance": distance,
        "class_names": list(class_names) if class_names is not None else None,
        "metrics": metrics,
        "train_config": train_config,
    }
    weights = {
        k: v.detach().cpu().float().contiguous() if v.is_floating_point() else v.detach().cpu()
        for k, v in model.state_dict().items()
    }
    bad = [k for k, v in weights.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise ValueError(f"the model's weights hold NaN or infinite values ({', '.join(bad[:3])}); not saved")
    with atomic_directory(path, "model", overwrite=overwrite) as tmp:
        atomic_write_bytes(tmp / "model.safetensors", save(weights))
        meta["files"] = {"model.safetensors": file_record(tmp / "model.safetensors")}
        atomic_write_json(tmp / "model.json", meta)
        if matcher is not None:
            matcher.save(tmp / "matcher")
        elif index is not None:
            index.save(tmp / "index")
    return Path(path)


def _trunk_names() -> tuple[str, ...]:
    from likewise.models import TRUNKS

    return tuple(TRUNKS)


def _to_numpy(inputs: Any) -> np.ndarray:
    if isinstance(inputs, torch.Tensor):
        inputs = inputs.detach().cpu().numpy()
    if not isinstance(inputs, np.ndarray):
        raise TypeError(f"inputs must be a NumPy array or a torch tensor, got {type(inputs).__name__}")
    if inputs.dtype.kind not in "fiub":
        raise TypeError(f"inputs must be numeric, got dtype {inputs.dtype}")
    return inputs


class ExportedModel:
    """A loaded model directory: :meth:`embed` inputs, and the optional index / matcher."""

    def __init__(self, path: Path, meta: dict[str, Any], model: nn.Module) -> None:
        self.path = path
        self.meta = meta
        self.model = model.eval()
        pre = meta["preprocessing"]
        self.input_shape: tuple[int, ...] = tuple(pre["input_shape"])
        self.mean = np.asarray(pre["mean"], np.float32).reshape(pre["mean_shape"])
        self.std = np.asarray(pre["std"], np.float32).reshape(pre["std_shape"])
        self.embedding_dim: int = meta["embedding_dim"]
        self.normalize: bool = meta["normalize"]
        self.distance: str = meta["distance"]
        self.class_names: list[str] | None = meta.get("class_names")
        self._matcher: Any = None
        self._index: Any = None

    def __repr__(self) -> str:
        return (
            f"ExportedModel({str(self.path)!r}, trunk={self.meta['model']['trunk']!r}, "
            f"input_shape={self.input_shape}, embedding_dim={self.embedding_dim})"
        )

    def preprocess(self, inputs: Any) -> np.ndarray:
        """``[N, *input_shape]`` (or ``[N, prod(input_shape)]``) -> standardised float32.

        For an image model (``input_shape`` ``[C, H, W]``), ``uint8`` inputs are pixels 0..255
        and are scaled to [0, 1] first, as training and ``likewise embed`` read images; float
        inputs are taken as already in the training scale ([0, 1] for images).
        """
        from likewise.data.arrays import unit_images

        x = _to_numpy(inputs)
        x = unit_images(x) if len(self.input_shape) == 3 else x.astype(np.float32, copy=False)
        flat = int(np.prod(self.input_shape))
        if x.ndim == 2 and x.shape[1] == flat and len(self.input_shape) > 1:
            x = x.reshape(len(x), *self.input_shape)
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(
                f"inputs must have shape [N, {', '.join(map(str, self.input_shape))}] "
                f"(or [N, {flat}]), got {list(x.shape)}"
            )
        if not np.all(np.isfinite(x)):
            raise ValueError("inputs contain NaN or inf")
        return (x - self.mean) / self.std

    @torch.no_grad()
    def embed(self, inputs: Any, *, batch_size: int = 256, device: str | torch.device = "cpu") -> np.ndarray:
        """Embeddings ``[N, embedding_dim]`` (float32 NumPy) of ``inputs`` (NumPy or torch), in batches."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        from likewise.devices import resolve_device

        x = self.preprocess(inputs)
        model = self.model.to(resolve_device(device))
        if len(x) == 0:
            return np.zeros((0, self.embedding_dim), np.float32)
        out = [
            model(torch.from_numpy(np.ascontiguousarray(x[i : i + batch_size])).to(device))
            .float()
            .cpu()
            .numpy()
            for i in range(0, len(x), batch_size)
        ]
        return np.concatenate(out)

    __call__ = embed

    @property
    def matcher(self) -> Any:
        """The calibrated matcher saved with the model (``None`` if there is none)."""
        if self._matcher is None and (self.path / "matcher").is_dir():
            from likewise.matching import Matcher

            self._matcher = Matcher.load(self.path / "matcher")
        return self._matcher

    @property
    def index(self) -> Any:
        """The index saved with the model (the matcher's, if any; ``None`` if there is none)."""
        if self._index is None:
            if self.matcher is not None:
                self._index = self.matcher.index
            elif (self.path / "index").is_dir():
                from likewise.index import Index

                self._index = Index.load(self.path / "index")
        return self._index


class _Architecture(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    trunk: str
    input_shape: list[PositiveInt] = Field(min_length=1)
    embedding_dim: PositiveInt
    pooling: str | None = "avg"
    normalize: bool = True
    projection_dim: PositiveInt | None = None
    trunk_kwargs: dict[str, Any] | None = None
    embed: str | None = "head"


class _Preprocessing(BaseModel):
    model_config = ConfigDict(extra="ignore")
    input_shape: list[PositiveInt] = Field(min_length=1)
    mean: Any
    mean_shape: list[NonNegativeInt]
    std: Any
    std_shape: list[NonNegativeInt]

    @model_validator(mode="after")
    def _scales(self) -> _Preprocessing:
        for name in ("mean", "std"):
            try:
                values = np.asarray(getattr(self, name), dtype=np.float64)
            except (TypeError, ValueError):
                raise ValueError(f"preprocessing.{name} must be numbers") from None
            shape = getattr(self, f"{name}_shape")
            if values.size != int(np.prod(shape)):
                raise ValueError(f"preprocessing.{name} has {values.size} values but {name}_shape {shape}")
            if not np.all(np.isfinite(values)):
                raise ValueError(f"preprocessing.{name} must be finite")
            if name == "std" and not np.all(values > 0):
                raise ValueError("preprocessing.std must be positive (a std of 0 divides by zero)")
        return self


class _ModelManifest(BaseModel):
    """The schema of ``model.json`` (unknown keys are ignored; numbers are not coerced)."""

    model_config = ConfigDict(extra="ignore", strict=True)
    format: str
    version: int
    model: _Architecture
    preprocessing: _Preprocessing
    embedding_dim: PositiveInt
    normalize: bool
    distance: str
    class_names: list[str] | None = None
    files: dict[str, Any] | None = None


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(part) for part in err["loc"])
    if err["type"] == "missing":
        return f"missing key {where!r}"
    return f"{where}: {err['msg']}" if where else err["msg"]


def load(path: str | os.PathLike) -> ExportedModel:
    """Load a model directory written by :func:`save_model` (or by a training run), verifying it.

    ``model.json`` is validated against its schema (a missing or mistyped key is named with the
    file), the weights must be the file ``model.json`` lists (size and SHA-256), fit the
    architecture and be finite. Nothing is unpickled. ``FileNotFoundError`` if ``path`` does
    not exist, ``ValueError`` for anything else.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from likewise.artifacts import verify_files
    from likewise.models import build_model

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(2, "No such model directory", str(path))
    meta_file, weights_file = path / "model.json", path / "model.safetensors"
    if not meta_file.is_file() or not weights_file.is_file():
        raise ValueError(
            f"{path} is not a likewise model directory (expected model.json and model.safetensors)"
        )
    try:
        meta = json.loads(meta_file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{meta_file} is not valid JSON: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"{meta_file} is not a likewise model description")
    if meta.get("version") != VERSION:
        raise ValueError(
            f"{meta_file}: unsupported version {meta.get('version')!r} (this likewise reads {VERSION})"
        )
    try:
        manifest = _ModelManifest.model_validate(meta)
    except ValidationError as exc:
        raise ValueError(f"{meta_file}: {_first_error(exc)}") from None
    if manifest.files is not None:
        verify_files(path, manifest.files, meta_file)
    arch = manifest.model
    if arch.trunk not in _trunk_names():
        raise ValueError(f"{meta_file}: unknown trunk {arch.trunk!r} (known: {', '.join(_trunk_names())})")
    try:
        model = build_model(
            arch.trunk,
            tuple(arch.input_shape),
            embedding_dim=arch.embedding_dim,
            pooling=arch.pooling or "avg",
            normalize=arch.normalize,
            projection_dim=arch.projection_dim,
            trunk_kwargs=arch.trunk_kwargs or {},
            embed=arch.embed or "head",
        )
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{meta_file}: the model it describes cannot be built: {exc}") from None
    try:
        state = load_file(str(weights_file))
    except (SafetensorError, OSError) as exc:
        raise ValueError(f"{weights_file} is not a readable safetensors file: {exc}") from None
    for name, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{weights_file}: weight {name!r} holds NaN or infinite values")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(
            f"{weights_file} does not fit the architecture in model.json: {str(exc).splitlines()[0]}"
        ) from None
    return ExportedModel(path, meta, model)


__all__ = ["ExportedModel", "FORMAT", "VERSION", "load", "save_model"]
