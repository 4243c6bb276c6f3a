"""The embedding model: ``trunk -> global pooling -> head`` (-> optional projection).

``EmbeddingModel(x) -> [B, D]`` embeddings. ``build_model`` assembles one from
names; any user ``nn.Module`` can be the trunk (give its output width as
``trunk_features`` when it has no ``out_features`` attribute).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from likewise.models.heads import EmbeddingHead, ProjectionHead
from likewise.models.pooling import GlobalPool
from likewise.models.trunks import MLP, RESNET_LAYOUT, ConvNet, ResNet

TRUNKS = ("mlp", "convnet", *RESNET_LAYOUT)


class EmbeddingModel(nn.Module):
    def __init__(
        self,
        trunk: nn.Module,
        head: nn.Module,
        pooling: nn.Module | None = None,
        projection: nn.Module | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.trunk = trunk
        self.pooling = pooling if pooling is not None else GlobalPool("avg")
        self.head = head
        self.projection = projection
        self.config = dict(config or {})

    def features(self, x: Tensor) -> Tensor:
        """Pooled trunk features ``[B, F]``."""
        return self.pooling(self.trunk(x)).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        """Embeddings ``[B, D]``."""
        return self.head(self.features(x))

    def project(self, x: Tensor) -> Tensor:
        """Projection of the embedding (self-supervised training); the embedding if none."""
        z = self.forward(x)
        return self.projection(z) if self.projection is not None else z


def build_trunk(
    name: str, input_shape: tuple[int, ...], *, small_input: bool | None = None, **kwargs: Any
) -> nn.Module:
    """A trunk by name for inputs of ``input_shape`` (``(C, H, W)`` or ``(F,)``)."""
    if name not in TRUNKS:
        raise ValueError(f"unknown trunk {name!r}; expected one of {', '.join(TRUNKS)}")
    if name == "mlp":
        return MLP(int(torch.tensor(input_shape).prod().item()), **kwargs)
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
) -> EmbeddingModel:
    """Assemble ``trunk -> pooling -> EmbeddingHead(embedding_dim)``.

    ``trunk`` is a name (see ``TRUNKS``; ``input_shape`` required) or a module.
    """
    config: dict[str, Any] = {
        "trunk": trunk if isinstance(trunk, str) else type(trunk).__name__,
        "input_shape": list(input_shape) if input_shape is not None else None,
        "embedding_dim": embedding_dim,
        "pooling": pooling,
        "normalize": normalize,
        "projection_dim": projection_dim,
        "trunk_kwargs": dict(trunk_kwargs or {}),
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
    return EmbeddingModel(
        module,
        EmbeddingHead(int(width), embedding_dim, normalize=normalize),
        GlobalPool(pooling),
        projection,
        config,
    )
