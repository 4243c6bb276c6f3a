"""The mask-free fast paths of class-id labels equal the general (mask) paths and loops."""

from __future__ import annotations

import pytest
import torch

import likewise.losses._kernels.triplet as triplet_module
from likewise.losses import (
    CircleLoss,
    ContrastiveLoss,
    FastAPLoss,
    LiftedStructureLoss,
    MultiSimilarityLoss,
    NTXentLoss,
    SoftNearestNeighborLoss,
    SupConLoss,
    TripletMarginLoss,
)
from likewise.losses._kernels.npairs import npairs_select_classes
from likewise.losses._kernels.positives import positive_pairs
from likewise.losses.npairs import npairs_select
from likewise.similarity import relation_masks
from test_losses_pair import assert_same, data, value_and_grad
from test_losses_triplet import naive_triplet


def loop_positive_pairs(labels, ref_labels, self_index):
    return [
        (i, j)
        for i in range(len(labels))
        for j in range(len(ref_labels))
        if labels[i] == ref_labels[j] and j != self_index[i]
    ]


@pytest.mark.parametrize("seed", range(5))
def test_positive_pairs_match_a_loop(seed):
    g = torch.Generator().manual_seed(seed)
    labels, ref = torch.randint(0, 4, (9,), generator=g), torch.randint(0, 4, (13,), generator=g)
    self_index = torch.randint(-1, 13, (9,), generator=g)
    rows, cols = positive_pairs(labels, ref, self_index)
    assert sorted(zip(rows.tolist(), cols.tolist())) == loop_positive_pairs(labels, ref, self_index)
    rows, cols = positive_pairs(labels)  # refs are the queries: the diagonal is left out
    assert sorted(zip(rows.tolist(), cols.tolist())) == loop_positive_pairs(labels, labels, range(9))


@pytest.mark.parametrize(
    "labels, ref",
    [
        ([5, 1, 2, 1, 7], [1, 2, 1, 2, 9]),  # rows without positives first, inside and last
        ([3, 3], [1]),  # no row has one
        ([], [1, 2]),  # no query
    ],
)
def test_positive_pairs_with_rows_without_positives_match_a_loop(labels, ref):
    labels, ref = torch.tensor(labels, dtype=torch.long), torch.tensor(ref, dtype=torch.long)
    none = torch.full((labels.numel(),), -1)
    rows, cols = positive_pairs(labels, ref, none)
    assert sorted(zip(rows.tolist(), cols.tolist())) == loop_positive_pairs(labels, ref, none)


@pytest.mark.parametrize(
    "form, metric",
    [(f, m) for f in ("hinge", "squared_hinge", "hinge_squared") for m in ("euclidean", "squared_euclidean")]
    + [("hinge", "cosine"), ("squared_hinge", "cosine")],
)
def test_contrastive_without_masks_equals_the_mask_path(form, metric):
    x, y = data(b=12, classes=4)
    r, ry = data(b=7, classes=4, seed=3)
    margins = {"pos_margin": 0.9, "neg_margin": 0.2} if metric == "cosine" else {"neg_margin": 1.2}
    loss = ContrastiveLoss(distance=metric, neg_form=form, **margins)
    for args in ((), (r, ry)):
        kw = {"ref_emb": args[0], "ref_labels": args[1]} if args else {}
        fast = value_and_grad(lambda a, kw=kw: loss(a, y, **kw), x)
        fast_stats = dict(loss.stats)
        relevance = relation_masks(y, ry if args else None)[0] if args else y.unsqueeze(1) == y.unsqueeze(0)
        masked = value_and_grad(lambda a, kw=kw, rel=relevance: loss(a, y, relevance=rel, **kw), x)
        assert_same(fast, masked, rtol=1e-9, atol=1e-12)
        assert fast_stats == pytest.approx(loss.stats, rel=1e-9)


@pytest.mark.parametrize("classes", [2, 5])
def test_triplet_slotted_and_sorted_searches_match_the_loop(monkeypatch, classes):
    x, y = data(b=24, classes=classes)
    loss = TripletMarginLoss(margin=0.3)
    reference = value_and_grad(lambda a: naive_triplet(a, y, margin=0.3), x)
    slotted = value_and_grad(lambda a: loss(a, y), x)
    monkeypatch.setattr(triplet_module, "SLOTS_MAX", 0)  # every anchor takes the sorted search
    sorted_search = value_and_grad(lambda a: loss(a, y), x)
    assert_same(slotted, reference, rtol=1e-9, atol=1e-12)
    assert_same(sorted_search, reference, rtol=1e-9, atol=1e-12)


def test_fused_gradients_pass_gradcheck():
    x, y = data(b=8, classes=3)
    for loss in (ContrastiveLoss(neg_margin=1.5), TripletMarginLoss(margin=0.4)):
        assert torch.autograd.gradcheck(lambda a, loss=loss: loss(a, y), (x.clone().requires_grad_(),))
    # a scaled loss: the attached gradient is multiplied by the incoming one
    loss = ContrastiveLoss(neg_margin=1.5)
    x1 = x.detach().clone().requires_grad_()
    (g1,) = torch.autograd.grad(loss(x1, y), x1)
    xr = x.detach().clone().requires_grad_()
    (3.0 * loss(xr, y)).backward()
    torch.testing.assert_close(xr.grad, 3 * g1)


@pytest.mark.parametrize("seed", range(20))
def test_npairs_pairs_from_labels_equal_the_mask_rule(seed):
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 1 + seed % 9, (1 + 2 * seed,), generator=g)
    pos, _ = relation_masks(labels)
    expected = npairs_select(pos, labels)
    got = npairs_select_classes(labels)
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def assert_fast_path_equals_mask_path(loss, **approx):
    """Class ids (fast path) vs the same relation given as ``relevance`` (mask path)."""
    x, y = data(b=14, classes=5)
    y[0] = 99  # a singleton
    r, ry = data(b=9, classes=5, seed=4)
    for kw in ({}, {"ref_emb": r, "ref_labels": ry}):
        fast = value_and_grad(lambda a, kw=kw: loss(a, y, **kw), x)
        fast_stats = dict(loss.stats)
        relevance = relation_masks(y, kw.get("ref_labels"))[0]
        masked = value_and_grad(lambda a, kw=kw, rel=relevance: loss(a, y, relevance=rel, **kw), x)
        assert_same(fast, masked, rtol=1e-9, atol=1e-12)
        assert fast_stats == pytest.approx(loss.stats, **approx)
    return x, y


@pytest.mark.parametrize(
    "make",
    [
        lambda: NTXentLoss(temperature=0.2),
        lambda: SupConLoss(temperature=0.3),
        lambda: SupConLoss(temperature=0.3, variant="in"),
        lambda: SoftNearestNeighborLoss(temperature=2.0),
        lambda: SoftNearestNeighborLoss(distance="cosine"),
        lambda: SoftNearestNeighborLoss(distance="dot"),
    ],
)
def test_softmax_kernels_equal_the_mask_path(make):
    # sample 0 is a singleton: an anchor without positives
    loss = make()
    x, y = assert_fast_path_equals_mask_path(loss, rel=1e-9, abs=1e-12)
    assert torch.autograd.gradcheck(lambda a: loss(a, y), (x.detach().clone().requires_grad_(),))


@pytest.mark.parametrize("kwargs", [{}, {"alpha": 5.0, "beta": 20.0, "base": 0.2}, {"distance": "dot"}])
def test_multi_similarity_kernel_equals_the_mask_path(kwargs):
    # sample 0 is a singleton: only the negative half
    loss = MultiSimilarityLoss(**kwargs)
    x, y = assert_fast_path_equals_mask_path(loss, rel=1e-9, abs=1e-12)
    assert torch.autograd.gradcheck(lambda a: loss(a, y), (x.detach().clone().requires_grad_(),))


@pytest.mark.parametrize("kwargs", [{}, {"m": 0.25, "gamma": 30.0}])
def test_circle_kernel_equals_the_mask_path(kwargs):
    # sample 0 is a singleton: no positive, the row does not count
    loss = CircleLoss(**kwargs)
    x, y = assert_fast_path_equals_mask_path(loss, rel=1e-6)  # the mask path averages in float32


@pytest.mark.parametrize(
    "kwargs", [{}, {"neg_margin": 0.4, "pos_margin": 0.1}, {"distance": "squared_euclidean"}]
)
def test_lifted_structure_without_masks_equals_the_mask_path(kwargs):
    # sample 0 is a singleton: no positive pair of its own, still a negative of the others
    loss = LiftedStructureLoss(**kwargs)
    x, y = assert_fast_path_equals_mask_path(loss, rel=1e-9, abs=1e-12)
    assert torch.autograd.gradcheck(lambda a: loss(a, y), (x.detach().clone().requires_grad_(),))


@pytest.mark.parametrize("num_bins", [3, 10])
def test_fast_ap_scatter_histograms_equal_the_mask_path(num_bins):
    # sample 0 is a singleton: a query without positives, left out of the mean
    loss = FastAPLoss(num_bins=num_bins)
    x, y = assert_fast_path_equals_mask_path(loss, rel=1e-9, abs=1e-12)
    assert torch.autograd.gradcheck(lambda a: loss(a, y), (x.detach().clone().requires_grad_(),))


def test_fast_ap_with_zero_rows_and_duplicates_equals_the_mask_path():
    # the fast path differentiates through x.y only (the norm terms lie along x, which the
    # normalisation's backward removes, or are 0 for a zero row): same gradient as autograd's
    x, y = data(b=14, classes=5)
    x = x.detach().clone()
    x[3] = 0.0
    x[5] = x[4]
    x.requires_grad_(True)
    relevance = relation_masks(y)[0]
    for num_bins in (3, 10):
        loss = FastAPLoss(num_bins=num_bins)
        fast = value_and_grad(lambda a, loss=loss: loss(a, y), x)
        masked = value_and_grad(lambda a, loss=loss: loss(a, y, relevance=relevance), x)
        assert_same(fast, masked, rtol=1e-9, atol=1e-12)


def test_fast_ap_with_rows_below_the_normalisation_floor_equals_the_mask_path():
    # a row of norm in (0, 1e-12] is scaled by 1/eps, not normalised: the fast path hands it to
    # the mask path, whose autograd keeps the norm terms' gradient
    x, y = data(b=14, classes=5)
    x = x.detach().clone()
    x[2] = torch.tensor([3e-13, -2e-13, 4e-13, 1e-13], dtype=x.dtype)
    x.requires_grad_(True)
    relevance = relation_masks(y)[0]
    loss = FastAPLoss(num_bins=5)
    fast = value_and_grad(lambda a: loss(a, y), x)
    masked = value_and_grad(lambda a: loss(a, y, relevance=relevance), x)
    assert_same(fast, masked, rtol=1e-9, atol=1e-12)


def test_fast_ap_gradient_in_closed_form_equals_autograd():
    from likewise.losses._kernels.fast_ap import fast_ap_loss_and_gradient
    from likewise.losses.fast_ap import fast_ap_from_histograms

    g = torch.Generator().manual_seed(3)
    h_pos = torch.rand(7, 6, generator=g, dtype=torch.float64)
    h_neg = torch.rand(7, 6, generator=g, dtype=torch.float64)
    h_pos[h_pos < 0.4] = 0.0  # empty positive bins: skipped terms
    h_pos[2] = 0.0  # a query whose positives all fall outside the bins
    h_pos[4, :3], h_neg[4, :3] = 0.0, 0.0  # leading empty bins: H = 0 there
    n_pos = torch.tensor([3, 2, 2, 0, 4, 1, 5])  # query 3 has no positive
    loss, ap, g_pos, g_neg = fast_ap_loss_and_gradient(h_pos, h_neg, n_pos)
    hp, hn = h_pos.clone().requires_grad_(True), h_neg.clone().requires_grad_(True)
    ap_ref = fast_ap_from_histograms(hp, hn, n_pos)
    loss_ref = (1 - ap_ref[n_pos > 0]).mean()
    ref_pos, ref_neg = torch.autograd.grad(loss_ref, (hp, hn))
    assert loss.item() == pytest.approx(loss_ref.item(), rel=1e-12)
    torch.testing.assert_close(ap, ap_ref.detach(), rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(g_pos, ref_pos, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(g_neg, ref_neg, rtol=1e-12, atol=1e-15)


def test_product_gradient_is_the_gradient_of_a_loss_on_the_product():
    from likewise.losses._kernels.fused import with_product_gradient

    g = torch.Generator().manual_seed(5)
    a = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, 3, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 5, generator=g, dtype=torch.float64)

    def fused(a, b):  # L = sum(w * sin(a b^T)) with dL/dS = w cos(S) given, scaled by -2
        s = (a @ b.T).detach()
        ws = w[:, : b.shape[0]]
        return with_product_gradient(a, b, (ws * torch.sin(s)).sum() * -2, ws * torch.cos(s), -2.0)

    assert torch.autograd.gradcheck(fused, (a, b))
    assert torch.autograd.gradcheck(lambda a: fused(a, a), (a,))  # the same rows on both sides
    with torch.no_grad():
        assert not fused(a, b).requires_grad


@pytest.mark.parametrize("dtype, floor", [(torch.float32, -80.0), (torch.float64, -700.0)])
def test_exp_clamps_only_below_the_normal_range(dtype, floor):
    from likewise.losses._kernels.fused import exp_

    x = torch.tensor([0.0, -1.0, -79.0, -699.0, -900.0, float("-inf")], dtype=dtype)
    got = exp_(x.clone())
    expected = torch.exp(x.clamp_min(floor))
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    assert bool((got > 0).all()) and float(got.min()) >= torch.finfo(dtype).tiny  # no subnormal


@pytest.mark.parametrize(
    "make",
    [  # logits spread over ~1,000: past float64's -700 floor, most exps would be subnormal
        lambda: NTXentLoss(temperature=0.002),
        lambda: SupConLoss(temperature=0.002),
        lambda: MultiSimilarityLoss(beta=800.0),
        lambda: CircleLoss(gamma=1200.0),
    ],
)
def test_kernels_keep_their_values_when_most_exps_underflow(make):
    x, y = data(b=14, classes=5)
    loss = make()
    fast = value_and_grad(lambda a: loss(a, y), x)
    relevance = y.unsqueeze(1) == y.unsqueeze(0)
    masked = value_and_grad(lambda a: loss(a, y, relevance=relevance), x)
    assert_same(fast, masked, rtol=1e-9, atol=1e-12)


def test_backward_scale_as_a_tensor_keeps_the_gradient_dtype():
    # off the CPU the fused backward scales by grad_out as a tensor (no wait for the device)
    from likewise.losses._kernels.fused import _scaled

    g = torch.ones(2, 3)
    out = _scaled(g.clone(), torch.tensor(2.5, dtype=torch.float64))
    assert out.dtype == torch.float32 and torch.equal(out, torch.full((2, 3), 2.5))
    assert _scaled(g, 1.0) is g
