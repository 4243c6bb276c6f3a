import math

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses

from likewise.losses import CircleLoss, circle_loss
from likewise.mined import PairMask, Triplets
from likewise.similarity import pairwise_similarity

# ---------------------------------------------------------------- naive reference (plain loops)


def _cos(x, y):
    nx = math.sqrt(sum(v * v for v in x))
    ny = math.sqrt(sum(v * v for v in y))
    if nx == 0 or ny == 0:
        return 0.0
    return sum(a * b for a, b in zip(x, y)) / (nx * ny)


def _lse(values):
    top = max(values)
    return top + math.log(sum(math.exp(v - top) for v in values))


def naive_circle(emb, labels, m, gamma, ref_emb=None, ref_labels=None, pair_filter=None):
    same = ref_emb is None
    queries, q_lab = emb.tolist(), labels.tolist()
    refs = queries if same else ref_emb.tolist()
    r_lab = q_lab if same else ref_labels.tolist()
    row_losses = []
    for i, q in enumerate(queries):
        pos_logits, neg_logits = [], []
        for j, r in enumerate(refs):
            if same and i == j:
                continue
            if pair_filter is not None and not pair_filter(i, j):
                continue
            s = _cos(q, r)
            if q_lab[i] == r_lab[j]:
                pos_logits.append(-gamma * max(0.0, 1 + m - s) * (s - (1 - m)))
            else:
                neg_logits.append(gamma * max(0.0, s + m) * (s - m))
        if pos_logits and neg_logits:
            z = _lse(pos_logits) + _lse(neg_logits)
            row_losses.append(math.log1p(math.exp(z)) if z < 30 else z + math.log1p(math.exp(-z)))
    row_losses = [v for v in row_losses if v > 0]
    return sum(row_losses) / len(row_losses) if row_losses else 0.0


def naive_circle_autograd(emb, labels, m, gamma, ref_emb=None, ref_labels=None):
    """The same loops on torch scalars, so autograd gives an independent gradient.

    As in the paper, the weights alpha_p = [1 + m - s]_+ and alpha_n = [s + m]_+ are
    constants of the gradient (detached); the similarity ``s`` itself is not."""
    same = ref_emb is None
    refs = emb if same else ref_emb
    r_lab = labels if same else ref_labels
    rows = []
    for i in range(emb.shape[0]):
        pos_logits, neg_logits = [], []
        for j in range(refs.shape[0]):
            if same and i == j:
                continue
            s = (emb[i] * refs[j]).sum() / (emb[i].norm() * refs[j].norm())
            if int(labels[i]) == int(r_lab[j]):
                alpha = torch.clamp(1 + m - s.detach(), min=0)
                pos_logits.append(-gamma * alpha * (s - (1 - m)))
            else:
                alpha = torch.clamp(s.detach() + m, min=0)
                neg_logits.append(gamma * alpha * (s - m))
        if pos_logits and neg_logits:
            z = torch.logsumexp(torch.stack(pos_logits), 0) + torch.logsumexp(torch.stack(neg_logits), 0)
            rows.append(torch.nn.functional.softplus(z))
    rows = [r for r in rows if r.item() > 0]
    return sum(rows) / len(rows)


class FixedMiner:
    """A stand-in miner that returns what it was given."""

    def __init__(self, mined):
        self.mined = mined

    def __call__(self, embeddings, labels, **kwargs):
        return self.mined


# ---------------------------------------------------------------- value and gradients


@pytest.mark.parametrize("m,gamma", [(0.4, 80.0), (0.25, 10.0), (0.1, 1.0)])
def test_circle_matches_naive_loops(m, gamma):
    emb = torch.randn(15, 4, dtype=torch.float64)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 0, 2, 4, 1, 0, 3, 5])
    loss = CircleLoss(m=m, gamma=gamma)
    assert loss(emb, labels).item() == pytest.approx(naive_circle(emb, labels, m, gamma), rel=1e-10)
    assert set(loss.stats) == {"active_rows", "pos_sim", "neg_sim"}
    assert loss.stats["active_rows"] == pytest.approx(13 / 15)


def test_circle_with_ref_emb_matches_naive_loops():
    emb = torch.randn(6, 5, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, 7])
    refs = torch.randn(11, 5, dtype=torch.float64)
    ref_labels = torch.tensor([0, 0, 1, 2, 2, 2, 1, 3, 0, 4, 4])
    got = CircleLoss(m=0.3, gamma=16)(emb, labels, ref_emb=refs, ref_labels=ref_labels)
    assert got.item() == pytest.approx(naive_circle(emb, labels, 0.3, 16, refs, ref_labels), rel=1e-10)


def test_circle_gradcheck_with_weights_held_constant():
    # The paper's alpha_p, alpha_n are constants in the gradient (detached), so the checked
    # function takes them from a fixed copy of the similarities at the evaluation point.
    emb = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    refs = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    ref_labels = torch.tensor([0, 1, 2, 0, 1, 3])
    pos = labels[:, None] == ref_labels[None]
    fixed = pairwise_similarity(emb, refs).detach()

    def f(e, r):
        return circle_loss(pairwise_similarity(e, r), pos, ~pos, 0.25, 4.0, weight_sim=fixed)

    assert torch.autograd.gradcheck(f, (emb, refs))


@pytest.mark.parametrize("m,gamma", [(0.4, 80.0), (0.25, 10.0), (0.0, 2.0)])
@pytest.mark.parametrize("with_ref", [False, True])
def test_circle_gradient_matches_autograd_through_the_loops(m, gamma, with_ref):
    gen = torch.Generator().manual_seed(3)
    emb = torch.randn(9, 4, dtype=torch.float64, generator=gen)
    labels = torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 0])
    refs = torch.randn(7, 4, dtype=torch.float64, generator=gen) if with_ref else None
    ref_labels = torch.tensor([0, 1, 2, 3, 1, 0, 4]) if with_ref else None

    def value_and_grads(fn):
        e = emb.clone().requires_grad_(True)
        r = None if refs is None else refs.clone().requires_grad_(True)
        value = fn(e, r)
        return value, torch.autograd.grad(value, [e] if r is None else [e, r])

    loss = CircleLoss(m=m, gamma=gamma)
    ours, g_ours = value_and_grads(
        lambda e, r: loss(e, labels) if r is None else loss(e, labels, ref_emb=r, ref_labels=ref_labels)
    )
    ref, g_ref = value_and_grads(lambda e, r: naive_circle_autograd(e, labels, m, gamma, r, ref_labels))
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-12)
    for a, b in zip(g_ours, g_ref):
        assert b.abs().sum() > 0
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kwargs", [{}, {"m": 0.25, "gamma": 256}])
def test_circle_matches_pml_value_and_gradient(dtype, kwargs):
    emb = torch.randn(48, 16, dtype=dtype, requires_grad=True)
    labels = torch.randint(0, 8, (48,))
    v_ref = pml_losses.CircleLoss(**kwargs)(emb, labels)
    (g_ref,) = torch.autograd.grad(v_ref, emb)
    v_ours = CircleLoss(**kwargs)(emb, labels)
    (g_ours,) = torch.autograd.grad(v_ours, emb)
    torch.testing.assert_close(v_ours, v_ref, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_circle_matches_pml_with_ref_emb(dtype):
    emb = torch.randn(20, 8, dtype=dtype, requires_grad=True)
    refs = torch.randn(33, 8, dtype=dtype, requires_grad=True)
    labels, ref_labels = torch.randint(0, 5, (20,)), torch.randint(0, 5, (33,))
    v_ref = pml_losses.CircleLoss()(emb, labels, ref_emb=refs, ref_labels=ref_labels)
    g_ref = torch.autograd.grad(v_ref, [emb, refs])
    v_ours = CircleLoss()(emb, labels, ref_emb=refs, ref_labels=ref_labels)
    g_ours = torch.autograd.grad(v_ours, [emb, refs])
    torch.testing.assert_close(v_ours, v_ref, rtol=1e-4, atol=1e-6)
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_circle_honours_a_pair_miner_like_pml_indices_tuple():
    emb = torch.randn(16, 6, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 3, (16,))
    pos = (labels[:, None] == labels[None]) & ~torch.eye(16, dtype=torch.bool)
    neg = labels[:, None] != labels[None]
    keep = torch.rand(16, 16) > 0.6
    mined = PairMask(pos & keep, neg & keep)
    ours = CircleLoss(miner=FixedMiner(mined))(emb, labels)
    expected = naive_circle(emb.detach(), labels, 0.4, 80, pair_filter=lambda i, j: bool(keep[i, j]))
    assert ours.item() == pytest.approx(expected, rel=1e-10)
    a1, p = torch.where(mined.pos)
    a2, n = torch.where(mined.neg)
    ref = pml_losses.CircleLoss()(emb, labels, (a1, p, a2, n))
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-8)
    g_ours, g_ref = (torch.autograd.grad(v, emb)[0] for v in (ours, ref))
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-4, atol=1e-8)


def test_circle_honours_a_triplet_miner_like_pml():
    emb = torch.randn(10, 4, requires_grad=True)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3, 3])
    trip = Triplets(torch.tensor([0, 0, 3, 6]), torch.tensor([1, 2, 4, 7]), torch.tensor([5, 9, 8, 0]))
    ours = CircleLoss(miner=FixedMiner(trip))(emb, labels)
    ref = pml_losses.CircleLoss()(emb, labels, (trip.anchor, trip.positive, trip.negative))
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- edge cases


@pytest.mark.parametrize(
    "labels", [torch.zeros(5, dtype=torch.long), torch.arange(5)], ids=["one class", "singletons"]
)
def test_no_valid_row_gives_zero_loss_that_backpropagates(labels):
    emb = torch.randn(5, 3, requires_grad=True)
    loss = CircleLoss()
    value = loss(emb, labels)
    assert value.item() == 0.0 and value.requires_grad
    (grad,) = torch.autograd.grad(value, emb)
    assert (grad == 0).all()
    assert loss.stats["active_rows"] == 0.0
    assert pml_losses.CircleLoss()(emb, labels).item() == 0.0


def test_duplicates_and_zero_vectors_against_naive_and_pml():
    emb = torch.randn(9, 4, dtype=torch.float64)
    emb[1] = emb[0]
    emb[4] = emb[0]  # duplicate with another label
    emb[6] = 0.0  # zero vector: cosine 0 with everything
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1, 2])
    emb.requires_grad_(True)
    value = CircleLoss()(emb, labels)
    assert value.item() == pytest.approx(naive_circle(emb.detach(), labels, 0.4, 80), rel=1e-10)
    (grad,) = torch.autograd.grad(value, emb)
    assert torch.isfinite(grad).all()
    assert value.item() == pytest.approx(pml_losses.CircleLoss()(emb, labels).item(), rel=1e-8)


# ---------------------------------------------------------------- bad input


def test_bad_input_errors():
    loss = CircleLoss()
    emb = torch.randn(6, 4)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    with pytest.raises(ValueError, match="labels has 7 entries but embeddings has 6 rows"):
        loss(emb, torch.zeros(7, dtype=torch.long))
    with pytest.raises(ValueError, match="NaN or inf"):
        loss(torch.full((6, 4), float("nan")), labels)
    bad = emb.clone()
    bad[3, 2] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        loss(bad, labels)
    with pytest.raises(ValueError, match="ref_emb has dimension 5 but embeddings have 4"):
        loss(emb, labels, ref_emb=torch.randn(5, 5), ref_labels=torch.arange(5))
    with pytest.raises(ValueError, match="ref_emb and ref_labels must be given together"):
        loss(emb, labels, ref_emb=torch.randn(5, 4))
    with pytest.raises(ValueError, match="lists a pair both as similar and as dissimilar"):
        loss(emb, labels, (torch.tensor([0]), torch.tensor([3]), torch.tensor([0]), torch.tensor([3])))
    with pytest.raises(TypeError, match="floating point"):
        loss(torch.ones(6, 4, dtype=torch.long), labels)


def test_bad_constructor_arguments():
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="m must be finite"):
            CircleLoss(m=bad)
    for bad in (-0.1, 0.51, 1.0):
        with pytest.raises(ValueError, match=r"m must lie in \[0, 0.5\], got"):
            CircleLoss(m=bad)
    with pytest.raises(TypeError, match="m must be a number, got str"):
        CircleLoss(m="0.4")
    for bad in (0, -1.0):
        with pytest.raises(ValueError, match="gamma must be > 0"):
            CircleLoss(gamma=bad)
    with pytest.raises(ValueError, match="gamma must be finite"):
        CircleLoss(gamma=float("nan"))
    with pytest.raises(TypeError, match="gamma must be a number, got NoneType"):
        CircleLoss(gamma=None)
    for edge in (0.0, 0.5):  # both ends of the range are allowed
        assert CircleLoss(m=edge).m == edge
