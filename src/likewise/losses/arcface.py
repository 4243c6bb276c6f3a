"""ArcFace loss (Deng, Guo, Xue, Zafeiriou, 2019, "ArcFace: Additive Angular Margin Loss for
Deep Face Recognition").

Softmax cross-entropy over ``C`` learnable class vectors ``w_c`` (the columns of ``W [D, C]``)
with an angular margin on the true class. With ``cos_c = cos(x, w_c)``, ``theta_y =
acos(cos_y)`` for the true class ``y`` and ``m`` = ``margin`` in degrees converted to radians::

    logit_c = scale * cos_c                      (c != y)
    logit_y = scale * cos(theta_y + m)           (theta_y <= pi - m)
              scale * (cos_y - m sin m)          (otherwise: keeps the logit monotone in cos_y)
    L = mean over the batch of cross_entropy(logits, y)

``cos_y`` is clamped to ``[-1 + eps, 1 - eps]`` (``eps`` = the dtype's machine epsilon) before
the margin: the exact derivative of ``cos(acos(c) + m)`` is infinite at ``c = +-1``.
pytorch-metric-learning clamps to ``[-1, 1]`` and so returns inf/NaN gradients at exactly
``|c| = 1``; the two agree elsewhere except within ``eps`` of ``+-1``, where our gradient is
zero (the clamp).

Shapes: embeddings ``[B, D]``, labels long ``[B]`` in ``[0, C)``, ``W [D, C]``
(pytorch-metric-learning's shape and standard-normal initialisation: ``ours.W.data.copy_(pml.W.data)``).
No ``ref_emb`` / ``relevance`` / ``miner=``: the references are the class vectors.

Example::

    loss_fn = ArcFaceLoss(num_classes=1000, embedding_size=512)
    loss = loss_fn(model(faces), identities)  # identities in [0, 1000)
    loss.backward()  # trains the model and W

The default path runs :mod:`likewise.losses._kernels.arcface` (same values, gradient written
into one buffer); ``fast=False`` runs :func:`arcface_loss`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from likewise.losses._kernels import arcface as kernel
from likewise.losses.base import Batch, MetricLoss, check_number
from likewise.losses.proxy_anchor import check_proxy_batch, check_sizes
from likewise.normalize import l2_normalize, promote


def arcface_target_logit(cos: Tensor, margin_rad: float) -> Tensor:
    """``cos(theta + m)`` where ``theta + m <= pi``, else ``cos(theta) - m sin(m)`` (monotone),
    on ``cos`` clamped to ``[-1 + eps, 1 - eps]`` (see the module docstring). Written without
    ``acos``: ``cos(theta + m) = c cos m - sin(theta) sin m`` with ``sin(theta) = sqrt((1 - c)(1 + c))``
    (``theta`` in ``[0, pi]``), and ``theta <= pi - m`` is ``c >= -cos m``."""
    eps = torch.finfo(cos.dtype).eps
    c = cos.clamp(-1 + eps, 1 - eps)
    sin_theta = torch.sqrt((1 - c) * (1 + c))
    with_margin = c * math.cos(margin_rad) - sin_theta * math.sin(margin_rad)
    return torch.where(c >= -math.cos(margin_rad), with_margin, c - margin_rad * math.sin(margin_rad))


def arcface_loss(
    embeddings: Tensor, labels: Tensor, weight: Tensor, margin: float = 28.6, scale: float = 64.0
) -> Tensor:
    """ArcFace loss (see the module docstring), plain autograd.

    ``embeddings [B, D]``, ``labels`` long ``[B]`` in ``[0, C)``, ``weight [D, C]``;
    ``margin`` in degrees.
    """
    embeddings, weight = promote(embeddings, weight)
    cos = l2_normalize(embeddings, dim=1) @ l2_normalize(weight, dim=0)  # [B, C]
    col = labels.unsqueeze(1)
    target = arcface_target_logit(cos.gather(1, col), math.radians(margin))  # [B, 1]
    logits = scale * cos.scatter(1, col, target)
    return nn.functional.cross_entropy(logits, labels)


class ArcFaceLoss(MetricLoss):
    """ArcFace (Deng et al., 2019) with a learnable class matrix ``W`` ``[embedding_size, num_classes]``.

    See the module docstring for the formula; ``margin`` is in degrees (28.6 deg ~ 0.5 rad)
    as in pytorch-metric-learning, whose defaults, ``W`` shape and initialisation (standard
    normal) are kept. After copying ``W`` the value and gradients agree, except within machine
    epsilon of ``cos = +-1``. Call ``loss(embeddings [B, D], labels [B])``; stats:
    ``mean_angle`` (degrees, to the true class), ``accuracy`` (fraction of samples whose true
    class has the highest plain cosine). ``num_classes >= 2``, ``scale`` a finite number
    ``> 0``, ``margin`` in ``[0, 180)``.
    """

    accepts_refs = False

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin: float = 28.6,
        scale: float = 64,
        *,
        fast: bool = True,
    ) -> None:
        super().__init__(fast=fast)
        check_sizes(num_classes, embedding_size, min_classes=2)
        margin = check_number(margin, "margin")
        if not 0 <= margin < 180:
            raise ValueError(f"margin is an angle in degrees in [0, 180), got {margin!r}")
        self.num_classes = num_classes
        self.embedding_size = embedding_size
        self.margin = margin
        self.scale = check_number(scale, "scale", positive=True)
        self.W = nn.Parameter(torch.empty(embedding_size, num_classes))
        nn.init.normal_(self.W)

    def compute(self, batch: Batch) -> Tensor:
        labels = check_proxy_batch(batch, self.num_classes, self.embedding_size, "ArcFaceLoss")
        if self.fast and kernel.eligible(batch.embeddings, self.W):
            loss, cos_y, correct = kernel.arcface_kernel(
                batch.embeddings, labels, self.W, self.margin, self.scale
            )
        else:
            loss = arcface_loss(batch.embeddings, labels, self.W, self.margin, self.scale)
            with torch.no_grad():
                x, w = promote(batch.embeddings.detach(), self.W.detach())
                cos = l2_normalize(x, dim=1) @ l2_normalize(w, dim=0)
                cos_y = cos.gather(1, labels.unsqueeze(1)).squeeze(1)
                correct = cos_y >= cos.amax(1)
        self._record(
            mean_angle=lambda: torch.rad2deg(torch.acos(cos_y.clamp(-1, 1))).mean(),
            accuracy=lambda: correct.double().mean(),
        )
        return loss


__all__ = ["ArcFaceLoss", "arcface_loss", "arcface_target_logit"]
