"""Fast Euclidean distance matrices: the plain formula's values, with a two-GEMM backward.

:func:`likewise.similarity.pairwise_distance` is the plain specification (autograd records a
dozen ``[B, N]`` passes); :func:`distance_matrix` here computes the same values with one
``[B, N]`` buffer and a backward of two GEMMs. It is always eligible (any device, any float
dtype); the pair and triplet losses use it on their default path.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from likewise.similarity import pairwise_distance


def squared_distances(x: Tensor, y: Tensor) -> Tensor:
    """``|x_i - y_j|^2`` ``[B, N]`` as ``|x|^2 - 2 x y^T + |y|^2``, clamped at 0.

    One ``[B, N]`` buffer: the GEMM's output starts from the broadcast ``|x|^2`` column and
    the ``|y|^2`` row is added in place (no ``[B, N]`` tensor of the norms is built).
    """
    d = torch.addmm(x.pow(2).sum(1, keepdim=True), x, y.T, alpha=-2.0)
    return d.add_(y.pow(2).sum(1)).clamp_min_(0)


def euclidean_backward(
    x: Tensor, y: Tensor, w: Tensor, scale: float, needs: tuple[bool, bool]
) -> tuple[Tensor | None, Tensor | None]:
    """Gradients of ``sum(w * d^2) * scale / 2`` for ``d^2 = |x_i - y_j|^2``, by two GEMMs:
    ``dx = scale (rowsum(w) x - w y)``, ``dy = scale (colsum(w) y - w^T x)`` (``None`` where
    not needed). ``x [B, D]``, ``y [N, D]``, ``w [B, N]``."""
    gx = gy = None
    if needs[0]:
        gx = torch.addmm(w.sum(1, keepdim=True) * x, w, y, beta=scale, alpha=-scale)
    if needs[1]:
        gy = torch.addmm(w.sum(0).unsqueeze(1) * y, w.T, x, beta=scale, alpha=-scale)
    return gx, gy


class _EuclideanDistance(torch.autograd.Function):
    """``[B, N]`` (squared) Euclidean distances whose backward is two GEMMs.

    Forward: :func:`squared_distances` (then ``sqrt``). Backward with ``W = dL/dd / d`` (0
    where ``d = 0`` or the quotient overflows; ``2 dL/dd^2`` when squared):
    ``dL/dx = rowsum(W) x - W y`` and ``dL/dy = colsum(W) y - W^T x``. Same values as
    :func:`likewise.similarity.pairwise_distance`, with a few ``[B, N]`` passes
    instead of the dozen autograd would record. The squared form keeps no ``[B, N]``
    tensor for backward.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, y: Tensor, squared: bool) -> Tensor:
        d = squared_distances(x, y)
        ctx.squared = squared
        if squared:
            ctx.save_for_backward(x, y)
        else:
            d = d.sqrt_()
            ctx.save_for_backward(x, y, d)
        return d

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        if ctx.squared:
            x, y = ctx.saved_tensors
            w, scale = grad, 2.0  # the factor 2 goes into the GEMMs, not through a [B, N] pass
        else:
            x, y, d = ctx.saved_tensors
            # zero gradient at zero distance: x / 0 is +-inf or nan there, and nan_to_num_ is one
            # cheap float pass (a boolean mask and masked_fill_ cost ten times more on CPU)
            w, scale = torch.div(grad, d).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0), 1.0
        return *euclidean_backward(x, y, w, scale, ctx.needs_input_grad[:2]), None


def distance_matrix(x: Tensor, y: Tensor, metric: str) -> Tensor:
    """``[B, N]`` distances (as :func:`~likewise.similarity.pairwise_distance`; fast Euclidean backward)."""
    if metric in ("euclidean", "squared_euclidean"):
        return _EuclideanDistance.apply(x, y, metric == "squared_euclidean")
    return pairwise_distance(x, y, metric)


__all__ = ["distance_matrix", "euclidean_backward", "squared_distances"]
