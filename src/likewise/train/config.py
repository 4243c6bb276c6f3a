"""The training configuration: a YAML file validated by pydantic.

Every section forbids unknown keys, so a misspelling is an error, not a silent
default. :func:`load_config` turns the first problem into a one-line ``ValueError``
that names its path, e.g. ``loss.margin: must be > 0`` or ``optimizer.lr: must be > 0``.
``loss`` and ``miner`` take the class name plus that class's own keyword arguments,
checked against its ``__init__`` signature. A walkthrough is in ``docs/training.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from likewise.train.registry import build, check_kwargs, loss_class, miner_class

PRECISIONS = ("auto", "32", "64", "16-mixed", "bf16-mixed")
EVAL_METRICS = ("precision_at_1", "r_precision", "map_at_r", "map", "mrr")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # a NaN or inf setting is a mistake


class DataConfig(_Section):
    """Where the data comes from and how it is split into train / held-out parts."""

    dataset: str = "mnist5k"  # "digits" | "mnist5k" | an image folder | a features file
    labels: str | None = None  # labels file, for a features file
    image_size: int | None = Field(default=None, gt=0)
    grayscale: bool = False
    split: Literal["class_disjoint", "stratified"] = "class_disjoint"
    train_classes: list[int] | None = None  # class ids trained on (class_disjoint)
    train_fraction: float = Field(default=0.5, gt=0, lt=1)  # share of classes, without train_classes
    test_size: float = Field(default=0.3, gt=0, lt=1)  # stratified split
    seed: int = 0
    standardize: bool = True  # inputs (x - mean) / std, statistics of the training part
    pairs: str | None = None  # pairs file a,b,similar: supervision without labels (likewise.data.pairs)
    triplets: str | None = None  # triplets file a,p,n (instead of pairs)
    pairs_closure: bool = False  # similar pairs closed transitively (connected components)


class ModelConfig(_Section):
    trunk: str = "convnet"
    embedding_dim: int = Field(default=64, gt=0)
    pooling: Literal["avg", "max", "sum", "gem"] = "avg"
    normalize: bool = True
    projection_dim: int | None = Field(default=None, gt=0)  # loss on a projection head's output
    embed: Literal["head", "features"] = "head"  # what the model embeds with (features: pooled trunk)
    trunk_kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("trunk")
    @classmethod
    def _known_trunk(cls, value: str) -> str:
        from likewise.models import TRUNKS

        if value not in TRUNKS:
            raise ValueError(f"must be one of {', '.join(TRUNKS)}")
        return value


class _Named(BaseModel):
    """``name`` plus the keyword arguments of that class (checked later against it)."""

    model_config = ConfigDict(extra="allow")
    name: str

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class LossConfig(_Named):
    name: str = "MultiSimilarityLoss"


class MinerConfig(_Named):
    pass


#: classes per batch of the class-balanced sampler when ``classes_per_batch`` is not set
DEFAULT_CLASSES_PER_BATCH = 8


class SamplerConfig(_Section):
    """``class_balanced``: P classes x K samples per (global) batch; ``random``: shuffled batches.

    ``classes_per_batch: null`` (the default) takes ``min(8, number of training classes)``.
    """

    kind: Literal["class_balanced", "random"] = "class_balanced"
    classes_per_batch: int | None = Field(default=None, gt=0)
    samples_per_class: int = Field(default=4, gt=0)
    batch_size: int = Field(default=32, gt=0)  # kind=random (global batch)
    replacement: bool = False


class AugmentConfig(_Section):
    """Random affine augmentation of training images (kornia; see ``likewise.augment``)."""

    views: int = Field(default=1, ge=1, le=8)  # augmented views per sample in a batch
    degrees: float = Field(default=15.0, ge=0, le=180)  # rotation in +-degrees
    scale: float = Field(default=0.15, ge=0, lt=1)  # isotropic scale in 1 +- scale
    translate: float = Field(default=0.1, ge=0, lt=1)  # shift up to this fraction of the image size


class MemoryConfig(_Section):
    """A cross-batch memory (XBM) of the last ``size`` embeddings as extra references."""

    size: int = Field(gt=0)


class OptimizerConfig(_Section):
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    loss_lr: float | None = Field(default=None, gt=0)  # proxies / class weights of the loss
    epochs: int = Field(default=10, gt=0)
    scheduler: Literal["none", "cosine", "onecycle"] = "none"


class EvalConfig(_Section):
    """Periodic evaluation and model selection.

    The best epoch (by ``metric``) is chosen on a *validation* split: a stratified
    ``validation_fraction`` of the training classes' samples, held out of training
    (seeded by ``data.seed``). The held-out (unseen) classes are only evaluated, with
    the selected weights at the end, and every evaluation when ``heldout_curves`` (for
    curves; never for selection). ``validation_fraction: 0`` selects on the held-out
    classes themselves: the reported figures are then optimistic (they picked the epoch).
    """

    every_n_epochs: int = Field(default=1, gt=0)
    metric: Literal["precision_at_1", "r_precision", "map_at_r", "map", "mrr"] = "map_at_r"
    distance: Literal["cosine", "dot", "euclidean", "squared_euclidean"] = "cosine"
    batch_size: int = Field(default=512, gt=0)
    validation_fraction: float = Field(default=0.1, ge=0, lt=1)
    heldout_curves: bool = True
    pairs: str | None = None  # held-out pairs file a,b,similar: verification metrics (pairs runs)


class TrainerConfig(_Section):
    devices: int = Field(default=1, gt=0)  # processes (GPUs) per node
    num_nodes: int = Field(default=1, gt=0)  # machines; launch with torchrun on each (docs/training.md)
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    precision: str = "auto"
    seed: int = 0
    checkpoint_every_n_steps: int = Field(default=50, gt=0)
    log_every_n_steps: int = Field(default=10, gt=0)
    progress_bar: bool = True
    num_workers: int = Field(default=0, ge=0)
    gather: Literal["global", "local"] = "global"
    sync_batchnorm: bool = True
    threads: int | None = Field(default=None, gt=0)  # torch CPU threads per process

    @field_validator("precision", mode="before")
    @classmethod
    def _precision(cls, value: Any) -> str:
        text = str(value)
        if text not in PRECISIONS:
            raise ValueError(f"must be one of {', '.join(PRECISIONS)}")
        return text


class ExportConfig(_Section):
    index: bool = True
    matcher: bool = True


class TrainConfig(_Section):
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    miner: MinerConfig | None = None
    sampler: SamplerConfig = Field(default_factory=SamplerConfig)
    augment: AugmentConfig | None = None
    memory: MemoryConfig | None = None
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (loss / miner keyword arguments included) for YAML / JSON."""
        return self.model_dump(mode="json")


def _reason(err: dict[str, Any]) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required"
    for name, op in (
        ("greater_than", ">"),
        ("greater_than_equal", ">="),
        ("less_than", "<"),
        ("less_than_equal", "<="),
    ):
        if kind == name:
            key = {">": "gt", ">=": "ge", "<": "lt", "<=": "le"}[op]
            return f"must be {op} {ctx.get(key)}"
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')}".replace("'", "")
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    return err["msg"][:1].lower() + err["msg"][1:]


def format_validation_error(exc: ValidationError) -> str:
    """The first error of ``exc`` as ``"path.to.key: reason"`` (plus a count of the others)."""
    errors = exc.errors()
    err = errors[0]
    loc = ".".join(str(x) for x in err["loc"]) or "config"
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"{loc}: {_reason(err)}{more}"


def validate_config(data: Any) -> TrainConfig:
    """A :class:`TrainConfig` from a mapping; ``ValueError`` with the path of the first problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"config: expected a mapping of sections, got {type(data).__name__}")
    try:
        config = TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ValueError(format_validation_error(exc)) from None
    try:
        cls = loss_class(config.loss.name)
    except ValueError as exc:
        raise ValueError(f"loss.name: {exc}") from None
    check_kwargs(cls, config.loss.kwargs, "loss")
    # build once so that the class's own value checks run (num_classes: a placeholder)
    build(cls, config.loss.kwargs, "loss", num_classes=2, embedding_size=config.model.embedding_dim)
    if config.miner is not None:
        try:
            mcls = miner_class(config.miner.name)
        except ValueError as exc:
            raise ValueError(f"miner.name: {exc}") from None
        check_kwargs(mcls, config.miner.kwargs, "miner")
        build(mcls, config.miner.kwargs, "miner")
    if config.data.pairs is not None and config.data.triplets is not None:
        raise ValueError("data.triplets: give data.pairs or data.triplets, not both")
    if config.data.split == "class_disjoint" and config.data.train_classes == []:
        raise ValueError("data.train_classes: must name at least one class")
    return config


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses a key given twice in one mapping (YAML 1.2 forbids it;
    PyYAML would silently keep the last value)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first on line {seen[key].line + 1})",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: str | Path) -> Any:
    """A YAML file's content, read safely; a duplicate key is an error. ``ValueError`` names the
    file, line and problem; ``FileNotFoundError`` / ``IsADirectoryError`` for a missing file or
    a folder."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a folder; expected a YAML config file")
    if not path.is_file():
        raise FileNotFoundError(2, "No such config file", str(path))
    try:
        return yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ValueError(f"{path}: malformed YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text file") from None


def load_config(path: str | Path) -> TrainConfig:
    """Read and validate a YAML config file (see :func:`read_yaml` for the errors; an empty
    file is one too: every run names at least its data)."""
    data = read_yaml(path)
    if data is None:
        raise ValueError(f"{path} is empty; a config names at least data.dataset (see configs/)")
    return validate_config(data)


__all__ = [
    "DEFAULT_CLASSES_PER_BATCH",
    "AugmentConfig",
    "DataConfig",
    "EvalConfig",
    "ExportConfig",
    "LossConfig",
    "MemoryConfig",
    "MinerConfig",
    "ModelConfig",
    "OptimizerConfig",
    "SamplerConfig",
    "TrainConfig",
    "TrainerConfig",
    "format_validation_error",
    "load_config",
    "read_yaml",
    "validate_config",
]
