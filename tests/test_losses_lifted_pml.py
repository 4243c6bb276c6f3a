"""LiftedStructureLoss(formula="pml"): pytorch-metric-learning 2.9's lifted structure loss, against
PML itself and against a loop over PML's listed pairs written here; the default stays Song's."""

from __future__ import annotations

import math

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances
from pytorch_metric_learning import losses as pml

from likewise.losses import LiftedStructureLoss, lifted_structure_loss

B, D = 12, 5


def _x(seed: int, b: int = B) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, D, generator=g, dtype=torch.float64)


def _labels(seed: int, b: int = B, classes: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, classes, (b,), generator=g)


def _pairs(seed: int, k: int = 20, n_ref: int = B) -> tuple[torch.Tensor, ...]:
    """Random pairs with duplicates (anchors of the negatives drawn from half the batch, so
    that some positive pairs have negatives on one side only and some on none)."""
    g = torch.Generator().manual_seed(seed)
    a1 = torch.randint(0, B, (k,), generator=g)
    p = (a1 + torch.randint(1, n_ref, (k,), generator=g)) % n_ref
    a2 = torch.randint(0, B // 2, (k,), generator=g)
    n = (a2 + torch.randint(1, n_ref, (k,), generator=g)) % n_ref
    dup = torch.arange(0, k, 3)
    return torch.cat([a1, a1[dup]]), torch.cat([p, p[dup]]), torch.cat([a2, a2[:4]]), torch.cat([n, n[:4]])


def _triplets(seed: int, k: int = 25) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randint(0, B, (k,), generator=g)
    return (
        a,
        (a + torch.randint(1, B, (k,), generator=g)) % B,
        (a + torch.randint(1, B, (k,), generator=g)) % B,
    )


def _run(loss, x, labels, ref=None, **kwargs):
    """Value and the gradients of the embeddings (and of ref_emb when given)."""
    e = x.clone().requires_grad_()
    r = None if ref is None else ref.clone().requires_grad_()
    extra = {} if r is None else {"ref_emb": r}
    value = loss(e, labels, **extra, **kwargs)
    (value + (0 * r.sum() if r is not None else 0)).backward()
    return value.detach(), e.grad, (None if r is None else r.grad)


def _agree(x, labels, ref=None, kw=None, theirs_kw=None, **call):
    kw = kw or {}
    ours = _run(LiftedStructureLoss(formula="pml", **kw), x, labels, ref, **call)
    theirs = _run(
        pml.LiftedStructureLoss(**(theirs_kw if theirs_kw is not None else kw)), x, labels, ref, **call
    )
    assert ours[0].item() == pytest.approx(theirs[0].item(), rel=1e-10, abs=1e-13)
    torch.testing.assert_close(ours[1], theirs[1], rtol=1e-8, atol=1e-12)
    if ref is not None:
        torch.testing.assert_close(ours[2], theirs[2], rtol=1e-8, atol=1e-12)
    return ours[0].item()


MARGINS = [{}, {"pos_margin": 0.3, "neg_margin": 0.8}, {"pos_margin": -0.2, "neg_margin": 1.5}]


@pytest.mark.parametrize("kw", MARGINS)
@pytest.mark.parametrize("seed", [0, 1])
def test_labels_equal_pml(kw, seed):
    value = _agree(_x(seed), _labels(seed), kw=kw)
    assert value > 0


def test_squared_euclidean_and_cosine_equal_pmls_distances():
    x, y = _x(2), _labels(2)
    _agree(
        x, y, kw={"distance": "squared_euclidean"}, theirs_kw={"distance": pml_distances.LpDistance(power=2)}
    )
    # PML's CosineSimilarity with margins (m_p, m_n) = cosine distance with (1 - m_p, 1 - m_n)
    ours = _run(LiftedStructureLoss(formula="pml", distance="cosine", pos_margin=0.1, neg_margin=0.8), x, y)
    theirs = _run(
        pml.LiftedStructureLoss(pos_margin=0.9, neg_margin=0.2, distance=pml_distances.CosineSimilarity()),
        x,
        y,
    )
    assert ours[0].item() == pytest.approx(theirs[0].item(), rel=1e-10)
    torch.testing.assert_close(ours[1], theirs[1], rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("kw", MARGINS[:2])
@pytest.mark.parametrize("seed", [3, 4, 5])
def test_pairs_with_duplicates_equal_pml(kw, seed):
    it = _pairs(seed)
    assert _agree(_x(seed), None, kw=kw, indices_tuple=it) > 0


@pytest.mark.parametrize("seed", [6, 7])
def test_triplets_equal_pml(seed):
    assert _agree(_x(seed), None, indices_tuple=_triplets(seed)) > 0


@pytest.mark.parametrize("n_ref", [9, 16])
def test_ref_emb_with_labels_equals_pml(n_ref):
    _agree(_x(8), _labels(8), _x(9, b=n_ref), ref_labels=_labels(10, b=n_ref))


@pytest.mark.parametrize("n_ref", [9, 16])
def test_ref_emb_with_pairs_equals_pml(n_ref):
    _agree(_x(11), None, _x(12, b=n_ref), indices_tuple=_pairs(13, n_ref=n_ref))


def test_degenerate_tuples_equal_pml():
    x = _x(14)
    # a pair of an item with itself, and a positive pair whose ends have no negative
    it = (
        torch.tensor([0, 3, 3, 7]),
        torch.tensor([1, 3, 4, 8]),
        torch.tensor([0, 3, 1]),
        torch.tensor([5, 6, 9]),
    )
    _agree(x, None, indices_tuple=it)
    # no negative listed: PML returns 0
    empty = torch.tensor([], dtype=torch.long)
    it = (torch.tensor([0, 1, 2]), torch.tensor([1, 2, 3]), empty, empty)
    assert _agree(x, None, indices_tuple=it) == 0.0
    # every label distinct: no positive pair, 0
    assert _agree(x, torch.arange(B)) == 0.0


def pml_lifted_loop(x, a1, p, a2, n, neg_margin=1.0, pos_margin=0.0, ref=None):
    """PML's definition read off its pairs, one positive listing at a time: the negatives are the
    listed (a2[k], n[k]) with a2[k] equal to the positive's anchor index or to its positive index."""
    xn = x / x.norm(dim=1, keepdim=True)
    r = xn if ref is None else ref / ref.norm(dim=1, keepdim=True)

    def d(i, j):
        return math.sqrt(sum((xn[i, c].item() - r[j, c].item()) ** 2 for c in range(x.shape[1])))

    if len(a1) == 0 or len(a2) == 0:
        return 0.0
    terms = []
    for i, j in zip(a1.tolist(), p.tolist(), strict=True):
        negs = [neg_margin - d(u, v) for u, v in zip(a2.tolist(), n.tolist(), strict=True) if u in (i, j)]
        lse = math.log(sum(math.exp(t) for t in negs)) if negs else 0.0
        terms.append(max(0.0, lse + d(i, j) - pos_margin) ** 2 / 2)
    return sum(terms) / len(terms)


@pytest.mark.parametrize("kw", MARGINS[:2])
def test_equals_a_loop_over_the_listed_pairs(kw):
    x = _x(15)
    it = _pairs(16)
    got = LiftedStructureLoss(formula="pml", **kw)(x, None, indices_tuple=it)
    assert got.item() == pytest.approx(pml_lifted_loop(x, *it, **kw), rel=1e-10)
    a, pos, neg = _triplets(17)
    got = LiftedStructureLoss(formula="pml", **kw)(x, None, indices_tuple=(a, pos, neg))
    assert got.item() == pytest.approx(pml_lifted_loop(x, a, pos, a, neg, **kw), rel=1e-10)
    y = _labels(18)
    same = y.unsqueeze(1) == y.unsqueeze(0)
    a1, p = torch.nonzero(same & ~torch.eye(B, dtype=torch.bool), as_tuple=True)
    a2, n = torch.nonzero(~same, as_tuple=True)
    got = LiftedStructureLoss(formula="pml", **kw)(x, y)
    assert got.item() == pytest.approx(pml_lifted_loop(x, a1, p, a2, n, **kw), rel=1e-10)


def test_ref_emb_equals_the_loop():
    x, ref = _x(19), _x(20, b=9)
    it = _pairs(21, n_ref=9)
    got = LiftedStructureLoss(formula="pml")(x, None, indices_tuple=it, ref_emb=ref)
    assert got.item() == pytest.approx(pml_lifted_loop(x, *it, ref=ref), rel=1e-10)


def test_functional_form_takes_counts():
    x = _x(22)
    it = _pairs(23)
    xn = x / x.norm(dim=1, keepdim=True)
    dist = torch.cdist(xn, xn)
    pos_w, neg_w = torch.zeros(B, B, dtype=x.dtype), torch.zeros(B, B, dtype=x.dtype)
    pos_w.index_put_((it[0], it[1]), torch.ones(len(it[0]), dtype=x.dtype), accumulate=True)
    neg_w.index_put_((it[2], it[3]), torch.ones(len(it[2]), dtype=x.dtype), accumulate=True)
    got = lifted_structure_loss(dist, pos_w, neg_w, formula="pml")
    assert got.item() == pytest.approx(pml_lifted_loop(x, *it), rel=1e-10)


@pytest.mark.parametrize("case", ["labels", "pairs", "ref"])
def test_gradcheck(case):
    x = _x(24, b=8).requires_grad_()
    loss = LiftedStructureLoss(formula="pml", pos_margin=0.1, neg_margin=0.9)
    if case == "labels":
        y = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1])
        assert torch.autograd.gradcheck(lambda e: loss(e, y), (x,))
    elif case == "pairs":
        it = (
            torch.tensor([0, 1, 1, 4]),
            torch.tensor([2, 3, 3, 5]),
            torch.tensor([0, 1, 2, 2]),
            torch.tensor([6, 7, 4, 4]),
        )
        assert torch.autograd.gradcheck(lambda e: loss(e, None, indices_tuple=it), (x,))
    else:
        ref = _x(25, b=6).requires_grad_()
        y, ry = torch.tensor([0, 0, 1, 1, 2, 2, 0, 1]), torch.tensor([0, 1, 2, 0, 1, 2])
        assert torch.autograd.gradcheck(lambda e, r: loss(e, y, ref_emb=r, ref_labels=ry), (x, ref))


def test_default_is_song_equal_to_pml_on_labels_not_on_pairs():
    x, y = _x(26), _labels(26)
    song = LiftedStructureLoss()(x, y)
    assert LiftedStructureLoss().formula == "song"
    assert song.item() == LiftedStructureLoss(formula="song")(x, y).item()
    # Song: pairs averaged as unordered (1 / 2|P|) over ordered pairs, column negatives
    xn = x / x.norm(dim=1, keepdim=True)
    d = torch.cdist(xn, xn)
    total, count = 0.0, 0
    for i in range(B):
        for j in range(B):
            if i == j or y[i] != y[j]:
                continue
            negs = [1 - d[i, k].item() for k in range(B) if y[k] != y[i]]
            negs += [1 - d[k, j].item() for k in range(B) if y[k] != y[j]]
            total += max(0.0, math.log(sum(math.exp(t) for t in negs)) + d[i, j].item()) ** 2
            count += 1
    assert song.item() == pytest.approx(total / (2 * count), rel=1e-10)
    # with class ids (no ref_emb) Song's formula is PML's; on given pairs they differ
    assert LiftedStructureLoss(formula="pml")(x, y).item() == pytest.approx(song.item(), rel=1e-10)
    it = _pairs(27)
    song_pairs = LiftedStructureLoss()(x, None, indices_tuple=it).item()
    assert song_pairs == LiftedStructureLoss(formula="song")(x, None, indices_tuple=it).item()
    pml_pairs = LiftedStructureLoss(formula="pml")(x, None, indices_tuple=it).item()
    assert pml_pairs == pytest.approx(pml_lifted_loop(x, *it), rel=1e-10)
    assert abs(song_pairs - pml_pairs) > 1e-3 * pml_pairs


def test_unknown_formula_is_refused():
    with pytest.raises(ValueError, match="unknown formula 'generalized'; expected 'song' or 'pml'"):
        LiftedStructureLoss(formula="generalized")
    with pytest.raises(ValueError, match="unknown formula"):
        lifted_structure_loss(torch.zeros(2, 2), torch.eye(2) > 0, torch.eye(2) == 0, formula="PML")


def test_stats_of_the_pml_formula():
    x = _x(27)
    it = _pairs(28)
    loss = LiftedStructureLoss(formula="pml")
    loss(x, None, indices_tuple=it)
    xn = x / x.norm(dim=1, keepdim=True)
    d = torch.cdist(xn, xn)
    mean_pos = sum(d[i, j].item() for i, j in zip(it[0].tolist(), it[1].tolist(), strict=True)) / len(it[0])
    assert loss.stats["mean_pos_distance"] == pytest.approx(mean_pos, rel=1e-10)
    assert 0.0 < loss.stats["active_fraction"] <= 1.0


@pytest.mark.parametrize("given", [False, True])
def test_pml_formula_reads_no_tensor_on_the_host(monkeypatch, given):
    """Forward and backward after validation: no .item(), bool(), float(), int() or .tolist()
    on a tensor (each would be a device synchronisation on a GPU)."""
    from dataclasses import replace

    from likewise.losses.base import check_batch
    from likewise.losses.given import parse_indices_tuple

    x = _x(29).requires_grad_()
    batch = check_batch(x, None if given else _labels(29), pairs_given=given)
    if given:
        rel = parse_indices_tuple(_pairs(30), B, B, x.device, x.dtype)
        batch = replace(batch, given=rel)
    loss = LiftedStructureLoss(formula="pml")

    def refuse(*_args, **_kwargs):
        raise AssertionError("host synchronisation")

    for name in ("item", "tolist", "__bool__", "__float__", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, refuse)
    value = loss.compute(batch)
    value.backward()
    monkeypatch.undo()
    assert value.item() > 0 and x.grad.abs().sum().item() > 0
