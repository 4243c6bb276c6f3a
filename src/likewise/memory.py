"""A FIFO queue of past embeddings, and cross-batch memory (XBM) for any supervised loss.

* :class:`MemoryQueue` keeps the last ``size`` (detached) embeddings ``[size, dim]``
  and their labels in fixed buffers; it is an ``nn.Module`` so ``state_dict`` /
  ``load_state_dict`` (and ``.to(device)``) carry its contents and write position,
  and a resumed checkpoint continues exactly.
* :class:`CrossBatchMemory` (Wang et al. 2020, "Cross-Batch Memory for Embedding
  Learning") wraps a likewise loss: the current batch is compared with itself and
  with the embeddings of past batches, through the loss's ``ref_emb`` /
  ``ref_labels`` -- a memory is just "more references" (see DESIGN.md).

Labels: the queue stores integer class ids ``[b]`` or, with ``label_dim=C``,
multi-label 0/1 rows ``[b, C]``, in a ``long`` buffer. Float labels are refused
(``TypeError`` for class ids; ``ValueError`` for multi-label rows with values other
than 0/1) rather than silently truncated: the continuous label vectors of
:class:`~likewise.losses.LogRatioLoss` cannot be queued, so that loss cannot be
wrapped in a cross-batch memory with float labels.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from likewise.losses.base import INDICES_TUPLE_MESSAGE
from likewise.similarity import check_binary


def _check_positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


class MemoryQueue(nn.Module):
    """FIFO queue of the last ``size`` embeddings ``[size, dim]`` and labels.

    ``label_dim=None``: labels are integer class ids ``[b]``; ``label_dim=C``:
    multi-label 0/1 (or bool) rows ``[b, C]``. Stored labels are ``long``: float
    labels (e.g. LogRatioLoss's continuous label vectors) cannot be queued and are
    refused with an error. The embedding buffer takes the dtype
    and device of what is enqueued (float32 until then), so float64 stays exact.

    ``enqueue(emb [b, dim], labels)`` stores detached copies (when ``b > size``,
    only the last ``size`` rows); ``embeddings`` / ``labels`` return the stored
    entries oldest first; ``latest(k)`` the ``k`` newest; ``len(queue)`` how many
    are stored.
    """

    def __init__(self, size: int, dim: int, *, label_dim: int | None = None) -> None:
        super().__init__()
        self.size = _check_positive_int(size, "size")
        self.dim = _check_positive_int(dim, "dim")
        self.label_dim = None if label_dim is None else _check_positive_int(label_dim, "label_dim")
        label_shape = (self.size,) if label_dim is None else (self.size, self.label_dim)
        self.register_buffer("_emb", torch.zeros(self.size, self.dim))
        self.register_buffer("_labels", torch.zeros(label_shape, dtype=torch.long))
        self.register_buffer("_ptr", torch.zeros((), dtype=torch.long))  # next write position
        self.register_buffer("_count", torch.zeros((), dtype=torch.long))  # stored entries

    def __len__(self) -> int:
        return int(self._count)

    def reset(self) -> None:
        """Empty the queue."""
        self._ptr.zero_()
        self._count.zero_()

    def check_labels(self, labels: Any, n: int) -> Tensor:
        """Validate labels for ``n`` embeddings against the queue's label layout."""
        if not isinstance(labels, Tensor):
            raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
        expected = (n,) if self.label_dim is None else (n, self.label_dim)
        if tuple(labels.shape) != expected:
            kind = "class ids" if self.label_dim is None else f"multi-label with {self.label_dim} columns"
            raise ValueError(f"labels must have shape {expected} ({kind}), got {tuple(labels.shape)}")
        if labels.is_complex() or (labels.is_floating_point() and self.label_dim is None):
            raise TypeError(
                f"labels must be integer class ids, got dtype {labels.dtype}: the memory queue "
                "stores integer class labels only (continuous float label vectors, as "
                "LogRatioLoss takes, cannot be queued)"
            )
        if self.label_dim is not None:
            check_binary(
                labels,
                f"multi-label labels [{n}, {self.label_dim}]",
                "0/1 (or bool): the memory queue stores integer class labels only (continuous "
                "float label vectors, as LogRatioLoss takes, cannot be queued)",
            )
        return labels

    def enqueue(self, embeddings: Tensor, labels: Tensor) -> None:
        """Append a batch (detached), overwriting the oldest entries when full."""
        if not isinstance(embeddings, Tensor) or embeddings.dim() != 2 or embeddings.shape[1] != self.dim:
            shape = tuple(embeddings.shape) if isinstance(embeddings, Tensor) else type(embeddings).__name__
            raise ValueError(f"embeddings must have shape [batch, {self.dim}], got {shape}")
        if not embeddings.is_floating_point():
            raise TypeError(f"embeddings must be floating point, got dtype {embeddings.dtype}")
        labels = self.check_labels(labels, embeddings.shape[0])
        emb = embeddings.detach()[-self.size :]
        lab = labels.detach()[-self.size :]
        if self._emb.dtype != emb.dtype or self._emb.device != emb.device:
            self._emb = self._emb.to(device=emb.device, dtype=emb.dtype)
            self._labels = self._labels.to(emb.device)
            self._ptr, self._count = self._ptr.to(emb.device), self._count.to(emb.device)
        b = emb.shape[0]
        if b == 0:
            return
        rows = (int(self._ptr) + torch.arange(b, device=emb.device)) % self.size
        self._emb[rows] = emb
        self._labels[rows] = lab.to(device=emb.device, dtype=torch.long)
        self._ptr.fill_((int(self._ptr) + b) % self.size)
        self._count.fill_(min(self.size, int(self._count) + b))

    def _order(self) -> Tensor:
        """Buffer rows of the stored entries, oldest first."""
        n, ptr = int(self._count), int(self._ptr)
        start = (ptr - n) % self.size
        return (start + torch.arange(n, device=self._emb.device)) % self.size

    @property
    def embeddings(self) -> Tensor:
        """Stored embeddings ``[len, dim]``, oldest first."""
        return self._emb[self._order()]

    @property
    def labels(self) -> Tensor:
        """Stored labels ``[len]`` (or ``[len, C]``), oldest first."""
        return self._labels[self._order()]

    def latest(self, k: int) -> tuple[Tensor, Tensor]:
        """The ``min(k, len)`` newest embeddings and labels, oldest first."""
        order = self._order()
        order = order[max(0, len(order) - k) :] if k > 0 else order[:0]
        return self._emb[order], self._labels[order]

    def extra_repr(self) -> str:
        return f"size={self.size}, dim={self.dim}, stored={len(self)}"

    def _load_from_state_dict(
        self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any
    ) -> None:
        saved = state_dict.get(prefix + "_emb")
        if isinstance(saved, Tensor) and saved.dtype != self._emb.dtype:
            self._emb = self._emb.to(saved.dtype)  # keep the saved precision exactly
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class CrossBatchMemory(nn.Module):
    """Cross-batch memory (Wang et al. 2020, XBM) around any supervised likewise loss.

    A call ``xbm(embeddings [B, D], labels [B])`` evaluates::

        loss(embeddings, labels,
             ref_emb=cat(embeddings, M), ref_labels=cat(labels, M_labels),
             ref_self_index=arange(B))

    where ``M`` holds the ``memory_size - B`` most recent past embeddings, and then
    enqueues the detached batch. As in the paper and pytorch-metric-learning,
    ``memory_size`` counts the current batch: each query meets at most
    ``memory_size - 1`` references (itself excluded through ``ref_self_index``), so
    the value equals PML's ``CrossBatchMemory(loss, embedding_size, memory_size)``
    with the same inner loss, wrap-around included.

    Gradient: by default the current batch is also differentiated as a reference
    (the in-batch pairs get both sides, as in the plain loss and XBM's reference
    code). ``detach_batch_refs=True`` stops that, which is PML's behaviour (its
    memory, current batch included, is detached), giving PML's gradient too.

    ``forward(..., enqueue=False)`` evaluates without storing the batch (e.g. for
    validation). ``stats``: the inner loss's, plus ``memory_fill`` (stored / size).
    The queue is :attr:`queue` (a :class:`MemoryQueue` of ``memory_size`` entries)
    and is part of ``state_dict``. ``embedding_size`` must match ``D``. Labels are
    integer class ids ``[B]`` (or 0/1 rows ``[B, C]`` with ``label_dim=C``); float
    labels are refused (see :class:`MemoryQueue`), so LogRatioLoss with continuous
    labels cannot be wrapped.
    """

    def __init__(
        self,
        loss: nn.Module,
        embedding_size: int,
        memory_size: int = 1024,
        *,
        label_dim: int | None = None,
        detach_batch_refs: bool = False,
    ) -> None:
        super().__init__()
        if not isinstance(loss, nn.Module) or not callable(loss):
            raise TypeError(f"loss must be a likewise loss module, got {type(loss).__name__}")
        self.loss = loss
        self.embedding_size = _check_positive_int(embedding_size, "embedding_size")
        self.memory_size = _check_positive_int(memory_size, "memory_size")
        self.detach_batch_refs = bool(detach_batch_refs)
        self.queue = MemoryQueue(self.memory_size, self.embedding_size, label_dim=label_dim)
        self._fill: float | None = None  # memory_fill after the last call

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.pop("stats", None)  # pickled before the statistics became lazy
        self.__dict__.setdefault("_fill", None)

    @property
    def stats(self) -> dict[str, float]:
        """The inner loss's statistics of the last call, plus ``memory_fill`` (stored / size)."""
        if self._fill is None:
            return {}
        return {**getattr(self.loss, "stats", {}), "memory_fill": self._fill}

    def forward(self, embeddings: Tensor, labels: Tensor, *args: Any, enqueue: bool = True) -> Tensor:
        if args:
            raise TypeError(INDICES_TUPLE_MESSAGE)
        if not isinstance(embeddings, Tensor) or embeddings.dim() != 2:
            shape = tuple(embeddings.shape) if isinstance(embeddings, Tensor) else type(embeddings).__name__
            raise ValueError(f"embeddings must have shape [batch, {self.embedding_size}], got {shape}")
        b, d = embeddings.shape
        if d != self.embedding_size:
            raise ValueError(f"embeddings have dimension {d} but embedding_size={self.embedding_size}")
        if b > self.memory_size:
            raise ValueError(
                f"batch of {b} embeddings does not fit in memory_size={self.memory_size} "
                "(memory_size counts the current batch)"
            )
        labels = self.queue.check_labels(labels, b).to(embeddings.device)
        past_emb, past_labels = self.queue.latest(self.memory_size - b)
        batch_refs = embeddings.detach() if self.detach_batch_refs else embeddings
        ref_emb = torch.cat([batch_refs, past_emb.to(device=embeddings.device, dtype=embeddings.dtype)])
        ref_labels = torch.cat([labels.to(torch.long), past_labels.to(embeddings.device)])
        self_index = torch.arange(b, device=embeddings.device)
        value = self.loss(
            embeddings, labels, ref_emb=ref_emb, ref_labels=ref_labels, ref_self_index=self_index
        )
        if enqueue:
            self.queue.enqueue(embeddings, labels)
        self._fill = len(self.queue) / self.memory_size
        return value

    def reset_queue(self) -> None:
        """Forget every stored embedding."""
        self.queue.reset()


__all__ = ["CrossBatchMemory", "MemoryQueue"]
