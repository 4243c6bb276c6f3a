"""Projection, prediction and prototype heads of the self-supervised methods.

:func:`mlp` builds ``Linear -> [BatchNorm] -> ReLU`` blocks and a last ``Linear``
(optionally followed by a batch norm, as SimSiam's projector and Barlow Twins' do not,
and SimSiam's does); the methods pick the widths of their papers.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn


def mlp(
    dims: Sequence[int],
    *,
    batch_norm: bool = True,
    last_batch_norm: bool = False,
    activation: type[nn.Module] = nn.ReLU,
) -> nn.Sequential:
    """``dims = (in, h_1, ..., out)``: hidden blocks ``Linear -> BN -> act``, then ``Linear``.

    ``batch_norm=False`` drops every batch norm (e.g. for exact multi-process equality on
    CPU, where batch-norm statistics are per process); ``last_batch_norm`` adds an affine-free
    one after the last layer (SimSiam's projector).
    """
    dims = [int(d) for d in dims]
    if len(dims) < 2 or min(dims) < 1:
        raise ValueError(f"an MLP needs at least (in, out) positive widths, got {dims}")
    layers: list[nn.Module] = []
    for a, b in zip(dims[:-2], dims[1:-1]):
        layers += [nn.Linear(a, b, bias=not batch_norm)]
        if batch_norm:
            layers.append(nn.BatchNorm1d(b))
        layers.append(activation())
    last_bn = batch_norm and last_batch_norm
    layers.append(nn.Linear(dims[-2], dims[-1], bias=not last_bn))  # a bias before BN cancels out
    if last_bn:
        layers.append(nn.BatchNorm1d(dims[-1], affine=False))
    return nn.Sequential(*layers)


class NormalizedLinear(nn.Module):
    """``x -> normalize(x) @ normalize(W)^T``: cosine scores against ``out`` unit prototypes ``W``.

    SwAV's prototypes and DINO's weight-normalised last layer (with its norm fixed to 1).
    """

    def __init__(self, in_features: int, out_features: int, *, normalize_input: bool = True) -> None:
        super().__init__()
        self.weight = nn.Parameter(nn.init.normal_(nn.Linear(in_features, out_features).weight.data.clone()))
        self.normalize_input = normalize_input

    def forward(self, x: Tensor, *, frozen: bool = False) -> Tensor:
        w = F.normalize(self.weight, dim=1)
        if frozen:  # no update, graph kept (every parameter stays used, as DDP wants)
            w = w.detach() + 0 * w
        return (F.normalize(x, dim=1) if self.normalize_input else x) @ w.T


__all__ = ["NormalizedLinear", "mlp"]
