"""Two-view self-supervised losses against plain formulas written here, gradcheck, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from likewise.losses import (
    TWO_VIEW_LOSSES,
    BarlowTwinsLoss,
    DINOLoss,
    InfoNCELoss,
    NegativeCosineLoss,
    NTXentLoss,
    SwAVLoss,
    VICRegLoss,
    sinkhorn,
)
from likewise.losses.dino import dino_loss
from likewise.losses.swav import swapped_prediction


def _views(b=7, d=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, d, generator=g, dtype=dtype), torch.randn(b, d, generator=g, dtype=dtype)


def _np(t):
    return t.detach().double().numpy()


# ---------------------------------------------------------------- plain formulas, loops


def plain_negative_cosine(p, z):
    return -np.mean([p[i] @ z[i] / (np.linalg.norm(p[i]) * np.linalg.norm(z[i])) for i in range(len(p))])


def plain_barlow(za, zb, lam, eps=1e-5):
    b, d = za.shape
    a = (za - za.mean(0)) / np.sqrt(za.var(0) + eps)  # numpy var: 1/B
    bb = (zb - zb.mean(0)) / np.sqrt(zb.var(0) + eps)
    total = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(a[n, i] * bb[n, j] for n in range(b)) / b
            total += (1 - c) ** 2 if i == j else lam * c**2
    return total


def plain_vicreg(za, zb, lam=25.0, mu=25.0, nu=1.0, gamma=1.0, eps=1e-4):
    b, d = za.shape
    inv = np.mean((za - zb) ** 2)

    def var(z):
        return np.mean([max(0.0, gamma - math.sqrt(np.var(z[:, k], ddof=1) + eps)) for k in range(d)])

    def cov(z):
        c = np.cov(z, rowvar=False)  # 1/(B-1)
        return sum(c[i, j] ** 2 for i in range(d) for j in range(d) if i != j) / d

    # the variance terms averaged over the views (the authors' code), the covariances summed
    return lam * inv + mu * (var(za) + var(zb)) / 2 + nu * (cov(za) + cov(zb))


def plain_sinkhorn(s, eps=0.05, iters=3):
    q = np.exp(s / eps).T  # [K, B]
    k, b = q.shape
    q /= q.sum()
    for _ in range(iters):
        for r in range(k):
            q[r] /= q[r].sum() * k
        for c in range(b):
            q[:, c] /= q[:, c].sum() * b
    return (q * b).T


def plain_swav(sa, sb, t=0.1):
    qa, qb = plain_sinkhorn(sa.copy()), plain_sinkhorn(sb.copy())

    def log_softmax(x):
        x = x / t
        return x - np.log(np.exp(x).sum(1, keepdims=True))

    return -0.5 * np.mean((qb * log_softmax(sa)).sum(1) + (qa * log_softmax(sb)).sum(1))


def plain_dino(students, teachers, c, tt, ts, pairs):
    def softmax(x):
        e = np.exp(x - x.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    terms = []
    for v, t in enumerate(teachers):
        pt = softmax((t - c) / tt)
        for u, s in enumerate(students):
            if u == v and not pairs:
                continue
            terms.append(-np.mean((pt * np.log(softmax(s / ts))).sum(1)))
    return np.mean(terms)


# ---------------------------------------------------------------- values


def plain_info_nce(q, k, negatives, t):
    refs = np.concatenate([k, negatives]) if negatives is not None else k
    total = 0.0
    for i in range(len(q)):
        cos = [q[i] @ r / (np.linalg.norm(q[i]) * np.linalg.norm(r)) / t for r in refs]
        total += -cos[i] + math.log(sum(math.exp(c) for c in cos))
    return total / len(q)


@pytest.mark.parametrize("n_neg", [None, 0, 9])
def test_info_nce_matches_plain_formula_and_pml_style_ntxent(n_neg):
    q, k = _views(b=7, d=5, seed=3)
    neg = None if n_neg is None else _views(b=n_neg, d=5, seed=4)[0]
    got = InfoNCELoss(0.2)(q, k, neg)
    assert got.item() == pytest.approx(plain_info_nce(_np(q), _np(k), None if neg is None else _np(neg), 0.2))
    # MoCo's former call: NT-Xent with the keys as labelled references and the queue labelled -1
    labels = torch.arange(7)
    refs = k if neg is None else torch.cat([k, neg])
    ref_labels = labels if neg is None else torch.cat([labels, torch.full((n_neg,), -1)])
    qa, ka = q.clone().requires_grad_(True), k.clone().requires_grad_(True)
    qb, kb = q.clone().requires_grad_(True), k.clone().requires_grad_(True)
    InfoNCELoss(0.2)(qa, ka, neg).backward()
    ref_b = kb if neg is None else torch.cat([kb, neg])
    want = NTXentLoss(temperature=0.2)(qb, labels, ref_emb=ref_b, ref_labels=ref_labels)
    want.backward()
    assert got.item() == pytest.approx(want.item(), abs=1e-12)
    torch.testing.assert_close(qa.grad, qb.grad)
    torch.testing.assert_close(ka.grad, kb.grad)
    assert refs.shape[0] == ref_labels.shape[0]


def test_info_nce_bad_negatives_and_temperature():
    q, k = _views(b=4, d=3)
    with pytest.raises(ValueError, match=r"negatives must have 3 columns like the keys, got \(5, 2\)"):
        InfoNCELoss()(q, k, torch.randn(5, 2, dtype=torch.float64))
    with pytest.raises(TypeError, match="negatives must be a torch.Tensor"):
        InfoNCELoss()(q, k, [[1.0, 2.0, 3.0]])
    for bad in (0, -1.0, "0.1", True):
        with pytest.raises(ValueError, match="temperature must be a positive number"):
            InfoNCELoss(bad)


def test_negative_cosine_matches_plain_formula():
    p, z = _views()
    assert NegativeCosineLoss()(p, z).item() == pytest.approx(
        plain_negative_cosine(_np(p), _np(z)), abs=1e-12
    )
    assert NegativeCosineLoss()(p, p).item() == pytest.approx(-1.0)


@pytest.mark.parametrize("lam", [5.1e-3, 0.2])
def test_barlow_twins_matches_plain_formula(lam):
    za, zb = _views(b=6, d=4)
    got = BarlowTwinsLoss(lambda_=lam)(za, zb).item()
    assert got == pytest.approx(plain_barlow(_np(za), _np(zb), lam), rel=1e-10)


def test_vicreg_matches_plain_formula():
    za, zb = _views(b=9, d=6)
    za = za * 0.5  # some dimensions below gamma = 1: the hinge is active
    assert VICRegLoss()(za, zb).item() == pytest.approx(plain_vicreg(_np(za), _np(zb)), rel=1e-10)
    got = VICRegLoss(lambda_=1.0, mu=2.0, nu=3.0, gamma=0.7)(za, zb).item()
    assert got == pytest.approx(plain_vicreg(_np(za), _np(zb), 1.0, 2.0, 3.0, 0.7), rel=1e-10)


def test_sinkhorn_matches_plain_loop_and_partitions_equally():
    g = torch.Generator().manual_seed(1)
    s = torch.nn.functional.normalize(torch.randn(12, 4, generator=g, dtype=torch.float64), dim=1)
    q = sinkhorn(s, 0.05, 3)
    np.testing.assert_allclose(q.numpy(), plain_sinkhorn(s.numpy()), rtol=1e-10)
    np.testing.assert_allclose(q.sum(1).numpy(), 1.0, rtol=1e-10)  # a distribution per sample
    many = sinkhorn(s, 0.05, 200)  # converged: every prototype gets B / K samples
    np.testing.assert_allclose(many.sum(0).numpy(), 12 / 4, rtol=1e-6)


def test_swav_matches_plain_formula_and_queue_joins_sinkhorn():
    sa, sb = (torch.nn.functional.normalize(v, dim=1) for v in _views(b=8, d=5))
    assert SwAVLoss()(sa, sb).item() == pytest.approx(plain_swav(_np(sa), _np(sb)), rel=1e-10)
    qa, qb = (torch.nn.functional.normalize(v, dim=1) for v in _views(b=6, d=5, seed=3))
    with_queue = SwAVLoss()(sa, sb, qa, qb).item()
    codes_a = plain_sinkhorn(np.concatenate([_np(sa), _np(qa)]))[:8]
    codes_b = plain_sinkhorn(np.concatenate([_np(sb), _np(qb)]))[:8]
    expected = swapped_prediction(sa, sb, torch.from_numpy(codes_a), torch.from_numpy(codes_b), 0.1)
    assert with_queue == pytest.approx(expected.item(), rel=1e-10)
    assert with_queue != pytest.approx(SwAVLoss()(sa, sb).item(), rel=1e-6)


def test_dino_matches_plain_formula_and_moves_its_centre():
    s1, s2 = _views(b=5, d=6)
    t1, t2 = _views(b=5, d=6, seed=4)
    loss = DINOLoss(6, teacher_temp=0.05, student_temp=0.1, center_momentum=0.8).double()
    loss.center.copy_(torch.linspace(-0.2, 0.3, 6, dtype=torch.float64))
    c0 = loss.center.clone().numpy()
    got = loss([s1, s2, s1 * 0.5], [t1, t2]).item()  # multi-crop pairing: same-view pairs skipped
    want = plain_dino([_np(s1), _np(s2), _np(s1) * 0.5], [_np(t1), _np(t2)], c0, 0.05, 0.1, pairs=False)
    assert got == pytest.approx(want, rel=1e-10)
    expected_centre = 0.8 * c0 + 0.2 * np.concatenate([_np(t1), _np(t2)]).mean(0)
    np.testing.assert_allclose(loss.center.numpy(), expected_centre, rtol=1e-12)
    one_pair = loss(s1, t2, update_center=False).item()
    want = plain_dino([_np(s1)], [_np(t2)], loss.center.numpy(), 0.05, 0.1, pairs=True)
    assert one_pair == pytest.approx(want, rel=1e-10)
    loss.eval()
    before = loss.center.clone()
    loss(s1, t1)
    assert torch.equal(before, loss.center)  # no update outside training
    assert "center" in loss.state_dict()


def test_every_two_view_loss_accepts_fast_as_a_no_op():
    za, zb = _views(b=6, d=4)
    for name, cls in TWO_VIEW_LOSSES.items():
        args = (4,) if cls is DINOLoss else ()
        plain = cls(*args, fast=False)(za, zb, **({"update_center": False} if cls is DINOLoss else {}))
        fast = cls(*args, fast=True)(za, zb, **({"update_center": False} if cls is DINOLoss else {}))
        assert torch.equal(plain, fast), name
    assert set(TWO_VIEW_LOSSES) == {
        "InfoNCELoss",
        "NegativeCosineLoss",
        "BarlowTwinsLoss",
        "VICRegLoss",
        "SwAVLoss",
        "DINOLoss",
    }


# ---------------------------------------------------------------- gradients


_CODES = [torch.softmax(v * 3, 1) for v in _views(b=6, d=5, seed=9)]
_QUEUE = _views(b=9, d=5, seed=11)[0]


@pytest.mark.parametrize(
    "fn",
    [
        InfoNCELoss(temperature=0.3),
        lambda a, b: InfoNCELoss(0.5)(a, b, _QUEUE),  # the queue is a constant (MoCo's past keys)
        NegativeCosineLoss(),
        BarlowTwinsLoss(lambda_=0.1),
        VICRegLoss(),
        lambda a, b: swapped_prediction(a, b, _CODES[0], _CODES[1], 0.1),  # codes are constants
        lambda a, b: dino_loss([a, b], [b * 0.7, a], torch.full((5,), 0.1, dtype=torch.float64), 0.05, 0.1),
    ],
    ids=["info_nce", "info_nce_queue", "negative_cosine", "barlow_twins", "vicreg", "swav", "dino"],
)
def test_gradcheck_float64(fn):
    za, zb = _views(b=6, d=5, seed=2)
    za.requires_grad_(True)
    zb.requires_grad_(True)
    assert torch.autograd.gradcheck(fn, (za, zb))


def test_swav_gradient_reaches_both_views_but_not_through_the_codes():
    sa, sb = (torch.nn.functional.normalize(v, dim=1).requires_grad_(True) for v in _views(b=8, d=5))
    SwAVLoss()(sa, sb).backward()
    qa, qb = sinkhorn(sa, 0.05, 3), sinkhorn(sb, 0.05, 3)
    ra, rb = sa.detach().clone().requires_grad_(True), sb.detach().clone().requires_grad_(True)
    swapped_prediction(ra, rb, qa, qb, 0.1).backward()
    torch.testing.assert_close(sa.grad, ra.grad)
    torch.testing.assert_close(sb.grad, rb.grad)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", sorted(TWO_VIEW_LOSSES))
def test_bad_input(name):
    cls = TWO_VIEW_LOSSES[name]
    loss = cls(4) if cls is DINOLoss else cls()
    za, zb = _views(b=6, d=4, dtype=torch.float32)
    with pytest.raises(TypeError, match="z_a must be a torch.Tensor|student\\[0\\] must be a torch.Tensor"):
        loss(za.numpy(), zb)
    with pytest.raises(ValueError, match="must have shape \\[batch, dim\\]"):
        loss(za[0], zb[0])
    with pytest.raises(TypeError, match="must be floating point"):
        loss(za.long(), zb.long())
    with pytest.raises(TypeError, match="fast must be a bool, got str"):
        cls(4, fast="yes") if cls is DINOLoss else cls(fast="yes")
    if cls is not DINOLoss:
        with pytest.raises(ValueError, match="z_a and z_b must have one shape"):
            loss(za, zb[:5])
        with pytest.raises(TypeError, match="z_a and z_b must have one dtype"):
            loss(za, zb.double())
    else:
        with pytest.raises(ValueError, match="every student and teacher view must have one shape"):
            loss(za, zb[:5])
        with pytest.raises(ValueError, match="outputs have 3 dimensions, out_dim=4"):
            loss(za[:, :3], zb[:, :3])


def test_batch_statistics_losses_need_two_rows():
    one = torch.randn(1, 4)
    for cls in (BarlowTwinsLoss, VICRegLoss):
        with pytest.raises(ValueError, match="z_a needs at least 2 row"):
            cls()(one, one)


def test_bad_hyper_parameters():
    with pytest.raises(ValueError, match="sinkhorn_iterations must be a positive integer"):
        SwAVLoss(sinkhorn_iterations=0)
    with pytest.raises(ValueError, match="out_dim must be a positive integer"):
        DINOLoss(0)
    with pytest.raises(ValueError, match="need lambda_, mu, nu >= 0"):
        VICRegLoss(mu=-1)
    with pytest.raises(ValueError, match="queue has 3 prototypes' scores, the views 4"):
        SwAVLoss()(torch.randn(5, 4), torch.randn(5, 4), torch.randn(2, 3), torch.randn(2, 3))


def test_no_host_synchronisation_in_forward_or_backward(monkeypatch):
    """Trap the Tensor methods that copy a value to the host; every two-view loss must not call them."""
    calls = []
    for name in ("item", "__float__", "__int__", "__bool__", "tolist", "numpy"):
        original = getattr(torch.Tensor, name)

        def trapped(self, *args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, trapped)
    za, zb = (v.requires_grad_(True) for v in _views(b=6, d=4))
    queue = _views(b=5, d=4, seed=7)[0]
    for name, cls in sorted(TWO_VIEW_LOSSES.items()):
        loss = cls(4) if cls is DINOLoss else cls()
        value = loss(za, zb, queue, queue) if cls is SwAVLoss else loss(za, zb)
        value.backward()
        assert calls == [], (name, calls)
