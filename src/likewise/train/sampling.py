"""Batch samplers that can start an epoch part-way through (exact mid-epoch resume).

Every batch of every epoch is a pure function of ``(seed, epoch)``. A resumed run
knows from its checkpoint how many optimizer steps were taken; with a fixed number
of batches per epoch that is ``(epoch, batches already consumed in it)``, and
:class:`ResumableBatchSampler` yields the rest of that epoch, then whole epochs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np


class ShuffledBatchSampler:
    """Shuffled batches of ``batch_size`` (global) indices, the last short one dropped.

    Rank ``r`` of ``world_size`` yields the ``r``-th equal slice of every global batch.
    """

    def __init__(self, n: int, batch_size: int, *, seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if batch_size > n:
            raise ValueError(f"sampler.batch_size={batch_size} is larger than the {n} training samples")
        if batch_size % world_size:
            raise ValueError(f"sampler.batch_size={batch_size} cannot be split across {world_size} processes")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n // self.batch_size

    def __iter__(self) -> Iterator[list[int]]:
        order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        share = self.batch_size // self.world_size
        for b in range(len(self)):
            batch = order[b * self.batch_size : (b + 1) * self.batch_size]
            yield batch[self.rank * share : (self.rank + 1) * share].tolist()


class ResumableBatchSampler:
    """Wraps a batch sampler with ``set_epoch`` and a fixed ``len``; can start inside an epoch.

    ``start_step``: the number of batches already trained on (one optimizer step per
    batch), or a function returning it. It is read when the first iteration actually
    starts (the first batch is requested), so a trainer may create the iterator before
    it restores its step count. With ``start_step > 0`` the first iteration yields epoch
    ``start_step // len`` from batch ``start_step % len`` on; otherwise, and later,
    iterations follow :meth:`set_epoch`. ``len()`` stays the full epoch length (the training loop counts
    the skipped batches as done).
    """

    def __init__(self, inner: Any, *, start_step: int | Callable[[], int] = 0) -> None:
        if not callable(getattr(inner, "set_epoch", None)):
            raise TypeError("the wrapped batch sampler needs a set_epoch(epoch) method")
        if not callable(start_step) and (isinstance(start_step, bool) or int(start_step) < 0):
            raise ValueError(f"start_step must be a non-negative integer, got {start_step!r}")
        self.inner = inner
        self.epoch = 0
        self._start: int | Callable[[], int] | None = start_step

    @classmethod
    def at_step(cls, inner: Any, global_step: int) -> ResumableBatchSampler:
        """Positioned after ``global_step`` batches."""
        return cls(inner, start_step=global_step)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.inner)

    def __iter__(self) -> Iterator[list[int]]:
        skip = 0
        if self._start is not None:
            step = int(self._start() if callable(self._start) else self._start)
            self._start = None
            per_epoch = len(self.inner)
            if step and per_epoch:  # resuming: the position overrides any set_epoch so far
                self.epoch, skip = divmod(step, per_epoch)
        self.inner.set_epoch(self.epoch)
        for i, batch in enumerate(self.inner):
            if i >= skip:
                yield batch


__all__ = ["ResumableBatchSampler", "ShuffledBatchSampler"]
