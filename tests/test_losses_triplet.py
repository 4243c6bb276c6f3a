"""Triplet margin loss: all triplets without B^3 memory, mined triplets, PML agreement."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses

from likewise.losses.triplet_margin import (
    TripletMarginLoss,
    triplet_margin_loss,
    triplet_margin_loss_from_triplets,
)
from likewise.mined import PairMask, Triplets
from likewise.mining import sample_triplets
from test_losses_pair import FixedMiner, FloatOutputSizes, assert_same, call, data, pair_value, value_and_grad

# ----------------------------------------------------------------------------- naive reference


def dist(u, v, metric):
    """Distance of two vectors; ``-s`` for cosine (smaller = closer)."""
    value = pair_value(u, v, metric)
    return -value if metric == "cosine" else value


def all_triplets(labels, ref_labels=None):
    same = ref_labels is None
    ref_labels = labels if same else ref_labels
    for a in range(len(labels)):
        for p in range(len(ref_labels)):
            if (same and p == a) or labels[a] != ref_labels[p]:
                continue
            for n in range(len(ref_labels)):
                if labels[a] != ref_labels[n]:
                    yield a, p, n


def naive_triplet(
    x,
    labels,
    ref=None,
    ref_labels=None,
    margin=0.05,
    metric="euclidean",
    smooth=False,
    swap=False,
    triplets=None,
):
    refs = x if ref is None else ref
    if triplets is None:
        triplets = list(all_triplets(labels, ref_labels))
    losses = []
    for a, p, n in triplets:
        d_ap = dist(x[a], refs[p], metric)
        d_an = dist(x[a], refs[n], metric)
        if swap:
            d_an = torch.minimum(d_an, dist(refs[p], refs[n], metric))
        v = d_ap - d_an + margin
        losses.append(F.softplus(v) if smooth else F.relu(v))
    nonzero = [t for t in losses if t > 0]
    return sum(nonzero) / len(nonzero) if nonzero else x.sum() * 0


# ----------------------------------------------------------------------------- all triplets vs loops


@pytest.mark.parametrize("metric", ["euclidean", "squared_euclidean", "cosine"])
@pytest.mark.parametrize("smooth", [False, True])
@pytest.mark.parametrize("swap", [False, True])
def test_all_triplets_match_naive_loop(metric, smooth, swap):
    x, y = data(b=10, classes=3)
    loss = TripletMarginLoss(margin=0.2, distance=metric, smooth_loss=smooth, swap=swap)
    ours = value_and_grad(lambda a: loss(a, y), x)
    ref = value_and_grad(
        lambda a: naive_triplet(a, y, margin=0.2, metric=metric, smooth=smooth, swap=swap), x
    )
    assert_same(ours, ref, rtol=1e-9, atol=1e-12)
    expected_count = len(list(all_triplets(y)))
    assert loss.stats["num_triplets"] == expected_count


@pytest.mark.parametrize("smooth", [False, True])
@pytest.mark.parametrize("swap", [False, True])
def test_ref_emb_of_another_size_matches_naive_loop(smooth, swap):
    x, y = data(b=6, classes=3)
    r, ry = data(b=11, classes=3, seed=8)
    loss = TripletMarginLoss(margin=0.3, smooth_loss=smooth, swap=swap)
    ours = value_and_grad(lambda a, b: loss(a, y, ref_emb=b, ref_labels=ry), x, r)
    ref = value_and_grad(lambda a, b: naive_triplet(a, y, b, ry, margin=0.3, smooth=smooth, swap=swap), x, r)
    assert_same(ours, ref, rtol=1e-9, atol=1e-12)


def test_active_fraction_counts_violating_triplets():
    x, y = data(b=9, classes=3)
    loss = TripletMarginLoss(margin=0.1)
    loss(x, y)
    trip = list(all_triplets(y))
    active = sum(
        1 for a, p, n in trip if dist(x[a], x[p], "euclidean") - dist(x[a], x[n], "euclidean") + 0.1 > 0
    )
    assert loss.stats["active_fraction"] == pytest.approx(active / len(trip))
    assert 0 < active < len(trip)


@pytest.mark.parametrize("smooth", [False, True])
def test_functional_form_on_a_matrix(smooth):
    d = torch.tensor([[0.0, 0.3, 0.2, 0.9], [0.3, 0.0, 0.5, 0.1]], dtype=torch.float64)
    pos = torch.tensor([[False, True, False, False], [True, False, False, False]])
    neg = torch.tensor([[False, False, True, True], [False, False, True, True]])
    terms = [0.3 - 0.2 + 0.1, 0.3 - 0.9 + 0.1, 0.3 - 0.5 + 0.1, 0.3 - 0.1 + 0.1]
    t = torch.tensor(terms, dtype=torch.float64)
    t = F.softplus(t) if smooth else F.relu(t)
    expected = t[t > 0].mean()
    out = triplet_margin_loss(d, pos, neg, margin=0.1, smooth_loss=smooth)
    assert out.item() == pytest.approx(expected.item())
    # the blocked path, one positive pair per block
    out = triplet_margin_loss(
        d,
        pos,
        neg,
        margin=0.1,
        smooth_loss=smooth,
        swap_dist=torch.full((4, 4), 9.0, dtype=torch.float64),
        block_elements=1,
    )
    assert out.item() == pytest.approx(expected.item())  # swap distances all large: no effect


def test_from_triplets_functional():
    d_ap = torch.tensor([0.5, 0.1, 0.2])
    d_an = torch.tensor([0.4, 0.9, 0.2])
    assert triplet_margin_loss_from_triplets(d_ap, d_an, 0.05).item() == pytest.approx((0.15 + 0.05) / 2)


@pytest.mark.parametrize("smooth", [False, True])
def test_blocked_path_equals_single_block(smooth):
    x, y = data(b=20, classes=4)
    one = value_and_grad(lambda a: TripletMarginLoss(smooth_loss=smooth, swap=True)(a, y), x)
    many = value_and_grad(
        lambda a: TripletMarginLoss(smooth_loss=smooth, swap=True, block_elements=25)(a, y), x
    )
    assert_same(many, one, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------- gradcheck


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"smooth_loss": True},
        {"swap": True},
        {"distance": "cosine"},
        {"distance": "squared_euclidean"},
        {"smooth_loss": True, "block_elements": 6},
    ],
)
def test_gradcheck(kwargs):
    x, y = data(b=6, d=3, classes=2)
    loss = TripletMarginLoss(margin=0.3, **kwargs)
    assert torch.autograd.gradcheck(lambda a: loss(a, y), (x.requires_grad_(),))


def test_gradcheck_with_refs_and_mined():
    x, y = data(b=5, d=3, classes=2)
    r, ry = data(b=6, d=3, classes=2, seed=3)
    loss = TripletMarginLoss(margin=0.3, swap=True)
    assert torch.autograd.gradcheck(
        lambda a, b: loss(a, y, ref_emb=b, ref_labels=ry), (x.requires_grad_(), r.requires_grad_())
    )
    t = mined_triplets(y, ry, seed=1)
    mined = TripletMarginLoss(margin=0.3, swap=True, smooth_loss=True, miner=FixedMiner(t))
    assert torch.autograd.gradcheck(lambda a, b: mined(a, y, ref_emb=b, ref_labels=ry), (x, r))
    for smooth in (False, True):  # given triplets without swap: the gradient is written by the loss
        mined = TripletMarginLoss(margin=0.3, smooth_loss=smooth, miner=FixedMiner(t))
        assert torch.autograd.gradcheck(lambda a, b, m=mined: m(a, y, ref_emb=b, ref_labels=ry), (x, r))


# ----------------------------------------------------------------------------- PML agreement


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"smooth_loss": True},
        {"swap": True},
        {"margin": 0.3},
        {"margin": 0.2, "distance": "cosine"},
        {"margin": 0.5, "distance": "squared_euclidean"},
    ],
)
def test_agrees_with_pml(dtype, kwargs):
    x, y = data(b=32, d=8, classes=4, dtype=dtype)
    pml_kwargs = dict(kwargs)
    metric = pml_kwargs.pop("distance", None)
    if metric == "cosine":
        pml_kwargs["distance"] = pml_distances.CosineSimilarity()
    elif metric == "squared_euclidean":
        pml_kwargs["distance"] = pml_distances.LpDistance(power=2)
    ours = value_and_grad(lambda a: TripletMarginLoss(**kwargs)(a, y), x)
    theirs = value_and_grad(lambda a: pml_losses.TripletMarginLoss(**pml_kwargs)(a, y), x)
    assert_same(ours, theirs)


@pytest.mark.parametrize("smooth", [False, True])
def test_agrees_with_pml_with_ref_emb(smooth):
    x, y = data(b=24, d=8, classes=4, dtype=torch.float32)
    r, ry = data(b=40, d=8, classes=4, dtype=torch.float32, seed=6)
    ours = value_and_grad(lambda a, b: call(TripletMarginLoss(smooth_loss=smooth), a, y, b, ry), x, r)
    theirs = value_and_grad(
        lambda a, b: call(pml_losses.TripletMarginLoss(smooth_loss=smooth), a, y, b, ry), x, r
    )
    assert_same(ours, theirs)


def mined_triplets(labels, ref_labels=None, seed=0, keep=0.3):
    trip = list(all_triplets(labels, ref_labels))
    g = torch.Generator().manual_seed(seed)
    chosen = [t for t, u in zip(trip, torch.rand(len(trip), generator=g)) if u < keep]
    a, p, n = (torch.tensor(v) for v in zip(*chosen))
    return Triplets(a, p, n)


@pytest.mark.parametrize("kwargs", [{}, {"smooth_loss": True}, {"swap": True}, {"distance": "cosine"}])
def test_mined_triplets_agree_with_pml_indices_tuple(kwargs):
    x, y = data(b=20, d=6, classes=4, dtype=torch.float32)
    t = mined_triplets(y)
    pml_kwargs = dict(kwargs)
    if pml_kwargs.pop("distance", None) == "cosine":
        pml_kwargs["distance"] = pml_distances.CosineSimilarity()
    ours_loss = TripletMarginLoss(miner=FixedMiner(t), **kwargs)
    ours = value_and_grad(lambda a: ours_loss(a, y), x)
    theirs = value_and_grad(
        lambda a: pml_losses.TripletMarginLoss(**pml_kwargs)(a, y, (t.anchor, t.positive, t.negative)), x
    )
    assert_same(ours, theirs)
    assert ours_loss.stats["num_triplets"] == len(t)


def test_mined_triplets_with_ref_emb_agree_with_pml():
    x, y = data(b=12, d=6, classes=3, dtype=torch.float32)
    r, ry = data(b=17, d=6, classes=3, dtype=torch.float32, seed=2)
    t = mined_triplets(y, ry, seed=4)
    ours = value_and_grad(lambda a, b: call(TripletMarginLoss(miner=FixedMiner(t)), a, y, b, ry), x, r)
    theirs = value_and_grad(
        lambda a, b: pml_losses.TripletMarginLoss()(a, y, (t.anchor, t.positive, t.negative), b, ry), x, r
    )
    assert_same(ours, theirs)


@pytest.mark.parametrize("smooth", [False, True])
def test_pair_mask_miner_forms_every_triplet_of_the_masks(smooth):
    x, y = data(b=16, d=5, classes=3, dtype=torch.float32)
    same = y[:, None] == y[None, :]
    pick = torch.rand(16, 16, generator=torch.Generator().manual_seed(2)) < 0.5
    pos, neg = same & ~torch.eye(16, dtype=torch.bool) & pick, ~same & pick
    a, p, n = torch.where(pos[:, :, None] & neg[:, None, :])  # small B: brute force is fine in a test
    ours = value_and_grad(
        lambda e: TripletMarginLoss(smooth_loss=smooth, miner=FixedMiner(PairMask(pos, neg)))(e, y), x
    )
    theirs = value_and_grad(lambda e: pml_losses.TripletMarginLoss(smooth_loss=smooth)(e, y, (a, p, n)), x)
    assert_same(ours, theirs)
    naive = value_and_grad(
        lambda e: naive_triplet(e, y, smooth=smooth, triplets=list(zip(a.tolist(), p.tolist(), n.tolist()))),
        x,
    )
    assert_same(ours, naive)


# ----------------------------------------------------------------------------- memory: never B^3


@pytest.mark.parametrize("kwargs", [{}, {"smooth_loss": True, "block_elements": 4096}])
def test_all_triplets_never_build_a_cubic_tensor(kwargs):
    b, d = 64, 4
    x, y = data(b=b, d=d, classes=4, dtype=torch.float32)
    x.requires_grad_()
    with FloatOutputSizes() as sizes:
        TripletMarginLoss(**kwargs)(x, y).backward()
    assert sizes.largest <= max(b * (b + 1), kwargs.get("block_elements", 0) + b)
    # B^3 = 262144; the dense path stays at one [B, B + 1] matrix


# ----------------------------------------------------------------------------- sampled triplets


def test_triplets_per_anchor_samples_valid_triplets():
    x, y = data(b=12, classes=3)
    y[0] = 7  # a singleton: no anchor
    same = (y[:, None] == y[None, :]) & ~torch.eye(12, dtype=torch.bool)
    t = sample_triplets(same, ~(y[:, None] == y[None, :]), 5, generator=torch.Generator().manual_seed(0))
    n_anchors = int((same.any(1) & (y[:, None] != y[None, :]).any(1)).sum())
    assert n_anchors >= 9 and len(t) == 5 * n_anchors
    assert 0 not in t.anchor.tolist()
    assert all(same[a, p] and y[a] != y[n] for a, p, n in zip(t.anchor, t.positive, t.negative))
    torch.manual_seed(3)
    expected_t = sample_triplets(same, ~(y[:, None] == y[None, :]), 4)
    torch.manual_seed(3)
    ours = value_and_grad(lambda a: TripletMarginLoss(triplets_per_anchor=4, margin=0.4)(a, y), x)
    trip = list(zip(expected_t.anchor.tolist(), expected_t.positive.tolist(), expected_t.negative.tolist()))
    ref = value_and_grad(lambda a: naive_triplet(a, y, margin=0.4, triplets=trip), x)
    assert_same(ours, ref, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------- edge cases


@pytest.mark.parametrize("kwargs", [{}, {"smooth_loss": True}, {"swap": True}])
@pytest.mark.parametrize("labels", [torch.zeros(6, dtype=torch.long), torch.arange(6)])
def test_no_triplet_gives_zero_that_backprops(kwargs, labels):
    x = torch.randn(6, 4, requires_grad=True)
    loss = TripletMarginLoss(**kwargs)
    out = loss(x, labels)
    assert out.item() == 0
    out.backward()
    assert x.grad is not None and torch.count_nonzero(x.grad) == 0
    assert loss.stats["num_triplets"] == 0


def test_empty_mined_triplets_give_zero_that_backprops():
    x, y = data(b=6)
    x.requires_grad_()
    empty = torch.zeros(0, dtype=torch.long)
    out = TripletMarginLoss(miner=FixedMiner(Triplets(empty, empty, empty)))(x, y)
    out.backward()
    assert out.item() == 0 and torch.count_nonzero(x.grad) == 0


@pytest.mark.parametrize("kwargs", [{}, {"smooth_loss": True}, {"swap": True}, {"distance": "cosine"}])
def test_duplicate_embeddings(kwargs):
    base, _ = data(b=3)
    x = base.repeat_interleave(3, dim=0).requires_grad_()
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    loss = TripletMarginLoss(margin=0.1, **kwargs)
    out = loss(x, y)
    out.backward()
    assert torch.isfinite(x.grad).all()
    metric = kwargs.get("distance", "euclidean")
    expected = naive_triplet(
        x.detach(),
        y,
        margin=0.1,
        metric=metric,
        smooth=kwargs.get("smooth_loss", False),
        swap=kwargs.get("swap", False),
    )
    assert out.item() == pytest.approx(expected.item())


def test_zero_vectors_with_cosine():
    x, y = data(b=8, classes=3)
    x[1] = 0
    x[4] = 0
    x.requires_grad_()
    out = TripletMarginLoss(margin=0.2, distance="cosine")(x, y)
    out.backward()
    assert torch.isfinite(x.grad).all()
    assert out.item() == pytest.approx(naive_triplet(x.detach(), y, margin=0.2, metric="cosine").item())


# ----------------------------------------------------------------------------- bad input


def test_bad_input_errors():
    loss = TripletMarginLoss()
    x, y = data(b=6)
    with pytest.raises(ValueError, match="labels has 4 entries but embeddings has 6 rows"):
        loss(x, y[:4])
    with pytest.raises(ValueError, match="ref_labels has 3 entries but ref_emb has 5 rows"):
        loss(x, y, ref_emb=torch.randn(5, 4, dtype=x.dtype), ref_labels=y[:3])
    with pytest.raises(ValueError, match="ref_emb has dimension 2 but embeddings have 4"):
        loss(x, y, ref_emb=torch.randn(5, 2, dtype=x.dtype), ref_labels=y[:5])
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="embeddings contain NaN or inf"):
        loss(bad, y)
    with pytest.raises(ValueError, match="ref_emb contain NaN or inf"):
        loss(x, y, ref_emb=bad, ref_labels=y)
    with pytest.raises(ValueError, match=r"negative indices must lie in \[0, 5\]"):
        loss(x, y, (torch.tensor([0]), torch.tensor([1]), torch.tensor([6])))
    with pytest.raises(ValueError, match=r"anchor indices must lie in \[0, 5\]"):
        loss(x, y, indices_tuple=(torch.tensor([-1]), torch.tensor([1]), torch.tensor([2])))


def test_bad_mined_triplets_and_arguments():
    x, y = data(b=6)
    t = Triplets(torch.tensor([0]), torch.tensor([6]), torch.tensor([1]))
    with pytest.raises(ValueError, match=r"mined positive indices must lie in \[0, 5\]"):
        TripletMarginLoss(miner=FixedMiner(t))(x, y)
    t = Triplets(torch.tensor([0.0]), torch.tensor([1.0]), torch.tensor([2.0]))
    with pytest.raises(TypeError, match="mined anchor indices must be integer tensors"):
        TripletMarginLoss(miner=FixedMiner(t))(x, y)
    with pytest.raises(TypeError, match="a miner must return PairMask or Triplets"):
        TripletMarginLoss(miner=FixedMiner([0, 1, 2]))(x, y)
    with pytest.raises(ValueError, match="triplets_per_anchor must be 'all' or a positive int, got 0"):
        TripletMarginLoss(triplets_per_anchor=0)
    with pytest.raises(ValueError, match="triplets_per_anchor must be 'all' or a positive int, got 'some'"):
        TripletMarginLoss(triplets_per_anchor="some")
    with pytest.raises(TypeError, match="margin must be a number"):
        TripletMarginLoss(margin=None)
    with pytest.raises(ValueError, match="unknown metric 'l1'"):
        TripletMarginLoss(distance="l1")
    with pytest.raises(ValueError, match="block_elements must be a positive int"):
        TripletMarginLoss(block_elements=0)


# ----------------------------------------------------------------------------- fast kernels == plain form


def _multi_label(b, seed):
    return (torch.rand(b, 3, generator=torch.Generator().manual_seed(seed)) < 0.4).long()


FAST_PLAIN_CASES = {
    "class ids, slots": ({}, lambda y: y, {}),
    "class ids, sorted search (many positives)": ({}, lambda y: y % 2, {}),
    "smooth": ({"smooth_loss": True}, lambda y: y, {}),
    "swap": ({"swap": True}, lambda y: y, {}),
    "cosine": ({"distance": "cosine", "margin": 0.3}, lambda y: y, {}),
    "multi-label masks": ({}, lambda y: _multi_label(len(y), 1), {}),
    "relevance": ({}, lambda y: None, {"relevance": "same"}),
    "semi-hard miner on the loss matrix": ({"miner": "semihard", "margin": 0.3}, lambda y: y, {}),
    "batch-all pair masks": ({"miner": "batchall"}, lambda y: y, {}),
    "given pairs": ({}, lambda y: None, {"indices_tuple": "pairs"}),
    "given pairs, smooth": ({"smooth_loss": True}, lambda y: None, {"indices_tuple": "pairs"}),
    "given triplets": ({}, lambda y: None, {"indices_tuple": "triplets"}),
}


@pytest.mark.parametrize("case", list(FAST_PLAIN_CASES))
@pytest.mark.parametrize("refs", [False, True])
def test_every_fast_path_equals_the_plain_form(case, refs):
    """``fast=False`` (the plain blocked form, plain distances) equals the default in value,
    gradients and statistics on each kernel's path, float64."""
    from likewise.mining import BatchAllMiner, SemiHardMiner

    ctor, labels_of, call_kw = FAST_PLAIN_CASES[case]
    x, y = data(b=16, d=5, classes=4)
    r, ry = data(b=11, d=5, classes=4, seed=5)
    kw = {"ref_emb": r, "ref_labels": labels_of(ry)} if refs else {}
    labels = labels_of(y)
    n = 11 if refs else 16
    if call_kw.get("relevance"):
        ref_y = ry if refs else y
        kw["relevance"] = y[:, None] == ref_y[None, :]
        kw.pop("ref_labels", None)
    if call_kw.get("indices_tuple"):  # random pairs, none of them a self pair
        g = torch.Generator().manual_seed(3)
        a1, a2 = torch.randint(0, 16, (30,), generator=g), torch.randint(0, 16, (30,), generator=g)
        p, m, m1 = ((a + torch.randint(1, n, (30,), generator=g)) % n for a in (a1, a2, a1))
        kw["indices_tuple"] = (a1, p, a2, m) if call_kw["indices_tuple"] == "pairs" else (a1, p, m1)
        kw.pop("ref_labels", None)
    miner = {"semihard": lambda: SemiHardMiner(0.3), "batchall": BatchAllMiner}.get(ctor.get("miner"))
    options = {**ctor, "miner": miner() if miner else None}
    fast, plain = TripletMarginLoss(**options), TripletMarginLoss(**options, fast=False)
    leaves = (x, r) if refs else (x,)

    def run(loss):
        def f(*t):
            args = {**kw, "ref_emb": t[1]} if refs else kw
            return loss(t[0], labels, **args)

        return value_and_grad(f, *leaves), dict(loss.stats)

    (v_fast, stats_fast), (v_plain, stats_plain) = run(fast), run(plain)
    assert v_fast[0] > 0  # the case is not vacuous
    assert_same(v_fast, v_plain, rtol=1e-9, atol=1e-12)
    assert stats_fast == pytest.approx(stats_plain, rel=1e-9)


def test_the_sorted_search_off_the_cpu_equals_the_slotted_one():
    """Off the CPU the sorted search takes every column as a candidate positive (no slot count):
    the same sum and count as the CPU's slots."""
    from likewise.losses._kernels.triplet import listed_sorted_hinge, sorted_hinge

    x, y = data(b=20, d=4, classes=3)
    d = torch.cdist(x, x)
    pos = (y[:, None] == y[None, :]) & ~torch.eye(20, dtype=torch.bool)
    neg = y[:, None] != y[None, :]
    total, count = sorted_hinge(d, pos, neg, 0.4)
    total_all, count_all = listed_sorted_hinge(d, pos.double(), neg.double(), 0.4)
    terms = (d[:, :, None] - d[:, None, :] + 0.4).clamp_min(0) * (pos[:, :, None] & neg[:, None, :])
    assert total.item() == pytest.approx(terms.sum().item(), rel=1e-12)
    assert total_all.item() == pytest.approx(terms.sum().item(), rel=1e-12)
    assert count.item() == count_all.item() == (terms > 0).sum().item() > 0


def test_other_default_paths_do_not_synchronise():
    """Masks (relevance, multi-label) and given pairs: no host synchronisation in the loss's
    forward and backward (input validation aside; the class-id paths: tests/test_no_host_sync.py)."""
    from dataclasses import replace

    from likewise.losses.base import check_batch
    from likewise.losses.given import parse_indices_tuple
    from test_no_host_sync import trapped

    x, y = data(b=16, d=5, classes=4)
    x.requires_grad_()
    g = torch.Generator().manual_seed(3)
    a1, a2 = torch.randint(0, 16, (30,), generator=g), torch.randint(0, 16, (30,), generator=g)
    pairs = (a1, (a1 + 1) % 16, a2, (a2 + 3) % 16)
    batches = [
        check_batch(x, None, relevance=y[:, None] == y[None, :]),
        check_batch(x, _multi_label(16, 1)),
        replace(
            check_batch(x, None, pairs_given=True), given=parse_indices_tuple(pairs, 16, 16, "cpu", x.dtype)
        ),
    ]
    for batch in batches:
        for loss in (TripletMarginLoss(), TripletMarginLoss(smooth_loss=True, distance="cosine")):
            with trapped():
                value = loss.compute(batch)
                value.backward()
            assert value > 0
