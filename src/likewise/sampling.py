"""Class-balanced batches: P classes x K samples per batch (Hermans et al., 2017, "PK" batches).

Metric losses need positives in every batch; a uniformly shuffled batch of a dataset
with many classes has almost none. :class:`ClassBalancedBatchSampler` yields index
lists for ``torch.utils.data.DataLoader(dataset, batch_sampler=sampler)``.

How an epoch is built (all randomness from ``numpy.random.default_rng([seed, epoch])``):

1. Each class's indices are shuffled and cut into *groups* of K; a last partial group
   is topped up with other samples of the same class (K distinct samples per group;
   with ``replacement=True`` a class with fewer than K samples repeats some). So class
   ``c`` with ``n_c`` samples gives ``g_c = ceil(n_c / K)`` groups and every sample is
   in at least one group.
2. ``M = max(ceil(sum_c g_c / P), max_c g_c)`` batches of P distinct classes are filled
   greedily, each batch taking the P classes with the most groups left (random ties).
   This uses every group (both bounds are necessary, and the greedy meets them). Where
   fewer than P classes still have groups, the batch is completed with *extra* groups
   of other classes (random samples), unless ``drop_last=False`` (see below).
3. The batches are shuffled; rank ``r`` of ``world_size`` receives the ``r``-th of
   ``world_size`` equal contiguous slices of every global batch (whole classes when
   ``world_size`` divides P), so all ranks yield the same number of batches and
   together they see each global batch exactly once.

Call :meth:`set_epoch` at the start of every epoch (as with ``DistributedSampler``);
the same ``seed`` and epoch give the same batches on every rank and every run.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


class ClassBalancedBatchSampler:
    """Batches of ``classes_per_batch`` (P) classes x ``samples_per_class`` (K) samples.

    Args:
        labels: class id of every dataset item, a 1-D sequence / array / tensor of length L.
        classes_per_batch: P distinct classes per global batch.
        samples_per_class: K samples of each class per batch.
        seed: base seed; with :meth:`set_epoch` it fixes every epoch's batches.
        replacement: allow classes with fewer than K samples (their groups repeat
            samples). Off: such a class raises ``ValueError`` naming it.
        drop_last: ``True`` (default) never yields a short batch: where the classes
            run out of groups, the batch is completed with extra groups of other
            classes (nothing is dropped: every sample is still drawn). ``False`` draws
            no extra groups: batches where classes ran out are yielded short (fewer
            than P classes), typically only the last one. Needs ``world_size == 1``.
        rank, world_size: this process's share of each global batch.

    Yields lists of ``P * K / world_size`` dataset indices; ``len()`` is the number of
    batches each rank yields per epoch (identical on every rank).
    """

    def __init__(
        self,
        labels: Sequence[Any] | Any,
        classes_per_batch: int,
        samples_per_class: int,
        *,
        seed: int = 0,
        replacement: bool = False,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.classes_per_batch = _positive_int(classes_per_batch, "classes_per_batch")
        self.samples_per_class = _positive_int(samples_per_class, "samples_per_class")
        self.world_size = _positive_int(world_size, "world_size")
        if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or not 0 <= rank < world_size:
            raise ValueError(f"rank must be an integer in [0, {world_size - 1}], got {rank!r}")
        self.rank = int(rank)
        batch_size = self.classes_per_batch * self.samples_per_class
        if batch_size % self.world_size:
            raise ValueError(
                f"a global batch of classes_per_batch x samples_per_class = {batch_size} samples "
                f"cannot be split equally across world_size={self.world_size} ranks"
            )
        if not drop_last and self.world_size > 1:
            raise ValueError(
                "drop_last=False can yield a short batch, which cannot be split equally across "
                "ranks; use drop_last=True when world_size > 1"
            )
        self.seed = int(seed)
        self.replacement = bool(replacement)
        self.drop_last = bool(drop_last)
        self.epoch = 0

        labels_arr = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels)
        if labels_arr.ndim != 1 or labels_arr.size == 0:
            raise ValueError(f"labels must be a non-empty 1-D sequence, got shape {labels_arr.shape}")
        classes, inverse, counts = np.unique(labels_arr, return_inverse=True, return_counts=True)
        if len(classes) < self.classes_per_batch:
            raise ValueError(
                f"labels hold {len(classes)} classes, fewer than classes_per_batch={self.classes_per_batch}"
            )
        if not self.replacement:
            small = counts < self.samples_per_class
            if small.any():
                c = int(np.argmax(small))
                more = f" (and {int(small.sum()) - 1} more classes)" if small.sum() > 1 else ""
                raise ValueError(
                    f"class {classes[c].item()!r} has {counts[c]} samples, fewer than "
                    f"samples_per_class={self.samples_per_class}{more}; pass replacement=True "
                    "to repeat samples of small classes"
                )
        order = np.argsort(inverse, kind="stable")
        self._members = np.split(order, np.cumsum(counts)[:-1])
        self._groups = np.array([math.ceil(n / self.samples_per_class) for n in counts])
        self._num_batches = max(
            math.ceil(int(self._groups.sum()) / self.classes_per_batch), int(self._groups.max())
        )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches the next iteration yields."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self._num_batches

    def _draw_group(self, members: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """K samples of one class: distinct when the class has K, else all of it plus repeats."""
        k = self.samples_per_class
        if len(members) >= k:
            return rng.choice(members, k, replace=False)
        return np.concatenate([members, rng.choice(members, k - len(members), replace=True)])

    def _class_groups(self, members: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
        k = self.samples_per_class
        idx = rng.permutation(members)
        full = len(idx) - len(idx) % k
        groups = [idx[i : i + k] for i in range(0, full, k)]
        if full < len(idx):
            rest = idx[full:]
            pool = idx[:full] if full >= k - len(rest) else idx
            pad = rng.choice(pool, k - len(rest), replace=full < k - len(rest))
            groups.append(np.concatenate([rest, pad]))
        return groups

    def global_batches(self) -> list[np.ndarray]:
        """All global batches of the current epoch (before the split across ranks)."""
        rng = np.random.default_rng([self.seed, self.epoch])
        groups = [self._class_groups(m, rng) for m in self._members]
        remaining = self._groups.copy()
        p, n_classes = self.classes_per_batch, len(groups)
        full: list[np.ndarray] = []
        short: list[np.ndarray] = []
        for _ in range(self._num_batches):
            key = remaining + rng.random(n_classes)  # most groups left first, random ties
            chosen = np.argpartition(-key, p - 1)[:p] if p < n_classes else rng.permutation(n_classes)
            parts = []
            for c in chosen:
                if remaining[c] > 0:
                    remaining[c] -= 1
                    parts.append(groups[c][remaining[c]])
                elif self.drop_last:
                    parts.append(self._draw_group(self._members[c], rng))
            (full if len(parts) == p else short).append(np.concatenate(parts))
        if remaining.any():  # pragma: no cover - the greedy schedule always fits M batches
            raise RuntimeError("internal error: class-balanced schedule left groups unused")
        return [full[i] for i in rng.permutation(len(full))] + short

    def __iter__(self) -> Iterator[list[int]]:
        share = self.classes_per_batch * self.samples_per_class // self.world_size
        lo = self.rank * share
        for batch in self.global_batches():
            yield batch[lo : lo + share].tolist() if self.world_size > 1 else batch.tolist()


__all__ = ["ClassBalancedBatchSampler"]
