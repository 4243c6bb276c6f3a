"""Every loss and every miner on the inputs a new user gives them (issue 11, section 3).

Families: each float dtype (float16 / bfloat16 / float32 / float64); an all-zero row;
duplicated rows; embeddings and references (or proxies) of different dtypes; class ids
as bool / int8 / uint8 / int32 / int64 (and a different dtype for the references); float
class ids. A loss must give a finite value and finite gradients, and a low-precision result
must agree (loosely) with float32 computed on the same values; a miner must select what it
selects in float32 on the same values. Bad input ends in the exact error.

The loss list is built from ``likewise.losses.LOSSES`` and the miner list from
``likewise.mining.MINERS``: a loss or miner added later without an entry here fails
``test_every_public_loss_and_miner_is_covered``.
"""

from __future__ import annotations

import pytest
import torch

import likewise.losses as L
import likewise.mining as M
from likewise.normalize import l2_normalize, valid_eps
from likewise.similarity import pairwise_distance, pairwise_similarity, relation_masks

B, D, CLASSES = 24, 16, 4
PROXY_LOSSES = ("ProxyAnchorLoss", "ArcFaceLoss")
LOW = (torch.float16, torch.bfloat16)
DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

#: every public loss with its defaults, plus the variants that take other code paths
LOSS_MAKERS = {
    **{name: cls for name, cls in L.LOSSES.items() if name not in PROXY_LOSSES},
    "ProxyAnchorLoss": lambda: L.ProxyAnchorLoss(CLASSES + 1, D),
    "ArcFaceLoss": lambda: L.ArcFaceLoss(CLASSES + 1, D),
    "ContrastiveLoss-cosine": lambda: L.ContrastiveLoss(distance="cosine", pos_margin=0.9, neg_margin=0.2),
    "ContrastiveLoss-unnormalised": lambda: L.ContrastiveLoss(normalize_embeddings=False, neg_margin=4.0),
    "ContrastiveLoss-distance-weighted": lambda: L.ContrastiveLoss(miner=M.DistanceWeightedMiner(seed=0)),
    "TripletMarginLoss-semihard": lambda: L.TripletMarginLoss(margin=0.2, miner=M.SemiHardMiner(0.2)),
    "TripletMarginLoss-batch-hard": lambda: L.TripletMarginLoss(margin=0.2, miner=M.BatchHardMiner()),
    "TripletMarginLoss-squared": lambda: L.TripletMarginLoss(margin=0.2, distance="squared_euclidean"),
    "TripletMarginLoss-smooth": lambda: L.TripletMarginLoss(smooth_loss=True),
    "MultiSimilarityLoss-mined": lambda: L.MultiSimilarityLoss(miner=M.MultiSimilarityMiner()),
    "SupConLoss-in": lambda: L.SupConLoss(variant="in"),
    "SupConLoss-chunked": lambda: L.SupConLoss(chunk_size=5),
    "SoftNearestNeighborLoss-cosine": lambda: L.SoftNearestNeighborLoss(distance="cosine"),
}
#: losses that take neither ref_emb nor relevance (they refuse both with a ValueError)
NO_REFS = ("NPairsLoss", *PROXY_LOSSES)
MINERS = M.MINERS


def _miner(name):
    return MINERS[name](seed=0) if name == "DistanceWeightedMiner" else MINERS[name]()


def _data(case, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, D, generator=g, dtype=torch.float64)
    labels = torch.arange(B) % CLASSES
    labels[-1] = CLASSES  # a singleton class
    if case in ("zero_row", "zero_rows_and_duplicates"):
        x[3] = 0
    if case in ("duplicates", "zero_rows_and_duplicates"):
        x[5] = x[1]  # same class
        x[6] = x[4]  # different classes
    if case == "zero_rows_and_duplicates":
        x[7] = 0  # two zero rows: duplicates of each other, different classes
    if case == "large":  # float16 holds them, not their squares (nor sums of B N terms)
        x = x * 300
    return x, labels


def _call(loss, name, x, labels, path, refs=None):
    if name == "LogRatioLoss":
        labels = labels.to(torch.float64).unsqueeze(1)
    if path == "mask":  # the general path on boolean masks, whatever the labels allow
        return loss(x, labels, relevance=relation_masks(labels)[0])
    if path == "refs":  # references: the batch reversed, as a tensor of its own
        return loss(x, labels, ref_emb=refs, ref_labels=labels.flip(0))
    return loss(x, labels)


def _value_and_grads(loss, name, x, labels, path="self"):
    """The loss and the gradients of the embeddings, the references (path "refs") and the
    loss's parameters (proxies)."""
    x = x.detach().clone().requires_grad_(True)
    inputs = [x]
    refs = None
    if path == "refs":
        refs = x.detach().flip(0).requires_grad_(True)
        inputs.append(refs)
    inputs += list(loss.parameters())
    value = _call(loss, name, x, labels, path, refs)
    grads = torch.autograd.grad(value, inputs, allow_unused=True)
    return value.detach(), [torch.zeros_like(i) if g is None else g for g, i in zip(grads, inputs)]


def _paths(name):
    if name == "LogRatioLoss":  # continuous labels: no relation masks
        return ("self", "refs")
    return ("self",) if name in NO_REFS else ("self", "mask", "refs")


def _make(name):
    torch.manual_seed(0)  # the same proxies each time
    return LOSS_MAKERS[name]()


def _assert_finite(value, grads):
    assert torch.isfinite(value).all(), value
    for g in grads:
        assert torch.isfinite(g).all()


def _close(low, ref, rtol, atol):
    """``|low - ref| <= rtol |ref| + atol`` in norm (float64)."""
    low, ref = low.double(), ref.double()
    return float(torch.linalg.vector_norm(low - ref)) <= rtol * float(torch.linalg.vector_norm(ref)) + atol


#: (value rtol, gradient rtol) against float32 on the same values (norms; atol = rtol / 100).
#: float16 is computed in float32: only the result's rounding differs. bfloat16 is computed
#: in bfloat16 (8 significant bits): a hinge term at its margin may switch on or off (an
#: all-zero row is at distance exactly 1 from every unit vector, ContrastiveLoss's margin).
TOLERANCE = {torch.float16: (1e-3, 1e-2), torch.bfloat16: (6e-2, 0.4)}


def test_every_public_loss_and_miner_is_covered():
    assert set(L.LOSSES) <= set(LOSS_MAKERS)
    named = {"BatchHardMiner", "BatchAllMiner", "SemiHardMiner", "EasyPositiveMiner"}
    assert named | {"DistanceWeightedMiner", "MultiSimilarityMiner"} <= set(MINERS)


@pytest.mark.parametrize("case", ["random", "zero_row", "duplicates", "zero_rows_and_duplicates", "large"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(LOSS_MAKERS))
def test_loss_is_finite_and_agrees_with_float32(name, dtype, case):
    x, labels = _data(case)
    x = x.to(dtype)  # the values every dtype is compared on
    zero = torch.linalg.vector_norm(x.double(), dim=1) == 0
    for path in _paths(name):
        value, grads = _value_and_grads(_make(name), name, x, labels, path)
        _assert_finite(value, grads)
        assert grads[0].dtype == dtype
        if dtype not in LOW:
            continue
        ref_value, ref_grads = _value_and_grads(_make(name), name, x.float(), labels, path)
        v_rtol, g_rtol = TOLERANCE[dtype]
        assert _close(value, ref_value, v_rtol, v_rtol / 100), (path, value, ref_value)
        # a zero row's gradient is g / eps, saturated in float16: compared on the other rows only
        assert _close(grads[0][~zero], ref_grads[0][~zero], g_rtol, g_rtol / 100), path
        for g, ref_g in zip(grads[1:], ref_grads[1:]):  # the references, the proxies
            keep = ~zero.flip(0) if path == "refs" and g.shape == x.shape else slice(None)
            assert _close(g[keep], ref_g[keep], g_rtol, g_rtol / 100), path


def test_a_tensor_used_as_queries_and_references_keeps_finite_float16_gradients():
    """An all-zero float16 row whose gradient saturates, met twice (as a query and as a
    reference, as in a cross-batch memory), still sums to a finite gradient."""
    x, labels = _data("zero_rows_and_duplicates")
    x = x.half().requires_grad_(True)
    for name in LOSS_MAKERS:
        if name in NO_REFS:
            continue
        y = labels.double().unsqueeze(1) if name == "LogRatioLoss" else labels
        value = _make(name)(x, y, ref_emb=x, ref_labels=y)
        (grad,) = torch.autograd.grad(value, x)
        assert torch.isfinite(value) and torch.isfinite(grad).all(), name
        assert grad.dtype == torch.float16
    from likewise.memory import CrossBatchMemory

    xbm = CrossBatchMemory(L.SupConLoss(), D, memory_size=3 * B)
    for _ in range(2):
        value = xbm(x, labels)
        (grad,) = torch.autograd.grad(value, x)
        assert torch.isfinite(value) and torch.isfinite(grad).all()


#: (embeddings, references) dtypes of one call, and the dtype torch promotes them to
MIXED = [
    (torch.float64, torch.float32),
    (torch.float32, torch.float64),
    (torch.float16, torch.float32),
    (torch.bfloat16, torch.float32),
    (torch.float16, torch.bfloat16),
]


def _mixed_id(pair):
    return f"{str(pair[0])[6:]}+{str(pair[1])[6:]}"


@pytest.mark.parametrize("pair", MIXED, ids=_mixed_id)
@pytest.mark.parametrize("name", list(LOSS_MAKERS))
def test_mixed_dtypes_are_computed_in_the_promoted_dtype(name, pair):
    """References (or, for proxy losses, the class vectors) of another float dtype: the loss
    equals the one of both inputs cast to ``torch.promote_types``, and each gradient comes
    back in its input's dtype."""
    emb_dtype, ref_dtype = pair
    common = torch.promote_types(emb_dtype, ref_dtype)
    x, labels = _data("zero_row")
    x, r = x.to(emb_dtype), x.flip(0).to(ref_dtype)
    y = labels.double().unsqueeze(1) if name == "LogRatioLoss" else labels
    # float16 and bfloat16 values are exact in float32: the cast reference sees the same numbers
    tol = {"rtol": 1e-5, "atol": 1e-6} if common == torch.float64 else {"rtol": 2e-3, "atol": 1e-4}

    def run(loss, a, b):
        a, b = a.detach().clone().requires_grad_(True), b.detach().clone().requires_grad_(True)
        if name in NO_REFS:
            if name == "NPairsLoss":  # no references at all: refused, whatever the dtypes
                with pytest.raises(ValueError, match="NPairsLoss supports neither ref_emb"):
                    loss(a, y, ref_emb=b, ref_labels=y.flip(0))
                return None
            loss = loss.to(ref_dtype).to(b.dtype)  # class vectors: the values of the reference dtype
            value = loss(a, y)
            params = list(loss.parameters())
            grads = torch.autograd.grad(value, [a, *params])
            return value, grads[0], grads[1]
        value = loss(a, y, ref_emb=b, ref_labels=y.flip(0))
        return (value, *torch.autograd.grad(value, [a, b]))

    got = run(_make(name), x, r)
    if got is None:
        return
    want = run(_make(name), x.to(common), r.to(common))
    value, g_emb, g_ref = got
    assert torch.isfinite(value) and torch.isfinite(g_emb).all() and torch.isfinite(g_ref).all()
    assert value.dtype == (torch.float32 if common in LOW else common)
    assert g_emb.dtype == emb_dtype and g_ref.dtype == ref_dtype
    torch.testing.assert_close(value, want[0].to(value.dtype), **tol)
    zero = torch.linalg.vector_norm(x.double(), dim=1) == 0
    torch.testing.assert_close(g_emb[~zero], want[1][~zero].to(emb_dtype), **tol)
    keep = ~zero.flip(0) if g_ref.shape == x.shape else slice(None)
    torch.testing.assert_close(g_ref[keep], want[2][keep].to(ref_dtype), **tol)


LABEL_DTYPES = (torch.bool, torch.int8, torch.uint8, torch.int16, torch.int32, torch.int64)


def _as_ids(labels, dtype):
    """The labels in ``dtype`` and the int64 class ids they stand for (bool: two classes)."""
    if dtype == torch.bool:
        labels = labels % 2
        return labels.bool(), labels
    return labels.to(dtype), labels


@pytest.mark.parametrize("dtype", LABEL_DTYPES, ids=str)
@pytest.mark.parametrize("name", list(LOSS_MAKERS))
def test_class_ids_of_any_integer_dtype_or_bool(name, dtype):
    """Class ids as bool (two classes) or any integer dtype give the loss of the same ids in
    int64, for the queries and, in another dtype still, for the references."""
    x, labels = _data("random")
    if name == "LogRatioLoss":  # continuous labels: bool and integer vectors are their values
        y, ids = _as_ids(labels, dtype)
        loss = _make(name)
        torch.testing.assert_close(loss(x, y.unsqueeze(1)), loss(x, ids.double().unsqueeze(1)))
        return
    y, ids = _as_ids(labels, dtype)
    got, want = _value_and_grads(_make(name), name, x, y), _value_and_grads(_make(name), name, x, ids)
    torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got[1][0], want[1][0], rtol=1e-12, atol=1e-12)
    if name in NO_REFS:
        return
    other = torch.int64 if dtype != torch.int64 else torch.int32  # references in another dtype
    loss = _make(name)
    got = loss(
        x, y, ref_emb=x.flip(0), ref_labels=y.flip(0).to(other) if dtype != torch.bool else ids.flip(0)
    )
    want = loss(x, ids, ref_emb=x.flip(0), ref_labels=ids.flip(0))
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


BAD_INPUTS = {
    "float class ids": (
        lambda x, y: (x, y.float()),
        TypeError,
        r"labels must be integer class ids \(or bool\), got dtype torch.float32",
    ),
    "float16 class ids": (
        lambda x, y: (x, y.half()),
        TypeError,
        r"labels must be integer class ids \(or bool\), got dtype torch.float16",
    ),
    "integer embeddings": (
        lambda x, y: (x.long(), y),
        TypeError,
        "embeddings must be a floating point tensor, got dtype torch.int64",
    ),
    "NaN embeddings": (
        lambda x, y: (x.index_fill(0, torch.tensor([2]), float("nan")), y),
        ValueError,
        "embeddings contain NaN or inf",
    ),
}


@pytest.mark.parametrize("bad", list(BAD_INPUTS))
@pytest.mark.parametrize("name", [*LOSS_MAKERS, *MINERS])
def test_bad_input_gives_the_exact_error(name, bad):
    make_input, error, message = BAD_INPUTS[bad]
    if name == "LogRatioLoss" and "class ids" in bad:
        return  # its labels are float vectors: see test_losses_log_ratio for its own errors
    x, labels = _data("random")
    x, labels = make_input(x.float(), labels)
    fn = _miner(name) if name in MINERS else _make(name)
    if name == "LogRatioLoss":
        labels = labels.double().unsqueeze(1)
    with pytest.raises(error, match=message):
        fn(x, labels)


def _same_selection(a, b):
    if isinstance(a, M.Triplets):
        assert isinstance(b, M.Triplets)
        for u, v in zip((a.anchor, a.positive, a.negative), (b.anchor, b.positive, b.negative)):
            assert torch.equal(u, v)
    else:
        assert torch.equal(a.pos, b.pos) and torch.equal(a.neg, b.neg)


@pytest.mark.parametrize("case", ["random", "zero_row", "duplicates", "zero_rows_and_duplicates"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", list(MINERS))
def test_miner_selects_what_float32_selects(name, dtype, case):
    """A miner runs on every dtype with finite statistics; float16 / bfloat16 embeddings are
    mined in float32 (the same selection as float32 embeddings of the same values)."""
    x, labels = _data(case)
    x = x.to(dtype)
    miner = _miner(name)
    mined = miner(x, labels)
    assert all(torch.isfinite(torch.tensor(v)) for v in miner.stats.values()), miner.stats
    if dtype in LOW:
        _same_selection(mined, _miner(name)(x.float(), labels))
    refs = _miner(name)(x, labels, ref_emb=x.flip(0), ref_labels=labels.flip(0))
    if dtype in LOW:
        _same_selection(
            refs, _miner(name)(x.float(), labels, ref_emb=x.flip(0).float(), ref_labels=labels.flip(0))
        )


@pytest.mark.parametrize("pair", MIXED, ids=_mixed_id)
@pytest.mark.parametrize("name", list(MINERS))
def test_miner_with_mixed_dtypes_mines_in_the_promoted_dtype(name, pair):
    x, labels = _data("zero_row")
    emb, ref = x.to(pair[0]), x.flip(0).to(pair[1])
    common = torch.promote_types(*pair)
    got = _miner(name)(emb, labels, ref_emb=ref, ref_labels=labels.flip(0))
    want = _miner(name)(emb.to(common), labels, ref_emb=ref.to(common), ref_labels=labels.flip(0))
    _same_selection(got, want)


@pytest.mark.parametrize("dtype", LABEL_DTYPES, ids=str)
@pytest.mark.parametrize("name", list(MINERS))
def test_miner_takes_class_ids_of_any_integer_dtype_or_bool(name, dtype):
    x, labels = _data("random")
    y, ids = _as_ids(labels, dtype)
    _same_selection(_miner(name)(x, y), _miner(name)(x, ids))
    other = ids.flip(0).to(torch.int32)
    got = _miner(name)(x, y, ref_emb=x.flip(0), ref_labels=other)
    _same_selection(got, _miner(name)(x, ids, ref_emb=x.flip(0), ref_labels=ids.flip(0)))


def test_distance_weighted_miner_on_float16_draws_as_on_float32():
    """Its weights ``d^(2 - dim)`` overflowed float16 (dim = 512): now drawn in float32."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 512, generator=g)
    labels = torch.arange(32) % 4
    got = M.DistanceWeightedMiner(seed=3)(x.half(), labels)
    want = M.DistanceWeightedMiner(seed=3)(x.half().float(), labels)
    _same_selection(got, want)
    assert len(got) == int((labels[:, None] == labels[None]).sum()) - 32


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_l2_normalize_of_a_zero_row_in_every_dtype(dtype):
    """The default eps (1e-12) rounds to 0 in float16: it is raised to the dtype's smallest
    normal number, so a zero row stays 0 (not NaN) and its gradient is finite; other rows
    equal ``F.normalize`` of the same values."""
    x, _ = _data("zero_row")
    x = x[:6].to(dtype).requires_grad_(True)
    y = l2_normalize(x, dim=1)
    (grad,) = torch.autograd.grad(y.sum() * 100, x)  # a large upstream gradient
    assert torch.isfinite(y).all() and torch.isfinite(grad).all() and grad.dtype == dtype
    assert torch.equal(y[3], torch.zeros_like(y[3]))
    want = torch.nn.functional.normalize(x.detach().float(), dim=1)
    torch.testing.assert_close(y.float(), want, rtol=1e-2, atol=1e-2)
    assert valid_eps(1e-12, torch.float16) == torch.finfo(torch.float16).tiny
    assert valid_eps(1e-12, dtype) == max(1e-12, torch.finfo(dtype).tiny)


@pytest.mark.parametrize("metric", ["cosine", "dot", "euclidean", "squared_euclidean"])
@pytest.mark.parametrize("pair", MIXED, ids=_mixed_id)
def test_pairwise_similarity_and_distance_promote_mixed_dtypes(pair, metric):
    x, _ = _data("zero_row")
    a, b = x.to(pair[0]), x.flip(0).to(pair[1])
    common = torch.promote_types(*pair)
    for fn in (pairwise_similarity, pairwise_distance):
        got = fn(a, b, metric)
        assert got.dtype == common and torch.isfinite(got).all()
        torch.testing.assert_close(got, fn(a.to(common), b.to(common), metric))


@pytest.mark.parametrize("name", list(LOSS_MAKERS))
def test_float16_autocast_with_a_zero_row_keeps_finite_gradients(name):
    """Under autocast a float16 layer output is taken to float32 for the loss; the zero row's
    gradient ``g / 1e-12`` comes back to float16 saturated, not inf."""
    x, labels = _data("zero_row")
    y = labels.double().unsqueeze(1) if name == "LogRatioLoss" else labels
    net = torch.nn.Linear(D, D, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.eye(D))
    loss = _make(name)
    with torch.autocast("cpu", dtype=torch.float16):
        emb = net(x.float())
        value = loss(emb, y)
    assert emb.dtype == torch.float16 and value.dtype == torch.float32
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(net.weight.grad).all()
