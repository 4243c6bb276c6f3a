"""The self-supervised pre-training configuration (``likewise pretrain CONFIG.yaml``).

Validated like ``train``'s (unknown keys are errors; the first problem is one line naming
its path, e.g. ``method.temperature: must be positive``). ``method`` takes the method's
name (``likewise.ssl.METHODS``) plus that class's own keyword arguments. The
``likewise pretrain --method NAME --data DATA`` shortcut builds a config from
:func:`default_config`: the method's defaults for that kind of data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from likewise.train.config import _Section, format_validation_error, read_yaml
from likewise.train.registry import check_kwargs

#: the data sets built in; anything else is a folder or an array file
BUILTIN_DATA = ("mnist1d", "mnist5k", "digits")


class PretrainDataConfig(_Section):
    dataset: str = "mnist1d"  # mnist1d | mnist5k | digits | an image folder | FILE.npy / .npz
    labels: str | None = None  # labels of a features file (optional: enables kNN / linear probe)
    image_size: int | None = Field(default=None, gt=0)
    grayscale: bool = False
    test_size: float = Field(default=0.2, gt=0, lt=1)  # stratified test split (mnist1d has its own)
    seed: int = 0
    standardize: bool = True  # (x - mean) / std with the training part's statistics, after augmentation


class EncoderConfig(_Section):
    trunk: str = "auto"  # auto: conv1d for signals, convnet for images, mlp for feature vectors
    trunk_kwargs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("trunk")
    @classmethod
    def _known(cls, value: str) -> str:
        from likewise.models import TRUNKS

        if value != "auto" and value not in TRUNKS:
            raise ValueError(f"must be auto or one of {', '.join(TRUNKS)}")
        return value


class MethodConfig(BaseModel):
    """``name`` plus the method class's keyword arguments (checked against its signature)."""

    model_config = ConfigDict(extra="allow")
    name: str = "simclr"

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ViewsConfig(_Section):
    preset: Literal["auto", "signal", "grey", "rgb", "none"] = "auto"  # auto: from the input shape
    local_crops: int = Field(default=0, ge=0, le=16)  # multi-crop (DINO)


class PretrainOptimizerConfig(_Section):
    name: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(default=1e-3, gt=0)
    weight_decay: float = Field(default=0.0, ge=0)
    momentum: float = Field(default=0.9, ge=0, lt=1)
    epochs: int = Field(default=200, gt=0)
    batch_size: int = Field(default=256, gt=1)
    scheduler: Literal["none", "cosine"] = "cosine"


class MonitorConfig(_Section):
    every_n_epochs: int = Field(default=1, gt=0)
    samples: int = Field(default=1000, gt=1)  # validation rows the monitor embeds
    gallery: int = Field(default=2000, gt=0)  # training rows used as the kNN gallery per epoch
    k: int = Field(default=10, gt=0)
    collapse_std_ratio: float = Field(default=0.05, gt=0)  # warn below this projection std * sqrt(d)


class PretrainTrainerConfig(_Section):
    accelerator: Literal["auto", "cpu", "gpu", "cuda", "mps"] = "auto"
    devices: int = Field(default=1, gt=0)
    num_nodes: int = Field(default=1, gt=0)
    seed: int = 0
    threads: int | None = Field(default=None, gt=0)
    progress_bar: bool = True
    checkpoint_every_n_steps: int = Field(default=200, gt=0)
    log_every_n_steps: int = Field(default=10, gt=0)


class PretrainConfig(_Section):
    data: PretrainDataConfig = Field(default_factory=PretrainDataConfig)
    encoder: EncoderConfig = Field(default_factory=EncoderConfig)
    method: MethodConfig = Field(default_factory=MethodConfig)
    views: ViewsConfig = Field(default_factory=ViewsConfig)
    optimizer: PretrainOptimizerConfig = Field(default_factory=PretrainOptimizerConfig)
    monitor: MonitorConfig = Field(default_factory=MonitorConfig)
    trainer: PretrainTrainerConfig = Field(default_factory=PretrainTrainerConfig)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


#: heads for small inputs (MNIST-1D, mnist5k): projectors 125 -> 16 as in the MNIST-1D notebook
SMALL_HEADS: dict[str, dict[str, Any]] = {
    "simclr": {"hidden_dim": 125, "out_dim": 16, "temperature": 0.5, "batch_norm": False},
    "moco": {"hidden_dim": 125, "out_dim": 16, "temperature": 0.5, "queue_size": 1024, "batch_norm": False},
    "byol": {"hidden_dim": 125, "out_dim": 16, "momentum": 0.99},
    "simsiam": {"hidden_dim": 125, "out_dim": 16, "predictor_dim": 64},
    "swav": {"hidden_dim": 125, "out_dim": 16, "n_prototypes": 30, "batch_norm": False},
    "dino": {  # teacher temperature constant 0.04 (no warm-up to 0.07): MNIST-1D DINO docstring
        "hidden_dim": 125,
        "bottleneck_dim": 16,
        "out_dim": 1024,
        "momentum": 0.99,
        "teacher_temp": 0.04,
        "batch_norm": True,
    },
    "barlow_twins": {"hidden_dim": 125, "out_dim": 16, "lambda_": 0.05},
    "vicreg": {"hidden_dim": 125, "out_dim": 16},
    "naive": {"hidden_dim": 125, "out_dim": 16},
}


#: mnist5k's encoder and budget: three ConvNet stages (a 128-d representation; two stages of
#: 32-64 or three of 16-32-64 stayed near the raw pixels' kNN) and batch 64 (more steps than 256)
MNIST5K_WIDTHS = [32, 64, 128]
MNIST5K_EPOCHS = 40  # 20 -> 40: kNN still rose (SimCLR 95.1 -> 96.2, 4.4 min on 2 quiet cores)
#: methods that keep improving past 40 epochs on mnist5k: Barlow Twins 94.7% kNN at 40, 95.8% at 60
#: (one thread); a 256-d projection with lambda 0.005 gave 95.4% (one thread) and 94.4% (two) at 40
MNIST5K_METHOD_EPOCHS: dict[str, int] = {"barlow_twins": 60}

#: mnist5k's heads (projectors 128 -> 256 -> 64; SimCLR / MoCo at temperature 0.2): on 28 x 28
#: digits the 16-d projection of the MNIST-1D heads left kNN lower (docs/benchmarks.md); DINO keeps
#: its small-data head
MNIST5K_HEADS: dict[str, dict[str, Any]] = {
    "simclr": {"hidden_dim": 256, "out_dim": 64, "temperature": 0.2, "batch_norm": False},
    "moco": {"hidden_dim": 256, "out_dim": 64, "temperature": 0.2, "queue_size": 1024, "batch_norm": False},
    "byol": {"hidden_dim": 256, "out_dim": 64, "momentum": 0.99},
    "simsiam": {"hidden_dim": 256, "out_dim": 64, "predictor_dim": 64},
    "swav": {"hidden_dim": 256, "out_dim": 64, "n_prototypes": 30, "batch_norm": False},
    "barlow_twins": {"hidden_dim": 256, "out_dim": 64, "lambda_": 0.02},
    "vicreg": {"hidden_dim": 256, "out_dim": 64},
    "naive": {"hidden_dim": 256, "out_dim": 64},
}


def default_config(method: str, data: str, *, epochs: int | None = None) -> dict[str, Any]:
    """The config of ``likewise pretrain --method METHOD --data DATA``: the method's small-data
    heads (mnist5k: :data:`MNIST5K_HEADS`), the data's encoder, views and budget (MNIST-1D: the
    notebook's Conv1d encoder and recipe; mnist5k: a 32-64-128 ConvNet, batch 64, 40 epochs,
    Barlow Twins 60)."""
    from likewise.ssl import METHODS

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; expected one of {', '.join(METHODS)}")
    config: dict[str, Any] = {
        "data": {"dataset": data},
        "method": {"name": method, **SMALL_HEADS[method]},
    }
    if data == "mnist1d":  # the notebook's encoder, views, optimiser and batch
        config["encoder"] = {"trunk": "conv1d"}
        config["data"]["standardize"] = False
        config["optimizer"] = {"lr": 0.01, "batch_size": 100, "epochs": 200}
    elif data == "mnist5k":
        config["method"] = {"name": method, **MNIST5K_HEADS.get(method, SMALL_HEADS[method])}
        config["encoder"] = {"trunk": "convnet", "trunk_kwargs": {"widths": list(MNIST5K_WIDTHS)}}
        config["optimizer"] = {"batch_size": 64, "epochs": MNIST5K_METHOD_EPOCHS.get(method, MNIST5K_EPOCHS)}
    elif data == "digits":
        config["encoder"] = {"trunk": "convnet", "trunk_kwargs": {"widths": [32, 64]}}
        config["optimizer"] = {"epochs": 100}
    if epochs is not None:
        config.setdefault("optimizer", {})["epochs"] = epochs
    return config


def validate_pretrain_config(data: Any) -> PretrainConfig:
    """A :class:`PretrainConfig` from a mapping; ``ValueError`` naming the first problem's path."""
    from likewise.ssl import METHODS

    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"config: expected a mapping of sections, got {type(data).__name__}")
    try:
        config = PretrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ValueError(format_validation_error(exc)) from None
    name = config.method.name
    if name not in METHODS:
        raise ValueError(f"method.name: unknown method {name!r}; expected one of {', '.join(METHODS)}")
    for managed in ("encoder", "encoder_dim"):
        if managed in config.method.kwargs:
            raise ValueError(f"method.{managed}: set by the run (see the encoder section)")
    from torch import nn

    check_kwargs(
        METHODS[name], {"encoder": nn.Identity(), "encoder_dim": 1, **config.method.kwargs}, "method"
    )
    return config


def load_pretrain_config(path: str | Path) -> PretrainConfig:
    """Read and validate a YAML pre-training config (errors as for ``likewise train``'s:
    :func:`likewise.train.config.read_yaml`; an empty file is one too)."""
    data = read_yaml(path)
    if data is None:
        raise ValueError(f"{path} is empty; a config names at least method.name and data.dataset")
    return validate_pretrain_config(data)


__all__ = [
    "BUILTIN_DATA",
    "MNIST5K_HEADS",
    "MNIST5K_METHOD_EPOCHS",
    "SMALL_HEADS",
    "PretrainConfig",
    "default_config",
    "load_pretrain_config",
    "validate_pretrain_config",
]
