"""ClassBalancedBatchSampler: coverage, balance, determinism, sharding, exact length, errors."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from likewise.sampling import ClassBalancedBatchSampler


def make_labels(sizes: list[int], seed: int = 0) -> np.ndarray:
    """Shuffled labels with ``sizes[c]`` items of class ``c``."""
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(sizes)])
    return np.random.default_rng(seed).permutation(labels)


SIZES = {
    "even": [8] * 10,
    "uneven": [5, 9, 4, 13, 6, 7, 4, 11],
    "dominant": [60, 4, 5, 4, 6],
}


def check_pk_batch(batch: list[int], labels: np.ndarray, p: int, k: int, distinct: bool = True) -> None:
    counts = Counter(labels[batch].tolist())
    assert len(batch) == p * k
    assert len(counts) == p and set(counts.values()) == {k}
    if distinct:
        assert len(set(batch)) == len(batch)


@pytest.mark.parametrize("name", list(SIZES))
@pytest.mark.parametrize("pk", [(2, 4), (4, 3), (3, 4)])
def test_every_sample_drawn_and_every_batch_is_p_by_k(name, pk):
    p, k = pk
    labels = make_labels(SIZES[name])
    sampler = ClassBalancedBatchSampler(labels, p, k, seed=1)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        seen = set()
        for b in batches:
            check_pk_batch(b, labels, p, k)
            seen.update(b)
        assert seen == set(range(len(labels)))


@pytest.mark.parametrize("name", list(SIZES))
def test_length_is_the_smallest_possible(name):
    """No schedule of P distinct classes per batch covering every sample can be shorter."""
    sizes, p, k = SIZES[name], 3, 4
    groups = [math.ceil(n / k) for n in sizes]
    lower_bound = max(math.ceil(sum(groups) / p), max(groups))
    sampler = ClassBalancedBatchSampler(make_labels(sizes), p, k)
    assert len(sampler) == lower_bound == len(list(sampler))


def test_random_class_sizes_are_always_covered():
    rng = np.random.default_rng(0)
    for trial in range(60):
        n_classes = int(rng.integers(2, 12))
        k = int(rng.integers(1, 5))
        p = int(rng.integers(1, n_classes + 1))
        sizes = [int(v) for v in rng.integers(k, 4 * k + 30, n_classes)]
        labels = make_labels(sizes, seed=trial)
        sampler = ClassBalancedBatchSampler(labels, p, k, seed=trial)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        for b in batches:
            check_pk_batch(b, labels, p, k)
        assert set().union(*batches) == set(range(len(labels)))


def test_deterministic_under_seed_and_epoch():
    labels = make_labels(SIZES["uneven"])
    a = ClassBalancedBatchSampler(labels, 3, 4, seed=7)
    b = ClassBalancedBatchSampler(labels, 3, 4, seed=7)
    assert list(a) == list(b)
    assert list(a) == list(a)  # iterating again without set_epoch repeats the epoch
    a.set_epoch(1)
    b.set_epoch(1)
    first = list(a)
    assert first == list(b)
    a.set_epoch(0)
    assert first != list(a)
    assert list(ClassBalancedBatchSampler(labels, 3, 4, seed=8)) != list(b.__class__(labels, 3, 4, seed=7))


@pytest.mark.parametrize("world_size", [2, 4])
def test_ranks_split_each_global_batch(world_size):
    labels = make_labels(SIZES["uneven"])
    p, k = 4, 3
    glob = ClassBalancedBatchSampler(labels, p, k, seed=3)
    glob.set_epoch(2)
    ws = world_size
    ranks = [ClassBalancedBatchSampler(labels, p, k, seed=3, rank=r, world_size=ws) for r in range(ws)]
    for s in ranks:
        s.set_epoch(2)
    per_rank = [list(s) for s in ranks]
    assert {len(s) for s in ranks} == {len(glob)}
    assert {len(b) for b in per_rank} == {len(glob)}
    for step, global_batch in enumerate(glob):
        shares = [per_rank[r][step] for r in range(world_size)]
        assert all(len(s) == p * k // world_size for s in shares)
        assert sum(shares, []) == global_batch  # disjoint shares that make up the batch
        if p % world_size == 0:  # whole classes on each rank
            for s in shares:
                check_pk_batch(s, labels, p // world_size, k)


def test_replacement_allows_small_classes():
    sizes = [1, 2, 7, 5]
    labels = make_labels(sizes)
    sampler = ClassBalancedBatchSampler(labels, 2, 4, replacement=True)
    batches = list(sampler)
    assert set().union(*batches) == set(range(len(labels)))
    for b in batches:
        check_pk_batch(b, labels, 2, 4, distinct=False)
        for c in set(labels[b].tolist()):
            if sizes[c] >= 4:  # big classes still give distinct samples
                assert len({i for i in b if labels[i] == c}) == 4


def test_drop_last_false_yields_a_short_last_batch_and_no_extra_samples():
    sizes, p, k = [4, 8, 4, 4, 4], 2, 4  # 6 groups of 4
    labels = make_labels(sizes)
    sampler = ClassBalancedBatchSampler(labels, p, k, drop_last=False)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 3
    assert sorted(i for b in batches for i in b) == list(range(len(labels)))  # each sample once
    sizes, p = [4, 4, 4], 2  # 3 groups -> the second batch has one class
    sampler = ClassBalancedBatchSampler(make_labels(sizes), p, k, drop_last=False)
    assert [len(b) for b in sampler] == [8, 4]
    assert [len(b) for b in ClassBalancedBatchSampler(make_labels(sizes), p, k)] == [8, 8]


def test_with_a_torch_dataloader():
    labels = make_labels(SIZES["uneven"])
    feats = torch.arange(len(labels), dtype=torch.float32).unsqueeze(1)
    ds = TensorDataset(feats, torch.as_tensor(labels))
    sampler = ClassBalancedBatchSampler(torch.as_tensor(labels), 4, 2, seed=5)
    loader = DataLoader(ds, batch_sampler=sampler)
    assert len(loader) == len(sampler)
    seen = []
    for x, y in loader:
        assert x.shape == (8, 1)
        assert sorted(Counter(y.tolist()).values()) == [2, 2, 2, 2]
        assert torch.equal(torch.as_tensor(labels)[x[:, 0].long()], y)
        seen.extend(x[:, 0].long().tolist())
    assert set(seen) == set(range(len(labels)))
    # two ranks, each with its own loader, as DDP would run them
    shares = []
    for rank in range(2):
        s = ClassBalancedBatchSampler(labels, 4, 2, seed=5, rank=rank, world_size=2)
        shares.append([x[:, 0].long().tolist() for x, _ in DataLoader(ds, batch_sampler=s)])
    assert [a + b for a, b in zip(*shares)] == list(sampler)


def test_string_labels():
    labels = ["cat", "dog", "cat", "dog", "cow", "cow", "cat", "dog"]
    batches = list(ClassBalancedBatchSampler(labels, 2, 2))
    assert set().union(*batches) == set(range(8))


def test_errors():
    labels = make_labels([5, 2, 6, 1])
    msg = r"class 1 has 2 samples, fewer than samples_per_class=3 \(and 1 more"
    with pytest.raises(ValueError, match=msg):
        ClassBalancedBatchSampler(labels, 2, 3)
    with pytest.raises(ValueError, match="class 'b' has 1 samples, fewer than samples_per_class=2;"):
        ClassBalancedBatchSampler(["a", "a", "b", "c", "c"], 2, 2)
    with pytest.raises(ValueError, match="labels hold 4 classes, fewer than classes_per_batch=5"):
        ClassBalancedBatchSampler(labels, 5, 1)
    with pytest.raises(ValueError, match="classes_per_batch must be a positive integer, got 0"):
        ClassBalancedBatchSampler(labels, 0, 1)
    with pytest.raises(ValueError, match="samples_per_class must be a positive integer, got 2.5"):
        ClassBalancedBatchSampler(labels, 2, 2.5)
    with pytest.raises(ValueError, match=r"rank must be an integer in \[0, 1\], got 2"):
        ClassBalancedBatchSampler(labels, 2, 1, rank=2, world_size=2)
    with pytest.raises(ValueError, match="= 3 samples cannot be split equally across world_size=2"):
        ClassBalancedBatchSampler(labels, 3, 1, world_size=2)
    with pytest.raises(ValueError, match="use drop_last=True when world_size > 1"):
        ClassBalancedBatchSampler(labels, 2, 1, world_size=2, drop_last=False)
    with pytest.raises(ValueError, match=r"labels must be a non-empty 1-D sequence, got shape \(0,\)"):
        ClassBalancedBatchSampler([], 1, 1)
