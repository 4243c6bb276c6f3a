"""Miners against brute-force searches over all pairs / triplets (plain Python loops)."""

from __future__ import annotations

import math

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners

from _memory import LargestTensors
from likewise import mining
from likewise.mined import PairMask, Triplets, to_pair_mask
from likewise.mining import (
    BatchAllMiner,
    BatchHardMiner,
    DistanceWeightedMiner,
    EasyPositiveMiner,
    MultiSimilarityMiner,
    SemiHardMiner,
    distance_weighted_log_weights,
)


@pytest.fixture(params=["dense", "sorted"])
def search_path(request, monkeypatch):
    """Run a test with the per-positive dense search and with the sorted-rows search."""
    monkeypatch.setattr(mining, "_use_dense", lambda max_pos, n_refs: request.param == "dense")
    return request.param


# ----------------------------------------------------------------------------- references


def _rows(x: torch.Tensor) -> list[list[float]]:
    return [[float(v) for v in row] for row in x]


def _unit(v: list[float]) -> list[float]:
    n = math.sqrt(sum(t * t for t in v))
    return [t / n for t in v] if n > 0 else v


def brute_dist(x, y=None, metric="euclidean", normalize=True):
    """Distance matrix as nested lists, one pair at a time."""
    xs, ys = _rows(x), _rows(x if y is None else y)
    if normalize or metric == "cosine":
        xs, ys = [_unit(r) for r in xs], [_unit(r) for r in ys]
    out = []
    for a in xs:
        row = []
        for b in ys:
            if metric == "euclidean":
                row.append(math.sqrt(sum((u - v) ** 2 for u, v in zip(a, b))))
            elif metric == "cosine":
                row.append(1.0 - sum(u * v for u, v in zip(a, b)))
            else:
                raise AssertionError(metric)
        out.append(row)
    return out


def brute_relations(labels, ref_labels=None, self_index=None):
    """pos[i][j], neg[i][j] as nested bool lists; self-pairs excluded."""
    same = ref_labels is None
    ref = labels if same else ref_labels
    if same:
        self_index = list(range(len(labels)))
    pos, neg = [], []
    for i, li in enumerate(labels.tolist()):
        prow, nrow = [], []
        for j, lj in enumerate(ref.tolist()):
            is_self = self_index is not None and self_index[i] == j
            prow.append(li == lj and not is_self)
            nrow.append(li != lj and not is_self)
        pos.append(prow)
        neg.append(nrow)
    return pos, neg


def triplet_set(t: Triplets) -> set[tuple[int, int, int]]:
    return set(zip(t.anchor.tolist(), t.positive.tolist(), t.negative.tolist()))


def mask_set(m: torch.Tensor) -> set[tuple[int, int]]:
    return set(map(tuple, torch.nonzero(m).tolist()))


def data(b=16, d=8, classes=4, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, d, generator=g, dtype=dtype)
    labels = torch.randint(0, classes, (b,), generator=g)
    return x, labels


# ------------------------------------------------------------------ batch hard / easy pos


def brute_per_anchor(dist, pos, neg, farthest_positive):
    out = set()
    for a in range(len(dist)):
        ps = [j for j in range(len(dist[a])) if pos[a][j]]
        ns = [j for j in range(len(dist[a])) if neg[a][j]]
        if not ps or not ns:
            continue
        row = dist[a]
        p = max(ps, key=row.__getitem__) if farthest_positive else min(ps, key=row.__getitem__)
        n = min(ns, key=row.__getitem__)
        out.add((a, p, n))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_batch_hard_and_easy_positive_match_brute_force(seed, metric):
    x, labels = data(b=14 + seed, seed=seed)
    dist = brute_dist(x, metric=metric)
    pos, neg = brute_relations(labels)
    got = BatchHardMiner(distance=metric)(x, labels)
    assert triplet_set(got) == brute_per_anchor(dist, pos, neg, farthest_positive=True)
    got = EasyPositiveMiner(distance=metric)(x, labels)
    assert triplet_set(got) == brute_per_anchor(dist, pos, neg, farthest_positive=False)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_batch_hard_matches_pml(seed):
    x, labels = data(b=20, d=16, classes=5, seed=seed, dtype=torch.float32)
    ours = BatchHardMiner()(x, labels)
    theirs = pml_miners.BatchHardMiner()(x, labels)
    assert triplet_set(ours) == set(zip(*(t.tolist() for t in theirs)))

    ref, ref_labels = data(b=11, d=16, classes=5, seed=seed + 10, dtype=torch.float32)
    ours = BatchHardMiner()(x, labels, ref_emb=ref, ref_labels=ref_labels)
    theirs = pml_miners.BatchHardMiner()(x, labels, ref, ref_labels)
    assert triplet_set(ours) == set(zip(*(t.tolist() for t in theirs)))


def test_batch_hard_with_refs_and_self_index():
    x, labels = data(b=12, seed=5)
    ref, ref_labels = data(b=9, seed=6)
    # refs of another size: nothing excluded
    got = BatchHardMiner()(x, labels, ref_emb=ref, ref_labels=ref_labels)
    expected = brute_per_anchor(
        brute_dist(x, ref), *brute_relations(labels, ref_labels), farthest_positive=True
    )
    assert triplet_set(got) == expected
    assert int(got.positive.max()) < 9 and int(got.negative.max()) < 9
    # the batch stacked into the refs: ref_self_index removes each query's own copy
    refs = torch.cat([ref, x])
    ref_l = torch.cat([ref_labels, labels])
    self_index = torch.arange(12) + 9
    self_index[0] = -1  # query 0 has no copy declared: its own row may be chosen
    got = BatchHardMiner()(x, labels, ref_emb=refs, ref_labels=ref_l, ref_self_index=self_index)
    expected = brute_per_anchor(
        brute_dist(x, refs), *brute_relations(labels, ref_l, self_index.tolist()), farthest_positive=True
    )
    assert triplet_set(got) == expected


def test_batch_hard_with_relevance_matrix():
    x, _ = data(b=10, seed=7)
    g = torch.Generator().manual_seed(3)
    rel = torch.rand(10, 10, generator=g) < 0.3
    got = BatchHardMiner()(x, None, relevance=rel)
    pos = [[bool(rel[i, j]) and i != j for j in range(10)] for i in range(10)]
    neg = [[not bool(rel[i, j]) and i != j for j in range(10)] for i in range(10)]
    assert triplet_set(got) == brute_per_anchor(brute_dist(x), pos, neg, farthest_positive=True)


def test_batch_hard_stats():
    x, labels = data(b=12, seed=8)
    labels[0] = 99  # a singleton: no positive, so no triplet for anchor 0
    miner = BatchHardMiner()
    t = miner(x, labels)
    assert 0 not in t.anchor.tolist()
    assert miner.stats["num_triplets"] == len(t)
    assert miner.stats["anchor_fraction"] == pytest.approx(len(set(t.anchor.tolist())) / 12)
    dist = brute_dist(x)
    mean_ap = sum(dist[a][p] for a, p, _ in triplet_set(t)) / len(t)
    assert miner.stats["mean_pos_distance"] == pytest.approx(mean_ap, rel=1e-9)


# ------------------------------------------------------------------------------ batch all


def brute_batch_all(dist, pos, neg, margin):
    triplets = set()
    for a in range(len(dist)):
        for p in range(len(dist[a])):
            if not pos[a][p]:
                continue
            for n in range(len(dist[a])):
                if neg[a][n] and dist[a][p] - dist[a][n] + margin > 0:
                    triplets.add((a, p, n))
    return triplets


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("margin", [0.05, 0.3])
def test_batch_all_pairs_cover_exactly_the_active_triplets(seed, margin, search_path):
    x, labels = data(b=16, seed=seed)
    dist = brute_dist(x)
    pos, neg = brute_relations(labels)
    active = brute_batch_all(dist, pos, neg, margin)
    miner = BatchAllMiner(margin=margin)
    mask = miner(x, labels)
    assert isinstance(mask, PairMask)
    assert mask_set(mask.pos) == {(a, p) for a, p, _ in active}
    assert mask_set(mask.neg) == {(a, n) for a, _, n in active}
    assert miner.stats["num_triplets"] == len(active)
    valid = sum(sum(pos[a]) * sum(neg[a]) for a in range(16))
    assert miner.stats["active_fraction"] == pytest.approx(len(active) / valid)


def test_batch_all_with_refs(search_path):
    x, labels = data(b=12, seed=4)
    ref, ref_labels = data(b=15, seed=5)
    miner = BatchAllMiner(margin=0.2)
    mask = miner(x, labels, ref_emb=ref, ref_labels=ref_labels)
    active = brute_batch_all(brute_dist(x, ref), *brute_relations(labels, ref_labels), 0.2)
    assert mask.pos.shape == (12, 15)
    assert mask_set(mask.pos) == {(a, p) for a, p, _ in active}
    assert mask_set(mask.neg) == {(a, n) for a, _, n in active}
    assert miner.stats["num_triplets"] == len(active)


# ------------------------------------------------------------------------------ semi-hard


def brute_semihard(dist, pos, neg, margin, hard_fallback):
    out = set()
    for a in range(len(dist)):
        for p in range(len(dist[a])):
            if not pos[a][p]:
                continue
            d_ap = dist[a][p]
            negs = [n for n in range(len(dist[a])) if neg[a][n]]
            band = [n for n in negs if d_ap < dist[a][n] < d_ap + margin]
            if band:
                out.add((a, p, min(band, key=lambda n: dist[a][n])))
            elif hard_fallback:
                inside = [n for n in negs if dist[a][n] <= d_ap]
                if inside:
                    out.add((a, p, max(inside, key=lambda n: dist[a][n])))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("hard_fallback", [False, True])
@pytest.mark.parametrize("metric", ["euclidean", "cosine"])
def test_semihard_matches_brute_force(seed, hard_fallback, metric, search_path):
    x, labels = data(b=18, seed=seed, classes=3)
    margin = 0.1 if seed % 2 else 0.4
    miner = SemiHardMiner(margin, hard_fallback=hard_fallback, distance=metric)
    got = miner(x, labels)
    expected = brute_semihard(brute_dist(x, metric=metric), *brute_relations(labels), margin, hard_fallback)
    assert expected  # the case is not vacuous
    assert triplet_set(got) == expected
    assert len(got) == len(expected)  # no duplicates


def test_semihard_without_a_farther_negative_takes_no_pair_as_negative(search_path):
    # anchors whose every negative is closer than the positive: the search must find nothing
    # (the dense search's argmin over an all-inf row is column 0, which can be a positive)
    g = torch.Generator().manual_seed(0)
    mismatches = 0
    for _ in range(60):
        x = torch.randn(12, 4, generator=g, dtype=torch.float64)
        labels = torch.randint(0, 3, (12,), generator=g)
        got = triplet_set(SemiHardMiner(0.3)(x, labels))
        expected = brute_semihard(brute_dist(x), *brute_relations(labels), 0.3, False)
        mismatches += got != expected
        assert all(int(labels[a]) != int(labels[n]) for a, _, n in got)
    assert mismatches == 0


def test_semihard_with_refs(search_path):
    x, labels = data(b=10, seed=11, classes=3)
    ref, ref_labels = data(b=17, seed=12, classes=3)
    got = SemiHardMiner(0.3, hard_fallback=True)(x, labels, ref_emb=ref, ref_labels=ref_labels)
    expected = brute_semihard(brute_dist(x, ref), *brute_relations(labels, ref_labels), 0.3, True)
    assert triplet_set(got) == expected


@pytest.mark.parametrize("seed", [0, 1])
def test_semihard_picks_hardest_of_pml_semihard_triplets(seed):
    """PML's TripletMarginMiner('semihard') lists every triplet in the band; we keep the hardest."""
    x, labels = data(b=16, d=16, classes=4, seed=seed, dtype=torch.float32)
    ours = triplet_set(SemiHardMiner(0.2)(x, labels))
    a, p, n = pml_miners.TripletMarginMiner(margin=0.2, type_of_triplets="semihard")(x, labels)
    dist = torch.cdist(torch.nn.functional.normalize(x), torch.nn.functional.normalize(x))
    best: dict[tuple[int, int], int] = {}
    for ai, pi, ni in zip(a.tolist(), p.tolist(), n.tolist()):
        if (ai, pi) not in best or dist[ai, ni] < dist[ai, best[(ai, pi)]]:
            best[(ai, pi)] = ni
    assert ours == {(ai, pi, ni) for (ai, pi), ni in best.items()}


def _class_id_inputs(x, labels, ref=None, ref_labels=None, self_index=None):
    """The loss's view of a batch: normalised Euclidean distances and the relation index lists."""
    from likewise.losses._kernels.positives import positive_pairs, self_pairs

    xn = torch.nn.functional.normalize(x, dim=1)
    yn = xn if ref is None else torch.nn.functional.normalize(ref, dim=1)
    d = torch.cdist(xn, yn)
    pairs = positive_pairs(labels, ref_labels, self_index)
    selves = self_pairs(self_index, len(labels), ref is None, x.device)
    return d, pairs, selves


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("with_refs", [False, True])
def test_semihard_on_the_loss_matrix_matches_brute_force(seed, with_refs, monkeypatch):
    monkeypatch.setattr(mining, "_use_dense", lambda max_pos, n_refs: True)  # ~6 positives per anchor
    x, labels = data(b=18, seed=seed, classes=3)
    ref = ref_labels = self_index = None
    if with_refs:  # the batch inside a larger reference set, its own rows marked
        past, past_labels = data(b=9, seed=seed + 10, classes=4)
        ref, ref_labels = torch.cat([past, x]), torch.cat([past_labels, labels])
        self_index = torch.arange(18) + 9
    margin = 0.1 if seed % 2 else 0.4
    d, pairs, selves = _class_id_inputs(x, labels, ref, ref_labels, self_index)
    miner = SemiHardMiner(margin)
    got = miner.mine_class_ids(d, pairs, selves)
    expected = brute_semihard(
        brute_dist(x, ref), *brute_relations(labels, ref_labels, self_index), margin, False
    )
    assert expected  # the case is not vacuous
    assert triplet_set(got) == expected and len(got) == len(expected)
    assert miner.stats["num_triplets"] == len(expected)


def test_semihard_on_the_loss_matrix_keeps_exact_ties_out():
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [-1.0, 0.1]], dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 2])  # anchor 0: positive 1 and negative 2 at the same distance
    d, pairs, selves = _class_id_inputs(x, labels)
    got = triplet_set(SemiHardMiner(0.5).mine_class_ids(d, pairs, selves))
    assert not any(a == 0 and p == 1 for a, p, _ in got)
    assert got == triplet_set(SemiHardMiner(0.5)(x, labels))


def test_semihard_on_the_loss_matrix_declines_what_it_does_not_cover(monkeypatch):
    x, labels = data(b=12, seed=0, classes=2)
    d, pairs, selves = _class_id_inputs(x, labels)
    assert SemiHardMiner(0.2, hard_fallback=True).mine_class_ids(d, pairs, selves) is None
    monkeypatch.setattr(mining, "_use_dense", lambda max_pos, n_refs: False)
    assert SemiHardMiner(0.2).mine_class_ids(d, pairs, selves) is None
    assert BatchHardMiner().mine_class_ids(d, pairs, selves) is None  # not implemented there


def test_triplet_loss_with_semihard_miner_equals_the_mask_path():
    from likewise.losses import TripletMarginLoss

    x, _ = data(b=20, d=6, seed=3)
    labels = torch.arange(20) % 5  # 3 positives per anchor: the class-id search applies
    miner = SemiHardMiner(0.2)
    searched = []
    original = miner.mine_class_ids
    miner.mine_class_ids = lambda *args: searched.append(original(*args)) or searched[-1]
    loss = TripletMarginLoss(margin=0.2, miner=miner)
    relevance = labels[:, None] == labels[None, :]  # the same relation, through the mask path
    for kwargs in ({}, {"relevance": relevance}):
        a = x.clone().requires_grad_(True)
        value = loss(a, labels, **kwargs)
        value.backward()
        if not kwargs:
            fast_value, fast_grad, fast_stats = value, a.grad, dict(loss.stats)
    assert len(searched) == 1 and len(searched[0]) > 0  # the first call took the class-id search
    torch.testing.assert_close(fast_value, value, rtol=1e-12, atol=0)
    torch.testing.assert_close(fast_grad, a.grad, rtol=1e-10, atol=1e-12)
    assert fast_stats == pytest.approx(loss.stats, rel=1e-12)


# ---------------------------------------------------------------------- distance weighted


def brute_dw_probabilities(dist, neg, dim, cutoff, nz_cutoff):
    probs = []
    for a in range(len(dist)):
        logw = {}
        for n in range(len(dist[a])):
            d = dist[a][n]
            if not neg[a][n] or d >= nz_cutoff:
                continue
            dc = max(d, cutoff)
            logw[n] = -((dim - 2) * math.log(dc) + (dim - 3) / 2 * math.log(1 - dc * dc / 4))
        if not logw:  # uniform over the negatives
            logw = {n: 0.0 for n in range(len(dist[a])) if neg[a][n]}
        top = max(logw.values()) if logw else 0.0
        total = sum(math.exp(v - top) for v in logw.values())
        probs.append([math.exp(logw[n] - top) / total if n in logw else 0.0 for n in range(len(dist[a]))])
    return probs


@pytest.mark.parametrize("dim", [3, 16, 512])
def test_distance_weighted_probabilities_match_brute_force(dim):
    x, labels = data(b=14, d=dim, seed=dim)
    miner = DistanceWeightedMiner(cutoff=0.5, nonzero_loss_cutoff=1.4)
    dist = brute_dist(x)
    pos, neg = brute_relations(labels)
    xn = torch.nn.functional.normalize(x)
    got = miner.probabilities(torch.cdist(xn, xn), torch.tensor(neg), dim)
    expected = torch.tensor(brute_dw_probabilities(dist, neg, dim, 0.5, 1.4), dtype=got.dtype)
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-9)


def test_distance_weighted_log_weights_formula():
    d = torch.tensor([[0.2, 0.8, 1.2, 1.5]], dtype=torch.float64)
    neg = torch.tensor([[True, True, True, True]])
    got = distance_weighted_log_weights(d, neg, dim=8, cutoff=0.5, nonzero_loss_cutoff=1.4)
    clamped = [max(v, 0.5) for v in (0.2, 0.8, 1.2)]
    expected = [-(6 * math.log(v) + 2.5 * math.log(1 - v * v / 4)) for v in clamped]
    torch.testing.assert_close(got[0, :3], torch.tensor(expected, dtype=torch.float64))
    assert got[0, 3] == -math.inf


def test_distance_weighted_samples_valid_negatives_for_every_positive_pair():
    x, labels = data(b=16, d=8, seed=3)
    pos, neg = brute_relations(labels)
    probs = brute_dw_probabilities(brute_dist(x), neg, 8, 0.5, 1.4)
    t = DistanceWeightedMiner(seed=0)(x, labels)
    has_neg = [any(r) for r in neg]
    assert sorted(zip(t.anchor.tolist(), t.positive.tolist())) == sorted(
        (a, p) for a in range(16) for p in range(16) if pos[a][p] and has_neg[a]
    )
    for a, _, n in triplet_set(t):
        assert neg[a][n] and probs[a][n] > 0


def test_distance_weighted_is_deterministic_under_seed_and_generator():
    x, labels = data(b=20, d=8, seed=4)
    t1 = DistanceWeightedMiner(seed=5)(x, labels)
    t2 = DistanceWeightedMiner(seed=5)(x, labels)
    assert torch.equal(t1.negative, t2.negative)
    t3 = DistanceWeightedMiner(generator=torch.Generator().manual_seed(5))(x, labels)
    assert torch.equal(t1.negative, t3.negative)
    torch.manual_seed(1)
    t4 = DistanceWeightedMiner()(x, labels)
    torch.manual_seed(1)
    t5 = DistanceWeightedMiner()(x, labels)
    assert torch.equal(t4.negative, t5.negative)


def test_distance_weighted_frequencies_follow_probabilities():
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    # replicate the positive of anchor 0 so one call draws many negatives for it
    reps = 4000
    ref = torch.cat([x, x[1:2].repeat(reps, 1)])
    ref_labels = torch.cat([labels, labels[1:2].repeat(reps)])
    t = DistanceWeightedMiner(seed=0)(x[:1], labels[:1], ref_emb=ref, ref_labels=ref_labels)
    _, neg = brute_relations(labels[:1], ref_labels)
    probs = brute_dw_probabilities(brute_dist(x[:1], ref), neg, 4, 0.5, 1.4)[0]
    counts = torch.bincount(t.negative, minlength=8)[:8].double() / len(t)
    assert len(t) == reps + 2  # query 0 and 1 are positives too (refs: no self-exclusion)
    torch.testing.assert_close(counts, torch.tensor(probs[:8], dtype=torch.float64), atol=0.03, rtol=0)


def test_distance_weighted_uniform_when_all_negatives_beyond_cutoff():
    # two tight antipodal clusters: every negative distance is ~2 > nonzero_loss_cutoff
    x = torch.tensor([[1.0, 0.0], [1.0, 0.01], [-1.0, 0.0], [-1.0, 0.01]])
    labels = torch.tensor([0, 0, 1, 1])
    miner = DistanceWeightedMiner(seed=0)
    t = miner(x, labels)
    assert len(t) == 4
    for a, _, n in triplet_set(t):
        assert labels[a] != labels[n]


# ------------------------------------------------------------------------- multi-similarity


def brute_multi_similarity(sim, pos, neg, eps):
    pos_sel, neg_sel = set(), set()
    for a in range(len(sim)):
        ps = [sim[a][j] for j in range(len(sim[a])) if pos[a][j]]
        ns = [sim[a][j] for j in range(len(sim[a])) if neg[a][j]]
        for j in range(len(sim[a])):
            if pos[a][j] and ns and sim[a][j] - eps < max(ns):
                pos_sel.add((a, j))
            if neg[a][j] and ps and sim[a][j] + eps > min(ps):
                neg_sel.add((a, j))
    return pos_sel, neg_sel


def pml_pairs(out):
    a1, p, a2, n = (t.tolist() for t in out)
    return set(zip(a1, p)), set(zip(a2, n))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("epsilon", [0.1, 0.5])
def test_multi_similarity_matches_pml_exactly(seed, epsilon):
    x, labels = data(b=20, d=16, classes=5, seed=seed, dtype=torch.float32)
    mask = MultiSimilarityMiner(epsilon)(x, labels)
    assert (mask_set(mask.pos), mask_set(mask.neg)) == pml_pairs(
        pml_miners.MultiSimilarityMiner(epsilon)(x, labels)
    )
    ref, ref_labels = data(b=13, d=16, classes=5, seed=seed + 20, dtype=torch.float32)
    mask = MultiSimilarityMiner(epsilon)(x, labels, ref_emb=ref, ref_labels=ref_labels)
    assert (mask_set(mask.pos), mask_set(mask.neg)) == pml_pairs(
        pml_miners.MultiSimilarityMiner(epsilon)(x, labels, ref, ref_labels)
    )


def test_multi_similarity_euclidean_matches_pml():
    from pytorch_metric_learning.distances import LpDistance

    x, labels = data(b=20, d=16, classes=4, seed=9, dtype=torch.float32)
    mask = MultiSimilarityMiner(0.1, distance="euclidean")(x, labels)
    theirs = pml_miners.MultiSimilarityMiner(0.1, distance=LpDistance())(x, labels)
    assert (mask_set(mask.pos), mask_set(mask.neg)) == pml_pairs(theirs)


@pytest.mark.parametrize("seed", [0, 1])
def test_multi_similarity_matches_brute_force(seed):
    x, labels = data(b=16, seed=seed)
    dist = brute_dist(x, metric="cosine")
    sim = [[1.0 - v for v in row] for row in dist]
    miner = MultiSimilarityMiner(0.1)
    mask = miner(x, labels)
    pos_sel, neg_sel = brute_multi_similarity(sim, *brute_relations(labels), 0.1)
    assert mask_set(mask.pos) == pos_sel and mask_set(mask.neg) == neg_sel
    assert miner.stats["num_pos_pairs"] == len(pos_sel)
    assert miner.stats["num_neg_pairs"] == len(neg_sel)


# ------------------------------------------------------------------------ shared behaviour

ALL_MINERS = [
    BatchHardMiner,
    EasyPositiveMiner,
    BatchAllMiner,
    SemiHardMiner,
    lambda: SemiHardMiner(hard_fallback=True),
    lambda: DistanceWeightedMiner(seed=0),
    MultiSimilarityMiner,
]


def _is_empty(out) -> bool:
    if isinstance(out, Triplets):
        return len(out) == 0
    return not out.pos.any() and not out.neg.any()


@pytest.mark.parametrize("make", ALL_MINERS)
def test_one_class_and_all_singleton_batches_mine_nothing(make):
    x, _ = data(b=12)
    miner = make()
    assert _is_empty(miner(x, torch.zeros(12, dtype=torch.long)))  # no negatives
    assert _is_empty(miner(x, torch.arange(12)))  # no positives
    assert all(math.isfinite(v) for v in miner.stats.values())


@pytest.mark.parametrize("make", ALL_MINERS)
def test_output_indexes_refs_and_converts_to_pair_masks(make):
    x, labels = data(b=12, seed=2, classes=3)
    ref, ref_labels = data(b=7, seed=3, classes=3)
    out = make()(x.float(), labels, ref_emb=ref.float(), ref_labels=ref_labels)
    masks = to_pair_mask(out, (12, 7), x.device)
    pos, neg = brute_relations(labels, ref_labels)
    assert all(pos[i][j] for i, j in mask_set(masks.pos))
    assert all(neg[i][j] for i, j in mask_set(masks.neg))
    assert masks.pos.any()


def test_multi_label_positives():
    x, _ = data(b=10, seed=1)
    ml = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]] * 2)
    got = BatchHardMiner()(x, ml)
    pos = [[i != j and bool((ml[i] * ml[j]).sum() > 0) for j in range(10)] for i in range(10)]
    neg = [[i != j and not pos[i][j] for j in range(10)] for i in range(10)]
    assert triplet_set(got) == brute_per_anchor(brute_dist(x), pos, neg, farthest_positive=True)


def test_miner_does_not_track_gradients():
    x, labels = data(b=12)
    x.requires_grad_(True)
    mask = MultiSimilarityMiner()(x, labels)
    assert not mask.pos.requires_grad
    t = BatchHardMiner()(x, labels)
    assert not t.anchor.requires_grad


# ------------------------------------------------------------------------------ bad input


def test_bad_input_errors():
    x, labels = data(b=8)
    miner = BatchHardMiner()
    with pytest.raises(ValueError, match=r"labels has 7 entries but embeddings has 8 rows"):
        miner(x, labels[:7])
    with pytest.raises(ValueError, match=r"embeddings must have shape \[batch, dim\]"):
        miner(x[0], labels)
    bad = x.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="embeddings contain NaN or inf"):
        miner(bad, labels)
    with pytest.raises(ValueError, match="ref_emb and ref_labels must be given together"):
        miner(x, labels, ref_emb=x)
    with pytest.raises(ValueError, match="ref_emb has dimension 3 but embeddings have 8"):
        miner(x, labels, ref_emb=x[:, :3], ref_labels=labels)
    with pytest.raises(TypeError, match="labels must be integer class ids"):
        miner(x, labels.float())
    with pytest.raises(ValueError, match="labels are required"):
        miner(x)
    with pytest.raises(TypeError, match="takes from 2 to 3 positional arguments"):
        miner(x, labels, x, labels)  # PML's positional ref_emb, ref_labels


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="unknown metric 'manhattan'"):
        BatchHardMiner(distance="manhattan")
    pml_message = r"LpDistance\(p=2, power=1\) is a pytorch-metric-learning object; likewise takes"
    with pytest.raises(ValueError, match=pml_message + " distance='euclidean'"):
        BatchHardMiner(distance=pml_distances.LpDistance())
    with pytest.raises(ValueError, match="margin must be positive, got 0"):
        SemiHardMiner(0)
    with pytest.raises(ValueError, match="need 0 <= cutoff < nonzero_loss_cutoff"):
        DistanceWeightedMiner(cutoff=1.5, nonzero_loss_cutoff=1.4)
    with pytest.raises(ValueError, match="pass seed or generator, not both"):
        DistanceWeightedMiner(seed=1, generator=torch.Generator())


def test_exact_ties_follow_the_strict_inequalities(search_path):
    """A negative that duplicates the positive sits exactly on every boundary."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 6, generator=g, dtype=torch.float64)
    far = -base[0] + 0.01 * base[2:4]  # negatives 3, 4 nearly antipodal to anchor 0
    x = torch.cat([base[:2], base[1:2], far])  # rows 1 and 2 identical
    labels = torch.tensor([0, 0, 1, 2, 2])
    # anchor 0: positive 1 and negative 2 at the same distance -> not semi-hard (d_ap < d_an fails)
    strict = triplet_set(SemiHardMiner(0.5)(x, labels))
    assert not any(a == 0 and p == 1 for a, p, _ in strict)
    assert (0, 1, 2) in triplet_set(SemiHardMiner(0.5, hard_fallback=True)(x, labels))
    # batch-all with margin 0: d_ap - d_an + 0 = 0 is not a positive loss
    mask = BatchAllMiner(margin=0.0)(x, labels)
    assert not mask.pos[0, 1] and not mask.neg[0, 2]
    # multi-similarity with epsilon 0 on the tie, as pytorch-metric-learning decides it
    x32 = x.float()
    ours = MultiSimilarityMiner(0.0)(x32, labels)
    theirs = pml_miners.MultiSimilarityMiner(0.0)(x32, labels)
    assert (mask_set(ours.pos), mask_set(ours.neg)) == pml_pairs(theirs)


# ------------------------------------------------------------------------ plugged into losses


def test_miners_plug_into_losses_like_pml():
    from likewise.losses import TripletMarginLoss

    x, labels = data(b=20, d=16, classes=5, seed=1, dtype=torch.float32)
    ours = TripletMarginLoss(margin=0.2, miner=BatchHardMiner())(x, labels)
    theirs = pml_losses.TripletMarginLoss(margin=0.2)(x, labels, pml_miners.BatchHardMiner()(x, labels))
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    ours = TripletMarginLoss(margin=0.2, miner=SemiHardMiner(0.2))(x, labels)
    t = SemiHardMiner(0.2)(x, labels)
    theirs = pml_losses.TripletMarginLoss(margin=0.2)(x, labels, (t.anchor, t.positive, t.negative))
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------ memory


@pytest.mark.parametrize("make", ALL_MINERS)
@pytest.mark.parametrize(
    ("per_class", "c"),
    [
        (4, 4),  # 128 classes x 4: dense per-positive search, 3 positives per anchor
        (64, 4),  # 8 classes x 64: sorted-rows search
        # 64 classes x 8: dense search over 7 positives, [B, 7, N] per block; that path is
        # taken only while the positives per anchor stay <= log2 N, so c <= 1 + log2(512)
        (8, 10),
    ],
)
@pytest.mark.parametrize("with_refs", [False, True])
def test_miners_never_hold_a_cubic_tensor(make, per_class, c, with_refs):
    b = 512
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(b // per_class).repeat_interleave(per_class)
    x = torch.randn(b, 16, generator=gen)
    miner = make()
    with LargestTensors() as sizes:
        if with_refs:  # the batch plus a queue of past embeddings of other classes, self excluded
            past = torch.randn(b // 2, 16, generator=gen)
            ref, ref_labels = torch.cat([x, past]), torch.cat([labels, labels[: b // 2] + b])
            out = miner(x, labels, ref_emb=ref, ref_labels=ref_labels, ref_self_index=torch.arange(b))
        else:
            out = miner(x, labels)
    n = b + b // 2 if with_refs else b
    assert not _is_empty(out)
    # every tensor made (float, bool or index) holds at most c * B * N elements: nothing B^3
    assert sizes.largest_any <= c * b * n, (sizes.largest_any_op, sizes.largest_any / (b * n))
    assert sizes.largest_any >= b * n  # the check sees the [B, N] distance matrix itself


# ----------------------------------------------------------------------------- host synchronisation


@pytest.mark.parametrize("seed", range(6))
def test_largest_count_is_the_maximum(seed):
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 1 + 3 * seed, (1 + seed,), generator=g)
    assert mining.largest_count(counts) == max(counts.tolist())
    assert mining.largest_count(torch.zeros(0, dtype=torch.long)) == 0


@pytest.mark.parametrize(
    "make",
    [
        lambda: SemiHardMiner(0.3, hard_fallback=True),
        lambda: BatchAllMiner(0.3),
        lambda: DistanceWeightedMiner(seed=0),
    ],
)
def test_miners_on_both_search_paths_do_not_synchronise(make, search_path):
    """Dense and sorted searches: no ``item``/``int``/``bool`` on a tensor while mining (the
    statistics are computed when read)."""
    from test_no_host_sync import trapped

    x, labels = data(b=20, seed=1, classes=3)
    miner = make()
    with trapped():
        mined = miner(x, labels)
    assert len(mined) > 0 if isinstance(mined, Triplets) else mined.pos.any()
    if isinstance(miner, BatchAllMiner):  # counted when read: the last call's triplets
        active = brute_batch_all(brute_dist(x), *brute_relations(labels), 0.3)
        miner(x[:6], labels[:6])  # a later call replaces them
        miner(x, labels)
        assert miner.stats["num_triplets"] == len(active) > 0
