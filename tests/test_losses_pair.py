"""Contrastive, lifted structure and multi-similarity losses.

References here are plain loops over pairs that compute each distance from the two
embedding rows themselves; pytorch-metric-learning (PML) is the peer for the losses
it has with the same formula.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml_losses
from torch.utils._python_dispatch import TorchDispatchMode

from likewise.losses import (
    ContrastiveLoss,
    LiftedStructureLoss,
    MultiSimilarityLoss,
    contrastive_loss,
    lifted_structure_loss,
    multi_similarity_loss,
)
from likewise.losses import contrastive as contrastive_module
from likewise.losses import lifted_structure as lifted_module
from likewise.losses import multi_similarity as ms_module
from likewise.losses._kernels.euclidean import distance_matrix
from likewise.losses._kernels.positives import index_lists_eligible
from likewise.losses.base import Batch
from likewise.mined import PairMask, Triplets
from likewise.similarity import pairwise_distance

# ----------------------------------------------------------------------------- naive references


def pair_value(u: torch.Tensor, v: torch.Tensor, metric: str, normalize: bool = True) -> torch.Tensor:
    """Distance (euclidean metrics) or similarity (cosine, dot) of two vectors."""
    if metric == "cosine":
        nu, nv = u.norm(), v.norm()
        if nu == 0 or nv == 0:
            return (u * v).sum() * 0
        return (u * v).sum() / (nu * nv)
    if normalize:
        u, v = u / u.norm().clamp_min(1e-12), v / v.norm().clamp_min(1e-12)
    if metric == "dot":
        return (u * v).sum()
    sq = ((u - v) ** 2).sum()
    if metric == "squared_euclidean":
        return sq
    return sq.sqrt() if sq > 0 else sq * 0


def pairs(x, labels, ref=None, ref_labels=None):
    """Yield (i, j, is_positive) over query-reference pairs, self-pairs excluded."""
    same = ref is None
    ref, ref_labels = (x, labels) if same else (ref, ref_labels)
    for i in range(len(x)):
        for j in range(len(ref)):
            if same and i == j:
                continue
            yield i, j, bool(labels[i] == ref_labels[j])


def naive_contrastive(
    x,
    labels,
    ref=None,
    ref_labels=None,
    pos_margin=0.0,
    neg_margin=1.0,
    form="hinge",
    metric="euclidean",
    normalize=True,
):
    refs = x if ref is None else ref
    pos_terms, neg_terms = [], []
    for i, j, is_pos in pairs(x, labels, ref, ref_labels):
        d = pair_value(x[i], refs[j], metric, normalize)
        if metric in ("cosine", "dot"):
            term = F.relu(pos_margin - d) if is_pos else F.relu(d - neg_margin)
            if form == "squared_hinge":
                term = term**2
        elif form == "hinge":
            term = F.relu(d - pos_margin) if is_pos else F.relu(neg_margin - d)
        elif form == "squared_hinge":
            term = F.relu(d - pos_margin) ** 2 if is_pos else F.relu(neg_margin - d) ** 2
        else:
            term = F.relu(d**2 - pos_margin**2) if is_pos else F.relu(neg_margin**2 - d**2)
        (pos_terms if is_pos else neg_terms).append(term)
    total = x.sum() * 0
    for terms in (pos_terms, neg_terms):
        nonzero = [t for t in terms if t > 0]
        if nonzero:
            total = total + sum(nonzero) / len(nonzero)
    return total


def naive_lifted(x, labels, ref=None, ref_labels=None, neg_margin=1.0, pos_margin=0.0):
    """Song 2016 smooth form, written over pairs; N(j) = queries negative to reference j."""
    same = ref is None
    refs, rlab = (x, labels) if same else (ref, ref_labels)

    def dist(i, j):
        return pair_value(x[i], refs[j], "euclidean")

    terms = []
    for i in range(len(x)):
        for j in range(len(refs)):
            if (same and j <= i) or labels[i] != rlab[j]:
                continue  # unordered pairs when refs are the queries
            s = x.sum() * 0
            for k in range(len(refs)):
                if rlab[k] != labels[i]:
                    s = s + torch.exp(neg_margin - dist(i, k))
            for q in range(len(x)):
                if labels[q] != rlab[j]:
                    s = s + torch.exp(neg_margin - dist(q, j))
            if s == 0:
                continue
            terms.append(F.relu(torch.log(s) + dist(i, j) - pos_margin) ** 2)
    if not terms:
        return x.sum() * 0
    return sum(terms) / (2 * len(terms))


def naive_ms(x, labels, ref=None, ref_labels=None, alpha=2.0, beta=50.0, base=0.5):
    refs = x if ref is None else ref
    rows = []
    for i in range(len(x)):
        ps, ns = [], []
        for ii, j, is_pos in pairs(x, labels, ref, ref_labels):
            if ii == i:
                (ps if is_pos else ns).append(pair_value(x[i], refs[j], "cosine"))
        loss = x.sum() * 0
        if ps:
            loss = loss + torch.log(1 + sum(torch.exp(-alpha * (s - base)) for s in ps)) / alpha
        if ns:
            loss = loss + torch.log(1 + sum(torch.exp(beta * (s - base)) for s in ns)) / beta
        rows.append(loss)
    nonzero = [r for r in rows if r > 0]
    return sum(nonzero) / len(nonzero) if nonzero else x.sum() * 0


def value_and_grad(loss_fn, x, *rest):
    x = x.detach().clone().requires_grad_(True)
    rest = [
        r.detach().clone().requires_grad_(True) if r is not None and r.is_floating_point() else r
        for r in rest
    ]
    value = loss_fn(x, *rest)
    inputs = [x] + [r for r in rest if r is not None and r.is_floating_point()]
    grads = torch.autograd.grad(value, inputs, allow_unused=True)
    return value.detach(), [torch.zeros_like(i) if g is None else g for g, i in zip(grads, inputs)]


def assert_same(a, b, rtol=1e-4, atol=1e-6):
    va, ga = a
    vb, gb = b
    torch.testing.assert_close(va, vb, rtol=rtol, atol=atol)
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y, rtol=rtol, atol=atol)


def data(b=10, d=4, classes=3, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, d, generator=g, dtype=dtype)
    y = torch.randint(0, classes, (b,), generator=g)
    return x, y


def call(loss, x, y, r=None, ry=None):
    return loss(x, y) if r is None else loss(x, y, ref_emb=r, ref_labels=ry)


class FixedMiner:
    """Returns a fixed PairMask / Triplets, whatever it is given."""

    def __init__(self, mined):
        self.mined = mined

    def __call__(self, embeddings, labels, **kwargs):
        return self.mined


# ----------------------------------------------------------------------------- contrastive


@pytest.mark.parametrize("form", ["hinge", "squared_hinge", "hinge_squared"])
@pytest.mark.parametrize("metric", ["euclidean", "squared_euclidean"])
@pytest.mark.parametrize("with_ref", [False, True])
def test_contrastive_matches_naive_loop(form, metric, with_ref):
    x, y = data(b=9)
    r, ry = data(b=6, seed=1) if with_ref else (None, None)
    loss = ContrastiveLoss(pos_margin=0.3, neg_margin=1.2, neg_form=form, distance=metric)
    ours = value_and_grad(lambda a, *rest: call(loss, a, y, *rest), x, *(() if r is None else (r, ry)))
    ref = value_and_grad(
        lambda a, *rest: naive_contrastive(
            a, y, *rest, pos_margin=0.3, neg_margin=1.2, form=form, metric=metric
        ),
        x,
        *(() if r is None else (r, ry)),
    )
    assert_same(ours, ref, rtol=1e-9, atol=1e-12)
    assert 0 < loss.stats["neg_active_fraction"] <= 1


@pytest.mark.parametrize("form", ["hinge", "squared_hinge"])
def test_contrastive_cosine_matches_naive_loop(form):
    x, y = data(b=8)
    loss = ContrastiveLoss(pos_margin=0.9, neg_margin=0.1, distance="cosine", neg_form=form)
    ours = value_and_grad(lambda a: loss(a, y), x)
    ref = value_and_grad(
        lambda a: naive_contrastive(a, y, pos_margin=0.9, neg_margin=0.1, form=form, metric="cosine"), x
    )
    assert_same(ours, ref, rtol=1e-9, atol=1e-12)


def test_contrastive_functional_form_on_matrix():
    d = torch.tensor([[0.0, 0.5, 2.0], [0.5, 0.0, 0.2]])
    pos = torch.tensor([[False, True, False], [True, False, False]])
    neg = torch.tensor([[False, False, True], [False, False, True]])
    # pos terms [0.5 - 0.1]_+ twice -> 0.4; neg terms [1 - 2]_+ = 0 (dropped), [1 - 0.2]_+ = 0.8
    out = contrastive_loss(d, pos, neg, pos_margin=0.1, neg_margin=1.0)
    assert out.item() == pytest.approx(0.4 + 0.8)
    out = contrastive_loss(d, pos, neg, pos_margin=0.1, neg_margin=1.0, neg_form="squared_hinge")
    assert out.item() == pytest.approx(0.4**2 + 0.8**2)
    out = contrastive_loss(d, pos, neg, pos_margin=0.1, neg_margin=1.0, neg_form="hinge_squared")
    assert out.item() == pytest.approx((0.25 - 0.01) + (1 - 0.04))


@pytest.mark.parametrize("form", ["hinge", "squared_hinge", "hinge_squared"])
def test_contrastive_gradcheck(form):
    x, y = data(b=6, d=3)
    r, ry = data(b=5, d=3, seed=3)
    loss = ContrastiveLoss(pos_margin=0.2, neg_margin=1.5, neg_form=form)
    assert torch.autograd.gradcheck(lambda a: loss(a, y), (x.requires_grad_(),))
    assert torch.autograd.gradcheck(
        lambda a, b: loss(a, y, ref_emb=b, ref_labels=ry), (x, r.requires_grad_())
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("with_ref", [False, True])
def test_contrastive_agrees_with_pml_defaults(dtype, with_ref):
    x, y = data(b=32, d=8, classes=4, dtype=dtype)
    r, ry = data(b=20, d=8, classes=4, dtype=dtype, seed=5) if with_ref else (None, None)
    rest = () if r is None else (r, ry)
    ours = value_and_grad(lambda a, *z: call(ContrastiveLoss(), a, y, *z), x, *rest)
    theirs = value_and_grad(lambda a, *z: call(pml_losses.ContrastiveLoss(), a, y, *z), x, *rest)
    assert_same(ours, theirs)


def test_contrastive_agrees_with_pml_cosine_and_margins():
    x, y = data(b=24, d=6, classes=4, dtype=torch.float32)
    r, ry = data(b=15, d=6, classes=4, dtype=torch.float32, seed=2)
    ours_loss = ContrastiveLoss(pos_margin=0.8, neg_margin=0.2, distance="cosine")
    pml = pml_losses.ContrastiveLoss(
        pos_margin=0.8, neg_margin=0.2, distance=pml_distances.CosineSimilarity()
    )
    assert_same(
        value_and_grad(lambda a, b: call(ours_loss, a, y, b, ry), x, r),
        value_and_grad(lambda a, b: call(pml, a, y, b, ry), x, r),
    )
    ours_loss = ContrastiveLoss(pos_margin=0.1, neg_margin=2.0, distance="squared_euclidean")
    pml = pml_losses.ContrastiveLoss(
        pos_margin=0.1, neg_margin=2.0, distance=pml_distances.LpDistance(power=2)
    )
    assert_same(value_and_grad(lambda a: ours_loss(a, y), x), value_and_grad(lambda a: pml(a, y), x))


def test_contrastive_with_miner_agrees_with_pml_indices():
    x, y = data(b=16, d=5, classes=3, dtype=torch.float32)
    same = y[:, None] == y[None, :]
    g = torch.Generator().manual_seed(1)
    pick = torch.rand(16, 16, generator=g) < 0.4
    eye = torch.eye(16, dtype=torch.bool)
    pos, neg = same & ~eye & pick, ~same & pick
    a1, p = torch.where(pos)
    a2, n = torch.where(neg)
    ours = value_and_grad(lambda a: ContrastiveLoss(miner=FixedMiner(PairMask(pos, neg)))(a, y), x)
    theirs = value_and_grad(lambda a: pml_losses.ContrastiveLoss()(a, y, (a1, p, a2, n)), x)
    assert_same(ours, theirs)
    # triplets -> their (a, p) and (a, n) pairs, as PML converts a triplet tuple
    t = Triplets(torch.tensor([0, 1, 2, 10]), torch.tensor([3, 4, 5, 13]), torch.tensor([6, 7, 8, 9]))
    y2 = torch.tensor([0, 1, 2, 0, 1, 2, 3, 3, 3, 3, 0, 1, 2, 0, 1, 2])
    ours = value_and_grad(lambda a: ContrastiveLoss(miner=FixedMiner(t))(a, y2), x)
    theirs = value_and_grad(
        lambda a: pml_losses.ContrastiveLoss()(a, y2, (t.anchor, t.positive, t.negative)), x
    )
    assert_same(ours, theirs)


# ----------------------------------------------------------------------------- lifted structure


@pytest.mark.parametrize("with_ref", [False, True])
@pytest.mark.parametrize("margins", [(1.0, 0.0), (0.5, 0.3)])
def test_lifted_matches_naive_song_loop(with_ref, margins):
    neg_margin, pos_margin = margins
    x, y = data(b=9, classes=3)
    r, ry = data(b=7, classes=3, seed=4) if with_ref else (None, None)
    rest = () if r is None else (r, ry)
    loss = LiftedStructureLoss(neg_margin=neg_margin, pos_margin=pos_margin)
    ours = value_and_grad(lambda a, *z: call(loss, a, y, *z), x, *rest)
    ref = value_and_grad(
        lambda a, *z: naive_lifted(a, y, *z, neg_margin=neg_margin, pos_margin=pos_margin), x, *rest
    )
    assert_same(ours, ref, rtol=1e-9, atol=1e-12)
    assert 0 < loss.stats["active_fraction"] <= 1


def test_lifted_functional_hand_computed():
    # two queries of class 0 and one of class 1, refs = queries; distances given directly
    d = torch.tensor([[0.0, 0.2, 1.5], [0.2, 0.0, 0.7], [1.5, 0.7, 0.0]], dtype=torch.float64)
    lab = torch.tensor([0, 0, 1])
    pos = (lab[:, None] == lab[None, :]) & ~torch.eye(3, dtype=torch.bool)
    neg = lab[:, None] != lab[None, :]
    j = math.log(math.exp(1 - 1.5) + math.exp(1 - 0.7)) + 0.2
    expected = j**2 / 2  # one unordered positive pair: 1 / (2 |P|) * J^2
    assert lifted_structure_loss(d, pos, neg).item() == pytest.approx(expected)


def test_lifted_gradcheck():
    x, y = data(b=6, d=3, classes=2)
    r, ry = data(b=5, d=3, classes=2, seed=2)
    loss = LiftedStructureLoss()
    assert torch.autograd.gradcheck(lambda a: loss(a, y), (x.requires_grad_(),))
    assert torch.autograd.gradcheck(
        lambda a, b: loss(a, y, ref_emb=b, ref_labels=ry), (x, r.requires_grad_())
    )


def test_lifted_ref_pairs_with_negatives_on_one_side_only():
    # query 0 (class 0) has a positive ref but no negative ref; the ref is negative to query 1
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    r = torch.tensor([[0.6, 0.8]], dtype=torch.float64)
    y, ry = torch.tensor([0, 1]), torch.tensor([0])
    ours = value_and_grad(lambda a, b: LiftedStructureLoss()(a, y, ref_emb=b, ref_labels=ry), x, r)
    ref = value_and_grad(lambda a, b: naive_lifted(a, y, b, ry), x, r)
    assert_same(ours, ref, rtol=1e-9, atol=1e-12)
    assert ours[0] > 0


# ----------------------------------------------------------------------------- multi-similarity


@pytest.mark.parametrize("with_ref", [False, True])
@pytest.mark.parametrize("params", [(2.0, 50.0, 0.5), (1.0, 10.0, 0.2)])
def test_ms_matches_naive_loop(with_ref, params):
    alpha, beta, base = params
    x, y = data(b=9, classes=3)
    r, ry = data(b=7, classes=3, seed=4) if with_ref else (None, None)
    rest = () if r is None else (r, ry)
    loss = MultiSimilarityLoss(alpha=alpha, beta=beta, base=base)
    ours = value_and_grad(lambda a, *z: call(loss, a, y, *z), x, *rest)
    ref = value_and_grad(lambda a, *z: naive_ms(a, y, *z, alpha=alpha, beta=beta, base=base), x, *rest)
    assert_same(ours, ref, rtol=1e-9, atol=1e-12)


def test_ms_functional_hand_computed():
    s = torch.tensor([[0.9, 0.1], [0.3, 0.6]], dtype=torch.float64)
    pos = torch.tensor([[True, False], [False, False]])
    neg = torch.tensor([[False, True], [False, False]])
    row0 = math.log(1 + math.exp(-2 * 0.4)) / 2 + math.log(1 + math.exp(50 * -0.4)) / 50
    # row 1 has no pair: dropped from the average
    assert multi_similarity_loss(s, pos, neg).item() == pytest.approx(row0)


def test_ms_gradcheck():
    x, y = data(b=6, d=3, classes=2)
    r, ry = data(b=5, d=3, classes=2, seed=2)
    loss = MultiSimilarityLoss(alpha=2.0, beta=5.0)
    assert torch.autograd.gradcheck(lambda a: loss(a, y), (x.requires_grad_(),))
    chunked = MultiSimilarityLoss(alpha=2.0, beta=5.0, chunk_size=2)
    assert torch.autograd.gradcheck(
        lambda a, b: chunked(a, y, ref_emb=b, ref_labels=ry), (x, r.requires_grad_())
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("with_ref", [False, True])
def test_ms_agrees_with_pml(dtype, with_ref):
    x, y = data(b=32, d=8, classes=4, dtype=dtype)
    r, ry = data(b=20, d=8, classes=4, dtype=dtype, seed=5) if with_ref else (None, None)
    rest = () if r is None else (r, ry)
    ours = value_and_grad(lambda a, *z: call(MultiSimilarityLoss(), a, y, *z), x, *rest)
    theirs = value_and_grad(lambda a, *z: call(pml_losses.MultiSimilarityLoss(), a, y, *z), x, *rest)
    assert_same(ours, theirs)
    ours = value_and_grad(lambda a, *z: call(MultiSimilarityLoss(1.0, 20.0, 0.3), a, y, *z), x, *rest)
    theirs = value_and_grad(
        lambda a, *z: call(pml_losses.MultiSimilarityLoss(alpha=1.0, beta=20.0, base=0.3), a, y, *z), x, *rest
    )
    assert_same(ours, theirs)


def test_ms_with_miner_agrees_with_pml_indices():
    x, y = data(b=16, d=5, classes=3, dtype=torch.float32)
    same = y[:, None] == y[None, :]
    pick = torch.rand(16, 16, generator=torch.Generator().manual_seed(3)) < 0.5
    pos, neg = same & ~torch.eye(16, dtype=torch.bool) & pick, ~same & pick
    a1, p = torch.where(pos)
    a2, n = torch.where(neg)
    for chunk in (None, 5):
        loss = MultiSimilarityLoss(miner=FixedMiner(PairMask(pos, neg)), chunk_size=chunk)
        ours = value_and_grad(lambda a, loss=loss: loss(a, y), x)
        theirs = value_and_grad(lambda a: pml_losses.MultiSimilarityLoss()(a, y, (a1, p, a2, n)), x)
        assert_same(ours, theirs)


class FloatOutputSizes(TorchDispatchMode):
    """Records the largest floating-point tensor (and any tensor) an op produces, forward and backward."""

    def __init__(self):
        super().__init__()
        self.largest = 0
        self.largest_any = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest_any = max(self.largest_any, t.numel())
                if t.is_floating_point():
                    self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("with_ref", [False, True])
def test_ms_chunked_equals_unchunked_and_bounds_memory(with_ref):
    b, n, d, chunk = 96, 80, 4, 8
    x, y = data(b=b, d=d, classes=6, dtype=torch.float32)
    r, ry = data(b=n, d=d, classes=6, dtype=torch.float32, seed=7) if with_ref else (None, None)
    rest = () if r is None else (r, ry)
    full = value_and_grad(lambda a, *z: call(MultiSimilarityLoss(), a, y, *z), x, *rest)
    with FloatOutputSizes() as sizes:
        chunked = value_and_grad(
            lambda a, *z: call(MultiSimilarityLoss(chunk_size=chunk), a, y, *z), x, *rest
        )
    assert_same(chunked, full, rtol=1e-5, atol=1e-6)
    refs = b if r is None else n
    # no [B, N] float tensor is ever made: the largest is one [chunk, N + 1] block
    assert sizes.largest <= chunk * (refs + 1)
    assert sizes.largest < b * refs // 4
    # without a miner the label masks are built per block too (bool tensors included)
    assert sizes.largest_any <= chunk * (refs + 1)
    with FloatOutputSizes() as sizes:
        value_and_grad(lambda a, *z: call(MultiSimilarityLoss(), a, y, *z), x, *rest)
    assert sizes.largest >= b * refs  # the check above can see a full matrix


# ----------------------------------------------------------------------------- kernels == plain forms


def test_contrastive_plain_form_counts_listed_pairs():
    d = torch.tensor([[0.0, 0.5, 0.2, 1.5], [0.3, 0.0, 0.9, 1.5]], dtype=torch.float64, requires_grad=True)
    pos = torch.tensor([[0, 2, 0, 0], [1, 0, 0, 0]])  # (0, 1) listed twice
    neg = torch.tensor([[0, 0, 1, 2], [0, 0, 3, 0]])  # (0, 3) listed twice, but its term is 0
    out = contrastive_loss(d, pos, neg, pos_margin=0.0, neg_margin=1.0)
    # pos: (2 * 0.5 + 0.3) / 3 listings; neg: (0.8 + 3 * 0.1) / 4 non-zero listings
    assert out.item() == pytest.approx(1.3 / 3 + 1.1 / 4)
    (grad,) = torch.autograd.grad(out, d)
    expected = torch.tensor([[0.0, 2 / 3, -1 / 4, 0.0], [1 / 3, 0.0, -3 / 4, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(grad, expected)
    once = contrastive_loss(d, pos > 0, neg > 0, pos_margin=0.0, neg_margin=1.0)
    assert once.item() == pytest.approx(0.8 / 2 + 0.9 / 2)


def fast_and_plain(make, relation):
    """(value, gradients, stats) of ``make(fast=True)`` and ``make(fast=False)`` on one relation:
    class ids (the index-list kernels), refs, a miner or a relevance matrix (the mask kernels)."""
    x, y = data(b=12, classes=4)
    y[0] = 99  # a singleton
    r, ry = data(b=7, classes=4, seed=3)
    kw, ctor = {}, {}
    if relation == "refs":
        kw = {"ref_emb": r, "ref_labels": ry}
    elif relation == "relevance":
        kw = {"relevance": torch.rand(12, 12, generator=torch.Generator().manual_seed(5)) < 0.3}
    elif relation == "miner":
        same = (y[:, None] == y[None, :]) & ~torch.eye(12, dtype=torch.bool)
        pick = torch.rand(12, 12, generator=torch.Generator().manual_seed(6)) < 0.6
        ctor = {"miner": FixedMiner(PairMask(same & pick, ~same & pick))}
    out = []
    for fast in (True, False):
        loss = make(fast=fast, **ctor)
        rest = (kw["ref_emb"],) if "ref_emb" in kw else ()

        def fn(a, *z, loss=loss):
            extra = {**kw, "ref_emb": z[0]} if z else kw
            return loss(a, y, **extra)

        out.append((*value_and_grad(fn, x, *rest), dict(loss.stats)))
    return out


RELATIONS = ["class_ids", "refs", "miner", "relevance"]


@pytest.mark.parametrize("relation", RELATIONS)
@pytest.mark.parametrize(
    "kwargs",
    [
        {"neg_form": f, "distance": m}
        for f in ("hinge", "squared_hinge", "hinge_squared")
        for m in ("euclidean", "squared_euclidean")
    ]
    + [
        {"neg_form": f, "distance": "cosine", "pos_margin": 0.9, "neg_margin": 0.2}
        for f in ("hinge", "squared_hinge")
    ],
)
def test_contrastive_kernels_equal_the_plain_form(kwargs, relation):
    kwargs = {"pos_margin": 0.1, "neg_margin": 1.2, **kwargs}
    (vf, gf, sf), (vp, gp, sp) = fast_and_plain(lambda **kw: ContrastiveLoss(**kwargs, **kw), relation)
    assert_same((vf, gf), (vp, gp), rtol=1e-9, atol=1e-12)
    assert sf == pytest.approx(sp, rel=1e-9, abs=1e-12)
    assert 0 < sf["pos_active_fraction"] <= 1 and 0 < sf["neg_active_fraction"] <= 1


@pytest.mark.parametrize("relation", RELATIONS)
@pytest.mark.parametrize(
    "kwargs", [{}, {"neg_margin": 0.4, "pos_margin": 0.1}, {"distance": "squared_euclidean"}]
)
def test_lifted_kernel_equals_the_plain_form(kwargs, relation):
    (vf, gf, sf), (vp, gp, sp) = fast_and_plain(lambda **kw: LiftedStructureLoss(**kwargs, **kw), relation)
    assert_same((vf, gf), (vp, gp), rtol=1e-9, atol=1e-12)
    assert sf == pytest.approx(sp, rel=1e-9, abs=1e-12)
    assert vf > 0 and 0 < sf["active_fraction"] <= 1


@pytest.mark.parametrize("relation", RELATIONS)
@pytest.mark.parametrize("kwargs", [{}, {"alpha": 5.0, "beta": 20.0, "base": 0.2}, {"distance": "dot"}])
def test_ms_kernel_equals_the_plain_form(kwargs, relation):
    (vf, gf, sf), (vp, gp, sp) = fast_and_plain(lambda **kw: MultiSimilarityLoss(**kwargs, **kw), relation)
    assert_same((vf, gf), (vp, gp), rtol=1e-9, atol=1e-12)
    assert sf == pytest.approx(sp, rel=1e-9, abs=1e-12)
    assert vf > 0 and 0 < sf["active_fraction"] <= 1


def spy(monkeypatch, module, name):
    """Record the calls of ``module.name`` (still run)."""
    calls = []
    original = getattr(module, name)

    def wrapper(*args, **kwargs):
        calls.append(name)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def test_contrastive_dispatch_follows_eligibility(monkeypatch):
    sparse = spy(monkeypatch, contrastive_module, "contrastive_sparse")
    dense = spy(monkeypatch, contrastive_module, "contrastive_dense")
    x, y = data(b=8, classes=3)
    pair_mask = PairMask(y[:, None] == y[None, :], y[:, None] != y[None, :])
    cases = [
        ({}, {}, ["contrastive_sparse"]),  # class ids
        ({}, {"ref_emb": x[:5], "ref_labels": y[:5]}, ["contrastive_sparse"]),
        ({"miner": FixedMiner(pair_mask)}, {}, ["contrastive_dense"]),
        ({}, {"relevance": y[:, None] == y[None, :]}, ["contrastive_dense"]),
        (
            {},
            {"indices_tuple": (torch.tensor([0]), torch.tensor([1]), torch.tensor([2]))},
            [],
        ),  # counts: plain
        ({"fast": False}, {}, []),
        ({"fast": False, "miner": FixedMiner(pair_mask)}, {}, []),
    ]
    for ctor, kw, expected in cases:
        sparse.clear(), dense.clear()
        ContrastiveLoss(**ctor)(x, y, **kw)
        assert sparse + dense == expected, (ctor, list(kw))


def test_lifted_dispatch_follows_eligibility(monkeypatch):
    calls = spy(monkeypatch, lifted_module, "lifted_sparse")
    x, y = data(b=8, classes=3)
    cases = [
        ({}, True),
        ({"distance": "squared_euclidean"}, True),
        ({"distance": "cosine"}, False),  # distances not bounded by the normalisation
        ({"normalize_embeddings": False}, False),
        ({"formula": "pml"}, False),
        ({"miner": FixedMiner(PairMask(y[:, None] == y[None, :], y[:, None] != y[None, :]))}, False),
        ({"fast": False}, False),
    ]
    for ctor, expected in cases:
        calls.clear()
        LiftedStructureLoss(**ctor)(x, y)
        assert bool(calls) is expected, ctor


def test_ms_dispatch_follows_eligibility(monkeypatch):
    calls = spy(monkeypatch, ms_module, "multi_similarity_gemm")
    x, y = data(b=8, classes=3)
    cases = [
        ({}, True),
        ({"distance": "dot"}, True),
        ({"chunk_size": 8}, True),  # one block: not chunked
        ({"chunk_size": 7}, False),
        ({"miner": FixedMiner(PairMask(y[:, None] == y[None, :], y[:, None] != y[None, :]))}, False),
        ({"fast": False}, False),
    ]
    for ctor, expected in cases:
        calls.clear()
        MultiSimilarityLoss(**ctor)(x, y)
        assert bool(calls) is expected, ctor


def test_index_lists_are_eligible_on_the_cpu_only():
    def batch(device, **kw):
        emb = torch.zeros(4, 3, device=device)
        fields = {"labels": torch.zeros(4, dtype=torch.long, device=device), "relevance": None, **kw}
        return Batch(embeddings=emb, ref_emb=emb, ref_labels=None, same_set=True, self_index=None, **fields)

    assert index_lists_eligible(batch("cpu"), None)
    assert not index_lists_eligible(batch("meta"), None)  # sizes of data-dependent lists: a GPU would wait
    assert not index_lists_eligible(batch("cpu"), miner=object())
    assert not index_lists_eligible(batch("cpu", labels=torch.zeros(4, 2, dtype=torch.long)), None)
    assert not index_lists_eligible(batch("cpu", relevance=torch.ones(4, 4, dtype=torch.bool)), None)
    assert not index_lists_eligible(batch("cpu", labels=None), None)


# ----------------------------------------------------------------------------- edge cases


LOSSES = [
    lambda: ContrastiveLoss(),
    lambda: ContrastiveLoss(distance="cosine", pos_margin=1.0, neg_margin=0.0),
    lambda: LiftedStructureLoss(),
    lambda: MultiSimilarityLoss(),
    lambda: MultiSimilarityLoss(chunk_size=3),
]


@pytest.mark.parametrize("make", LOSSES)
def test_one_class_batch(make):
    x, _ = data(b=7)
    y = torch.zeros(7, dtype=torch.long)
    loss = make()
    ours = value_and_grad(lambda a: loss(a, y), x)
    if isinstance(loss, LiftedStructureLoss):
        expected = value_and_grad(lambda a: naive_lifted(a, y), x)
        assert ours[0] == 0
    elif isinstance(loss, MultiSimilarityLoss):
        expected = value_and_grad(lambda a: naive_ms(a, y), x)
        assert ours[0] > 0
    else:
        kw = {"pos_margin": 1.0, "neg_margin": 0.0, "metric": "cosine"} if loss.similarity else {}
        expected = value_and_grad(lambda a: naive_contrastive(a, y, **kw), x)
    assert_same(ours, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("make", LOSSES)
def test_all_singletons(make):
    x, _ = data(b=6)
    y = torch.arange(6)
    loss = make()
    x = x.requires_grad_()
    out = loss(x, y)
    out.backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    if isinstance(loss, LiftedStructureLoss):
        assert out.item() == 0  # no positive pair
        assert torch.count_nonzero(x.grad) == 0
    elif isinstance(loss, MultiSimilarityLoss):
        assert out.item() == pytest.approx(naive_ms(x.detach(), y).item())
    else:
        kw = {"pos_margin": 1.0, "neg_margin": 0.0, "metric": "cosine"} if loss.similarity else {}
        assert out.item() == pytest.approx(naive_contrastive(x.detach(), y, **kw).item())


@pytest.mark.parametrize("make", LOSSES)
def test_no_pairs_at_all_is_zero_that_backprops(make):
    x = torch.randn(1, 4, requires_grad=True)
    out = make()(x, torch.tensor([0]))
    assert out.item() == 0
    out.backward()
    assert x.grad is not None and torch.count_nonzero(x.grad) == 0


@pytest.mark.parametrize("make", LOSSES)
def test_duplicate_embeddings_give_finite_gradients(make):
    base, _ = data(b=3)
    x = base.repeat_interleave(3, dim=0)  # three copies of each of three points
    y = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2])
    x.requires_grad_()
    out = make()(x, y)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(x.grad).all()


@pytest.mark.parametrize("make", LOSSES)
def test_ref_emb_of_another_size(make):
    x, y = data(b=5)
    r, ry = data(b=11, seed=9)
    loss = make()
    ours = value_and_grad(lambda a, b: loss(a, y, ref_emb=b, ref_labels=ry), x, r)
    if isinstance(loss, LiftedStructureLoss):
        expected = value_and_grad(lambda a, b: naive_lifted(a, y, b, ry), x, r)
    elif isinstance(loss, MultiSimilarityLoss):
        expected = value_and_grad(lambda a, b: naive_ms(a, y, b, ry), x, r)
    else:
        kw = {"pos_margin": 1.0, "neg_margin": 0.0, "metric": "cosine"} if loss.similarity else {}
        expected = value_and_grad(lambda a, b: naive_contrastive(a, y, b, ry, **kw), x, r)
    assert_same(ours, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ContrastiveLoss(distance="cosine", pos_margin=1.0, neg_margin=0.0),
        lambda: MultiSimilarityLoss(),
    ],
)
def test_zero_vectors_with_cosine(make):
    x, _ = data(b=6)
    x[0] = 0
    x[3] = 0
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    x.requires_grad_()
    loss = make()
    out = loss(x, y)
    out.backward()
    assert torch.isfinite(out) and torch.isfinite(x.grad).all()
    if isinstance(loss, MultiSimilarityLoss):
        expected = naive_ms(x.detach(), y)
    else:
        expected = naive_contrastive(x.detach(), y, pos_margin=1.0, neg_margin=0.0, metric="cosine")
    assert out.item() == pytest.approx(expected.item())


def test_stats_are_recorded():
    x, y = data(b=12)
    loss = ContrastiveLoss()
    loss(x, y)
    d = torch.cdist(F.normalize(x), F.normalize(x))
    same = (y[:, None] == y[None, :]) & ~torch.eye(12, dtype=torch.bool)
    assert loss.stats["mean_pos_distance"] == pytest.approx(d[same].mean().item())
    assert loss.stats["neg_active_fraction"] == pytest.approx(
        (d[~(y[:, None] == y[None, :])] < 1).double().mean().item()
    )
    ms = MultiSimilarityLoss()
    ms(x, y)
    assert set(ms.stats) >= {"active_fraction", "mean_pos_similarity", "mean_neg_similarity"}


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("make", LOSSES)
def test_bad_input_errors(make):
    loss = make()
    x, y = data(b=6)
    with pytest.raises(ValueError, match="labels has 5 entries but embeddings has 6 rows"):
        loss(x, y[:5])
    with pytest.raises(ValueError, match="ref_emb has dimension 3 but embeddings have 4"):
        loss(x, y, ref_emb=torch.randn(5, 3, dtype=x.dtype), ref_labels=y[:5])
    with pytest.raises(ValueError, match=r"embeddings must have shape \[batch, dim\]"):
        loss(x[0], y)
    bad = x.clone()
    bad[2, 1] = float("nan")
    with pytest.raises(ValueError, match="contain NaN or inf"):
        loss(bad, y)
    bad[2, 1] = float("inf")
    with pytest.raises(ValueError, match="contain NaN or inf"):
        loss(bad, y)
    with pytest.raises(ValueError, match=r"positive indices must lie in \[0, 5\]"):
        loss(x, y, (torch.tensor([0]), torch.tensor([9]), torch.tensor([2])))
    with pytest.raises(TypeError, match="1-D integer tensors; a has dtype torch.float"):
        loss(x, y, (torch.tensor([0.0]), torch.tensor([1]), torch.tensor([2])))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="unknown neg_form 'cube'"):
        ContrastiveLoss(neg_form="cube")
    with pytest.raises(ValueError, match="hinge_squared' needs a distance"):
        ContrastiveLoss(distance="cosine", neg_form="hinge_squared")
    with pytest.raises(ValueError, match="unknown metric 'manhattan'"):
        ContrastiveLoss(distance="manhattan")
    with pytest.raises(TypeError, match="pos_margin must be a number"):
        ContrastiveLoss(pos_margin="0.5")
    with pytest.raises(ValueError, match="needs a similarity"):
        MultiSimilarityLoss(distance="euclidean")
    with pytest.raises(ValueError, match="alpha must be > 0"):
        MultiSimilarityLoss(alpha=0)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer"):
        MultiSimilarityLoss(chunk_size=0)
    with pytest.raises(ValueError, match="neg_margin must be finite"):
        LiftedStructureLoss(neg_margin=float("nan"))


def test_miner_returning_wrong_type_is_refused():
    x, y = data(b=6)
    with pytest.raises(TypeError, match="a miner must return PairMask or Triplets"):
        ContrastiveLoss(miner=FixedMiner((1, 2, 3)))(x, y)
    with pytest.raises(ValueError, match=r"miner returned masks of shape \(3, 3\), expected \(6, 6\)"):
        m = torch.zeros(3, 3, dtype=torch.bool)
        MultiSimilarityLoss(miner=FixedMiner(PairMask(m, m)))(x, y)


@pytest.mark.parametrize("metric", ["euclidean", "squared_euclidean"])
def test_fast_euclidean_distance_matches_autograd_form(metric):
    x, _ = data(b=7, d=3)
    x[3] = x[1]  # a zero distance off the diagonal
    r, _ = data(b=5, d=3, seed=2)
    w = torch.randn(7, 7, dtype=torch.float64)
    fast = value_and_grad(lambda a: (distance_matrix(a, a, metric) * w).sum(), x)
    slow = value_and_grad(lambda a: (pairwise_distance(a, a, metric) * w).sum(), x)
    assert_same(fast, slow, rtol=1e-9, atol=1e-10)
    fast = value_and_grad(lambda a, b: (distance_matrix(a, b, metric) * w[:, :5]).sum(), x, r)
    slow = value_and_grad(lambda a, b: (pairwise_distance(a, b, metric) * w[:, :5]).sum(), x, r)
    assert_same(fast, slow, rtol=1e-9, atol=1e-10)
    assert torch.autograd.gradcheck(
        lambda a, b: distance_matrix(a, b, metric), (x.requires_grad_(), r.requires_grad_())
    )
