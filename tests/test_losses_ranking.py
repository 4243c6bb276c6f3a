import math

import numpy as np
import pytest
import torch
from pytorch_metric_learning import losses as pml_losses
from sklearn.metrics import average_precision_score

from likewise.losses._kernels.fast_ap import soft_histograms_fused
from likewise.losses.fast_ap import FastAPLoss, fast_ap_loss, soft_histograms

# ---------------------------------------------------------------- naive reference (plain loops)


def _unit(v):
    n = math.sqrt(sum(a * a for a in v))
    return [a / max(n, 1e-12) for a in v]


def naive_fast_ap(emb, labels, num_bins, ref_emb=None, ref_labels=None):
    """1 - FastAP averaged over queries with a positive, written with loops."""
    same = ref_emb is None
    queries = [_unit(v) for v in emb.tolist()]
    refs = queries if same else [_unit(v) for v in ref_emb.tolist()]
    q_lab = labels.tolist()
    r_lab = q_lab if same else ref_labels.tolist()
    delta = 4.0 / num_bins
    centres = [4.0 * e / num_bins for e in range(num_bins + 1)]
    losses = []
    for i, q in enumerate(queries):
        h_pos = [0.0] * len(centres)
        h_neg = [0.0] * len(centres)
        n_pos = 0
        for j, r in enumerate(refs):
            if same and i == j:
                continue
            d = sum((a - b) ** 2 for a, b in zip(q, r))
            for e, c in enumerate(centres):
                w = max(0.0, 1 - abs(d - c) / delta)
                if q_lab[i] == r_lab[j]:
                    h_pos[e] += w
                else:
                    h_neg[e] += w
            n_pos += q_lab[i] == r_lab[j]
        if n_pos == 0:
            continue
        ap, cum_pos, cum_all = 0.0, 0.0, 0.0
        for e in range(len(centres)):
            cum_pos += h_pos[e]
            cum_all += h_pos[e] + h_neg[e]
            if h_pos[e] * cum_pos > 0 and cum_all > 0:
                ap += h_pos[e] * cum_pos / cum_all
        losses.append(1 - ap / n_pos)
    return sum(losses) / len(losses) if losses else 0.0


# ---------------------------------------------------------------- value and gradients


@pytest.mark.parametrize("num_bins", [1, 4, 10, 37])
def test_fast_ap_matches_naive_loops(num_bins):
    emb = torch.randn(14, 5, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 0, 2, 4, 1, 0, 3])  # class 4 is a singleton
    loss = FastAPLoss(num_bins=num_bins)
    assert loss(emb, labels).item() == pytest.approx(naive_fast_ap(emb, labels, num_bins), rel=1e-10)
    assert set(loss.stats) == {"fast_ap", "queries_with_pos"}
    assert loss.stats["queries_with_pos"] == pytest.approx(13 / 14)


def test_fast_ap_with_ref_emb_matches_naive_loops():
    emb = torch.randn(6, 4, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, 5])  # label 5 has no positive among the refs
    refs = torch.randn(9, 4, dtype=torch.float64)
    ref_labels = torch.tensor([0, 0, 1, 2, 2, 2, 1, 3, 0])
    got = FastAPLoss(num_bins=6)(emb, labels, ref_emb=refs, ref_labels=ref_labels)
    assert got.item() == pytest.approx(naive_fast_ap(emb, labels, 6, refs, ref_labels), rel=1e-10)


def test_fast_ap_approaches_exact_average_precision_with_many_bins():
    # the histogram relaxation of the seed's AP: with fine bins it is the AP of the ranking
    emb = torch.randn(12, 3, dtype=torch.float64)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 0, 1])
    unit = torch.nn.functional.normalize(emb, dim=1)
    aps = []
    for i in range(12):
        others = [j for j in range(12) if j != i]
        y = np.array([int(labels[j] == labels[i]) for j in others])
        score = np.array([-float(((unit[i] - unit[j]) ** 2).sum()) for j in others])
        aps.append(average_precision_score(y, score))
    exact_loss = 1 - float(np.mean(aps))
    approx = FastAPLoss(num_bins=4000)(emb, labels).item()
    assert approx == pytest.approx(exact_loss, abs=0.02)


def test_fast_ap_gradcheck():
    emb = torch.randn(9, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 2, 0, 3])
    loss = FastAPLoss(num_bins=5)
    assert torch.autograd.gradcheck(lambda e: loss(e, labels), (emb,))
    refs = torch.randn(7, 3, dtype=torch.float64, requires_grad=True)
    ref_labels = torch.tensor([0, 1, 2, 3, 0, 1, 4])
    assert torch.autograd.gradcheck(
        lambda e, r: loss(e, labels, ref_emb=r, ref_labels=ref_labels), (emb, refs)
    )


def test_soft_histogram_gradcheck_and_values():
    dist = (torch.rand(4, 6, dtype=torch.float64) * 4).requires_grad_(True)
    pos = torch.rand(4, 6) > 0.5
    neg = ~pos
    neg[0, 0] = False  # a pair in neither mask
    pos[0, 0] = False
    h_pos, h_neg = soft_histograms(dist, pos, neg, num_bins=3)
    for i in range(4):
        for e, c in enumerate([0.0, 4 / 3, 8 / 3, 4.0]):
            wp = sum(max(0.0, 1 - abs(dist[i, j].item() - c) / (4 / 3)) for j in range(6) if pos[i, j])
            wn = sum(max(0.0, 1 - abs(dist[i, j].item() - c) / (4 / 3)) for j in range(6) if neg[i, j])
            assert h_pos[i, e].item() == pytest.approx(wp, abs=1e-12)
            assert h_neg[i, e].item() == pytest.approx(wn, abs=1e-12)
    weights = torch.randn(4, 4, dtype=torch.float64)

    def f(d):
        hp, hn = soft_histograms(d, pos, neg, num_bins=3)
        return (hp * weights).sum() + (hn * weights.flip(1)).sum()

    assert torch.autograd.gradcheck(f, (dist,))


def test_soft_histogram_at_centres_and_beyond_the_range_matches_dense_autograd():
    # kinks (distances exactly on a centre, 0) and rounding just above 4: compare with the
    # dense relu/abs formula over every bin, differentiated by autograd
    num_bins = 4
    centres = torch.linspace(0.0, 4.0, steps=num_bins + 1, dtype=torch.float64)
    dist = torch.rand(3, 8, dtype=torch.float64) * 4
    dist[0, :5] = centres
    dist[1, 0] = 4.0 + 1e-9
    dist[1, 1] = 1e-12
    pos = torch.rand(3, 8) > 0.4
    neg = ~pos
    weights = torch.randn(2, 3, num_bins + 1, dtype=torch.float64)

    dense = dist.clone().requires_grad_(True)
    pulse = torch.relu(1 - torch.abs(dense[None] - centres[:, None, None]) / (4.0 / num_bins))  # [E, B, N]
    dp = (pulse * pos).sum(2).T
    dn = (pulse * neg).sum(2).T
    (g_dense,) = torch.autograd.grad((dp * weights[0]).sum() + (dn * weights[1]).sum(), dense)
    for histograms in (soft_histograms, soft_histograms_fused):  # the plain form and the kernel
        ours = dist.clone().requires_grad_(True)
        hp, hn = histograms(ours, pos, neg, num_bins)
        (g_ours,) = torch.autograd.grad((hp * weights[0]).sum() + (hn * weights[1]).sum(), ours)
        torch.testing.assert_close(hp, dp, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(hn, dn, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(g_ours, g_dense, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("num_bins", [10, 3, 25])
def test_fast_ap_matches_pml_value_and_gradient(dtype, num_bins):
    emb = torch.randn(40, 16, dtype=dtype, requires_grad=True)
    labels = torch.randint(0, 6, (40,))
    v_ref = pml_losses.FastAPLoss(num_bins=num_bins)(emb, labels)
    (g_ref,) = torch.autograd.grad(v_ref, emb)
    v_ours = FastAPLoss(num_bins=num_bins)(emb, labels)
    (g_ours,) = torch.autograd.grad(v_ours, emb)
    torch.testing.assert_close(v_ours, v_ref, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- edge cases


def test_all_singletons_give_zero_loss_that_backpropagates():
    emb = torch.randn(5, 4, requires_grad=True)
    loss = FastAPLoss()
    value = loss(emb, torch.arange(5))
    assert value.item() == 0.0 and value.requires_grad
    (grad,) = torch.autograd.grad(value, emb)
    assert (grad == 0).all()
    assert loss.stats["queries_with_pos"] == 0.0
    assert (
        fast_ap_loss(
            torch.rand(3, 3), torch.zeros(3, 3, dtype=torch.bool), torch.ones(3, 3, dtype=torch.bool)
        )
        == 0
    )


def test_one_class_is_perfect_ranking():
    emb = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.zeros(6, dtype=torch.long)
    value = FastAPLoss()(emb, labels)
    assert value.item() == pytest.approx(0.0, abs=1e-12)
    assert value.item() == pytest.approx(pml_losses.FastAPLoss()(emb, labels).item(), abs=1e-12)


def test_duplicates_and_zero_vectors_against_naive_and_pml():
    emb = torch.randn(8, 4, dtype=torch.float64)
    emb[1] = emb[0]
    emb[2] = emb[0]
    emb[5] = 0.0  # zero vector: normalised to 0, at squared distance 1 from every unit vector
    labels = torch.tensor([0, 0, 1, 1, 0, 1, 2, 2])
    emb.requires_grad_(True)
    value = FastAPLoss(num_bins=7)(emb, labels)
    assert value.item() == pytest.approx(naive_fast_ap(emb.detach(), labels, 7), rel=1e-9)
    (grad,) = torch.autograd.grad(value, emb)
    assert torch.isfinite(grad).all()
    assert value.item() == pytest.approx(pml_losses.FastAPLoss(num_bins=7)(emb, labels).item(), rel=1e-6)


# ---------------------------------------------------------------- bad input


def test_bad_input_errors():
    loss = FastAPLoss()
    emb = torch.randn(6, 4)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    with pytest.raises(ValueError, match="labels has 5 entries but embeddings has 6 rows"):
        loss(emb, labels[:5])
    with pytest.raises(ValueError, match="NaN or inf"):
        loss(torch.full((6, 4), float("nan")), labels)
    bad = emb.clone()
    bad[0, 0] = float("-inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        loss(bad, labels)
    with pytest.raises(ValueError, match="ref_emb has dimension 3 but embeddings have 4"):
        loss(emb, labels, ref_emb=torch.randn(5, 3), ref_labels=torch.arange(5))
    with pytest.raises(ValueError, match="ref_labels has 4 entries but ref_emb has 5 rows"):
        loss(emb, labels, ref_emb=torch.randn(5, 4), ref_labels=torch.arange(4))
    with pytest.raises(TypeError, match="miner="):
        loss(emb, labels, (torch.tensor([0]), torch.tensor([3]), torch.tensor([1])))
    with pytest.raises(TypeError, match="integer class ids"):
        loss(emb, labels.float())
    for bad_bins in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match="num_bins must be a positive integer"):
            FastAPLoss(num_bins=bad_bins)


@pytest.mark.parametrize("kind", ["multi_label", "relevance"])
def test_mask_path_kernel_equals_the_plain_formula(kind):
    # masks (multi-label, relevance): the fused histogram on the default path, dense kernels plain
    g = torch.Generator().manual_seed(8)
    x = torch.randn(10, 4, generator=g, dtype=torch.float64, requires_grad=True)
    if kind == "multi_label":
        call = {"labels": (torch.rand(10, 3, generator=g) > 0.6).long()}
    else:
        call = {"labels": torch.arange(10) % 3, "relevance": torch.rand(10, 10, generator=g) > 0.7}
    results = []
    for fast in (True, False):
        loss_fn = FastAPLoss(num_bins=6, fast=fast)
        value = loss_fn(x, **call)
        (grad,) = torch.autograd.grad(value, x)
        results.append((value, grad, loss_fn.stats))
    (v_fast, g_fast, s_fast), (v_plain, g_plain, s_plain) = results
    torch.testing.assert_close(v_fast, v_plain, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(g_fast, g_plain, rtol=1e-10, atol=1e-13)
    assert s_fast == pytest.approx(s_plain, rel=1e-12)


def test_class_id_kernel_eligibility_boundaries():
    from likewise.losses._kernels.fast_ap import class_ids_eligible
    from likewise.losses.base import check_batch

    x, labels = torch.randn(6, 3), torch.tensor([0, 1, 2, 0, 1, 2])
    assert class_ids_eligible(check_batch(x, labels))
    assert not class_ids_eligible(check_batch(x, (torch.rand(6, 2) > 0.5).long()))  # multi-label
    assert not class_ids_eligible(check_batch(x, labels, relevance=torch.eye(6, dtype=torch.bool)))
    # another device (no data on "meta"): index lists of data-dependent length would wait for it
    meta = check_batch(x, labels)
    meta.embeddings = x.to("meta")
    assert not class_ids_eligible(meta)
