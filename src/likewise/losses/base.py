"""The call convention shared by every supervised loss, and input validation.

``loss(embeddings, labels, *, ref_emb=None, ref_labels=None, relevance=None)``

* ``embeddings``: float ``[B, D]``; ``labels``: integer class ids ``[B]`` (bool: two
  classes, False and True; float ids raise ``TypeError``) or multi-label ``[B, C]``.
* ``ref_emb`` / ``ref_labels``: float ``[N, D]`` / ``[N]`` — the references the
  queries are compared with (a memory queue, gathered embeddings, another view).
  Embeddings and references of different float dtypes are computed in
  ``torch.promote_types`` of the two (float64 with float32: float64), as ``a @ b``
  with both cast would be; gradients come back in each input's own dtype.
  float16 inputs are computed in float32 and the loss is float32, as ``torch.autocast``
  does for PyTorch's own losses: float16's range (6.5e4) does not hold the exponentials,
  the sums over ``B x N`` pairs and the squared distances of a loss, nor the ``1 / eps``
  gradient of an all-zero row (that one comes back saturated at float16's largest value).
  bfloat16 (float32's range) is computed in bfloat16.
  When absent the references are the queries themselves and self-pairs are
  excluded (pytorch-metric-learning's convention).
* ``relevance``: optional bool ``[B, N]`` matrix that replaces the label relation
  (a numeric one must hold only 0/1; multi-label ``[B, C]`` labels likewise).
* ``ref_self_index``: optional long ``[B]``: for each query, the row of ``ref_emb``
  that holds the query itself (``-1`` for none), excluded from every pair. A
  cross-batch memory or a cross-GPU gather that contains the current batch uses it.

* ``indices_tuple``: pytorch-metric-learning's pairs ``(a1, p, a2, n)`` or triplets
  ``(a, p, n)`` (also PML's third positional argument), for the losses that set
  ``accepts_indices_tuple``; labels may then be ``None``. See :mod:`likewise.losses.given`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from likewise.devices import check_on_device
from likewise.lazy_stats import LazyStats
from likewise.losses.given import Given, parse_indices_tuple
from likewise.mined import Mined, PairMask, to_pair_mask
from likewise.normalize import l2_normalize, promote, widen
from likewise.similarity import check_binary, relation_masks

INDICES_TUPLE_MESSAGE = (
    "takes no indices_tuple (ContrastiveLoss, TripletMarginLoss, LiftedStructureLoss, "
    "MultiSimilarityLoss, CircleLoss, NTXentLoss and SupConLoss do): pass a miner in the "
    "constructor instead, e.g. TripletMarginLoss(miner=BatchHardMiner()), and call loss(embeddings, labels)"
)


@dataclass
class Batch:
    """Validated inputs of one loss call."""

    embeddings: Tensor  # [B, D]
    labels: Tensor | None  # [B] or [B, C]
    ref_emb: Tensor  # [N, D] (the embeddings themselves when no refs were given)
    ref_labels: Tensor | None
    relevance: Tensor | None  # bool [B, N]
    same_set: bool  # refs are the queries
    self_index: Tensor | None  # long [B]: ref column of each query itself (-1 none)
    given: Given | None = None  # pairs / triplets given by the caller (indices_tuple)

    def masks(self) -> tuple[Tensor, Tensor]:
        """Positive / negative masks ``[B, N]`` with self-pairs excluded (given pairs: as given)."""
        if self.given is not None:
            return self.given.masks()
        return relation_masks(
            self.labels,
            None if self.same_set else self.ref_labels,
            relevance=self.relevance,
            self_index=self.self_index,
            validate=False,  # check_batch validated the labels / relevance once
        )

    def row_slice(self, start: int, stop: int) -> Batch:
        """The queries ``start:stop`` against all references (for chunked losses)."""
        sl = slice(start, stop)
        return Batch(
            embeddings=self.embeddings[sl],
            labels=None if self.labels is None else self.labels[sl],
            ref_emb=self.ref_emb,
            ref_labels=self.ref_labels,
            relevance=None if self.relevance is None else self.relevance[sl],
            same_set=False,
            self_index=None if self.self_index is None else self.self_index[sl],
            given=None if self.given is None else self.given.rows(start, stop),
        )


def _check_float_matrix(x: Any, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must have shape [batch, dim], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got dtype {x.dtype}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if x.shape[1] == 0:
        raise ValueError(f"{name} have dimension 0")
    low, high = x.detach().aminmax()  # NaN propagates; one pass (isfinite().all() costs ten)
    finite = torch.isfinite(low) & torch.isfinite(high)
    check_on_device(finite, f"{name} contain NaN or inf")
    return x


def _check_labels(labels: Any, n: int, name: str, emb_name: str) -> Tensor:
    if not isinstance(labels, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dim() not in (1, 2):
        raise ValueError(
            f"{name} must be class ids [B] or multi-label [B, C], got shape {tuple(labels.shape)}"
        )
    if labels.shape[0] != n:
        raise ValueError(f"{name} has {labels.shape[0]} entries but {emb_name} has {n} rows")
    if labels.dim() == 1 and (labels.is_floating_point() or labels.is_complex()):
        raise TypeError(f"{name} must be integer class ids (or bool), got dtype {labels.dtype}")
    if labels.dim() == 1 and labels.dtype == torch.bool:
        labels = labels.long()  # two classes, 0 and 1 (searchsorted and sort take no bool)
    if labels.dim() == 2:
        rows = "N" if name.startswith("ref") else "B"
        check_binary(labels, f"multi-label {name} [{rows}, C]", "0/1 (or bool): 1 marks a label the row has")
    return labels


def check_batch(
    embeddings: Any,
    labels: Any,
    ref_emb: Any = None,
    ref_labels: Any = None,
    relevance: Any = None,
    *,
    ref_self_index: Any = None,
    labels_required: bool = True,
    pairs_given: bool = False,
) -> Batch:
    """Validate a loss call and return a :class:`Batch` (raises ValueError/TypeError).

    ``pairs_given``: the relation comes from an ``indices_tuple`` (parsed by the caller):
    labels and ``ref_labels`` are then optional and ``relevance`` is refused."""
    embeddings = _check_float_matrix(embeddings, "embeddings")
    b = embeddings.shape[0]
    if pairs_given:
        if relevance is not None:
            raise ValueError("pass either indices_tuple or relevance, not both")
        labels_required = False
    elif (ref_emb is None) != (ref_labels is None) and relevance is None:
        raise ValueError("ref_emb and ref_labels must be given together")
    if ref_emb is not None:
        ref_emb = _check_float_matrix(ref_emb, "ref_emb")
        if ref_emb.shape[1] != embeddings.shape[1]:
            raise ValueError(
                f"ref_emb has dimension {ref_emb.shape[1]} but embeddings have {embeddings.shape[1]}"
            )
        if ref_emb.dtype != embeddings.dtype:  # computed in torch's promoted dtype
            embeddings, ref_emb = promote(embeddings, ref_emb)
    if embeddings.dtype == torch.float16:  # computed in float32, as under autocast
        embeddings = widen(embeddings)
        ref_emb = None if ref_emb is None else widen(ref_emb)
    same_set = ref_emb is None
    n = b if same_set else ref_emb.shape[0]
    if relevance is not None:
        if not isinstance(relevance, Tensor):
            raise TypeError(f"relevance must be a bool torch.Tensor, got {type(relevance).__name__}")
        if tuple(relevance.shape) != (b, n):
            raise ValueError(f"relevance must have shape {(b, n)}, got {tuple(relevance.shape)}")
        check_binary(relevance, "relevance", f"a bool or 0/1 matrix {(b, n)}")
        relevance = relevance.bool()
    elif labels is None:
        if labels_required:
            raise ValueError("labels are required")
    if same_set:
        self_index = torch.arange(b, device=embeddings.device)
    elif ref_self_index is not None:
        if not isinstance(ref_self_index, Tensor) or ref_self_index.dtype not in (torch.int32, torch.int64):
            raise TypeError("ref_self_index must be an integer torch.Tensor [B]")
        if tuple(ref_self_index.shape) != (b,):
            raise ValueError(f"ref_self_index must have shape {(b,)}, got {tuple(ref_self_index.shape)}")
        if ((ref_self_index < -1) | (ref_self_index >= n)).any():
            raise ValueError(f"ref_self_index entries must lie in [-1, {n - 1}]")
        self_index = ref_self_index.to(device=embeddings.device, dtype=torch.long)
    else:
        self_index = None
    if labels is not None:
        labels = _check_labels(labels, b, "labels", "embeddings")
        if labels.device != embeddings.device:
            labels = labels.to(embeddings.device)
    if ref_labels is not None:
        ref_labels = _check_labels(ref_labels, n, "ref_labels", "ref_emb")
        if labels is not None and labels.dim() != ref_labels.dim():
            raise ValueError("labels and ref_labels must both be [B] ids or both [B, C] multi-label")
        if labels is not None and labels.dim() == 1 and labels.dtype != ref_labels.dtype:
            labels, ref_labels = labels.long(), ref_labels.long()  # one dtype for sort/searchsorted
        ref_labels = ref_labels.to(embeddings.device)
    return Batch(
        embeddings=embeddings,
        labels=labels,
        ref_emb=embeddings if same_set else ref_emb,
        ref_labels=labels if same_set else ref_labels,
        relevance=relevance,
        same_set=same_set,
        self_index=self_index,
    )


@contextmanager
def full_precision(embeddings: Any) -> Iterator[Callable[[Any], Any]]:
    """Inside ``torch.autocast``: a region with autocast off and a function that turns float16 /
    bfloat16 tensors into float32 (anything else passes through); outside it, both do nothing.

    Losses are computed in float32 under mixed precision, as autocast does for PyTorch's own
    losses (``cross_entropy``, ``softmax``, ...): the similarity GEMM inside a loss would
    otherwise run in the lowered dtype and its ``exp``/``log`` with it. Gradients flow back
    through the cast to the caller's dtype. Low-precision inputs given without autocast are
    computed in their own dtype.
    """
    device_type = embeddings.device.type if isinstance(embeddings, Tensor) else "cpu"
    if not torch.is_autocast_enabled(device_type):
        yield lambda t: t
        return

    def cast(t: Any) -> Any:  # gradients go back saturated (a zero row's 1 / eps: see widen)
        return widen(t) if isinstance(t, Tensor) and t.dtype in (torch.float16, torch.bfloat16) else t

    with torch.autocast(device_type=device_type, enabled=False):
        yield cast


def zero_loss(*tensors: Tensor) -> Tensor:
    """A zero scalar connected to the graph of ``tensors`` (back-propagates zeros)."""
    total = tensors[0].sum() * 0
    for t in tensors[1:]:
        total = total + t.sum() * 0
    return total


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``values[mask]`` (0, still in the graph, when the mask is empty)."""
    count = mask.sum()
    total = torch.where(mask, values, torch.zeros_like(values)).sum()
    return total / count.clamp_min(1)


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


def check_fast(fast: Any) -> bool:
    """``fast=`` must be a bool."""
    if not isinstance(fast, bool):
        raise TypeError(f"fast must be a bool, got {type(fast).__name__}")
    return fast


def check_number(value: Any, name: str, *, positive: bool = False, nonnegative: bool = False) -> float:
    """A finite real number (raises TypeError / ValueError otherwise)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if nonnegative and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def prepare(x: Tensor, metric: str, normalize_embeddings: bool) -> Tensor:
    """L2-normalise rows when asked (cosine normalises by itself)."""
    if normalize_embeddings and metric != "cosine":
        return l2_normalize(x, dim=1)
    return x


class MetricLoss(LazyStats, nn.Module):
    """Base class for supervised losses with the likewise / PML call convention.

    Subclasses implement :meth:`compute` on a validated :class:`Batch`. Those that set
    ``accepts_indices_tuple`` take PML's ``indices_tuple`` (``batch.given``); the losses
    built on boolean masks also set ``disjoint_pairs`` (a pair may not be both similar and
    dissimilar, as PML asserts for them). Statistics
    of the last call are read from ``self.stats`` (a plain dict of floats). They are
    computed when read, not in the call (:class:`likewise.lazy_stats.LazyStats`): a
    training step that does not look at them pays no ``float()`` (a device
    synchronisation on a GPU) and no extra passes.

    ``fast`` (every loss takes it): ``True`` (default) runs a fast kernel of
    :mod:`likewise.losses._kernels` where that kernel declares itself eligible for the
    call, else the plain autograd formula of the loss's module; ``False`` always runs the
    plain formula (the specification: same values and gradients, slower).
    """

    accepts_indices_tuple: bool = False
    disjoint_pairs: bool = False
    #: what ``labels`` hold: ``"class_ids"`` (``[B]`` ints or multi-label ``[B, C]``) or
    #: ``"continuous"`` (float ``[B, L]``: :class:`~likewise.losses.log_ratio.LogRatioLoss`)
    label_kind: str = "class_ids"
    #: whether ``ref_emb`` / ``ref_labels`` are taken (proxy losses and N-pairs refuse them)
    accepts_refs: bool = True
    #: False where the loss stops the gradient through some of its terms (Circle's weights),
    #: as its paper does: its backward is then not the derivative of its value
    exact_gradient: bool = True

    def __init__(self, miner: Any = None, *, fast: bool = True) -> None:
        super().__init__()
        self.miner = miner
        self.fast = check_fast(fast)

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor | None = None,
        *args: Any,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
        relevance: Tensor | None = None,
        ref_self_index: Tensor | None = None,
        indices_tuple: Any = None,
    ) -> Tensor:
        if len(args) > 1 or (args and indices_tuple is not None):
            raise TypeError("give indices_tuple once: loss(embeddings, labels, indices_tuple)")
        if args:
            indices_tuple = args[0]
        given = indices_tuple is not None
        if given and not self.accepts_indices_tuple:
            raise TypeError(f"{type(self).__name__} {INDICES_TUPLE_MESSAGE}")
        with full_precision(embeddings) as cast:
            batch = check_batch(
                cast(embeddings),
                labels,
                cast(ref_emb),
                ref_labels,
                relevance,
                ref_self_index=ref_self_index,
                pairs_given=given,
            )
            if given:
                rel = parse_indices_tuple(
                    indices_tuple,
                    batch.embeddings.shape[0],
                    batch.ref_emb.shape[0],
                    batch.embeddings.device,
                    batch.embeddings.dtype,
                    disjoint=self.disjoint_pairs,
                )
                batch = replace(batch, given=rel)
            return self.compute(batch)

    def compute(self, batch: Batch) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def mine(self, batch: Batch) -> Mined | None:
        """Run the miner (if any) on detached embeddings."""
        if self.miner is None:
            return None
        if batch.given is not None:  # the miner searches within the given relation
            return self.miner(
                batch.embeddings.detach(),
                None,
                ref_emb=None if batch.same_set else batch.ref_emb.detach(),
                relation=PairMask(*batch.given.masks()),
            )
        return self.miner(
            batch.embeddings.detach(),
            batch.labels,
            ref_emb=None if batch.same_set else batch.ref_emb.detach(),
            ref_labels=None if batch.same_set else batch.ref_labels,
            relevance=batch.relevance,
            ref_self_index=None if batch.same_set else batch.self_index,
        )

    def pair_masks(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """Positive / negative masks, restricted to the mined pairs when a miner is set."""
        pos, neg = batch.masks()
        mined = self.mine(batch)
        if mined is not None:
            m = to_pair_mask(mined, tuple(pos.shape), pos.device)
            pos, neg = pos & m.pos, neg & m.neg
        return pos, neg


__all__ = [
    "Batch",
    "MetricLoss",
    "PairMask",
    "check_batch",
    "check_fast",
    "check_number",
    "masked_logsumexp",
    "masked_mean",
    "prepare",
    "zero_loss",
    "INDICES_TUPLE_MESSAGE",
]
