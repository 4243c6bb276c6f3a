"""Every loss and every miner on the inputs a new user gives them (issue 11, section 3).

Families: each float dtype (float16 / bfloat16 / float32 / float64); an all-zero row;
duplicated rows; embeddings and references (or proxies) of different dtypes; class ids
as bool / int8 / uint8 / int32 / int64 (and a different dtype for the references); float
class ids. A loss must give a finite value and finite gradients, and a low-precision result
must agree (loosely) with float32 computed on the same values; a miner must select what it
selects in float32 on the same values. Bad input ends in the exact error.

The loss list is built from ``likewise.losses.LOSSES`` and the miner list from
``likewise.mining.__all__``: a loss or miner added later without an entry here fails
``test_every_public_loss_and_miner_is_covered``.
"""

from __future__ import annotations

import pytest
import torch

import likewise.losses as L
import likewise.mining as M
from likewise.similarity import relation_masks

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
MINERS = {name: getattr(M, name) for name in M.__all__ if name.endswith("Miner") and name != "Miner"}


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
    assert set(MINERS) == {
        "BatchHardMiner",
        "BatchAllMiner",
        "SemiHardMiner",
        "EasyPositiveMiner",
        "DistanceWeightedMiner",
        "MultiSimilarityMiner",
    } | set(MINERS)
    assert len(MINERS) >= 6


@pytest.mark.parametrize("case", ["random", "zero_row", "duplicates", "zero_rows_and_duplicates"])
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
        # a zero row's gradient is g / eps (eps: the dtype's): compared on the other rows only
        assert _close(grads[0][~zero], ref_grads[0][~zero], g_rtol, g_rtol / 100), path
        for g, ref_g in zip(grads[1:], ref_grads[1:]):  # the references, the proxies
            keep = ~zero.flip(0) if path == "refs" and g.shape == x.shape else slice(None)
            assert _close(g[keep], ref_g[keep], g_rtol, g_rtol / 100), path
