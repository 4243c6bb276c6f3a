"""Proxy losses: each class is represented by a learnable vector.

* :class:`ProxyAnchorLoss` (Kim et al., 2020, "Proxy Anchor Loss for Deep Metric Learning").
* :class:`ArcFaceLoss` (Deng et al., 2019, "ArcFace: Additive Angular Margin Loss").

Both compare the batch ``[B, D]`` with ``C`` class vectors through cosine
similarity: ``S = cos(embeddings, proxies)`` of shape ``[B, C]``. The
references are the proxies, so ``ref_emb`` / ``ref_labels`` / ``relevance`` are
refused with a ``ValueError`` (pytorch-metric-learning raises ``ValueError`` for
``ref_emb`` too). Labels are class ids ``[B]`` in ``[0, num_classes)``.

The learnable tensors have pytorch-metric-learning's shapes and initialisation
(``ProxyAnchorLoss.proxies`` ``[C, D]``, Kaiming-normal with ``fan_out``;
``ArcFaceLoss.W`` ``[D, C]``, standard normal), so weights copy across directly:
``ours.proxies.data.copy_(pml.proxies.data)``. Mining does not apply (no
``miner=``): every sample meets every proxy.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from likewise.losses.base import Batch, MetricLoss
from likewise.losses.pair import check_number


def masked_logsumexp(x: Tensor, mask: Tensor, dim: int, add_one: bool = False) -> Tensor:
    """``log(sum_{mask} exp(x))`` along ``dim`` (``log(1 + ...)`` with ``add_one``).

    Without ``add_one`` an empty selection gives 0. The gradient is finite
    everywhere: masked entries are filled with ``-inf`` by ``masked_fill``, whose
    backward zeroes exactly the entries where an empty row's NaN would land.
    """
    x = x.masked_fill(~mask, float("-inf"))
    if add_one:
        shape = list(x.shape)
        shape[dim] = 1
        x = torch.cat([x, x.new_zeros(shape)], dim=dim)
        return torch.logsumexp(x, dim=dim)
    out = torch.logsumexp(x, dim=dim)
    return out.masked_fill(~mask.any(dim=dim), 0.0)


def _check_class_ids(labels: Tensor, num_classes: int, name: str) -> Tensor:
    if labels.dim() != 1:
        raise ValueError(f"{name} needs class ids [B], got labels of shape {tuple(labels.shape)}")
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"{name} needs integer class ids, got dtype {labels.dtype}")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"{name} labels must lie in [0, {num_classes}) (num_classes={num_classes}); "
            f"got values in [{int(labels.min())}, {int(labels.max())}]"
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
    ``proxies [C, D]``. Memory ``O(B C)``.
    """
    sim = F.normalize(embeddings, dim=1) @ F.normalize(proxies.to(embeddings.dtype), dim=1).T  # [B, C]
    pos = F.one_hot(labels, proxies.shape[0]).bool()
    pos_term = masked_logsumexp(-alpha * (sim - margin), pos, dim=0, add_one=True)  # [C]
    neg_term = masked_logsumexp(alpha * (sim + margin), ~pos, dim=0, add_one=True)  # [C]
    with_pos = pos.any(dim=0)
    return pos_term[with_pos].sum() / with_pos.sum() + neg_term.sum() / proxies.shape[0]


class ProxyAnchorLoss(MetricLoss):
    """Proxy-Anchor loss (Kim et al., 2020) with learnable proxies ``[num_classes, embedding_size]``.

    See :func:`proxy_anchor_loss` for the formula. Same defaults, parameter shape
    and initialisation as pytorch-metric-learning's ``ProxyAnchorLoss``; after
    copying ``proxies`` the value and gradients agree. Call
    ``loss(embeddings [B, D], labels [B])``; stats: ``pos_sim`` / ``neg_sim`` (mean
    cosine of samples to their own / other proxies), ``proxies_with_pos``.
    ``alpha`` must be a finite number ``> 0`` and ``margin`` finite.
    """

    def __init__(self, num_classes: int, embedding_size: int, margin: float = 0.1, alpha: float = 32) -> None:
        super().__init__()
        _check_sizes(num_classes, embedding_size)
        self.num_classes = num_classes
        self.embedding_size = embedding_size
        self.margin = check_number(margin, "margin")
        self.alpha = check_number(alpha, "alpha", positive=True)
        self.proxies = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.kaiming_normal_(self.proxies, mode="fan_out")

    def compute(self, batch: Batch) -> Tensor:
        labels = _check_proxy_batch(batch, self.num_classes, self.embedding_size, "ProxyAnchorLoss")
        loss = proxy_anchor_loss(batch.embeddings, labels, self.proxies, self.margin, self.alpha)
        with torch.no_grad():
            sim = (
                F.normalize(batch.embeddings, dim=1) @ F.normalize(self.proxies.to(batch.embeddings), dim=1).T
            )
            pos = F.one_hot(labels, self.num_classes).bool()
            self._record(
                pos_sim=sim[pos].mean(),
                neg_sim=sim[~pos].mean() if self.num_classes > 1 else 0.0,
                proxies_with_pos=pos.any(0).sum(),
            )
        return loss


def arcface_target_logit(cos: Tensor, margin_rad: float) -> Tensor:
    """``cos(theta + m)`` where ``theta + m <= pi``, else ``cos(theta) - m sin(m)`` (monotone).

    ``cos`` is clamped to ``[-1 + eps, 1 - eps]`` (``eps`` = the dtype's machine
    epsilon) before ``acos``: the exact derivative of ``cos(acos(c) + m)`` is
    infinite at ``c = +-1``. pytorch-metric-learning clamps to ``[-1, 1]`` and so
    returns inf/NaN gradients at exactly ``|c| = 1``; the two agree elsewhere
    except within ``eps`` of ``+-1``, where our gradient is zero (the clamp).
    """
    eps = torch.finfo(cos.dtype).eps
    theta = torch.acos(cos.clamp(-1 + eps, 1 - eps))
    return torch.where(
        theta <= math.pi - margin_rad,
        torch.cos(theta + margin_rad),
        torch.cos(theta) - margin_rad * math.sin(margin_rad),
    )


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
) -> tuple[Tensor, Tensor]:
    """The loss and the plain cosines ``[B, C]`` (for statistics): one GEMM, the true
    class's logit written into the scaled cosines in place."""
    cos = F.normalize(embeddings, dim=1) @ F.normalize(weight.to(embeddings.dtype), dim=0)  # [B, C]
    col = labels[:, None]
    logits = cos * scale
    logits.scatter_(1, col, scale * arcface_target_logit(cos.gather(1, col), math.radians(margin)))
    return F.cross_entropy(logits, labels), cos


class ArcFaceLoss(MetricLoss):
    """ArcFace (Deng et al., 2019) with a learnable class matrix ``W`` ``[embedding_size, num_classes]``.

    See :func:`arcface_loss` for the formula; ``margin`` is in degrees (28.6 deg
    ~ 0.5 rad) as in pytorch-metric-learning, whose defaults, ``W`` shape and
    initialisation (standard normal) are kept. After copying ``W`` the value and
    gradients agree, except within machine epsilon of ``cos = +-1`` (see
    :func:`arcface_target_logit`). Call ``loss(embeddings [B, D], labels [B])``;
    stats: ``mean_angle`` (degrees, to the true class), ``accuracy`` (argmax of
    the plain cosines). ``num_classes >= 2``, ``scale`` a finite number ``> 0``,
    ``margin`` in ``[0, 180)``.
    """

    def __init__(
        self, num_classes: int, embedding_size: int, margin: float = 28.6, scale: float = 64
    ) -> None:
        super().__init__()
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
        loss, cos = _arcface(batch.embeddings, labels, self.W, self.margin, self.scale)
        with torch.no_grad():
            cos = cos.detach()
            angle = torch.rad2deg(torch.acos(cos.gather(1, labels[:, None]).clamp(-1, 1)))
            self._record(mean_angle=angle.mean(), accuracy=(cos.argmax(1) == labels).float().mean())
        return loss


__all__ = [
    "ArcFaceLoss",
    "ProxyAnchorLoss",
    "arcface_loss",
    "arcface_target_logit",
    "masked_logsumexp",
    "proxy_anchor_loss",
]
