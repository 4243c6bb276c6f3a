"""A batch sampler for pair / triplet supervision: whole pairs or triplets per batch.

Each batch of ``batch_size`` item indices is built from

1. whole *units*: similar pairs (a pairs file; its dissimilar pairs when it has no similar
   one) or whole triplets (a triplets file), taken in an epoch-shuffled order, each unit
   once per epoch: ``batch_size // 4`` pairs or ``batch_size // 3`` triplets per batch;
2. for pairs, one known dissimilar partner of every item of the units (drawn among the
   pairs that list it), so that each anchor sees known negatives in its batch;
3. whole dissimilar pairs, drawn at random, then random items, up to ``batch_size``.

An item appears once per batch. Batches are a pure function of ``(seed, epoch)`` (exact
resume, see :mod:`likewise.train.sampling`); ``len`` is the number of batches per epoch.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


class PairBatchSampler:
    """Batches of whole pairs / triplets over ``n_items`` items.

    ``a, b, similar`` [P]: the pairs (see :mod:`likewise.data.pairs`); ``triplets``: ``(a, p,
    n)`` arrays [T] when the supervision is triplets (then the pairs are its ``(a, p)``,
    ``(a, n)`` pairs, used for the top-up).
    """

    def __init__(
        self,
        n_items: int,
        a: np.ndarray,
        b: np.ndarray,
        similar: np.ndarray,
        batch_size: int,
        *,
        triplets: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
        seed: int = 0,
    ) -> None:
        if batch_size < 4:
            raise ValueError(f"sampler.batch_size: {batch_size} is too small for pairs (at least 4)")
        if batch_size > n_items:
            raise ValueError(f"sampler.batch_size: {batch_size} is larger than the {n_items} items")
        self.n_items, self.batch_size, self.seed = n_items, batch_size, seed
        self.epoch = 0
        a, b, similar = np.asarray(a), np.asarray(b), np.asarray(similar, bool)
        if triplets is not None:
            self.units = np.stack(triplets, axis=1)
            per = batch_size // 3
        else:
            pos = similar if similar.any() else ~similar
            self.units = np.stack([a[pos], b[pos]], axis=1)
            per = batch_size // 4
        self.per_batch = max(1, min(per, len(self.units)))
        self.dis = np.stack([a[~similar], b[~similar]], axis=1)
        # every item's dissimilar partners (CSR over both orders)
        src = np.concatenate([self.dis[:, 0], self.dis[:, 1]])
        dst = np.concatenate([self.dis[:, 1], self.dis[:, 0]])
        order = np.argsort(src, kind="stable")
        self.partners = dst[order]
        self.starts = np.concatenate([[0], np.cumsum(np.bincount(src, minlength=n_items))])
        self.with_triplets = triplets is not None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return max(1, len(self.units) // self.per_batch)

    def _batch(self, units: np.ndarray, rng: np.random.Generator) -> list[int]:
        chosen: dict[int, None] = dict.fromkeys(int(i) for i in units.reshape(-1))
        if not self.with_triplets:
            for i in list(chosen):
                lo, hi = self.starts[i], self.starts[i + 1]
                if hi > lo and len(chosen) < self.batch_size:
                    chosen.setdefault(int(self.partners[rng.integers(lo, hi)]), None)
        tries = 0
        while len(chosen) < self.batch_size - 1 and len(self.dis) and tries < 4 * self.batch_size:
            for i in self.dis[rng.integers(len(self.dis))]:
                chosen.setdefault(int(i), None)
            tries += 1
        while len(chosen) < self.batch_size:
            chosen.setdefault(int(rng.integers(self.n_items)), None)
        return list(chosen)[: self.batch_size]

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.units))
        for k in range(len(self)):
            take = order[(k * self.per_batch) % len(order) :][: self.per_batch]
            yield self._batch(self.units[take], rng)


__all__ = ["PairBatchSampler"]
