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
        if _is_one(grad_out):  # loss.backward(): no copy needed
            return grad, None, None
        return grad * grad_out, None, None


def _is_one(grad_out: Tensor) -> bool:
    """``grad_out`` is the scalar 1 (``loss.backward()``). Asked on the CPU only, where the value
    is in host memory (``torch.equal`` reads it; no device to wait for); on other devices the
    answer is "not known", and the caller multiplies by it."""
    if grad_out.device.type != "cpu" or grad_out.numel() != 1:
        return False
    return torch.equal(grad_out, grad_out.new_ones(grad_out.shape))



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


class _ProductGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor, value: Tensor, grad: Tensor, scale: float) -> Tensor:
        ctx.save_for_backward(a, b, grad)
        ctx.scale = scale
        return value.clone()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, Tensor | None, None, None, None]:
        a, b, grad = ctx.saved_tensors
        # a tensor (the host never reads it): the [B, D] gradients are scaled in place by it,
        # skipped for loss.backward()'s 1 on the CPU
        scale = ctx.scale if _is_one(grad_out) else ctx.scale * grad_out
        # grad has the dtype of the product, which autocast may have lowered: the input gradients
        # take the inputs' dtypes
        da = _scaled(torch.mm(grad.to(b.dtype), b), scale) if ctx.needs_input_grad[0] else None
        db = _scaled(torch.mm(grad.T.to(a.dtype), a), scale) if ctx.needs_input_grad[1] else None
        return da, db, None, None, None


def _scaled(t: Tensor, scale: float | Tensor) -> Tensor:
    if isinstance(scale, Tensor):
        return t.mul_(scale.to(t.dtype))
    return t if scale == 1.0 else t.mul_(scale)


def with_product_gradient(
    a: Tensor, b: Tensor, value: Tensor, grad: Tensor | None, scale: float = 1.0
) -> Tensor:
    """``value`` (a detached scalar) in the graph of ``a [B, D]`` and ``b [N, D]``, with
    ``dvalue / d(a b^T) = scale * grad`` (``grad [B, N]``; ``None``: no gradient asked, the value
    as it is).

    For a loss computed on ``S = a b^T`` built under ``no_grad`` into a buffer the loss may
    then overwrite (with its exponentials, and finally with ``grad``): backward is the two
    GEMMs ``scale grad b`` and ``scale grad^T a``, and no ``[B, N]`` tensor is kept but
    ``grad``.
    """
    if grad is None or not (torch.is_grad_enabled() and (a.requires_grad or b.requires_grad)):
        return value
    return _ProductGradient.apply(a, b, value, grad, scale)


def exp_(x: Tensor) -> Tensor:
    """``e^x`` in place for ``x <= 0`` (shifted logits), with ``x`` first clamped at the smallest
    exponent whose ``e^x`` is still a normal float (-80 for float32, -700 for float64).

    On a CPU ``exp`` is ten to twenty times slower when its results are subnormal (measured:
    1 ms against 9-17 ms for 10^6 logits spread over [-300, 0], which a temperature of 0.01 or
    an ArcFace scale of 64 produces). Each clamped term adds at most ``e^-80 ~ 2e-35`` to a
    row sum that is at least 1 (the row maximum's own term): far below rounding.
    """
    floor = -80.0 if x.dtype in (torch.float32, torch.float16, torch.bfloat16) else -700.0
    return x.clamp_min_(floor).exp_()


__all__ = ["exp_", "needs_grad", "with_gradient", "with_product_gradient"]
