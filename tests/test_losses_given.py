"""Losses given pairs / triplets (PML's ``indices_tuple``): against pytorch-metric-learning 2.9
and against loops written here; the relation is three-state (unlisted pairs are unknown)."""

from __future__ import annotations

import math

import pytest
import torch
from pytorch_metric_learning import losses as pml

from likewise.losses import (
    CircleLoss,
    ContrastiveLoss,
    FastAPLoss,
    LiftedStructureLoss,
    MultiSimilarityLoss,
    NTXentLoss,
    ProxyAnchorLoss,
    SupConLoss,
    TripletMarginLoss,
)
from likewise.losses.base import check_batch
from likewise.losses.given import parse_indices_tuple
from likewise.mined import PairMask, Triplets
from likewise.mining import BatchHardMiner

B, D = 12, 5


def _x(seed: int = 0, b: int = B) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, D, generator=g, dtype=torch.float64)


def _pairs(seed: int = 1, k: int = 24, n_ref: int = B) -> tuple[torch.Tensor, ...]:
    """Random pairs with duplicates, no pair of an item with itself."""
    g = torch.Generator().manual_seed(seed)
    a1, a2 = torch.randint(0, B, (k,), generator=g), torch.randint(0, B, (k,), generator=g)
    p = (a1 + torch.randint(1, n_ref, (k,), generator=g)) % n_ref
    n = (a2 + torch.randint(1, n_ref, (k,), generator=g)) % n_ref
    return a1, p, a2, n


def _triplets(seed: int = 2, k: int = 30) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, B, (k,), generator=g)
    return (
        a,
        (a + torch.randint(1, B, (k,), generator=g)) % B,
        (a + torch.randint(1, B, (k,), generator=g)) % B,
    )


# disjoint pairs (the mask-based losses refuse a pair listed both ways, as PML asserts)
DISJOINT = (
    torch.tensor([0, 0, 1, 2, 3, 5, 6, 6]),
    torch.tensor([1, 2, 0, 3, 4, 6, 7, 8]),
    torch.tensor([0, 0, 1, 2, 4, 5, 9, 6]),
    torch.tensor([5, 6, 7, 8, 9, 10, 11, 0]),
)
DISJOINT_TRIPLETS = (torch.tensor([0, 0, 3, 7]), torch.tensor([1, 2, 4, 8]), torch.tensor([5, 6, 9, 1]))


def _value_and_grad(loss, x, *args, **kwargs):
    e = x.clone().requires_grad_()
    value = loss(e, *args, **kwargs)
    value.backward()
    return value.detach(), e.grad


def _agree(ours, theirs, x, it, **kwargs):
    v1, g1 = _value_and_grad(ours, x, None, indices_tuple=it, **kwargs)
    v2, g2 = _value_and_grad(theirs, x, None, indices_tuple=it, **kwargs)
    assert v1.item() == pytest.approx(v2.item(), rel=1e-9, abs=1e-12)
    torch.testing.assert_close(g1, g2, rtol=1e-7, atol=1e-10)


PAIR_LOSSES = [  # accept any tuple, duplicates and pairs listed both ways
    pytest.param(ContrastiveLoss, pml.ContrastiveLoss, {}, id="contrastive"),
    pytest.param(ContrastiveLoss, pml.ContrastiveLoss, {"pos_margin": 0.3, "neg_margin": 0.8}, id="contr-m"),
    pytest.param(TripletMarginLoss, pml.TripletMarginLoss, {"margin": 0.5}, id="triplet"),
    pytest.param(
        TripletMarginLoss, pml.TripletMarginLoss, {"margin": 0.5, "smooth_loss": True}, id="softplus"
    ),
    pytest.param(TripletMarginLoss, pml.TripletMarginLoss, {"margin": 0.4, "swap": True}, id="swap"),
    pytest.param(NTXentLoss, pml.NTXentLoss, {"temperature": 0.5}, id="ntxent"),
]
MASK_LOSSES = [  # pairs once each (PML builds masks)
    pytest.param(MultiSimilarityLoss, pml.MultiSimilarityLoss, {}, id="ms"),
    pytest.param(CircleLoss, pml.CircleLoss, {"m": 0.25, "gamma": 16}, id="circle"),
    pytest.param(SupConLoss, pml.SupConLoss, {"temperature": 0.5}, id="supcon"),
]


@pytest.mark.parametrize(("ours", "theirs", "kw"), PAIR_LOSSES)
@pytest.mark.parametrize("tuple_of", ["pairs", "triplets"])
def test_pair_and_triplet_losses_equal_pml(ours, theirs, kw, tuple_of):
    it = _pairs() if tuple_of == "pairs" else _triplets()
    _agree(ours(**kw), theirs(**kw), _x(), it)


@pytest.mark.parametrize(("ours", "theirs", "kw"), MASK_LOSSES + PAIR_LOSSES[:1] + PAIR_LOSSES[5:])
@pytest.mark.parametrize("it", [DISJOINT, DISJOINT_TRIPLETS], ids=["pairs", "triplets"])
def test_mask_losses_equal_pml(ours, theirs, kw, it):
    _agree(ours(**kw), theirs(**kw), _x(3), it)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (ContrastiveLoss, pml.ContrastiveLoss),
        (TripletMarginLoss, pml.TripletMarginLoss),
        (MultiSimilarityLoss, pml.MultiSimilarityLoss),
        (NTXentLoss, pml.NTXentLoss),
    ],
)
def test_with_ref_emb_the_tuple_indexes_the_references(ours, theirs):
    x, ref = _x(4), _x(5, b=9)
    it = (
        torch.tensor([0, 1, 2, 3]),
        torch.tensor([8, 0, 4, 4]),
        torch.tensor([0, 5, 6]),
        torch.tensor([2, 3, 7]),
    )
    e1, r1 = x.clone().requires_grad_(), ref.clone().requires_grad_()
    e2, r2 = x.clone().requires_grad_(), ref.clone().requires_grad_()
    v1 = ours()(e1, None, indices_tuple=it, ref_emb=r1)
    v2 = theirs()(e2, None, indices_tuple=it, ref_emb=r2)
    (v1 + 0 * r1.sum()).backward()
    (v2 + 0 * r2.sum()).backward()
    assert v1.item() == pytest.approx(v2.item(), rel=1e-9)
    torch.testing.assert_close(e1.grad, e2.grad)
    torch.testing.assert_close(r1.grad, r2.grad)


def _dist(x):
    xn = x / x.norm(dim=1, keepdim=True)
    return torch.cdist(xn, xn)


def test_contrastive_equals_a_loop_over_the_listed_pairs():
    x, (a1, p, a2, n) = _x(6), _pairs(7)
    d = _dist(x)
    pos = [max(0.0, d[i, j].item() - 0.1) for i, j in zip(a1.tolist(), p.tolist())]
    neg = [max(0.0, 0.9 - d[i, j].item()) for i, j in zip(a2.tolist(), n.tolist())]

    def avg_nonzero(v):
        nz = [t for t in v if t > 0]
        return sum(nz) / max(1, len(nz))

    got = ContrastiveLoss(pos_margin=0.1, neg_margin=0.9)(x, None, indices_tuple=(a1, p, a2, n))
    assert got.item() == pytest.approx(avg_nonzero(pos) + avg_nonzero(neg), rel=1e-10)


def test_triplet_loss_of_pairs_equals_a_loop_over_pml_triplets():
    x, (a1, p, a2, n) = _x(8), _pairs(9)
    d = _dist(x)
    terms = [
        max(0.0, d[a1[i], p[i]].item() - d[a2[j], n[j]].item() + 0.3)
        for i in range(len(a1))
        for j in range(len(a2))
        if a2[j] == a1[i]
    ]
    nz = [t for t in terms if t > 0]
    got = TripletMarginLoss(margin=0.3)(x, None, indices_tuple=(a1, p, a2, n))
    assert got.item() == pytest.approx(sum(nz) / len(nz), rel=1e-10)


def test_lifted_structure_is_songs_formula_on_the_listed_relation():
    """Song's J over the listed pairs only (PML's LiftedStructureLoss is another formula)."""
    x = _x(10)
    d = _dist(x)
    a1, p, a2, n = DISJOINT
    P = {(i, j) for i, j in zip(a1.tolist(), p.tolist())}
    N = {(i, j) for i, j in zip(a2.tolist(), n.tolist())}
    total, count = 0.0, 0
    for i, j in sorted(P):
        negs = [1.0 - d[i, k].item() for (r, k) in N if r == i] + [
            1.0 - d[l, j].item() for (l, c) in N if c == j
        ]
        if not negs:
            continue
        jij = math.log(sum(math.exp(v) for v in negs)) + d[i, j].item()
        total += max(0.0, jij) ** 2
        count += 1
    got = LiftedStructureLoss()(x, None, indices_tuple=DISJOINT)
    assert got.item() == pytest.approx(total / (2 * count), rel=1e-10)


def test_multi_similarity_equals_a_loop_and_averages_over_all_queries():
    x = _x(11)
    xn = x / x.norm(dim=1, keepdim=True)
    s = xn @ xn.T
    a1, p, a2, n = DISJOINT
    rows = []
    for i in range(B):
        ps = {j for r, j in zip(a1.tolist(), p.tolist()) if r == i}
        ns = {j for r, j in zip(a2.tolist(), n.tolist()) if r == i}
        lp = math.log(1 + sum(math.exp(-2 * (s[i, j].item() - 0.5)) for j in ps)) / 2 if ps else 0.0
        ln = math.log(1 + sum(math.exp(50 * (s[i, j].item() - 0.5)) for j in ns)) / 50 if ns else 0.0
        rows.append(lp + ln)
    got = MultiSimilarityLoss()(x, None, indices_tuple=DISJOINT)
    assert got.item() == pytest.approx(sum(rows) / B, rel=1e-10)


@pytest.mark.parametrize(
    "make", [ContrastiveLoss, TripletMarginLoss, NTXentLoss, MultiSimilarityLoss, SupConLoss, CircleLoss]
)
def test_labels_are_ignored_and_unlisted_pairs_are_unknown(make):
    """The same pairs give the same loss whatever the labels; pairs not listed do not count,
    and moving an item that no listed pair touches changes nothing."""
    x = _x(12)
    loss = make()
    base = loss(x, None, indices_tuple=DISJOINT)
    labels = torch.arange(B) % 3
    assert loss(x, labels, indices_tuple=DISJOINT).item() == pytest.approx(base.item(), rel=1e-12)
    y = x.clone()
    two = (DISJOINT[0][:2], DISJOINT[1][:2], DISJOINT[2][:2], DISJOINT[3][:2])  # only items 0,1,2,5,6
    v = loss(y, None, indices_tuple=two)
    y[[3, 4, 7, 8, 9, 10, 11]] = torch.randn(7, D, dtype=torch.float64)
    assert loss(y, None, indices_tuple=two).item() == pytest.approx(v.item(), rel=1e-12)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ContrastiveLoss(),
        lambda: TripletMarginLoss(margin=0.5),
        lambda: TripletMarginLoss(margin=0.5, smooth_loss=True),
        lambda: NTXentLoss(temperature=0.5),
        lambda: MultiSimilarityLoss(),
        lambda: SupConLoss(temperature=0.5),
    ],
)
def test_gradcheck_float64(make):
    x = _x(13, b=6).requires_grad_()
    it = (
        torch.tensor([0, 1, 2, 0]),
        torch.tensor([1, 2, 3, 4]),
        torch.tensor([0, 1, 3, 2]),
        torch.tensor([5, 5, 4, 5]),
    )
    loss = make()
    assert torch.autograd.gradcheck(lambda e: loss(e, None, indices_tuple=it), (x,))


class _Trap:
    """Counts host synchronisations (``item``, ``bool``, ``float``, ``int``, ``tolist``, ``numpy``)."""

    NAMES = ("item", "__bool__", "__float__", "__int__", "tolist", "numpy")

    def __init__(self, monkeypatch):
        self.count = 0
        for name in self.NAMES:
            original = getattr(torch.Tensor, name)

            def wrapped(t, *a, _o=original, **k):
                self.count += 1
                return _o(t, *a, **k)

            monkeypatch.setattr(torch.Tensor, name, wrapped)


@pytest.mark.parametrize(
    "make",
    [
        lambda: ContrastiveLoss(),
        lambda: TripletMarginLoss(),
        lambda: NTXentLoss(),
        lambda: MultiSimilarityLoss(),
    ],
)
@pytest.mark.parametrize("tuple_of", ["pairs", "triplets"])
def test_given_pairs_path_has_no_host_synchronisation(make, tuple_of, monkeypatch):
    x = _x(14).float().requires_grad_()
    loss = make()
    batch = check_batch(x, None, pairs_given=True)
    it = DISJOINT if loss.disjoint_pairs else _pairs(15)
    if tuple_of == "triplets":
        it = DISJOINT_TRIPLETS
    given = parse_indices_tuple(it, B, B, x.device, x.dtype)
    batch = type(batch)(**{**batch.__dict__, "given": given})
    trap = _Trap(monkeypatch)
    loss.compute(batch).backward()
    assert trap.count == 0
    parse_indices_tuple(DISJOINT, B, B, x.device, x.dtype)  # validation reads its flags once
    assert trap.count == 1


def test_miner_works_within_the_given_relation():
    x = _x(16)
    d = _dist(x)
    a1, p, a2, n = DISJOINT
    pos = torch.zeros(B, B, dtype=torch.bool)
    neg = torch.zeros(B, B, dtype=torch.bool)
    pos[a1, p] = True
    neg[a2, n] = True
    mined = BatchHardMiner()(x, None, relation=PairMask(pos, neg))
    assert isinstance(mined, Triplets)
    expect = []
    for i in range(B):
        if pos[i].any() and neg[i].any():
            pj = max(pos[i].nonzero().squeeze(1).tolist(), key=lambda j: d[i, j].item())
            nj = min(neg[i].nonzero().squeeze(1).tolist(), key=lambda j: d[i, j].item())
            expect.append((i, pj, nj))
    got = sorted(zip(mined.anchor.tolist(), mined.positive.tolist(), mined.negative.tolist()))
    assert got == expect
    # the loss with a miner uses the mined triplets of the given relation
    hard = TripletMarginLoss(margin=0.5, miner=BatchHardMiner())(x, None, indices_tuple=DISJOINT)
    terms = [max(0.0, d[i, j].item() - d[i, k].item() + 0.5) for i, j, k in expect]
    nz = [t for t in terms if t > 0]
    assert hard.item() == pytest.approx(sum(nz) / max(1, len(nz)), rel=1e-10)


def test_bad_indices_tuples():
    x = _x(17, b=6)
    loss = ContrastiveLoss()
    i = torch.tensor
    with pytest.raises(ValueError, match=r"anchor indices must lie in \[0, 5\]"):
        loss(x, None, indices_tuple=(i([6]), i([1]), i([2])))
    with pytest.raises(ValueError, match=r"negative indices must lie in \[0, 5\]"):
        loss(x, None, indices_tuple=(i([0]), i([1]), i([0]), i([-1])))
    with pytest.raises(ValueError, match=r"len\(a1\) == len\(p\)"):
        loss(x, None, indices_tuple=(i([0, 1]), i([1]), i([0]), i([2])))
    with pytest.raises(ValueError, match="triplets .* need equal lengths"):
        loss(x, None, indices_tuple=(i([0, 1]), i([1]), i([2])))
    with pytest.raises(ValueError, match="got a tuple of 2"):
        loss(x, None, indices_tuple=(i([0]), i([1])))
    with pytest.raises(TypeError, match="p has dtype torch.float32"):
        loss(x, None, indices_tuple=(i([0]), i([1.0]), i([2])))
    with pytest.raises(ValueError, match="either indices_tuple or relevance"):
        loss(x, None, indices_tuple=(i([0]), i([1]), i([2])), relevance=torch.eye(6, dtype=torch.bool))
    with pytest.raises(ValueError, match="lists a pair both as similar and as dissimilar"):
        MultiSimilarityLoss()(x, None, indices_tuple=(i([0]), i([1]), i([0]), i([1])))
    for other in (FastAPLoss(), ProxyAnchorLoss(num_classes=3, embedding_size=5)):
        with pytest.raises(TypeError, match="takes no indices_tuple"):
            other(x.float(), torch.zeros(6, dtype=torch.long), indices_tuple=(i([0]), i([1]), i([2])))
    with pytest.raises(ValueError, match="labels are required"):
        loss(x, None)


def test_empty_tuple_gives_a_zero_loss_in_the_graph():
    x = _x(18).requires_grad_()
    empty = torch.zeros(0, dtype=torch.long)
    for loss in (ContrastiveLoss(), TripletMarginLoss(), NTXentLoss(), MultiSimilarityLoss()):
        v = loss(x, None, indices_tuple=(empty, empty, empty, empty))
        v.backward()
        assert v.item() == 0.0
        assert torch.equal(x.grad, torch.zeros_like(x))
