"""A loss value whose gradient with respect to its matrix is computed alongside it.

Piecewise-linear losses on a ``[B, N]`` distance or similarity matrix (contrastive,
triplet) have a gradient ``G = dL/dM`` that is cheap to write down while the value is
computed: the indicator of the active terms, scaled. Recording the dozen element-wise
ops of such a loss for autograd costs a dozen more ``[B, N]`` passes in backward;
:func:`with_gradient` instead attaches ``G`` to the value directly, so backward is one
multiplication (and the GEMMs of the distance that built ``M``).

First-order only (``once_differentiable``): double backward raises.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class _WithGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, matrix: Tensor, value: Tensor, grad: Tensor) -> Tensor:
        ctx.save_for_backward(grad)
        return value.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor, None, None]:
        (grad,) = ctx.saved_tensors
        if grad_out.numel() == 1 and float(grad_out) == 1.0:  # loss.backward(): no copy needed
            return grad, None, None
        return grad * grad_out, None, None


def needs_grad(matrix: Tensor) -> bool:
    """Whether a gradient for ``matrix`` will be asked for."""
    return torch.is_grad_enabled() and matrix.requires_grad


def with_gradient(matrix: Tensor, value: Tensor, grad: Tensor | None) -> Tensor:
    """``value`` (a detached scalar) in the graph of ``matrix`` with ``dvalue/dmatrix = grad``.

    ``grad`` has ``matrix``'s shape (``None`` when no gradient is needed: the value is
    returned as it is).
    """
    if grad is None or not needs_grad(matrix):
        return value
    return _WithGradient.apply(matrix, value, grad)


__all__ = ["needs_grad", "with_gradient"]
