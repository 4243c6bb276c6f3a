"""Proxy-Anchor with its gradient written into the ``[B, C]`` similarity buffer (one GEMM each way).

The plain formula is :func:`likewise.losses.proxy_anchor.proxy_anchor_loss`; this kernel gives
the same values and gradients. One ``[B, C]`` buffer holds the logits, then the exponentials of
the negative term, then ``dL/dS``; backward is the two GEMMs of ``S = x p^T``
(:func:`~likewise.losses._kernels.fused.with_product_gradient`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from likewise.losses._kernels.fused import exp_, with_product_gradient
from likewise.losses._kernels.row_softmax import group_logsumexp
from likewise.normalize import l2_normalize, promote


def eligible(embeddings: Tensor, proxies: Tensor) -> bool:
    """Always: any device and float dtype (no data-dependent sizes, first-order gradients)."""
    return True


def proxy_anchor_kernel(
    embeddings: Tensor, labels: Tensor, proxies: Tensor, margin: float, alpha: float
) -> tuple[Tensor, dict[str, Any]]:
    """The loss (gradient attached) and the statistics of one call (for ``_record``)."""
    embeddings, proxies = promote(embeddings, proxies)
    x = l2_normalize(embeddings, dim=1)
    p = l2_normalize(proxies, dim=1)
    b, c = x.shape[0], p.shape[0]
    col = labels.unsqueeze(1)
    want = torch.is_grad_enabled() and (x.requires_grad or p.requires_grad)
    with torch.no_grad():
        # negative term of every proxy: log(1 + sum_{x not in class} exp(alpha (s + margin))),
        # each column shifted by its largest logit, or by alpha (1 + margin) >= every logit
        # (cosines <= 1) when the logits span at most 2 alpha <= 80 (exp_ clamps at -80: the
        # shifted logits then never reach the clamp): the GEMM writes alpha s - alpha directly
        bounded = 2 * alpha <= 80
        offset = -alpha if bounded else alpha * margin  # logit - alpha s
        e = torch.addmm(x.new_full((1, 1), offset), x, p.T, alpha=alpha)  # [B, C]
        s_pos = e.gather(1, col).squeeze(1).sub_(offset).div_(alpha)  # [B]: each sample, own proxy
        # positive term of each proxy with samples: log(1 + sum_x exp(z_x)), z = -alpha (s - margin)
        z = (s_pos - margin).mul_(-alpha)
        lse_pos = group_logsumexp(z, labels, c)  # [C]
        n_with_pos = torch.isfinite(lse_pos).sum()
        per_proxy = 1 / n_with_pos.clamp_min(1).to(e.dtype)
        if bounded:
            top = e.new_full((c,), alpha * (1 + margin))
            e.exp_()
        else:
            e.scatter_(1, col, float("-inf"))
            top = e.amax(0)
            top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
            exp_(e.sub_(top))
        e.scatter_(1, col, 0.0)  # the negatives only
        col_sum = e.sum(0)
        lse_neg = col_sum.log() + top  # -inf for a proxy without negatives
        zero = torch.zeros_like(lse_neg)
        pos_den = torch.logaddexp(lse_pos, zero)
        neg_den = torch.logaddexp(lse_neg, zero)
        loss = pos_den.sum() * per_proxy + neg_den.sum() / c
        grad = None
        if want:
            # d/dl of log(1 + sum exp(l)) is exp(l) / (1 + sum exp(l)) = exp(l - logaddexp(lse, 0))
            col_scale = torch.where(col_sum > 0, torch.exp(top - neg_den), zero).mul_(alpha / c)
            grad = e.mul_(col_scale)
            pos_grad = torch.exp(z - pos_den.index_select(0, labels)).mul_(per_proxy * -alpha)
            grad.scatter_(1, col, pos_grad.unsqueeze(1))
        x_unit, p_unit = x.detach(), p.detach()  # fresh tensors: nothing writes to them later
        stats = {  # evaluated when read (MetricLoss.stats)
            "pos_sim": s_pos.mean,
            # the sum of all cosines is <sum of x, sum of p>: no [B, C] pass
            "neg_sim": (lambda: (torch.dot(x_unit.sum(0), p_unit.sum(0)) - s_pos.sum()) / (b * c - b))
            if c > 1
            else 0.0,
            "proxies_with_pos": n_with_pos,
        }
    return with_product_gradient(x, p, loss, grad), stats


__all__ = ["eligible", "proxy_anchor_kernel"]
