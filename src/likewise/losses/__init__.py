"""Similarity losses: each a functional form and an ``nn.Module`` (see ``base`` for the call)."""

from likewise.losses.base import MetricLoss

__all__ = ["MetricLoss"]
