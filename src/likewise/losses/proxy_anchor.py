"""Proxy-Anchor loss (Kim, Kim, Cho, Kwak, 2020, "Proxy Anchor Loss for Deep Metric Learning").

Each class ``c`` has a learnable proxy ``p_c``. With ``s(x, p) = cos(x, p)``, ``X_p^+`` the
batch samples of proxy ``p``'s class, ``X_p^-`` the others, ``P^+`` the proxies with at least
one sample in the batch and ``P`` all ``C`` proxies::

    L = 1/|P^+| sum_{p in P^+} log(1 + sum_{x in X_p^+} exp(-alpha (s(x, p) - margin)))
      + 1/|P|   sum_{p in P}   log(1 + sum_{x in X_p^-} exp( alpha (s(x, p) + margin)))

Shapes: embeddings ``[B, D]``, labels long ``[B]`` in ``[0, C)``, proxies ``[C, D]``; the
cosines ``S [B, C]``. The references are the proxies: ``ref_emb`` / ``ref_labels`` /
``relevance`` are refused (pytorch-metric-learning refuses ``ref_emb`` too), and there is
no ``miner=`` (every sample meets every proxy). Embeddings and proxies of different float
dtypes are computed in ``torch.promote_types`` of the two.

The proxies have pytorch-metric-learning's shape and initialisation (Kaiming normal,
``fan_out``), so weights copy across: ``ours.proxies.data.copy_(pml.proxies.data)``.

Example::

    loss_fn = ProxyAnchorLoss(num_classes=100, embedding_size=128)
    loss = loss_fn(model(images), labels)  # labels in [0, 100)
    loss.backward()  # trains the model and the proxies

The default path runs :mod:`likewise.losses._kernels.proxy_anchor` (same values, gradient
written into one buffer); ``fast=False`` runs :func:`proxy_anchor_loss`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from likewise.devices import check_on_device
from likewise.losses._kernels import proxy_anchor as kernel
from likewise.losses.base import Batch, MetricLoss, check_number, masked_logsumexp, masked_mean
from likewise.normalize import l2_normalize, promote


def check_class_ids(labels: Tensor, num_classes: int, name: str) -> Tensor:
    """Class ids ``[B]`` in ``[0, num_classes)`` as long. The range is checked on the device
    (``torch._assert_async``: the host does not wait for it); on a CPU a violation raises
    ``ValueError`` here."""
    if labels.dim() != 1:
        raise ValueError(f"{name} needs class ids [B], got labels of shape {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"{name} needs integer class ids (or bool), got dtype {labels.dtype}")
    if labels.numel():  # (bool class ids arrive as int64: check_batch converts them)
        low, high = torch.aminmax(labels)
        message = f"{name} labels must lie in [0, {num_classes}) (num_classes={num_classes})"
        try:
            check_on_device((low >= 0) & (high < num_classes), message)
        except ValueError:  # the input is bad: reading the values costs nothing that matters
            raise ValueError(f"{message}; got values in [{int(low)}, {int(high)}]") from None
    return labels.long()


def check_proxy_batch(batch: Batch, num_classes: int, embedding_size: int, name: str) -> Tensor:
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
    return check_class_ids(batch.labels, num_classes, name)


def check_sizes(num_classes: int, embedding_size: int, min_classes: int = 1) -> None:
    """Positive integer sizes, at least ``min_classes`` classes."""
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
    """Proxy-Anchor loss (see the module docstring), plain autograd.

    ``embeddings [B, D]``, ``labels`` long ``[B]`` in ``[0, C)``, ``proxies [C, D]``.
    """
    embeddings, proxies = promote(embeddings, proxies)
    s = l2_normalize(embeddings, dim=1) @ l2_normalize(proxies, dim=1).T  # [B, C]
    pos = nn.functional.one_hot(labels, proxies.shape[0]).bool()  # sample x is in proxy p's class
    pos_term = masked_logsumexp(-alpha * (s - margin), pos, dim=0, add_one=True)  # [C]
    neg_term = masked_logsumexp(alpha * (s + margin), ~pos, dim=0, add_one=True)  # [C]
    return masked_mean(pos_term, pos.any(0)) + neg_term.mean()


class ProxyAnchorLoss(MetricLoss):
    """Proxy-Anchor loss (Kim et al., 2020) with learnable proxies ``[num_classes, embedding_size]``.

    See the module docstring for the formula. Same defaults, parameter shape and
    initialisation as pytorch-metric-learning's ``ProxyAnchorLoss``; after copying
    ``proxies`` the value and gradients agree. Call ``loss(embeddings [B, D], labels [B])``;
    stats: ``pos_sim`` / ``neg_sim`` (mean cosine of samples to their own / other proxies),
    ``proxies_with_pos``. ``alpha`` must be a finite number ``> 0`` and ``margin`` finite.
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
        check_sizes(num_classes, embedding_size)
        self.num_classes = num_classes
        self.embedding_size = embedding_size
        self.margin = check_number(margin, "margin")
        self.alpha = check_number(alpha, "alpha", positive=True)
        self.proxies = nn.Parameter(torch.empty(num_classes, embedding_size))
        nn.init.kaiming_normal_(self.proxies, mode="fan_out")

    def compute(self, batch: Batch) -> Tensor:
        labels = check_proxy_batch(batch, self.num_classes, self.embedding_size, "ProxyAnchorLoss")
        if self.fast and kernel.eligible(batch.embeddings, self.proxies):
            loss, stats = kernel.proxy_anchor_kernel(
                batch.embeddings, labels, self.proxies, self.margin, self.alpha
            )
            self._record(**stats)
            return loss
        loss = proxy_anchor_loss(batch.embeddings, labels, self.proxies, self.margin, self.alpha)
        with torch.no_grad():
            x, p = promote(batch.embeddings.detach(), self.proxies.detach())
            s = l2_normalize(x, dim=1) @ l2_normalize(p, dim=1).T
        own = nn.functional.one_hot(labels, self.num_classes).bool()
        self._record(
            pos_sim=lambda: s[own].mean(),
            neg_sim=lambda: s[~own].mean() if self.num_classes > 1 else 0.0,
            proxies_with_pos=lambda: own.any(0).sum(),
        )
        return loss


__all__ = ["ProxyAnchorLoss", "proxy_anchor_loss"]
