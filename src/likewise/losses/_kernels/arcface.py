"""ArcFace with its gradient written into the ``[B, C]`` logit buffer (one GEMM each way).

The plain formula is :func:`likewise.losses.arcface.arcface_loss`; this kernel gives the same
values and gradients. One GEMM of the unit embeddings with the class vectors normalised to
length ``scale`` gives the logits ``scale cos [B, C]``; the same buffer then holds their
softmax and ``dL/dlogits`` (``(p_c - 1[c = y]) / B``, the true class's entry times the
derivative of its margin logit), so backward is the GEMMs of the logits only.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from likewise.losses._kernels.fused import exp_, with_product_gradient
from likewise.normalize import l2_normalize, promote


def eligible(embeddings: Tensor, weight: Tensor) -> bool:
    """Always: any device and float dtype (no data-dependent sizes, first-order gradients)."""
    return True


def arcface_margin(cos: Tensor, margin_rad: float) -> tuple[Tensor, Tensor]:
    """The margin logit of :func:`likewise.losses.arcface.arcface_target_logit` and its
    derivative in ``cos``, without autograd.

    With ``c = cos(theta)`` clamped to ``[-1 + eps, 1 - eps]`` and ``sin(theta) =
    sqrt((1 - c)(1 + c))``: ``cos(theta + m) = c cos m - sin(theta) sin m``, its derivative
    ``cos m + c sin m / sin(theta)``, and ``theta <= pi - m`` is ``c >= -cos m``;
    ``d/dc (c - m sin m) = 1``. Both 0 outside the clamp (as autograd's ``clamp``: inclusive
    bounds).
    """
    eps = torch.finfo(cos.dtype).eps
    c = cos.clamp(-1 + eps, 1 - eps)
    sin_theta = (1 - c).mul_(1 + c).sqrt_()
    cos_m, sin_m = math.cos(margin_rad), math.sin(margin_rad)
    with_margin = c >= -cos_m
    logit = torch.where(with_margin, torch.add(c * cos_m, sin_theta, alpha=-sin_m), c - margin_rad * sin_m)
    slope = torch.where(with_margin & (c == cos), torch.div(c, sin_theta).mul_(sin_m).add_(cos_m), c == cos)
    return logit, slope.to(cos.dtype)


def arcface_kernel(
    embeddings: Tensor, labels: Tensor, weight: Tensor, margin: float, scale: float
) -> tuple[Tensor, Tensor, Tensor]:
    """The loss (gradient attached), each sample's cosine to its own class ``[B]`` and whether
    that class has the highest cosine ``[B]``."""
    embeddings, weight = promote(embeddings, weight)
    x = l2_normalize(embeddings, dim=1)
    w = l2_normalize(weight, dim=0, scale=scale).T  # [C, D], |w_c| = scale
    b = x.shape[0]
    col = labels.unsqueeze(1)
    want = torch.is_grad_enabled() and (x.requires_grad or w.requires_grad)
    with torch.no_grad():
        e = torch.mm(x, w.T)  # [B, C]: scale * cos
        logit_y = e.gather(1, col)  # [B, 1]
        top = e.amax(1, keepdim=True)
        correct = (logit_y >= top).squeeze(1)
        cos_y = logit_y / scale
        target, d_target = arcface_margin(cos_y, math.radians(margin))  # on B numbers
        target = target * scale
        # shift: scale * the row's largest plain cosine, >= every logit (the margin logit is below
        # its plain cosine, by at most scale (1 - cos m + m sin m))
        exp_(e.sub_(top).scatter_(1, col, target - top))
        row_sum = e.sum(1, keepdim=True)
        loss = (row_sum.log() + top - target).mean()
        grad = None
        if want:
            p_y = e.gather(1, col) / row_sum
            grad = e.div_(row_sum * b)
            grad.scatter_(1, col, (p_y - 1) * d_target / b)
    return with_product_gradient(x, w, loss, grad), cos_y.squeeze(1), correct


__all__ = ["arcface_kernel", "arcface_margin", "eligible"]
