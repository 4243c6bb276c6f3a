"""The embedding model: ``trunk -> global pooling -> head`` (-> optional projection).

``EmbeddingModel(x) -> [B, D]`` embeddings. ``build_model`` assembles one from
names; any user ``nn.Module`` can be the trunk (give its output width as
``trunk_features`` when it has no ``out_features`` attribute).

What the loss trains on is :meth:`EmbeddingModel.train_output`: the head's output, passed
through the projection head when there is one. What the model *embeds* with is chosen by
``embed``:

* ``"head"`` (default): the head's output ``[B, embedding_dim]``;
* ``"features"``: the pooled trunk features ``[B, F]`` (L2-normalised when ``normalize``),
  the head then serving only the loss. Representations before the last layers the loss
  shapes often transfer better to classes never trained on (the "representation before
  the projection head" of SimCLR, Chen et al. 2020); ``likewise demo`` uses it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from likewise.models.heads import EmbeddingHead, ProjectionHead
from likewise.models.pooling import GlobalPool
from likewise.models.trunks import MLP, RESNET_LAYOUT, Conv1dNet, ConvNet, ResNet

TRUNKS = ("mlp", "convnet", "conv1d", *RESNET_LAYOUT)
EMBED_FROM = ("head", "features")


class EmbeddingModel(nn.Module):
    def __init__(
        self,
        trunk: nn.Module,
        head: nn.Module,
        pooling: nn.Module | None = None,
        projection: nn.Module | None = None,
        config: dict[str, Any] | None = None,
        *,
        embed: str = "head",
        normalize_features: bool = True,
    ) -> None:
        super().__init__()
        if embed not in EMBED_FROM:
            raise ValueError(f"embed must be one of {', '.join(EMBED_FROM)}, got {embed!r}")
        self.trunk = trunk
        self.pooling = pooling if pooling is not None else GlobalPool("avg")
        self.head = head
        self.projection = projection
        self.embed = embed
        self.normalize_features = normalize_features
        self.config = dict(config or {})

    def features(self, x: Tensor) -> Tensor:
        """Pooled trunk features ``[B, F]``."""
        return self.pooling(self.trunk(x)).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        """Embeddings ``[B, D]`` (the head's output, or the pooled features; see ``embed``)."""
        f = self.features(x)
        if self.embed == "features":
            return F.normalize(f, dim=1) if self.normalize_features else f
        return self.head(f)

    def train_output(self, x: Tensor) -> Tensor:
        """What the loss sees: ``projection(head(features))``, or ``head(features)`` without one."""
        z = self.head(self.features(x))
        return self.projection(z) if self.projection is not None else z

    def project(self, x: Tensor) -> Tensor:
        """Projection of the head's output (self-supervised training); the head's output if none."""
        return self.train_output(x)


def build_trunk(
    name: str, input_shape: tuple[int, ...], *, small_input: bool | None = None, **kwargs: Any
) -> nn.Module:
    """A trunk by name for inputs of ``input_shape`` (``(C, H, W)`` or ``(F,)``)."""
    if name not in TRUNKS:
        raise ValueError(f"unknown trunk {name!r}; expected one of {', '.join(TRUNKS)}")
    if name == "mlp":
        return MLP(int(torch.tensor(input_shape).prod().item()), **kwargs)
    if name == "conv1d":
        if len(input_shape) not in (1, 2):
            raise ValueError(
                f"trunk 'conv1d' needs signal inputs (L,) or (C, L), got input shape {tuple(input_shape)}"
            )
        in_channels = 1 if len(input_shape) == 1 else input_shape[0]
        return Conv1dNet(input_shape[-1], in_channels, **kwargs)
    if len(input_shape) != 3:
        raise ValueError(f"trunk {name!r} needs image inputs (C, H, W), got input shape {tuple(input_shape)}")
    if name == "convnet":
        return ConvNet(input_shape[0], **kwargs)
    if small_input is None:
        small_input = min(input_shape[1:]) < 64
    return ResNet(name, input_shape[0], small_input=small_input, **kwargs)


def build_model(
    trunk: str | nn.Module = "convnet",
    input_shape: tuple[int, ...] | None = None,
    *,
    embedding_dim: int = 64,
    pooling: str = "avg",
    normalize: bool = True,
    projection_dim: int | None = None,
    trunk_features: int | None = None,
    trunk_kwargs: dict[str, Any] | None = None,
    embed: str = "head",
) -> EmbeddingModel:
    """Assemble ``trunk -> pooling -> EmbeddingHead(embedding_dim)`` (-> ``ProjectionHead``).

    ``trunk`` is a name (see ``TRUNKS``; ``input_shape`` required) or a module. ``embed``:
    ``"head"`` or ``"features"`` (see the module docstring).
    """
    if embed not in EMBED_FROM:
        raise ValueError(f"embed must be one of {', '.join(EMBED_FROM)}, got {embed!r}")
    config: dict[str, Any] = {
        "trunk": trunk if isinstance(trunk, str) else type(trunk).__name__,
        "input_shape": list(input_shape) if input_shape is not None else None,
        "embedding_dim": embedding_dim,
        "pooling": pooling,
        "normalize": normalize,
        "projection_dim": projection_dim,
        "trunk_kwargs": dict(trunk_kwargs or {}),
        "embed": embed,
    }
    if isinstance(trunk, str):
        if input_shape is None:
            raise ValueError(f"input_shape is required to build trunk {trunk!r}")
        module = build_trunk(trunk, tuple(input_shape), **(trunk_kwargs or {}))
    elif isinstance(trunk, nn.Module):
        module = trunk
    else:
        raise TypeError(f"trunk must be a name or an nn.Module, got {type(trunk).__name__}")
    width = trunk_features if trunk_features is not None else getattr(module, "out_features", None)
    if width is None:
        raise ValueError("cannot tell the trunk's output width: pass trunk_features=")
    projection = ProjectionHead(embedding_dim, out_features=projection_dim) if projection_dim else None
    config["output_dim"] = int(width) if embed == "features" else embedding_dim
    return EmbeddingModel(
        module,
        EmbeddingHead(int(width), embedding_dim, normalize=normalize),
        GlobalPool(pooling),
        projection,
        config,
        embed=embed,
        normalize_features=normalize,
    )
