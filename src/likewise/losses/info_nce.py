"""InfoNCE of queries against their keys and extra negatives: MoCo's contrastive loss.

Formula (Oord et al. 2018, "Representation Learning with Contrastive Predictive Coding";
He et al. 2020, MoCo). For queries ``q [B, D]``, keys ``k [B, D]`` (``k_i`` is the
positive of ``q_i``, the other keys are its negatives) and optional extra negatives
``n [M, D]`` (MoCo's queue), with cosine similarities and temperature ``T``::

    r = [k; n]                       # [B + M, D] references
    l_ij = cos(q_i, r_j) / T
    L = 1/B sum_i -log( exp(l_ii) / sum_j exp(l_ij) )   # = cross_entropy(l, arange(B))

This is :class:`likewise.losses.NTXentLoss` called as
``NTXentLoss(T)(q, arange(B), ref_emb=[k; n], ref_labels=[arange(B); -1 ...])`` (the
tests check the two agree), written as one cross-entropy: no label masks, which the
general loss needs and a query-key pairing by row does not.

Shapes: ``q [B, D]``, ``k [B, D]``, ``negatives [M, D]`` or None (``M >= 0``); returns a
scalar. Both ``q`` and ``k`` are differentiated (a momentum encoder's keys carry no
gradient because the method computes them under ``torch.no_grad``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from likewise.losses.two_view import TwoViewLoss, check_view, check_views


def info_nce_loss(q: Tensor, k: Tensor, negatives: Tensor | None = None, temperature: float = 0.07) -> Tensor:
    """InfoNCE of ``q`` against ``[k; negatives]`` with positives on the diagonal (module docstring)."""
    q, k = check_views(q, k)
    refs = k
    if negatives is not None:
        negatives = check_view(negatives, "negatives", min_rows=0)
        if negatives.shape[1] != k.shape[1]:
            raise ValueError(
                f"negatives must have {k.shape[1]} columns like the keys, got {tuple(negatives.shape)}"
            )
        refs = torch.cat([k, negatives.to(k.dtype)])
    eps = torch.finfo(q.dtype).tiny ** 0.5  # valid in the input's dtype (float16 too)
    logits = F.normalize(q, dim=1, eps=eps) @ F.normalize(refs, dim=1, eps=eps).T / temperature
    return F.cross_entropy(logits, torch.arange(q.shape[0], device=q.device))


class InfoNCELoss(TwoViewLoss):
    """``loss(q, k, negatives=None)``: InfoNCE with ``k_i`` the positive of ``q_i`` (MoCo);
    see the module docstring. ``temperature`` ``T > 0`` (MoCo v2: 0.2; v1: 0.07)."""

    def __init__(self, temperature: float = 0.07, *, fast: bool = True) -> None:
        super().__init__(fast=fast)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
            raise ValueError(f"temperature must be a positive number, got {temperature!r}")
        self.temperature = float(temperature)

    def forward(self, z_a: Tensor, z_b: Tensor, negatives: Tensor | None = None) -> Tensor:
        return info_nce_loss(z_a, z_b, negatives, self.temperature)


__all__ = ["InfoNCELoss", "info_nce_loss"]
