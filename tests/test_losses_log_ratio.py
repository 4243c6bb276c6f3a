import math

import pytest
import torch

from likewise.losses.log_ratio import LogRatioLoss, label_log_distance, log_ratio_loss

EPS = 1e-6

# ---------------------------------------------------------------- naive reference (triple loop)


def _sqdist(x, y):
    return sum((a - b) ** 2 for a, b in zip(x, y))


def naive_log_ratio(emb, label_dist, ref_emb=None, self_index=None, eps=EPS):
    """Mean over anchors a and unordered candidate pairs {i, j} of the squared log-ratio gap."""
    same = ref_emb is None
    queries = emb.tolist()
    refs = queries if same else ref_emb.tolist()
    ld = label_dist.tolist()
    total, count = 0.0, 0
    for a, fa in enumerate(queries):
        candidates = [
            i
            for i in range(len(refs))
            if not (same and i == a) and not (self_index is not None and i == self_index[a])
        ]
        for x in range(len(candidates)):
            for y in range(x + 1, len(candidates)):
                i, j = candidates[x], candidates[y]
                emb_ratio = math.log(_sqdist(fa, refs[i]) + eps) - math.log(_sqdist(fa, refs[j]) + eps)
                label_ratio = math.log(ld[a][i] + eps) - math.log(ld[a][j] + eps)
                total += (emb_ratio - label_ratio) ** 2
                count += 1
    return total / count if count else 0.0


def label_sqdist(y, y_ref=None):
    y = y.tolist()
    y_ref = y if y_ref is None else y_ref.tolist()
    as_vec = [v if isinstance(v, list) else [v] for v in y]
    ref_vec = [v if isinstance(v, list) else [v] for v in y_ref]
    return torch.tensor([[_sqdist(p, q) for q in ref_vec] for p in as_vec], dtype=torch.float64)


# ---------------------------------------------------------------- values


@pytest.mark.parametrize("width", [1, 3, 12])  # 12 > DIRECT_LABEL_COLUMNS: the float64 GEMM form
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_label_log_distance_matches_a_loop(width, dtype):
    g = torch.Generator().manual_seed(width)
    y = torch.randn(7, width, generator=g, dtype=dtype)
    y_ref = torch.randn(5, width, generator=g, dtype=dtype)
    y_ref[0] = y[2] + 1e-4  # a close pair: its small distance must survive
    got = label_log_distance(y, y_ref, EPS, dtype)
    expected = (label_sqdist(y.double(), y_ref.double()) + EPS).log().to(dtype)
    assert got.dtype == dtype
    # the wide (GEMM) form loses ~1e-10 relative at the close pair: cancellation, bounded by float64
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-9, "atol": 1e-12}
    torch.testing.assert_close(got, expected, **tol)


def test_label_vectors_match_triple_loop():
    emb = torch.randn(9, 4, dtype=torch.float64)
    labels = torch.rand(9, 3, dtype=torch.float64)
    loss = LogRatioLoss()
    got = loss(emb, labels)
    assert got.item() == pytest.approx(naive_log_ratio(emb, label_sqdist(labels)), rel=1e-10)
    assert loss.stats["triples"] == 9 * (8 * 7 / 2)
    assert loss.stats["loss"] == pytest.approx(got.item())


def test_scalar_labels_are_one_column_vectors():
    emb = torch.randn(7, 3, dtype=torch.float64)
    ages = torch.tensor([21.0, 35.0, 35.0, 60.0, 18.5, 42.0, 27.0], dtype=torch.float64)
    got = LogRatioLoss()(emb, ages)
    assert got.item() == pytest.approx(naive_log_ratio(emb, label_sqdist(ages)), rel=1e-10)
    # integer-valued continuous labels are accepted as numbers
    assert LogRatioLoss()(emb, ages.round().long()).item() == pytest.approx(
        naive_log_ratio(emb, label_sqdist(ages.round())), rel=1e-10
    )


def test_label_distance_matrix_matches_triple_loop():
    emb = torch.randn(8, 5, dtype=torch.float64)
    ld = torch.rand(8, 8, dtype=torch.float64) * 3
    got = LogRatioLoss()(emb, label_dist=ld)
    assert got.item() == pytest.approx(naive_log_ratio(emb, ld), rel=1e-10)
    labels = torch.randn(8, 2, dtype=torch.float64)
    same = LogRatioLoss()(emb, label_dist=label_sqdist(labels))
    assert same.item() == pytest.approx(LogRatioLoss()(emb, labels).item(), rel=1e-12)


def test_ref_emb_with_and_without_self_index_match_triple_loop():
    emb = torch.randn(5, 3, dtype=torch.float64)
    refs = torch.randn(7, 3, dtype=torch.float64)
    labels, ref_labels = torch.rand(5, 2, dtype=torch.float64), torch.rand(7, 2, dtype=torch.float64)
    ld = label_sqdist(labels, ref_labels)
    got = LogRatioLoss()(emb, labels, ref_emb=refs, ref_labels=ref_labels)
    assert got.item() == pytest.approx(naive_log_ratio(emb, ld, refs), rel=1e-10)
    self_index = torch.tensor([0, -1, 6, 3, 2])
    got = LogRatioLoss()(emb, label_dist=ld, ref_emb=refs, ref_self_index=self_index)
    expected = naive_log_ratio(emb, ld, refs, self_index=self_index.tolist())
    assert got.item() == pytest.approx(expected, rel=1e-10)


def test_embedding_that_copies_the_labels_has_zero_loss_and_scale_does_not_matter():
    labels = torch.randn(10, 4, dtype=torch.float64)
    assert LogRatioLoss()(labels.clone(), labels).item() == pytest.approx(0.0, abs=1e-20)
    emb = torch.randn(10, 6, dtype=torch.float64)
    base = LogRatioLoss(eps=1e-12)(emb, labels).item()
    assert LogRatioLoss(eps=1e-12)(7.0 * emb, labels).item() == pytest.approx(base, rel=1e-6)
    assert base > 0.1


def test_functional_form_centred_sum_is_stable_for_large_offsets():
    # a constant offset in u (all embedding distances scaled) must not change the loss
    emb_dist = torch.rand(6, 6, dtype=torch.float32) + 0.5
    label_dist = torch.rand(6, 6, dtype=torch.float32) + 0.5
    valid = ~torch.eye(6, dtype=torch.bool)
    base = log_ratio_loss(emb_dist, label_dist, valid, eps=0.0)
    shifted = log_ratio_loss(emb_dist * 1e30, label_dist, valid, eps=0.0)
    # (the uncentred n sum u^2 - (sum u)^2 is off by ~1e-3 relative here in float32)
    torch.testing.assert_close(shifted, base, rtol=2e-5, atol=0.0)


# ---------------------------------------------------------------- gradients


def test_gradcheck_embeddings_and_refs():
    emb = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.rand(6, 2, dtype=torch.float64)
    loss = LogRatioLoss()
    assert torch.autograd.gradcheck(lambda e: loss(e, labels), (emb,))
    refs = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    ref_labels = torch.rand(5, 2, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda e, r: loss(e, labels, ref_emb=r, ref_labels=ref_labels), (emb, refs)
    )


# ---------------------------------------------------------------- edge cases


def test_too_few_samples_give_zero_loss_that_backpropagates():
    emb = torch.randn(2, 3, requires_grad=True)
    loss = LogRatioLoss()
    value = loss(emb, torch.rand(2, 2))
    assert value.item() == 0.0 and value.requires_grad
    (grad,) = torch.autograd.grad(value, emb)
    assert (grad == 0).all()
    assert loss.stats["triples"] == 0


def test_duplicate_embeddings_and_duplicate_labels_stay_finite():
    emb = torch.randn(6, 3, dtype=torch.float64)
    emb[1] = emb[0]
    emb[3] = 0.0
    labels = torch.rand(6, 2, dtype=torch.float64)
    labels[4] = labels[2]
    emb.requires_grad_(True)
    value = LogRatioLoss()(emb, labels)
    assert value.item() == pytest.approx(naive_log_ratio(emb.detach(), label_sqdist(labels)), rel=1e-9)
    (grad,) = torch.autograd.grad(value, emb)
    assert torch.isfinite(grad).all()


# ---------------------------------------------------------------- bad input


def test_bad_input_errors():
    loss = LogRatioLoss()
    emb = torch.randn(5, 3)
    labels = torch.rand(5, 2)
    with pytest.raises(ValueError, match="exactly one of labels"):
        loss(emb)
    with pytest.raises(ValueError, match="exactly one of labels"):
        loss(emb, labels, label_dist=torch.rand(5, 5))
    with pytest.raises(ValueError, match="labels has 4 entries but embeddings has 5 rows"):
        loss(emb, labels[:4])
    with pytest.raises(ValueError, match="labels contain NaN or inf"):
        loss(emb, torch.tensor([[0.0, float("nan")]] * 5))
    with pytest.raises(ValueError, match="embeddings contain NaN or inf"):
        loss(torch.full((5, 3), float("inf")), labels)
    with pytest.raises(ValueError, match=r"label vectors \[B, L\]"):
        loss(emb, torch.rand(5, 2, 2))
    with pytest.raises(TypeError, match="real-valued"):
        loss(emb, torch.ones(5, 2, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"label_dist must have shape \(5, 5\)"):
        loss(emb, label_dist=torch.rand(5, 4))
    with pytest.raises(ValueError, match="finite and non-negative"):
        loss(emb, label_dist=-torch.rand(5, 5))
    with pytest.raises(ValueError, match="ref_emb needs ref_labels"):
        loss(emb, labels, ref_emb=torch.randn(4, 3))
    with pytest.raises(ValueError, match="ref_emb has dimension 2 but embeddings have 3"):
        loss(emb, labels, ref_emb=torch.randn(4, 2), ref_labels=torch.rand(4, 2))
    with pytest.raises(ValueError, match="labels have 2 columns but ref_labels have 3"):
        loss(emb, labels, ref_emb=torch.randn(4, 3), ref_labels=torch.rand(4, 3))
    with pytest.raises(ValueError, match=r"ref_self_index must have shape \(5,\)"):
        loss(
            emb,
            labels,
            ref_emb=torch.randn(4, 3),
            ref_labels=torch.rand(4, 2),
            ref_self_index=torch.arange(5),
        )
    with pytest.raises(TypeError, match="miner="):
        loss(emb, labels, (torch.tensor([0]), torch.tensor([1]), torch.tensor([2])))
    with pytest.raises(ValueError, match="eps must be positive"):
        LogRatioLoss(eps=0.0)


def test_statistics_do_not_follow_in_place_changes_of_the_returned_loss():
    g = torch.Generator().manual_seed(1)
    emb, y = torch.randn(6, 3, generator=g), torch.randn(6, 1, generator=g)
    loss_fn = LogRatioLoss()
    out = loss_fn(emb, y)
    value = out.item()
    out *= 0.5  # e.g. a weight applied in place by the caller
    assert loss_fn.stats["loss"] == pytest.approx(value, rel=1e-7)


def test_kernel_equals_the_plain_formula_with_label_dist_and_self_index():
    g = torch.Generator().manual_seed(9)
    emb = torch.randn(5, 3, generator=g, dtype=torch.float64, requires_grad=True)
    refs = torch.randn(7, 3, generator=g, dtype=torch.float64, requires_grad=True)
    ld = torch.rand(5, 7, generator=g, dtype=torch.float64)
    call = {"label_dist": ld, "ref_emb": refs, "ref_self_index": torch.tensor([0, -1, 6, 3, 2])}
    results = []
    for fast in (True, False):
        loss_fn = LogRatioLoss(fast=fast)
        value = loss_fn(emb, **call)
        results.append((value, *torch.autograd.grad(value, (emb, refs)), loss_fn.stats))
    for a, b in zip(results[0][:3], results[1][:3]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)
    assert results[0][3] == pytest.approx(results[1][3], rel=1e-12)


def test_bad_ref_self_index_entries_and_label_distances():
    loss = LogRatioLoss()
    emb, refs = torch.randn(3, 2), torch.randn(4, 2)
    for fast in (True, False):
        loss = LogRatioLoss(fast=fast)
        with pytest.raises(
            ValueError, match=r"ref_self_index must have shape \(3,\) with entries in \[-1, 3\]"
        ):
            loss(emb, label_dist=torch.rand(3, 4), ref_emb=refs, ref_self_index=torch.tensor([0, 4, -1]))
        for bad in (float("nan"), float("inf"), -1.0):
            ld = torch.rand(3, 4)
            ld[1, 2] = bad
            with pytest.raises(ValueError, match="label_dist must be finite and non-negative"):
                loss(emb, label_dist=ld, ref_emb=refs)


def test_kernel_eligibility_boundaries():
    from likewise.losses._kernels.log_ratio import eligible

    x, index = torch.randn(4, 2), torch.tensor([0, -1, 2, 1])
    assert eligible(x, None) and eligible(x, index)
    # off the CPU the self pairs of ref_self_index (a nonzero) would wait for the device
    assert eligible(x.to("meta"), None) and not eligible(x.to("meta"), index)
