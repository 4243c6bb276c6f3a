import math

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses

from likewise.losses.arcface import ArcFaceLoss, arcface_loss, arcface_target_logit
from likewise.losses.base import masked_logsumexp
from likewise.losses.proxy_anchor import ProxyAnchorLoss, proxy_anchor_loss

# ---------------------------------------------------------------- naive references (plain loops)


def _cos(x, y):
    nx = math.sqrt(sum(v * v for v in x))
    ny = math.sqrt(sum(v * v for v in y))
    if nx == 0 or ny == 0:
        return 0.0
    return sum(a * b for a, b in zip(x, y)) / (nx * ny)


def naive_proxy_anchor(emb, labels, proxies, margin, alpha):
    emb, labels, proxies = emb.tolist(), labels.tolist(), proxies.tolist()
    num_classes = len(proxies)
    pos_total, neg_total, with_pos = 0.0, 0.0, 0
    for c in range(num_classes):
        pos_sum, neg_sum, has_pos = 0.0, 0.0, False
        for x, y in zip(emb, labels):
            s = _cos(x, proxies[c])
            if y == c:
                has_pos = True
                pos_sum += math.exp(-alpha * (s - margin))
            else:
                neg_sum += math.exp(alpha * (s + margin))
        if has_pos:
            with_pos += 1
            pos_total += math.log(1 + pos_sum)
        neg_total += math.log(1 + neg_sum)
    return pos_total / with_pos + neg_total / num_classes


def naive_arcface(emb, labels, weight, margin_deg, scale):
    m = math.radians(margin_deg)
    emb, labels = emb.tolist(), labels.tolist()
    columns = weight.T.tolist()
    total = 0.0
    for x, y in zip(emb, labels):
        logits = []
        for c, w in enumerate(columns):
            s = _cos(x, w)
            if c == y:
                theta = math.acos(max(-1.0, min(1.0, s)))
                s = math.cos(theta + m) if theta <= math.pi - m else s - m * math.sin(m)
            logits.append(scale * s)
        top = max(logits)
        lse = top + math.log(sum(math.exp(v - top) for v in logits))
        total += lse - logits[y]
    return total / len(labels)


# ---------------------------------------------------------------- Proxy-Anchor


@pytest.mark.parametrize("margin,alpha", [(0.1, 32.0), (0.3, 4.0)])
def test_proxy_anchor_matches_naive_loops(margin, alpha):
    emb = torch.randn(13, 5, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 3, 3, 3, 1, 0, 4, 4, 1, 3, 0])  # class 2 and 5 have no sample
    proxies = torch.randn(6, 5, dtype=torch.float64)
    got = proxy_anchor_loss(emb, labels, proxies, margin, alpha)
    assert got.item() == pytest.approx(naive_proxy_anchor(emb, labels, proxies, margin, alpha), rel=1e-10)


def test_proxy_anchor_module_uses_its_proxies():
    loss = ProxyAnchorLoss(4, 3, margin=0.2, alpha=8).double()
    emb = torch.randn(9, 3, dtype=torch.float64)
    labels = torch.randint(0, 4, (9,))
    expected = naive_proxy_anchor(emb, labels, loss.proxies.detach(), 0.2, 8.0)
    assert loss(emb, labels).item() == pytest.approx(expected, rel=1e-10)
    assert set(loss.stats) == {"pos_sim", "neg_sim", "proxies_with_pos"}
    assert loss.stats["proxies_with_pos"] == len(set(labels.tolist()))


def test_proxy_anchor_gradcheck_embeddings_and_proxies():
    emb = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    proxies = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 1, 1, 3, 0, 3, 3])
    assert torch.autograd.gradcheck(lambda e, p: proxy_anchor_loss(e, labels, p, 0.1, 4.0), (emb, proxies))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kwargs", [{}, {"margin": 0.25, "alpha": 10}])
def test_proxy_anchor_matches_pml_value_and_gradients(dtype, kwargs):
    num_classes, dim = 10, 16
    ref = pml_losses.ProxyAnchorLoss(num_classes, dim, **kwargs)
    ours = ProxyAnchorLoss(num_classes, dim, **kwargs)
    assert ours.proxies.shape == ref.proxies.shape
    ours.proxies.data.copy_(ref.proxies.data)
    ref, ours = ref.to(dtype), ours.to(dtype)
    emb = torch.randn(32, dim, dtype=dtype, requires_grad=True)
    labels = torch.randint(0, 7, (32,))
    v_ref = ref(emb, labels)
    g_ref = torch.autograd.grad(v_ref, [emb, ref.proxies])
    v_ours = ours(emb, labels)
    g_ours = torch.autograd.grad(v_ours, [emb, ours.proxies])
    torch.testing.assert_close(v_ours, v_ref, rtol=1e-4, atol=1e-6)
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_proxy_anchor_init_matches_pml_statistics():
    # Kaiming normal with fan_out on [C, D]: std sqrt(2 / C)
    loss = ProxyAnchorLoss(50, 4000)
    assert loss.proxies.std().item() == pytest.approx(math.sqrt(2 / 50), rel=0.02)


def test_proxy_anchor_edge_cases_against_naive():
    proxies = torch.randn(3, 4, dtype=torch.float64)
    cases = {
        "one class": (torch.randn(5, 4, dtype=torch.float64), torch.zeros(5, dtype=torch.long)),
        "singletons": (torch.randn(3, 4, dtype=torch.float64), torch.tensor([0, 1, 2])),
        "duplicates": (torch.ones(4, 4, dtype=torch.float64), torch.tensor([0, 0, 1, 1])),
        "zero vectors": (torch.zeros(4, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 0])),
    }
    for name, (emb, labels) in cases.items():
        emb.requires_grad_(True)
        value = proxy_anchor_loss(emb, labels, proxies)
        assert value.item() == pytest.approx(
            naive_proxy_anchor(emb, labels, proxies, 0.1, 32.0), rel=1e-10
        ), name
        (grad,) = torch.autograd.grad(value, emb)
        assert torch.isfinite(grad).all(), name


# ---------------------------------------------------------------- ArcFace


@pytest.mark.parametrize("margin,scale", [(28.6, 64.0), (10.0, 3.0), (80.0, 2.0)])
def test_arcface_matches_naive_loops(margin, scale):
    emb = torch.randn(11, 6, dtype=torch.float64)
    labels = torch.randint(0, 5, (11,))
    weight = torch.randn(6, 5, dtype=torch.float64)
    # two samples pointing away from their class vector take the "theta > pi - m" branch
    emb[0] = -weight[:, labels[0]] + 0.05 * torch.randn(6, dtype=torch.float64)
    emb[1] = -weight[:, labels[1]]
    got = arcface_loss(emb, labels, weight, margin, scale)
    assert got.item() == pytest.approx(naive_arcface(emb, labels, weight, margin, scale), rel=1e-9)


def test_arcface_gradcheck_embeddings_and_weights():
    emb = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 4, 1, 1, 3, 0])
    assert torch.autograd.gradcheck(lambda e, w: arcface_loss(e, labels, w, 28.6, 4.0), (emb, weight))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kwargs", [{}, {"margin": 15.0, "scale": 10}])
def test_arcface_matches_pml_value_and_gradients(dtype, kwargs):
    num_classes, dim = 9, 12
    ref = pml_losses.ArcFaceLoss(num_classes, dim, **kwargs)
    ours = ArcFaceLoss(num_classes, dim, **kwargs)
    assert ours.W.shape == ref.W.shape
    ours.W.data.copy_(ref.W.data)
    ref, ours = ref.to(dtype), ours.to(dtype)
    emb = torch.randn(24, dim, dtype=dtype, requires_grad=True)
    labels = torch.randint(0, num_classes, (24,))
    v_ref = ref(emb, labels)
    g_ref = torch.autograd.grad(v_ref, [emb, ref.W])
    v_ours = ours(emb, labels)
    g_ours = torch.autograd.grad(v_ours, [emb, ours.W])
    torch.testing.assert_close(v_ours, v_ref, rtol=1e-4, atol=1e-6)
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert set(ours.stats) == {"mean_angle", "accuracy"}


def test_arcface_gradient_finite_at_cos_plus_minus_one():
    loss = ArcFaceLoss(3, 4).double()
    labels = torch.tensor([0, 1, 2])
    w = loss.W.detach()
    # exactly parallel and exactly anti-parallel to the class vector (cos = +-1)
    emb = torch.stack([w[:, 0] * 2, -w[:, 1], w[:, 2]]).clone().requires_grad_(True)
    value = loss(emb, labels)
    grad_e, grad_w = torch.autograd.grad(value, [emb, loss.W])
    assert torch.isfinite(value) and torch.isfinite(grad_e).all() and torch.isfinite(grad_w).all()
    assert value.item() == pytest.approx(naive_arcface(emb.detach(), labels, w, 28.6, 64.0), rel=1e-6)


def test_arcface_edge_cases():
    loss = ArcFaceLoss(4, 3).double()
    for emb, labels in [
        (torch.randn(5, 3, dtype=torch.float64), torch.zeros(5, dtype=torch.long)),  # one class
        (torch.randn(4, 3, dtype=torch.float64), torch.tensor([2, 0, 3, 1])),  # all singletons
        (torch.ones(4, 3, dtype=torch.float64), torch.tensor([0, 0, 1, 1])),  # duplicates
        (torch.zeros(3, 3, dtype=torch.float64), torch.tensor([0, 1, 3])),  # zero vectors
    ]:
        emb.requires_grad_(True)
        value = loss(emb, labels)
        expected = naive_arcface(emb.detach(), labels, loss.W.detach(), 28.6, 64.0)
        assert value.item() == pytest.approx(expected, rel=1e-9)
        (grad,) = torch.autograd.grad(value, emb)
        assert torch.isfinite(grad).all()


# ---------------------------------------------------------------- shared helper


def test_masked_logsumexp_against_loops_and_empty_rows():
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(4, 5) > 0.5
    mask[2] = False
    out = masked_logsumexp(x, mask, dim=1)
    out_one = masked_logsumexp(x, mask, dim=1, add_one=True)
    for i in range(4):
        vals = [x[i, j].item() for j in range(5) if mask[i, j]]
        expected = math.log(sum(math.exp(v) for v in vals)) if vals else 0.0
        assert out[i].item() == pytest.approx(expected, abs=1e-12)
        assert out_one[i].item() == pytest.approx(math.log(1 + sum(math.exp(v) for v in vals)), abs=1e-12)
    (grad,) = torch.autograd.grad(out.sum() + out_one.sum(), x)
    assert torch.isfinite(grad).all() and (grad[~mask] == 0).all()


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("cls", [ProxyAnchorLoss, ArcFaceLoss])
def test_bad_input_errors(cls):
    loss = cls(5, 4)
    emb = torch.randn(6, 4)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\)"):
        loss(emb, torch.tensor([0, 1, 2, 3, 4, 5]))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\)"):
        loss(emb, torch.tensor([0, -1, 2, 3, 4, 0]))
    with pytest.raises(ValueError, match="embedding_size=4"):
        loss(torch.randn(6, 3), labels)
    with pytest.raises(ValueError, match="labels has 5 entries but embeddings has 6 rows"):
        loss(emb, labels[:5])
    with pytest.raises(ValueError, match="NaN or inf"):
        loss(torch.tensor(float("nan")).expand(6, 4).clone(), labels)
    bad = emb.clone()
    bad[2, 1] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        loss(bad, labels)
    with pytest.raises(ValueError, match=r"shape \[batch, dim\]"):
        loss(torch.randn(6), labels)
    with pytest.raises(TypeError, match="miner="):
        loss(emb, labels, (torch.tensor([0]), torch.tensor([1]), torch.tensor([2])))
    with pytest.raises(ValueError, match="ref_emb is not supported"):
        loss(emb, labels, ref_emb=torch.randn(3, 4), ref_labels=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="needs class ids"):
        loss(emb, torch.ones(6, 5, dtype=torch.long))
    with pytest.raises(TypeError, match="integer class ids"):
        loss(emb, labels.float())
    with pytest.raises(ValueError, match="labels are required"):
        loss(emb)
    with pytest.raises(ValueError, match="num_classes must be a positive integer"):
        cls(0, 4)


def test_pml_also_refuses_ref_emb():
    # we match pytorch-metric-learning: proxies are the references, ref_emb is an error
    with pytest.raises(ValueError, match="ref_emb is not supported"):
        pml_losses.ProxyAnchorLoss(3, 4)(
            torch.randn(5, 4), torch.randint(0, 3, (5,)), ref_emb=torch.randn(2, 4)
        )


def test_arcface_margin_must_be_an_angle():
    with pytest.raises(ValueError, match=r"degrees in \[0, 180\)"):
        ArcFaceLoss(3, 4, margin=200)


def test_proxy_anchor_bad_constructor_arguments():
    for bad in (0, -2.0):
        with pytest.raises(ValueError, match="alpha must be > 0, got"):
            ProxyAnchorLoss(3, 4, alpha=bad)
    for key in ("alpha", "margin"):
        for bad in (float("nan"), float("inf")):
            with pytest.raises(ValueError, match=f"{key} must be finite"):
                ProxyAnchorLoss(3, 4, **{key: bad})
        with pytest.raises(TypeError, match=f"{key} must be a number, got str"):
            ProxyAnchorLoss(3, 4, **{key: "1"})
    with pytest.raises(TypeError, match="num_classes must be a positive integer, got float 3.0"):
        ProxyAnchorLoss(3.0, 4)
    with pytest.raises(ValueError, match="embedding_size must be a positive integer, got 0"):
        ProxyAnchorLoss(3, 0)
    assert ProxyAnchorLoss(1, 4, margin=-0.1).margin == -0.1  # one class, a negative margin: allowed


def test_arcface_bad_constructor_arguments():
    for bad in (0, -64.0):
        with pytest.raises(ValueError, match="scale must be > 0, got"):
            ArcFaceLoss(3, 4, scale=bad)
    with pytest.raises(ValueError, match="scale must be finite"):
        ArcFaceLoss(3, 4, scale=float("inf"))
    with pytest.raises(ValueError, match="margin must be finite, got nan"):
        ArcFaceLoss(3, 4, margin=float("nan"))
    with pytest.raises(ValueError, match=r"margin is an angle in degrees in \[0, 180\), got -1.0"):
        ArcFaceLoss(3, 4, margin=-1)
    with pytest.raises(TypeError, match="margin must be a number, got NoneType"):
        ArcFaceLoss(3, 4, margin=None)
    with pytest.raises(ValueError, match="num_classes must be >= 2: .* got num_classes=1"):
        ArcFaceLoss(1, 4)
    with pytest.raises(ValueError, match="num_classes must be a positive integer, got -3"):
        ArcFaceLoss(-3, 4)
    with pytest.raises(ValueError, match="embedding_size must be a positive integer, got 0"):
        ArcFaceLoss(3, 0)
    with pytest.raises(TypeError, match="embedding_size must be a positive integer, got bool True"):
        ArcFaceLoss(3, True)
    loss = ArcFaceLoss(2, 1, margin=0, scale=1)  # the smallest valid sizes
    assert loss.W.shape == (1, 2) and loss.margin == 0.0


@pytest.mark.parametrize("margin_deg", [0.0, 28.6, 60.0, 120.0])
def test_arcface_margin_logit_and_slope_equal_the_acos_form_and_autograd(margin_deg):
    from likewise.losses._kernels.arcface import arcface_margin

    m = math.radians(margin_deg)
    eps = torch.finfo(torch.float64).eps
    cos = torch.cat(
        [
            torch.linspace(-1, 1, 401, dtype=torch.float64),
            torch.tensor([-math.cos(m) + 1e-9, -math.cos(m) - 1e-9, 1 - eps, -1 + eps], dtype=torch.float64),
        ]
    ).requires_grad_(True)
    # the definition: cos(theta + m) where theta + m <= pi, else cos(theta) - m sin(m), on the clamp
    clamped = cos.clamp(-1 + eps, 1 - eps)
    theta = torch.acos(clamped)
    reference = torch.where(theta + m <= math.pi, torch.cos(theta + m), torch.cos(theta) - m * math.sin(m))
    (slope_ref,) = torch.autograd.grad(reference.sum(), cos)
    logit, slope = arcface_margin(cos.detach(), m)
    torch.testing.assert_close(logit, reference.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(slope, slope_ref, rtol=1e-6, atol=1e-9)
    # the plain form (autograd through clamp, sqrt and where) gives the same value and slope
    plain = arcface_target_logit(cos, m)
    (slope_plain,) = torch.autograd.grad(plain.sum(), cos)
    torch.testing.assert_close(plain.detach(), reference.detach(), rtol=0, atol=1e-12)
    torch.testing.assert_close(slope_plain, slope_ref, rtol=1e-6, atol=1e-9)


def test_proxy_stats_are_those_of_the_last_call_against_loops():
    g = torch.Generator().manual_seed(11)
    pa = ProxyAnchorLoss(num_classes=5, embedding_size=4)
    arc = ArcFaceLoss(num_classes=5, embedding_size=4)
    calls = []
    for _ in range(2):  # stats are read after the second call: they must be the second call's
        emb = torch.randn(7, 4, generator=g, dtype=torch.float64, requires_grad=True)
        labels = torch.randint(0, 4, (7,), generator=g)  # class 4 never appears
        pa(emb, labels).backward()
        arc(emb, labels).backward()
        calls.append((emb.detach(), labels))
    emb, labels = calls[-1]
    cos_pa = [[_cos(e, p) for p in pa.proxies.detach().double().tolist()] for e in emb.tolist()]
    own = [cos_pa[i][int(labels[i])] for i in range(7)]
    other = [cos_pa[i][c] for i in range(7) for c in range(5) if c != int(labels[i])]
    assert pa.stats == pytest.approx(
        {
            "pos_sim": sum(own) / 7,
            "neg_sim": sum(other) / len(other),
            "proxies_with_pos": float(len(set(labels.tolist()))),
        },
        rel=1e-9,
    )
    w = arc.W.detach().double().T.tolist()
    cos_arc = [[_cos(e, wc) for wc in w] for e in emb.tolist()]
    angles = [math.degrees(math.acos(cos_arc[i][int(labels[i])])) for i in range(7)]
    correct = [cos_arc[i][int(labels[i])] >= max(cos_arc[i]) for i in range(7)]
    assert arc.stats == pytest.approx({"mean_angle": sum(angles) / 7, "accuracy": sum(correct) / 7}, rel=1e-9)
    assert arc.stats == arc.stats  # read twice: the same numbers


def test_losses_with_pending_statistics_pickle_and_copy():
    import copy
    import pickle

    g = torch.Generator().manual_seed(2)
    emb, labels = torch.randn(6, 4, generator=g), torch.tensor([0, 1, 2, 0, 1, 2])
    losses = (ArcFaceLoss(num_classes=3, embedding_size=4), ProxyAnchorLoss(num_classes=3, embedding_size=4))
    for loss in losses:
        loss(emb, labels)  # statistics pending (functions evaluated when read)
        restored = pickle.loads(pickle.dumps(loss))
        assert restored.stats == loss.stats
        assert copy.deepcopy(loss).stats == loss.stats
        assert set(loss.stats) and all(isinstance(v, float) for v in loss.stats.values())


@pytest.mark.parametrize("make", [lambda: ArcFaceLoss(4, 8), lambda: ProxyAnchorLoss(4, 8)])
def test_proxy_losses_backward_under_autocast(make):
    # under autocast the class GEMM runs in bfloat16; the gradients keep the inputs' dtypes
    g = torch.Generator().manual_seed(4)
    loss = make()
    net = torch.nn.Linear(6, 8)
    x, labels = torch.randn(10, 6, generator=g), torch.randint(0, 4, (10,), generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(net(x).float(), labels)
    value.backward()
    params = [*net.parameters(), *loss.parameters()]
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in params)
    assert all(torch.isfinite(p.grad).all() for p in params)


def test_statistics_survive_a_failing_statistic_and_old_pickles():
    from likewise.losses import NTXentLoss

    loss = NTXentLoss()

    def broken() -> float:
        raise RuntimeError("statistic failed")

    loss._record(fine=1.5, broken=broken)
    with pytest.raises(RuntimeError, match="statistic failed"):
        _ = loss.stats
    loss._pending_stats.pop("broken")
    assert loss.stats == {"fine": 1.5}  # the pending statistics were not lost
    # a loss pickled before the statistics became lazy kept them in the instance's "stats"
    state = {k: v for k, v in loss.__dict__.items() if k not in ("_stats", "_pending_stats")}
    state["stats"] = {"pos_pairs": 3.0}
    old = NTXentLoss.__new__(NTXentLoss)
    old.__setstate__(state)
    assert old.stats == {"pos_pairs": 3.0}


@pytest.mark.parametrize("cls", [ProxyAnchorLoss, ArcFaceLoss])
def test_plain_path_gives_the_kernel_statistics(cls):
    g = torch.Generator().manual_seed(6)
    emb = torch.randn(9, 4, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 2, 0, 2, 2, 1, 0])  # class 3 has no sample
    torch.manual_seed(0)
    fast = cls(num_classes=4, embedding_size=4).double()
    torch.manual_seed(0)
    plain = cls(num_classes=4, embedding_size=4, fast=False).double()
    fast(emb, labels), plain(emb, labels)
    assert plain.stats == pytest.approx(fast.stats, rel=1e-12)


@pytest.mark.parametrize("cls", [ProxyAnchorLoss, ArcFaceLoss])
def test_class_id_range_error_names_the_values(cls):
    with pytest.raises(ValueError, match=r"must lie in \[0, 3\) \(num_classes=3\); got values in \[-2, 7\]"):
        cls(3, 4)(torch.randn(3, 4), torch.tensor([0, -2, 7]))


def _value_and_grads(loss_fn, emb, labels):
    value = loss_fn(emb, labels)
    return (value, *torch.autograd.grad(value, [emb, *loss_fn.parameters()]))


@pytest.mark.parametrize("alpha", [4.0, 40.0, 40.5, 100.0])  # the kernel's shift changes at 2 alpha = 80
@pytest.mark.parametrize("case", ["random", "one class", "zero vectors", "duplicates"])
def test_proxy_anchor_kernel_equals_plain_formula(alpha, case):
    g = torch.Generator().manual_seed(12)
    emb = torch.randn(9, 4, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 1, 2, 0, 2, 2, 1, 0])
    if case == "one class":
        labels = torch.zeros(9, dtype=torch.long)
    elif case == "zero vectors":
        emb[[1, 4]] = 0.0
    elif case == "duplicates":
        emb[:] = emb[0]
    emb.requires_grad_(True)
    results = []
    for fast in (True, False):
        torch.manual_seed(0)
        loss_fn = ProxyAnchorLoss(4, 4, margin=0.2, alpha=alpha, fast=fast).double()
        results.append(_value_and_grads(loss_fn, emb, labels))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("margin,scale", [(28.6, 64.0), (80.0, 2.0), (0.0, 10.0)])
def test_arcface_kernel_equals_plain_formula_on_both_sides_of_the_margin_branch(margin, scale):
    g = torch.Generator().manual_seed(13)
    torch.manual_seed(0)
    w = ArcFaceLoss(5, 6).double().W.detach()
    emb = torch.randn(8, 6, generator=g, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    emb[0] = -w[:, 0] + 0.05 * torch.randn(6, generator=g, dtype=torch.float64)  # theta > pi - m
    emb[1] = 3 * w[:, 1]  # cos = 1 (to rounding): within the clamp
    emb[2] = 0.0  # a zero vector: cos = 0
    emb.requires_grad_(True)
    results = []
    for fast in (True, False):
        torch.manual_seed(0)
        loss_fn = ArcFaceLoss(5, 6, margin=margin, scale=scale, fast=fast).double()
        results.append(_value_and_grads(loss_fn, emb, labels))
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
