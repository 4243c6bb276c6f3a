"""Encoders in plain torch: trunks, global pooling, embedding and projection heads."""

from likewise.models.embedding import EMBED_FROM, TRUNKS, EmbeddingModel, build_model, build_trunk
from likewise.models.heads import EmbeddingHead, ProjectionHead
from likewise.models.pooling import POOLINGS, GeM, GlobalPool
from likewise.models.trunks import MLP, Conv1dNet, ConvNet, ResNet

__all__ = [
    "Conv1dNet",
    "ConvNet",
    "EmbeddingHead",
    "EmbeddingModel",
    "GeM",
    "GlobalPool",
    "MLP",
    "POOLINGS",
    "ProjectionHead",
    "ResNet",
    "EMBED_FROM",
    "TRUNKS",
    "build_model",
    "build_trunk",
]
