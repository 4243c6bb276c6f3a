"""Resumable batch samplers: positioning inside an epoch, epochs that differ, rank shards."""

from __future__ import annotations

import numpy as np
import pytest

from likewise.sampling import ClassBalancedBatchSampler
from likewise.train.sampling import ResumableBatchSampler, ShuffledBatchSampler

LABELS = np.repeat(np.arange(6), 10)


def _epochs(sampler, epochs):
    out = []
    for e in range(epochs):
        sampler.set_epoch(e)
        out.append([tuple(b) for b in sampler])
    return out


@pytest.mark.parametrize(
    "make",
    [
        lambda: ClassBalancedBatchSampler(LABELS, 3, 4, seed=1),
        lambda: ShuffledBatchSampler(len(LABELS), 8, seed=1),
    ],
)
def test_resuming_at_a_step_yields_exactly_the_remaining_batches(make):
    full = _epochs(ResumableBatchSampler(make()), 3)
    assert full[0] != full[1], "epochs must differ"
    flat = [b for epoch in full for b in epoch]
    per_epoch = len(full[0])
    for step in (0, 3, per_epoch, per_epoch + 2, 2 * per_epoch - 1):
        resumed = ResumableBatchSampler.at_step(make(), step)
        assert len(resumed) == per_epoch
        rest = [tuple(b) for b in resumed]  # the rest of the interrupted epoch
        epoch = step // per_epoch
        for e in range(epoch + 1, 3):
            resumed.set_epoch(e)
            rest += [tuple(b) for b in resumed]
        assert rest == flat[step:]
        # the position may be given as a function, read when the first batch is drawn
        box = {"step": 0}
        lazy = ResumableBatchSampler(make(), start_step=lambda box=box: box["step"])
        it = iter(lazy)
        box["step"] = step
        assert [tuple(b) for b in it] == flat[step : (epoch + 1) * per_epoch]


def test_shuffled_batches_are_sharded_by_rank():
    whole = ShuffledBatchSampler(50, 10, seed=3)
    parts = [ShuffledBatchSampler(50, 10, seed=3, rank=r, world_size=2) for r in range(2)]
    for g, a, b in zip(whole, *parts):
        assert g == a + b
    assert len(whole) == 5 == len(parts[0])


def test_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        ShuffledBatchSampler(5, 10)
    with pytest.raises(ValueError, match="split"):
        ShuffledBatchSampler(50, 9, world_size=2)
    with pytest.raises(ValueError, match="start_step"):
        ResumableBatchSampler(ShuffledBatchSampler(50, 10), start_step=-1)
    with pytest.raises(TypeError, match="set_epoch"):
        ResumableBatchSampler([[0, 1]])
