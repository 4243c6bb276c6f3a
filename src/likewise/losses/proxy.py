"""Proxy losses: each class is represented by a learnable vector.

* :class:`ProxyAnchorLoss` (Kim et al., 2020, "Proxy Anchor Loss for Deep Metric Learning").
* :class:`ArcFaceLoss` (Deng et al., 2019, "ArcFace: Additive Angular Margin Loss").

Both compare the batch ``[B, D]`` with ``C`` class vectors through cosine
similarity: ``S = cos(embeddings, proxies)`` of shape ``[B, C]``. The
references are the proxies, so ``ref_emb`` / ``ref_labels`` / ``relevance`` are
refused with a ``ValueError`` (pytorch-metric-learning raises ``ValueError`` for
``ref_emb`` too). Labels are class ids ``[B]`` in ``[0, num_classes)`` (bool: 0 and 1).
Embeddings and class vectors of different float dtypes are computed in
``torch.promote_types`` of the two (float16 embeddings, float32 proxies: float32).

The learnable tensors have pytorch-metric-learning's shapes and initialisation
(``ProxyAnchorLoss.proxies`` ``[C, D]``, Kaiming-normal with ``fan_out``;
``ArcFaceLoss.W`` ``[D, C]``, standard normal), so weights copy across directly:
``ours.proxies.data.copy_(pml.proxies.data)``. Mining does not apply (no
``miner=``): every sample meets every proxy.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from likewise.losses._kernels.fused import exp_, with_product_gradient
from likewise.losses._kernels.row_softmax import group_logsumexp
from likewise.losses.base import Batch, MetricLoss, check_number
from likewise.normalize import l2_normalize, promote


def _check_class_ids(labels: Tensor, num_classes: int, name: str) -> Tensor:
    if labels.dim() != 1:
        raise ValueError(f"{name} needs class ids [B], got labels of shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"{name} needs integer class ids (or bool), got dtype {labels.dtype}")
    if labels.numel():  # (bool class ids arrive as int64: check_batch converts them)
        low, high = (int(v) for v in torch.aminmax(labels))
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"{name} labels must lie in [0, {num_classes}) (num_classes={num_classes}); "
                f"got values in [{low}, {high}]"
            )
    return labels.long()


def _check_proxy_batch(batch: Batch, num_classes: int, embedding_size: int, name: str) -> Tensor:
    """Refuse what a proxy loss cannot use; return the labels as long ``[B]``."""
    if not batch.same_set:
        raise ValueError(
            f"ref_emb is not supported by {name}: the references are its learnable class "
            "proxies (pytorch-metric-learning refuses it too)"
        )
    if batch.relevance is not None:
        raise ValueError(f"relevance is not supported by {name}: it needs class ids in [0, num_classes)")
    if batch.embeddings.shape[1] != embedding_size:
        raise ValueError(
            f"embeddings have dimension {batch.embeddings.shape[1]} but {name} was built "
            f"with embedding_size={embedding_size}"
        )
    assert batch.labels is not None  # check_batch requires labels
    return _check_class_ids(batch.labels, num_classes, name)


def _check_sizes(num_classes: int, embedding_size: int, min_classes: int = 1) -> None:
    for key, value in (("num_classes", num_classes), ("embedding_size", embedding_size)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{key} must be a positive integer, got {type(value).__name__} {value!r}")
        if value < 1:
            raise ValueError(f"{key} must be a positive integer, got {value!r}")
    if num_classes < min_classes:
        raise ValueError(
            f"num_classes must be >= {min_classes}: a softmax over {num_classes} class has "
            f"nothing to tell apart, got num_classes={num_classes}"
        )


def _proxy_anchor(
    embeddings: Tensor, labels: Tensor, proxies: Tensor, margin: float, alpha: float
) -> tuple[Tensor, dict[str, Any]]:
    """The loss (gradient computed with it) and the statistics of one call (for ``_record``)."""
    embeddings, proxies = promote(embeddings, proxies)
    x = l2_normalize(embeddings, dim=1)
    p = l2_normalize(proxies, dim=1)
    b, c = x.shape[0], p.shape[0]
    col = labels.unsqueeze(1)
    want = torch.is_grad_enabled() and (x.requires_grad or p.requires_grad)
    with torch.no_grad():
        # negative term of every proxy: log(1 + sum_{x not in class} exp(alpha (s + margin))),
        # each column shifted by its largest logit, or by alpha (1 + margin) >= every logit
        # (cosines <= 1) when the logits span at most 2 alpha <= 80 (no exp below the floor):
        # then the GEMM writes the shifted logits alpha s - alpha directly
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


def proxy_anchor_loss(
    embeddings: Tensor, labels: Tensor, proxies: Tensor, margin: float = 0.1, alpha: float = 32.0
) -> Tensor:
    """Proxy-Anchor loss (Kim et al., 2020).

    With ``s(x, p) = cos(x, p)``, ``X_p^+`` the batch samples of proxy ``p``'s class,
    ``X_p^-`` the others, ``P^+`` the proxies with at least one sample in the batch
    and ``P`` all ``C`` proxies::

        L = 1/|P^+| sum_{p in P^+} log(1 + sum_{x in X_p^+} exp(-alpha (s(x, p) - margin)))
          + 1/|P|   sum_{p in P}   log(1 + sum_{x in X_p^-} exp( alpha (s(x, p) + margin)))

    Shapes: ``embeddings [B, D]``, ``labels`` long ``[B]`` in ``[0, C)``,
    ``proxies [C, D]``. Memory ``O(B C)``: one ``[B, C]`` buffer holds the exponentials
    of the negative term and then ``dL/dS`` (each proxy's softmax weights, scaled, with
    the positive entries written in), so backward is the GEMMs of ``S`` only.
    """
    return _proxy_anchor(embeddings, labels, proxies, margin, alpha)[0]


class ProxyAnchorLoss(MetricLoss):
    """Proxy-Anchor loss (Kim et al., 2020) with learnable proxies ``[num_classes, embedding_size]``.

    See :func:`proxy_anchor_loss` for the formula. Same defaults, parameter shape
    and initialisation as pytorch-metric-learning's ``ProxyAnchorLoss``; after
    copying ``proxies`` the value and gradients agree. Call
    ``loss(embeddings [B, D], labels [B])``; stats: ``pos_sim`` / ``neg_sim`` (mean
    cosine of samples to their own / other proxies), ``proxies_with_pos``.
    ``alpha`` must be a finite number ``> 0`` and ``margin`` finite.
    """

    accepts_refs = False

    def __init__(
        self,
        num_classes: int,
        embedding_size: int,
        margin: float = 0.1,
        alpha: float = 32,
        *,
        fast: bool = True,
    ) -> None:
        super().__init__(fast=fast)
        _check_sizes(num_classes, embedding_size)
        self.num_classes = num_classes
        self.embedding_size = embedding_size
        self.margin = check_number(margin, "margin")
        self.alpha = check_number(alpha, "alpha", positive=True)
        self.proxies = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.kaiming_normal_(self.proxies, mode="fan_out")

    def compute(self, batch: Batch) -> Tensor:
        labels = _check_proxy_batch(batch, self.num_classes, self.embedding_size, "ProxyAnchorLoss")
        loss, stats = _proxy_anchor(batch.embeddings, labels, self.proxies, self.margin, self.alpha)
        self._record(**stats)
        return loss


def _arcface_margin(cos: Tensor, margin_rad: float) -> tuple[Tensor, Tensor]:
    """The margin logit of :func:`arcface_target_logit` and its derivative in ``cos``.

    Without ``acos``: with ``c = cos(theta)`` and ``sin(theta) = sqrt((1 - c)(1 + c)) >= 0``
    (``theta`` in ``[0, pi]``), ``cos(theta + m) = c cos m - sin(theta) sin m``, its
    derivative ``sin(theta + m) / sin(theta) = cos m + c sin m / sin(theta)``, and
    ``theta <= pi - m`` is ``c >= -cos m``; ``d/dc (c - m sin m) = 1``. Both 0 outside the clamp
    ``[-1 + eps, 1 - eps]`` (as autograd's ``clamp``: inclusive bounds). (Three
    transcendental ops on ``B`` numbers each wake the CPU thread pool; ``sqrt`` once.)
    """
    eps = torch.finfo(cos.dtype).eps
    c = cos.clamp(-1 + eps, 1 - eps)
    sin_theta = (1 - c).mul_(1 + c).sqrt_()
    cos_m, sin_m = math.cos(margin_rad), math.sin(margin_rad)
    with_margin = c >= -cos_m
    logit = torch.where(with_margin, torch.add(c * cos_m, sin_theta, alpha=-sin_m), c - margin_rad * sin_m)
    slope = torch.where(with_margin & (c == cos), torch.div(c, sin_theta).mul_(sin_m).add_(cos_m), c == cos)
    return logit, slope.to(cos.dtype)


def arcface_target_logit(cos: Tensor, margin_rad: float) -> Tensor:
    """``cos(theta + m)`` where ``theta + m <= pi``, else ``cos(theta) - m sin(m)`` (monotone).

    ``cos`` is clamped to ``[-1 + eps, 1 - eps]`` (``eps`` = the dtype's machine
    epsilon) before ``acos``: the exact derivative of ``cos(acos(c) + m)`` is
    infinite at ``c = +-1``. pytorch-metric-learning clamps to ``[-1, 1]`` and so
    returns inf/NaN gradients at exactly ``|c| = 1``; the two agree elsewhere
    except within ``eps`` of ``+-1``, where our gradient is zero (the clamp).
    """
    return _arcface_margin(cos, margin_rad)[0]


def arcface_loss(
    embeddings: Tensor, labels: Tensor, weight: Tensor, margin: float = 28.6, scale: float = 64.0
) -> Tensor:
    """ArcFace loss (Deng et al., 2019): softmax cross-entropy on angular-margin logits.

    With ``cos_c = cos(x, w_c)`` (``w_c`` the ``c``-th column of ``weight``),
    ``theta_y = acos(cos_y)`` for the true class ``y`` and ``m`` = ``margin`` in
    degrees converted to radians::

        logit_c = scale * cos_c                      (c != y)
        logit_y = scale * cos(theta_y + m)           (theta_y <= pi - m)
                  scale * (cos_y - m sin m)          (otherwise, keeps it monotone)
        L = mean_batch CE(logits, y)

    Shapes: ``embeddings [B, D]``, ``labels`` long ``[B]`` in ``[0, C)``,
    ``weight [D, C]`` (pytorch-metric-learning's ``W``). Memory ``O(B C)``.
    """
    return _arcface(embeddings, labels, weight, margin, scale)[0]


def _arcface(
    embeddings: Tensor, labels: Tensor, weight: Tensor, margin: float, scale: float
) -> tuple[Tensor, Tensor, Tensor]:
    """The loss, each sample's cosine to its own class ``[B]`` and whether that class has the
    highest cosine ``[B]``.

    One GEMM of the unit embeddings with the class vectors normalised to length ``scale``
    gives the logits ``scale cos [B, C]``; the same buffer then holds their softmax and
    ``dL/dlogits`` (``(p_c - 1[c = y]) / B``, the true class's entry times the derivative of
    its margin logit), so backward is the GEMMs of the logits only.
    """
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
        target, d_target = _arcface_margin(cos_y, math.radians(margin))  # on B numbers
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


class ArcFaceLoss(MetricLoss):
    """ArcFace (Deng et al., 2019) with a learnable class matrix ``W`` ``[embedding_size, num_classes]``.

    See :func:`arcface_loss` for the formula; ``margin`` is in degrees (28.6 deg
    ~ 0.5 rad) as in pytorch-metric-learning, whose defaults, ``W`` shape and
    initialisation (standard normal) are kept. After copying ``W`` the value and
    gradients agree, except within machine epsilon of ``cos = +-1`` (see
    :func:`arcface_target_logit`). Call ``loss(embeddings [B, D], labels [B])``;
    stats: ``mean_angle`` (degrees, to the true class), ``accuracy`` (fraction of
    samples whose true class has the highest plain cosine). ``num_classes >= 2``,
    ``scale`` a finite number ``> 0``, ``margin`` in ``[0, 180)``.
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
        _check_sizes(num_classes, embedding_size, min_classes=2)
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
        labels = _check_proxy_batch(batch, self.num_classes, self.embedding_size, "ArcFaceLoss")
        loss, cos_y, correct = _arcface(batch.embeddings, labels, self.W, self.margin, self.scale)
        self._record(
            mean_angle=lambda: torch.rad2deg(torch.acos(cos_y.clamp(-1, 1))).mean(),
            accuracy=lambda: correct.double().mean(),
        )
        return loss


__all__ = [
    "ArcFaceLoss",
    "ProxyAnchorLoss",
    "arcface_loss",
    "arcface_target_logit",
    "proxy_anchor_loss",
]
