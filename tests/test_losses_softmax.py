"""NT-Xent, SupCon, soft nearest neighbour and N-pairs: loop references, gradcheck, PML agreement."""

import math
from dataclasses import replace

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses

from _memory import LargestTensors
from likewise.losses import (
    NPairsLoss,
    NTXentLoss,
    SoftNearestNeighborLoss,
    SupConLoss,
    ntxent_loss,
    soft_nearest_neighbor_loss,
    supcon_loss,
)
from likewise.losses._kernels import circle as circle_kernel
from likewise.losses._kernels import ntxent as ntxent_kernel
from likewise.losses._kernels import soft_nearest_neighbor as snn_kernel
from likewise.losses._kernels import supcon as supcon_kernel
from likewise.losses.base import check_batch
from likewise.losses.ntxent import ntxent_rows
from likewise.mined import PairMask

# ---------------------------------------------------------------- naive references (plain loops over pairs)
# Written with scalar torch operations so that autograd gives an independent gradient too.


def _cos(x, y):
    nx, ny = x.norm(), y.norm()
    if nx == 0 or ny == 0:
        return x.sum() * 0
    return (x * y).sum() / (nx * ny)


def _sqeuc(x, y):
    return -((x - y) ** 2).sum()


def _pairs(emb, labels, ref_emb, ref_labels):
    """(queries, refs, is_pos(i, j), is_cand(i, j)) with self-pairs excluded when there are no refs."""
    same = ref_emb is None
    refs = emb if same else ref_emb
    rlab = labels if same else ref_labels

    def cand(i, j):
        return not (same and i == j)

    def pos(i, j):
        return cand(i, j) and int(labels[i]) == int(rlab[j])

    return refs, pos, cand


def naive_ntxent(emb, labels, ref_emb=None, ref_labels=None, t=0.07):
    refs, pos, cand = _pairs(emb, labels, ref_emb, ref_labels)
    terms = []
    for a in range(len(emb)):
        for p in range(len(refs)):
            if not pos(a, p):
                continue
            num = torch.exp(_cos(emb[a], refs[p]) / t)
            den = num
            for n in range(len(refs)):
                if cand(a, n) and not pos(a, n):
                    den = den + torch.exp(_cos(emb[a], refs[n]) / t)
            terms.append(-torch.log(num / den))
    return sum(terms) / len(terms)


def naive_simclr(z1, z2, t):
    """SimCLR's algorithm as written by Chen et al. (2020): 2N views, l(i, j) over k != i."""
    z = [None] * (2 * len(z1))
    for k in range(len(z1)):
        z[2 * k], z[2 * k + 1] = z1[k], z2[k]

    def ell(i, j):
        den = sum(torch.exp(_cos(z[i], z[k]) / t) for k in range(len(z)) if k != i)
        return -torch.log(torch.exp(_cos(z[i], z[j]) / t) / den)

    return sum(ell(2 * k, 2 * k + 1) + ell(2 * k + 1, 2 * k) for k in range(len(z1))) / len(z)


def naive_supcon(emb, labels, ref_emb=None, ref_labels=None, t=0.1, variant="out"):
    refs, pos, cand = _pairs(emb, labels, ref_emb, ref_labels)
    losses = []
    for i in range(len(emb)):
        ps = [j for j in range(len(refs)) if pos(i, j)]
        cands = [k for k in range(len(refs)) if cand(i, k)]
        if not ps or len(cands) < 2:
            continue
        den = sum(torch.exp(_cos(emb[i], refs[k]) / t) for k in cands)
        if variant == "out":
            losses.append(-sum(torch.log(torch.exp(_cos(emb[i], refs[p]) / t) / den) for p in ps) / len(ps))
        else:
            inner = sum(torch.exp(_cos(emb[i], refs[p]) / t) / den for p in ps) / len(ps)
            losses.append(-torch.log(inner))
    return sum(losses) / len(losses)


def naive_snn(emb, labels, ref_emb=None, ref_labels=None, t=1.0, sim=_sqeuc):
    """Frosst et al. (2019): -1/|I| sum_i log(sum_{j != i, same} e^{s/t} / sum_{k != i} e^{s/t})."""
    refs, pos, cand = _pairs(emb, labels, ref_emb, ref_labels)
    losses = []
    for i in range(len(emb)):
        num = [torch.exp(sim(emb[i], refs[j]) / t) for j in range(len(refs)) if pos(i, j)]
        if not num:
            continue
        den = sum(torch.exp(sim(emb[i], refs[k]) / t) for k in range(len(refs)) if cand(i, k))
        losses.append(-torch.log(sum(num) / den))
    return sum(losses) / len(losses)


def naive_npairs(emb, labels, normalize=True, l2_reg=0.0):
    """One pair per class: the class's first and second sample (batch order); softmax cross-entropy."""
    members = {}
    for i, y in enumerate(labels.tolist()):
        members.setdefault(y, []).append(i)
    pairs = [(m[0], m[1]) for m in members.values() if len(m) >= 2]

    def f(i):
        return emb[i] / emb[i].norm() if normalize else emb[i]

    total = 0
    for a, p in pairs:
        logits = [(f(a) * f(q)).sum() for _, q in pairs]
        target = (f(a) * f(p)).sum()
        total = total - torch.log(torch.exp(target) / sum(torch.exp(v) for v in logits))
        total = total + l2_reg * ((emb[a] ** 2).sum() + (emb[p] ** 2).sum()) / 2
    return total / len(pairs)


def _grad(fn, *tensors):
    tensors = [t.detach().clone().requires_grad_(True) for t in tensors]
    value = fn(*tensors)
    return value.detach(), torch.autograd.grad(value, tensors)


def _close(ours, ref, rtol=1e-4, atol=1e-7):
    v1, g1 = ours
    v2, g2 = ref
    torch.testing.assert_close(v1, v2.to(v1.dtype), rtol=rtol, atol=atol)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b.to(a.dtype), rtol=rtol, atol=atol)


@pytest.fixture
def batch():
    x = torch.randn(12, 5, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 3, 3, 4, 1, 0])
    return x, y


@pytest.fixture
def refs():
    r = torch.randn(9, 5, dtype=torch.float64)
    ry = torch.tensor([0, 0, 1, 2, 5, 5, 3, 1, 4])
    return r, ry


# ---------------------------------------------------------------- NT-Xent


def test_ntxent_matches_loop_reference(batch):
    x, y = batch
    _close(
        _grad(lambda e: NTXentLoss(temperature=0.2)(e, y), x), _grad(lambda e: naive_ntxent(e, y, t=0.2), x)
    )


def test_ntxent_with_refs_matches_loop_reference(batch, refs):
    x, y = batch
    r, ry = refs
    ours = _grad(lambda e, f: ntxent_loss(e, y, ref_emb=f, ref_labels=ry, temperature=0.5), x, r)
    ref = _grad(lambda e, f: naive_ntxent(e, y, f, ry, t=0.5), x, r)
    _close(ours, ref)


def test_ntxent_is_simclr_on_two_views():
    z1, z2 = torch.randn(6, 4, dtype=torch.float64), torch.randn(6, 4, dtype=torch.float64)
    labels = torch.arange(6).repeat(2)
    ours = _grad(lambda a, b: NTXentLoss(temperature=0.3)(torch.cat([a, b]), labels), z1, z2)
    _close(ours, _grad(lambda a, b: naive_simclr(a, b, 0.3), z1, z2))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_ntxent_matches_pml(batch, refs, dtype):
    x, y = batch
    r, ry = refs
    x, r = x.to(dtype), r.to(dtype)
    _close(
        _grad(lambda e: NTXentLoss()(e, y), x), _grad(lambda e: pml_losses.NTXentLoss()(e, y), x), atol=1e-6
    )
    ours = _grad(lambda e, f: NTXentLoss(temperature=0.1)(e, y, ref_emb=f, ref_labels=ry), x, r)
    theirs = _grad(lambda e, f: pml_losses.NTXentLoss(temperature=0.1)(e, y, ref_emb=f, ref_labels=ry), x, r)
    _close(ours, theirs, atol=1e-6)


def test_ntxent_gradcheck(batch, refs):
    x, y = batch
    r, ry = refs
    x = x[:7].clone().requires_grad_(True)
    r = r.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: NTXentLoss(temperature=0.3)(e, y[:7]), (x,))
    assert torch.autograd.gradcheck(
        lambda e, f: NTXentLoss(temperature=0.3)(e, y[:7], ref_emb=f, ref_labels=ry), (x, r)
    )


def test_ntxent_stats(batch):
    x, y = batch
    loss = NTXentLoss()
    loss(x, y)
    n_pos = sum(1 for i in range(12) for j in range(12) if i != j and y[i] == y[j])
    assert loss.stats["pos_pairs"] == n_pos
    assert loss.stats["anchors_with_pos"] == pytest.approx(11 / 12)  # label 4 is a singleton
    xn = torch.nn.functional.normalize(x, dim=1)
    s = xn @ xn.T
    pos = [float(s[i, j]) for i in range(12) for j in range(12) if i != j and y[i] == y[j]]
    neg = [float(s[i, j]) for i in range(12) for j in range(12) if y[i] != y[j]]
    assert loss.stats["mean_pos_similarity"] == pytest.approx(sum(pos) / len(pos))
    assert loss.stats["mean_neg_similarity"] == pytest.approx(sum(neg) / len(neg))


# ---------------------------------------------------------------- SupCon


@pytest.mark.parametrize("variant", ["out", "in"])
def test_supcon_matches_loop_reference(batch, refs, variant):
    x, y = batch
    r, ry = refs
    _close(
        _grad(lambda e: SupConLoss(temperature=0.3, variant=variant)(e, y), x),
        _grad(lambda e: naive_supcon(e, y, t=0.3, variant=variant), x),
    )
    _close(
        _grad(
            lambda e, f: supcon_loss(e, y, ref_emb=f, ref_labels=ry, temperature=0.3, variant=variant), x, r
        ),
        _grad(lambda e, f: naive_supcon(e, y, f, ry, t=0.3, variant=variant), x, r),
    )


def test_supcon_in_and_out_differ_when_several_positives(batch):
    x, y = batch
    assert not torch.isclose(SupConLoss(variant="out")(x, y), SupConLoss(variant="in")(x, y))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_supcon_matches_pml(batch, refs, dtype):
    x, y = batch
    r, ry = refs
    x, r = x.to(dtype), r.to(dtype)
    _close(
        _grad(lambda e: SupConLoss()(e, y), x), _grad(lambda e: pml_losses.SupConLoss()(e, y), x), atol=1e-6
    )
    ours = _grad(lambda e, f: SupConLoss(temperature=0.07)(e, y, ref_emb=f, ref_labels=ry), x, r)
    theirs = _grad(lambda e, f: pml_losses.SupConLoss(temperature=0.07)(e, y, ref_emb=f, ref_labels=ry), x, r)
    _close(ours, theirs, atol=1e-6)


@pytest.mark.parametrize("variant", ["out", "in"])
def test_supcon_gradcheck(batch, refs, variant):
    x, y = batch
    r, ry = refs
    x = x[:7].clone().requires_grad_(True)
    r = r.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: SupConLoss(0.3, variant)(e, y[:7]), (x,))
    assert torch.autograd.gradcheck(
        lambda e, f: SupConLoss(0.3, variant)(e, y[:7], ref_emb=f, ref_labels=ry), (x, r)
    )


def test_supcon_one_class_is_the_papers_loss_not_pml_zero():
    x = torch.randn(6, 4, dtype=torch.float64)
    y = torch.zeros(6, dtype=torch.long)
    ours = SupConLoss()(x, y)
    torch.testing.assert_close(ours, naive_supcon(x, y))
    assert ours > 0
    assert pml_losses.SupConLoss()(x, y) == 0  # the documented difference


# ---------------------------------------------------------------- soft nearest neighbour


@pytest.mark.parametrize(("distance", "sim"), [("squared_euclidean", _sqeuc), ("cosine", _cos)])
def test_snn_matches_loop_reference(batch, refs, distance, sim):
    x, y = batch
    r, ry = refs
    _close(
        _grad(lambda e: SoftNearestNeighborLoss(temperature=2.0, distance=distance)(e, y), x),
        _grad(lambda e: naive_snn(e, y, t=2.0, sim=sim), x),
    )
    _close(
        _grad(
            lambda e, f: soft_nearest_neighbor_loss(
                e, y, ref_emb=f, ref_labels=ry, temperature=0.5, distance=distance
            ),
            x,
            r,
        ),
        _grad(lambda e, f: naive_snn(e, y, f, ry, t=0.5, sim=sim), x, r),
    )


def test_snn_denominator_runs_over_all_others_not_only_negatives():
    # two points of one class and one of another: with Frosst's denominator the loss is
    # log(1 + e^{s_neg} / e^{s_pos}) for the pair; a negatives-only denominator would give s_neg - s_pos
    x = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 1])
    s01, s02, s12 = -1.0, -4.0, -5.0
    expected = (math.log(1 + math.exp(s02 - s01)) + math.log(1 + math.exp(s12 - s01))) / 2
    assert SoftNearestNeighborLoss()(x, y).item() == pytest.approx(expected, rel=1e-12)


def test_snn_gradcheck(batch, refs):
    x, y = batch
    r, ry = refs
    x = x[:7].clone().requires_grad_(True)
    r = r.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: SoftNearestNeighborLoss(0.7)(e, y[:7]), (x,))
    assert torch.autograd.gradcheck(
        lambda e, f: SoftNearestNeighborLoss(0.7, "cosine")(e, y[:7], ref_emb=f, ref_labels=ry), (x, r)
    )


# ---------------------------------------------------------------- N-pairs


def test_npairs_matches_loop_reference(batch):
    x, y = batch
    _close(_grad(lambda e: NPairsLoss()(e, y), x), _grad(lambda e: naive_npairs(e, y), x))
    _close(
        _grad(lambda e: NPairsLoss(normalize_embeddings=False, l2_reg=0.01)(e, y), x),
        _grad(lambda e: naive_npairs(e, y, normalize=False, l2_reg=0.01), x),
    )


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_npairs_matches_pml(dtype):
    x = torch.randn(20, 6, dtype=dtype)
    y = torch.randint(0, 6, (20,))
    _close(
        _grad(lambda e: NPairsLoss()(e, y), x), _grad(lambda e: pml_losses.NPairsLoss()(e, y), x), atol=1e-6
    )


def test_npairs_gradcheck(batch):
    x, y = batch
    x = x.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda e: NPairsLoss()(e, y), (x,))
    assert torch.autograd.gradcheck(lambda e: NPairsLoss(normalize_embeddings=False, l2_reg=0.1)(e, y), (x,))


def test_npairs_refuses_refs_and_multilabel(batch, refs):
    x, y = batch
    r, ry = refs
    with pytest.raises(ValueError, match="NPairsLoss supports neither ref_emb"):
        NPairsLoss()(x, y, ref_emb=r, ref_labels=ry)
    with pytest.raises(ValueError, match=r"NPairsLoss needs class ids \[B\]"):
        NPairsLoss()(x, torch.eye(12, 3, dtype=torch.long))


def test_npairs_stats(batch):
    x, y = batch
    loss = NPairsLoss()
    loss(x, y)
    assert loss.stats["num_pairs"] == 4  # classes 0, 1, 2, 3 have two or more samples
    # the first two samples (by index) of each class: anchor and positive; cosines in a loop
    members = {}
    for i, label in enumerate(y.tolist()):
        members.setdefault(label, []).append(i)
    chosen = sorted(idx[:2] for idx in members.values() if len(idx) >= 2)
    unit = torch.nn.functional.normalize(x.detach(), dim=1)
    pos = [float(unit[a] @ unit[p]) for a, p in chosen]
    neg = [float(unit[a] @ unit[q]) for a, _ in chosen for b, q in chosen if b != a]
    assert loss.stats["mean_pos_similarity"] == pytest.approx(sum(pos) / len(pos), rel=1e-6)
    assert loss.stats["mean_neg_similarity"] == pytest.approx(sum(neg) / len(neg), rel=1e-6)


# ---------------------------------------------------------------- edge cases (all losses)

ALL = [
    pytest.param(lambda: NTXentLoss(), id="ntxent"),
    pytest.param(lambda: SupConLoss(), id="supcon"),
    pytest.param(lambda: SupConLoss(variant="in"), id="supcon_in"),
    pytest.param(lambda: SoftNearestNeighborLoss(), id="snn"),
    pytest.param(lambda: NPairsLoss(), id="npairs"),
    pytest.param(lambda: NTXentLoss(chunk_size=3), id="ntxent_chunked"),
]


@pytest.mark.parametrize("make", ALL)
def test_all_singletons_give_zero_loss_that_backprops(make):
    x = torch.randn(7, 4, requires_grad=True)
    loss = make()(x, torch.arange(7))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


@pytest.mark.parametrize("make", ALL)
def test_nan_or_inf_is_refused(make):
    x = torch.randn(6, 4)
    x[2, 1] = float("nan")
    with pytest.raises(ValueError, match="embeddings contain NaN or inf"):
        make()(x, torch.zeros(6, dtype=torch.long))
    x[2, 1] = float("inf")
    with pytest.raises(ValueError, match="embeddings contain NaN or inf"):
        make()(x, torch.zeros(6, dtype=torch.long))


@pytest.mark.parametrize("make", ALL)
def test_labels_of_wrong_length_and_dim_mismatch(make):
    x = torch.randn(6, 4)
    with pytest.raises(ValueError, match="labels has 5 entries but embeddings has 6 rows"):
        make()(x, torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="ref_emb has dimension 3 but embeddings have 4"):
        make()(x, torch.zeros(6, dtype=torch.long), ref_emb=torch.randn(5, 3), ref_labels=torch.zeros(5))
    with pytest.raises(ValueError, match=r"embeddings must have shape \[batch, dim\]"):
        make()(torch.randn(6), torch.zeros(6, dtype=torch.long))


@pytest.mark.parametrize("make", ALL)
def test_positional_indices_tuple_is_pmls_third_argument(make):
    x, y = torch.randn(6, 4), torch.tensor([0, 0, 1, 1, 2, 2])
    idx = (torch.tensor([0, 2]), torch.tensor([1, 3]), torch.tensor([2, 4]))
    loss = make()
    if not loss.accepts_indices_tuple:  # SNN, N-pairs: PML's take no pairs either way here
        with pytest.raises(TypeError, match="takes no indices_tuple.*pass a miner in the constructor"):
            loss(x, y, idx)
        return
    assert torch.equal(loss(x, y, idx), loss(x, None, indices_tuple=idx))
    with pytest.raises(TypeError, match="give indices_tuple once"):
        loss(x, y, idx, indices_tuple=idx)


def test_one_class_ntxent_snn_npairs_are_zero():
    x = torch.randn(6, 4, dtype=torch.float64, requires_grad=True)
    y = torch.zeros(6, dtype=torch.long)
    # NT-Xent: no negatives -> each l(a, p) = -log(1) = 0 (PML agrees)
    assert NTXentLoss()(x, y).item() == pytest.approx(0.0, abs=1e-12)
    assert pml_losses.NTXentLoss()(x, y).item() == 0.0
    # SNN: numerator == denominator
    assert SoftNearestNeighborLoss()(x, y).item() == pytest.approx(0.0, abs=1e-12)
    # N-pairs: one pair, a 1-way softmax
    _close(_grad(lambda e: NPairsLoss()(e, y), x), _grad(lambda e: pml_losses.NPairsLoss()(e, y), x))


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (NTXentLoss, pml_losses.NTXentLoss),
        (SupConLoss, pml_losses.SupConLoss),
        (NPairsLoss, pml_losses.NPairsLoss),
    ],
)
def test_duplicates_and_zero_vectors_match_pml(ours, theirs):
    x = torch.randn(8, 4, dtype=torch.float64)
    x[1] = x[0]
    x[2] = x[0]
    x[5] = 0.0  # a zero vector: cosine similarity 0 with everything
    y = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    a, b = _grad(lambda e: ours()(e, y), x), _grad(lambda e: theirs()(e, y), x)
    assert torch.isfinite(a[0]) and all(torch.isfinite(g).all() for g in a[1])
    _close(a, b, atol=1e-6)


def test_snn_duplicates_and_zero_vectors_match_loop_reference():
    x = torch.randn(8, 4, dtype=torch.float64)
    x[1] = x[0]
    x[5] = 0.0
    y = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
    for distance, sim in (("squared_euclidean", _sqeuc), ("cosine", _cos)):
        value, (grad,) = _grad(lambda e, d=distance: SoftNearestNeighborLoss(distance=d)(e, y), x)
        ref_value, (ref_grad,) = _grad(lambda e, s=sim: naive_snn(e, y, sim=s), x)
        assert torch.isfinite(grad).all()
        torch.testing.assert_close(value, ref_value)
        # cosine is not differentiable at a zero vector (F.normalize gives ~1/eps there, as PML);
        # every other row's gradient is well defined and must agree
        rows = torch.arange(8) != 5
        torch.testing.assert_close(grad[rows], ref_grad[rows])


def test_anchor_without_negatives_counts_zero_like_pml():
    # refs only of the anchor's own class for query 0: its pairs give l = 0 but are counted
    x = torch.randn(3, 4, dtype=torch.float64)
    y = torch.tensor([0, 1, 1])
    r = torch.randn(4, 4, dtype=torch.float64)
    ry = torch.tensor([0, 0, 1, 1])
    ours = _grad(lambda e, f: NTXentLoss()(e, y, ref_emb=f, ref_labels=ry), x, r)
    theirs = _grad(lambda e, f: pml_losses.NTXentLoss()(e, y, ref_emb=f, ref_labels=ry), x, r)
    _close(ours, theirs)


# ---------------------------------------------------------------- miner=


class FixedMiner:
    """Returns fixed pair masks (a stand-in for any likewise miner)."""

    def __init__(self, pos, neg):
        self.pos, self.neg = pos, neg
        self.calls = 0

    def __call__(self, embeddings, labels, **kwargs):
        self.calls += 1
        return PairMask(self.pos, self.neg)


def _mined_pairs(y, gen):
    same = y[:, None] == y[None, :]
    eye = torch.eye(len(y), dtype=torch.bool)
    keep = torch.rand(len(y), len(y), generator=gen) < 0.6
    return same & ~eye & keep, ~same & keep


@pytest.mark.parametrize(
    ("ours", "theirs"), [(NTXentLoss, pml_losses.NTXentLoss), (SupConLoss, pml_losses.SupConLoss)]
)
def test_miner_restricts_pairs_like_pml_indices_tuple(batch, ours, theirs):
    x, y = batch
    pos, neg = _mined_pairs(y, torch.Generator().manual_seed(3))
    miner = FixedMiner(pos, neg)
    a1, p = pos.nonzero(as_tuple=True)
    a2, n = neg.nonzero(as_tuple=True)
    _close(_grad(lambda e: ours(miner=miner)(e, y), x), _grad(lambda e: theirs()(e, y, (a1, p, a2, n)), x))
    assert miner.calls == 1


def test_snn_miner_restricts_pairs(batch):
    x, y = batch
    pos, neg = _mined_pairs(y, torch.Generator().manual_seed(4))
    loss = SoftNearestNeighborLoss(miner=FixedMiner(pos, neg))(x, y)
    expected = []
    for i in range(12):
        num = [math.exp(-float(((x[i] - x[j]) ** 2).sum())) for j in range(12) if pos[i, j]]
        den = [math.exp(-float(((x[i] - x[k]) ** 2).sum())) for k in range(12) if pos[i, k] or neg[i, k]]
        if num:
            expected.append(-math.log(sum(num) / sum(den)))
    assert loss.item() == pytest.approx(sum(expected) / len(expected), rel=1e-10)


# ---------------------------------------------------------------- chunk_size


CHUNKED = [
    pytest.param(lambda c: NTXentLoss(temperature=0.1, chunk_size=c), id="ntxent"),
    pytest.param(lambda c: SupConLoss(chunk_size=c), id="supcon_out"),
    pytest.param(lambda c: SupConLoss(variant="in", chunk_size=c), id="supcon_in"),
    pytest.param(lambda c: SoftNearestNeighborLoss(temperature=4.0, chunk_size=c), id="snn"),
]


@pytest.mark.parametrize("make", CHUNKED)
@pytest.mark.parametrize("with_refs", [False, True])
def test_chunked_equals_unchunked(make, with_refs):
    x = torch.randn(53, 16)
    y = torch.randint(0, 6, (53,))
    r, ry = (torch.randn(31, 16), torch.randint(0, 6, (31,))) if with_refs else (None, None)

    def run(c):
        e = x.clone().requires_grad_(True)
        f = None if r is None else r.clone().requires_grad_(True)
        loss_fn = make(c)
        value = loss_fn(e, y) if f is None else loss_fn(e, y, ref_emb=f, ref_labels=ry)
        grads = torch.autograd.grad(value, [e] if f is None else [e, f])
        return value.detach(), grads, loss_fn.stats

    v0, g0, s0 = run(None)
    v1, g1, s1 = run(7)
    torch.testing.assert_close(v1, v0, rtol=1e-5, atol=1e-5)
    for a, b in zip(g1, g0):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    assert s1 == pytest.approx(s0, rel=1e-5)


def test_chunked_with_self_index_and_gradcheck():
    x = torch.randn(9, 3, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 0, 1, 2, 2, 0, 1, 2])
    past = torch.randn(4, 3, dtype=torch.float64)
    ry = torch.cat([y, torch.tensor([0, 1, 2, 3])])
    idx = torch.arange(9)

    def f(e, c):
        return SupConLoss(0.5, chunk_size=c)(
            e, y, ref_emb=torch.cat([e, past]), ref_labels=ry, ref_self_index=idx
        )

    torch.testing.assert_close(f(x, 2), f(x, None))
    assert torch.autograd.gradcheck(lambda e: f(e, 2), (x,))
    assert torch.autograd.gradcheck(lambda e: NTXentLoss(0.5, chunk_size=4)(e, y), (x,))
    assert torch.autograd.gradcheck(lambda e: SoftNearestNeighborLoss(0.5, chunk_size=4)(e, y), (x,))


def test_chunked_8192_by_128_trains():
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(64, 128, generator=gen)
    labels = torch.arange(64).repeat_interleave(128)
    feats = centers[labels] + 2.0 * torch.randn(8192, 128, generator=gen)
    head = torch.nn.Linear(128, 128)
    opt = torch.optim.SGD(head.parameters(), lr=2.0)
    loss_fn = NTXentLoss(temperature=0.1, chunk_size=512)
    with LargestTensors() as sizes:
        loss = loss_fn(head(feats), labels)  # forward + backward, 512 x 8192 similarities at a time
        loss.backward()
    # nothing larger than one [512, 8192] block was ever made (a full S would be 16x that)
    assert sizes.largest_any <= 512 * 8192, (sizes.largest_any_op, sizes.largest_any)
    assert all(torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in head.parameters())
    assert loss_fn.stats["pos_pairs"] == 8192 * 127
    opt.step()
    with torch.no_grad():
        assert loss_fn(head(feats), labels) < loss.detach()


@pytest.mark.parametrize("make", CHUNKED)
@pytest.mark.parametrize("with_refs", [False, True])
def test_chunked_never_holds_more_than_chunk_by_n(make, with_refs):
    b, n, d, c = 600, 450, 8, 64
    x, y = torch.randn(b, d), torch.randint(0, 20, (b,))
    r, ry = torch.randn(n, d), torch.randint(0, 20, (n,))
    refs = n if with_refs else b

    def forward_backward(chunk):
        e, f = x.clone().requires_grad_(True), r.clone().requires_grad_(True)
        loss_fn = make(chunk)
        value = loss_fn(e, y, ref_emb=f, ref_labels=ry) if with_refs else loss_fn(e, y)
        value.backward()
        return value

    with LargestTensors() as sizes:
        forward_backward(c)
    # every tensor made in forward, backward and the recomputation: at most one [c, N] block
    # (float or bool: label masks are built per block too)
    assert sizes.largest_any <= c * refs, (sizes.largest_any_op, sizes.largest_any)
    # the same check sees a full [B, N] matrix without chunking ...
    with LargestTensors() as sizes:
        forward_backward(None)
    assert sizes.largest >= b * refs
    # ... and in backward alone
    e = x.clone().requires_grad_(True)
    value = make(None)(e, y)
    with LargestTensors() as sizes:
        value.backward()
    assert sizes.largest >= b * b


# ---------------------------------------------------------------- constructor errors and helpers


@pytest.mark.parametrize("cls", [NTXentLoss, SupConLoss, SoftNearestNeighborLoss])
def test_bad_temperature_and_chunk_size(cls):
    for bad in (0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
            cls(temperature=bad)
    with pytest.raises(TypeError, match="temperature must be a positive number"):
        cls(temperature="0.1")
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="chunk_size must be a positive integer or None"):
            cls(chunk_size=bad)
    with pytest.raises(ValueError, match="chunk_size and miner cannot be combined"):
        cls(chunk_size=4, miner=FixedMiner(None, None))


def test_bad_variant_distance_and_l2_reg():
    with pytest.raises(ValueError, match="variant must be 'out' or 'in'"):
        SupConLoss(variant="both")
    with pytest.raises(ValueError, match="unknown metric 'manhattan'"):
        SoftNearestNeighborLoss(distance="manhattan")
    with pytest.raises(ValueError, match="l2_reg must be a finite number >= 0"):
        NPairsLoss(l2_reg=-1)


def test_ntxent_kernel_runs_only_where_exps_clamp_cannot_act():
    # anchor 0: positives 1 (cosine 1) and 2 (cosine -1), negative 3 (cosine -1). At t = 0.01 the
    # negative lies 200 below the row maximum, past the clamp of exp_ at -80: the kernel would
    # give l(0, 2) ~ 120 instead of log 2, so it must not be eligible there
    x = torch.tensor([[1.0, 0.0], [1.0, 0.0], [-1.0, 0.0], [-1.0, 0.0]])
    y = torch.tensor([0, 0, 0, 1])
    batch = check_batch(x, y)
    assert ntxent_kernel.eligible(batch, None, None, 0.07)
    assert not ntxent_kernel.eligible(batch, None, None, 0.01)
    assert not ntxent_kernel.eligible(batch, None, 2, 0.07)  # chunked: the plain path
    assert not ntxent_kernel.eligible(batch, object(), None, 0.07)  # a miner: the plain path
    # off the CPU the positives' index list would make the host wait: the plain path
    assert not ntxent_kernel.eligible(replace(batch, embeddings=x.to("meta")), None, None, 0.07)
    unguarded, _ = ntxent_kernel.ntxent_fast(batch, 0.01)
    plain = NTXentLoss(temperature=0.01, fast=False)(x, y)
    assert plain.item() == pytest.approx(NTXentLoss(temperature=0.01)(x, y).item())
    assert unguarded.item() > plain.item() + 10
    # by hand over the 6 positive pairs (logits +-100): (0, 1), (1, 0) give ~0; (0, 2), (1, 2)
    # log 2; (2, 0), (2, 1) log(e^-100 + e^100) + 100 = 200 (their negative 3 is sample 2's twin)
    assert plain.item() == pytest.approx((400 + 2 * math.log(2)) / 6, rel=1e-5)


ELIGIBLE = {  # each kernel's eligibility with the loss's other settings at their defaults
    "supcon": lambda batch, miner, chunk: supcon_kernel.eligible(batch, miner, chunk),
    "snn": lambda batch, miner, chunk: snn_kernel.eligible(batch, miner, chunk, "squared_euclidean"),
    "circle": lambda batch, miner, chunk: circle_kernel.eligible(batch, miner),
}


@pytest.mark.parametrize("name", list(ELIGIBLE))
def test_kernel_eligibility_on_both_sides_of_each_condition(name):
    eligible = ELIGIBLE[name]
    x, y = torch.randn(8, 3), torch.arange(8) % 3
    batch = check_batch(x, y)
    assert eligible(batch, None, None) and eligible(batch, None, 8)  # a chunk covering the batch
    assert not eligible(batch, object(), None)  # a miner
    assert not eligible(replace(batch, embeddings=x.to("meta")), None, None)  # off the CPU
    assert not eligible(check_batch(x, torch.nn.functional.one_hot(y)), None, None)  # multi-label
    assert not eligible(check_batch(x, None, relevance=y[:, None] == y), None, None)
    given = replace(batch, given=object())  # indices_tuple
    assert not eligible(given, None, None)
    if name != "circle":  # Circle is never chunked
        assert not eligible(batch, None, 4)
    if name == "snn":
        assert snn_kernel.eligible(batch, None, None, "dot")
        assert not snn_kernel.eligible(batch, None, None, "euclidean")  # no GEMM factors


def test_ntxent_rows_on_rows_without_negatives_or_positives_and_gradient():
    logits = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]], dtype=torch.float64)
    logits.requires_grad_(True)
    pos = torch.tensor([[True, False, False], [True, True, False], [False, False, False]])
    neg = torch.tensor([[False, False, True], [False, False, False], [True, True, True]])
    loss_sum, weight = ntxent_rows(logits, pos, neg)
    # row 0: one pair over one negative; row 1: no negative, l = 0; row 2: no positive
    assert loss_sum[0].item() == pytest.approx(math.log(math.exp(1) + math.exp(3)) - 1)
    assert loss_sum[1:].tolist() == [0.0, 0.0] and weight.tolist() == [1, 2, 0]
    loss_sum.sum().backward()
    p = math.exp(1) / (math.exp(1) + math.exp(3))
    expected = torch.tensor([[p - 1, 0, 1 - p], [0, 0, 0], [0, 0, 0]], dtype=torch.float64)
    torch.testing.assert_close(logits.grad, expected)


# ---------------------------------------------------------------- multi-label and relevance


def test_multilabel_positives_share_a_label():
    x = torch.randn(7, 4, dtype=torch.float64)
    ml = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1], [1, 0, 1], [0, 1, 1]])
    # naive: a pair is positive iff the label sets intersect; encode that as a relevance loop below
    shares = [[i != j and bool((ml[i] & ml[j]).any()) for j in range(7)] for i in range(7)]
    for make in (lambda: NTXentLoss(0.3), lambda: SupConLoss(0.3), lambda: SoftNearestNeighborLoss(0.5)):
        via_labels = make()(x, ml)
        via_relevance = make()(x, None, relevance=torch.tensor(shares))
        torch.testing.assert_close(via_labels, via_relevance)
    terms = []
    for a in range(7):
        for p in range(7):
            if not shares[a][p]:
                continue
            num = math.exp(float(_cos(x[a], x[p])) / 0.3)
            den = num + sum(
                math.exp(float(_cos(x[a], x[n])) / 0.3) for n in range(7) if n != a and not shares[a][n]
            )
            terms.append(-math.log(num / den))
    assert NTXentLoss(0.3)(x, ml).item() == pytest.approx(sum(terms) / len(terms), rel=1e-10)
