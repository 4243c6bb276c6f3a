"""L2 normalisation of rows (or columns) with a two-pass backward, and the float dtype rules
of the inputs it is applied to (epsilons valid in the dtype, mixed dtypes promoted, float16
widened with saturated gradients).

``y = x / max(|x|, eps)`` along ``dim``: the same values as ``torch.nn.functional.normalize``
(p = 2). Its gradient is written out instead of recorded op by op::

    dL/dx = (g - y <y, g>) / |x|      where |x| > eps
    dL/dx = g / eps                    where |x| <= eps  (y = x / eps is linear there)

with ``g = dL/dy`` and ``<y, g>`` the sum along ``dim`` (with ``scale``: ``y = scale x / max(|x|,
eps)``, and ``dL/dx = scale (g - y <y, g> / scale^2) / |x|``). Autograd's version of
``F.normalize`` records the norm, the clamp, the expansion and the division and runs
their backward passes one by one: on a CPU that costs several times the GEMM the
normalised vectors then feed (``[1024, 128]`` rows: about 4 ms against 1.5 ms). Every
loss normalises its embeddings, so this sits on every training step.

``eps`` is raised to the smallest normal number of ``x``'s dtype (``torch.finfo(dtype).tiny``)
when it is below it: the default ``1e-12`` rounds to 0 in float16 (an all-zero row would then
give ``0 / 0 = NaN``); float32, float64 and bfloat16 keep ``1e-12``. In float16 the gradient
``g / eps`` of such a row may exceed the dtype's range: it saturates at half the largest
finite float16 instead of becoming inf (see :func:`saturate_`).

First-order only (``once_differentiable``): double backward raises.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class _L2Normalize(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, dim: int, eps: float, scale: float) -> Tensor:
        norm = torch.linalg.vector_norm(x, dim=dim, keepdim=True)
        y = _normalized(x, norm, eps, scale)
        ctx.dim, ctx.eps, ctx.scale = dim, eps, scale
        ctx.save_for_backward(y, norm)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None, None]:
        y, norm = ctx.saved_tensors  # y = scale * the unit vectors
        scale, denom = ctx.scale, norm.clamp_min(ctx.eps)
        # the projection away from y applies only where the norm was not clamped
        along = torch.mul(y, grad).sum(ctx.dim, keepdim=True).mul_(norm > ctx.eps)
        if scale == 1.0:
            dx = torch.addcmul(grad, y, along, value=-1.0).div_(denom)
        else:
            along.div_(scale * scale)  # <y, g> / scale^2: the projection on the unit vectors
            dx = torch.addcmul(grad, y, along, value=-1.0).mul_(_factor(denom, scale))
        if _narrow(dx.dtype):  # g / eps of a zero row exceeds float16's range: saturate
            saturate_(dx)
        return dx, None, None, None


def saturate_(grad: Tensor, dtype: torch.dtype | None = None) -> Tensor:
    """``grad`` clamped in place to ``+-`` half the largest finite value of ``dtype`` (default:
    its own): a gradient beyond the range (``1 / eps`` of an all-zero row in float16) becomes
    finite, and two of them (a tensor used as queries and as references) still add up to a
    finite sum. NaN stays NaN."""
    bound = torch.finfo(grad.dtype if dtype is None else dtype).max / 2
    return grad.clamp_(-bound, bound)


def _narrow(dtype: torch.dtype) -> bool:
    """float16: ``1 / tiny`` times a gradient of order one may exceed its largest value."""
    return dtype == torch.float16


def _factor(denom: Tensor, scale: float) -> Tensor:
    """``scale / denom`` (``[..., 1]``), kept finite in float16 (``64 / tiny`` overflows there)."""
    factor = denom.reciprocal_().mul_(scale)  # denom: a fresh tensor of the caller
    return factor.clamp_max_(torch.finfo(factor.dtype).max) if _narrow(factor.dtype) else factor


def _normalized(x: Tensor, norm: Tensor, eps: float, scale: float) -> Tensor:
    if scale == 1.0:
        return x / norm.clamp_min(eps)
    return x * _factor(norm.clamp_min(eps), scale)


class _Widen(torch.autograd.Function):
    """``x.to(dtype)`` (a wider float dtype) whose backward casts the gradient back saturated:
    a gradient beyond ``x``'s range (``1 / eps`` of an all-zero row, normalised in float32,
    going back to float16) becomes half its largest finite value (:func:`saturate_`), not inf."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, dtype: torch.dtype) -> Tensor:
        ctx.source = x.dtype
        return x.to(dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return saturate_(grad.clone(), ctx.source).to(ctx.source), None


def widen(x: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """``x`` in ``dtype`` (wider). From float16 its gradient is cast back saturated (see
    ``_Widen``); other dtypes (range 3e38 and more) take a plain cast."""
    return _Widen.apply(x, dtype) if x.dtype == torch.float16 else x.to(dtype)


def promote(*tensors: Tensor) -> tuple[Tensor, ...]:
    """The floating tensors in ``torch.promote_types`` of their dtypes (as binary ops do; ``a @ b``
    needs one dtype): float64 embeddings with float32 references are computed in float64,
    float16 embeddings with float32 proxies in float32. Gradients flow back through the cast
    to each tensor's own dtype (saturated to its range). Tensors already in that dtype are
    returned as they are."""
    dtype = tensors[0].dtype
    if all(t.dtype == dtype for t in tensors[1:]):
        return tensors
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return tuple(t if t.dtype == dtype else widen(t, dtype) for t in tensors)


def valid_eps(eps: float, dtype: torch.dtype) -> float:
    """``max(eps, torch.finfo(dtype).tiny)``: an epsilon that does not round to 0 in ``dtype``
    (floating dtypes; a plain Python computation, no device work)."""
    tiny = torch.finfo(dtype).tiny
    return eps if eps >= tiny else tiny


def l2_normalize(x: Tensor, dim: int = 1, eps: float = 1e-12, scale: float = 1.0) -> Tensor:
    """``scale * x / max(|x|_2, eps)`` along ``dim`` (``F.normalize`` values for ``scale = 1``;
    see the module docstring). The scale costs no extra pass, forward or backward.

    Shapes: any; typically ``x [B, D]`` with ``dim=1`` (rows) or a ``[D, C]`` weight with
    ``dim=0`` (columns). Without autograd it is a plain forward. ``eps`` below the dtype's
    smallest normal number is raised to it (see the module docstring).
    """
    eps = valid_eps(eps, x.dtype)
    if not (torch.is_grad_enabled() and x.requires_grad):
        return _normalized(x, torch.linalg.vector_norm(x, dim=dim, keepdim=True), eps, scale)
    return _L2Normalize.apply(x, dim, eps, float(scale))


__all__ = ["l2_normalize", "promote", "saturate_", "valid_eps", "widen"]
