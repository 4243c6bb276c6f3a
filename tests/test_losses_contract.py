"""The contract every registered loss keeps, run over the registry (no hand-kept list).

For each entry of :data:`likewise.losses.LOSSES` (supervised) and
:data:`likewise.losses.TWO_VIEW_LOSSES` (two-view):

* ``fast=False`` (the plain autograd formula of the loss's module) equals the default (a
  fast kernel where one is eligible) in value and in every gradient, in float64, for a
  plain call, a call with references (a memory / another view) and a call with a miner;
* the plain path passes ``torch.autograd.gradcheck`` in float64;
* under ``torch.autocast`` float32 embeddings give the float32 loss exactly;
* a pickled and restored loss gives the same value;
* bad input raises the library's exact error; ``fast`` must be a bool.

A new loss that is registered is checked here without editing this file.
"""

from __future__ import annotations

import inspect
import pickle

import pytest
import torch

import likewise.losses as L
from likewise.losses import LOSSES, TWO_VIEW_LOSSES
from likewise.losses.base import MetricLoss
from likewise.losses.two_view import TwoViewLoss
from likewise.mining import BatchHardMiner

B, D, C = 12, 5, 3  # batch, embedding size, classes


def make(cls: type, **kwargs) -> torch.nn.Module:
    """``cls`` with the constructor arguments it requires (class count, embedding size)."""
    params = inspect.signature(cls.__init__).parameters
    if "num_classes" in params:
        kwargs.setdefault("num_classes", C)
    if "embedding_size" in params:
        kwargs.setdefault("embedding_size", D)
    if cls is L.DINOLoss:
        kwargs.setdefault("out_dim", D)
    torch.manual_seed(0)  # learnable class vectors: the same draw for every instance
    return cls(**kwargs)


def labels_for(cls: type, n: int, g: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    if cls.label_kind == "continuous":
        return torch.randn(n, 2, generator=g, dtype=dtype)
    return torch.arange(n) % C  # every class present, several times


def accepts(cls: type, name: str) -> bool:
    return name in inspect.signature(cls.__init__).parameters


VARIANTS = ["plain_call", "refs", "miner"]


def case(cls: type, variant: str) -> tuple[dict, dict, list[torch.Tensor]]:
    """(constructor kwargs, call kwargs, leaf tensors) for one variant, float64."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B, D, generator=g, dtype=torch.float64, requires_grad=True)
    y = labels_for(cls, B, g)
    call: dict = {"embeddings": x, "labels": y}
    leaves = [x]
    ctor: dict = {}
    if variant == "refs":
        r = torch.randn(B + 4, D, generator=g, dtype=torch.float64, requires_grad=True)
        call["ref_emb"], call["ref_labels"] = r, labels_for(cls, B + 4, g)
        leaves.append(r)
    if variant == "miner":
        ctor["miner"] = BatchHardMiner()
    return ctor, call, leaves


def applicable(cls: type, variant: str) -> bool:
    if variant == "refs":
        return cls.accepts_refs
    if variant == "miner":
        return accepts(cls, "miner")
    return True


SUPERVISED_CASES = [
    pytest.param(name, variant, id=f"{name}-{variant}")
    for name, cls in LOSSES.items()
    for variant in VARIANTS
    if applicable(cls, variant)
]


def value_and_grads(loss: torch.nn.Module, call: dict, leaves: list[torch.Tensor]):
    for t in leaves:
        t.grad = None
    loss.zero_grad()
    value = loss(**call)
    value.backward()
    grads = [t.grad.clone() for t in leaves] + [
        p.grad.clone() for p in loss.parameters() if p.grad is not None
    ]
    return value.detach(), grads


def test_registry_holds_every_public_loss():
    """Every loss class exported by likewise.losses is registered (so it is checked here)."""
    exported = [getattr(L, n) for n in L.__all__]
    supervised = {
        c for c in exported if isinstance(c, type) and issubclass(c, MetricLoss) and c is not MetricLoss
    }
    two_view = {
        c for c in exported if isinstance(c, type) and issubclass(c, TwoViewLoss) and c is not TwoViewLoss
    }
    assert supervised == set(LOSSES.values())
    assert two_view == set(TWO_VIEW_LOSSES.values())
    assert all(LOSSES[c.__name__] is c for c in supervised)


@pytest.mark.parametrize(("name", "variant"), SUPERVISED_CASES)
def test_fast_equals_plain_in_value_and_gradients(name, variant):
    cls = LOSSES[name]
    ctor, call, leaves = case(cls, variant)
    fast = make(cls, **ctor).double()
    plain = make(cls, **ctor, fast=False).double()
    assert fast.fast is True and plain.fast is False
    v_fast, g_fast = value_and_grads(fast, call, leaves)
    v_plain, g_plain = value_and_grads(plain, call, leaves)
    assert v_fast.dtype == v_plain.dtype == torch.float64
    torch.testing.assert_close(v_fast, v_plain, rtol=1e-9, atol=1e-12)
    assert len(g_fast) == len(g_plain)
    for a, b in zip(g_fast, g_plain):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-11)


@pytest.mark.parametrize(("name", "variant"), [c for c in SUPERVISED_CASES if c.values[1] != "miner"])
def test_plain_path_passes_gradcheck(name, variant):
    cls = LOSSES[name]
    ctor, call, leaves = case(cls, variant)
    loss = make(cls, **ctor, fast=False).double()
    keys = ["embeddings"] + (["ref_emb"] if variant == "refs" else [])

    def f(*tensors):
        return loss(**{**call, **dict(zip(keys, tensors))})

    exact = torch.autograd.gradcheck(f, tuple(leaves), eps=1e-6, atol=1e-6, raise_exception=False)
    assert exact is cls.exact_gradient  # a stop-gradient (Circle's weights) must show as one


@pytest.mark.parametrize("name", list(LOSSES))
def test_autocast_gives_the_float32_loss(name):
    cls = LOSSES[name]
    g = torch.Generator().manual_seed(2)
    x = torch.randn(B, D, generator=g)
    y = labels_for(cls, B, g, dtype=torch.float32)
    loss = make(cls)
    plain = loss(x, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = loss(x, y)
    assert mixed.dtype == torch.float32
    torch.testing.assert_close(mixed, plain, rtol=0, atol=0)


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("fast", [True, False])
def test_a_pickled_loss_gives_the_same_value(name, fast):
    cls = LOSSES[name]
    g = torch.Generator().manual_seed(3)
    x = torch.randn(B, D, generator=g)
    y = labels_for(cls, B, g, dtype=torch.float32)
    loss = make(cls, fast=fast)
    restored = pickle.loads(pickle.dumps(loss))
    assert restored.fast is fast
    torch.testing.assert_close(restored(x, y), loss(x, y), rtol=0, atol=0)


@pytest.mark.parametrize("name", list(LOSSES))
@pytest.mark.parametrize("fast", [True, False])
def test_bad_input_raises_the_exact_error(name, fast):
    cls = LOSSES[name]
    loss = make(cls, fast=fast)
    y = labels_for(cls, B, torch.Generator().manual_seed(4), dtype=torch.float32)
    with pytest.raises(ValueError, match=r"embeddings must have shape \[batch, dim\], got shape \(12,\)"):
        loss(torch.randn(B), y)
    with pytest.raises(TypeError, match="embeddings must be a torch.Tensor, got list"):
        loss([[0.0] * D] * B, y)
    with pytest.raises(ValueError, match="has 11 entries but embeddings has 12 rows"):
        loss(torch.randn(B, D), y[:11])
    with pytest.raises(ValueError, match="embeddings contain NaN or inf"):
        loss(torch.full((B, D), float("nan")), y)


@pytest.mark.parametrize("cls", [*LOSSES.values(), *TWO_VIEW_LOSSES.values()], ids=lambda c: c.__name__)
def test_fast_must_be_a_bool(cls):
    with pytest.raises(TypeError, match="fast must be a bool, got str"):
        make(cls, fast="yes")
    with pytest.raises(TypeError, match="fast must be a bool, got NoneType"):
        make(cls, fast=None)


@pytest.mark.parametrize("name", list(TWO_VIEW_LOSSES))
def test_two_view_fast_equals_plain_and_passes_gradcheck(name):
    cls = TWO_VIEW_LOSSES[name]
    g = torch.Generator().manual_seed(5)
    za = torch.randn(B, D, generator=g, dtype=torch.float64, requires_grad=True)
    zb = torch.randn(B, D, generator=g, dtype=torch.float64, requires_grad=True)
    extra = {"update_center": False} if cls is L.DINOLoss else {}
    fast, plain = make(cls).double(), make(cls, fast=False).double()
    v_fast, v_plain = fast(za, zb, **extra), plain(za, zb, **extra)
    torch.testing.assert_close(v_fast, v_plain, rtol=1e-9, atol=1e-12)
    ga = torch.autograd.grad(v_fast, (za, zb))
    gb = torch.autograd.grad(v_plain, (za, zb))
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-11)
    exact = torch.autograd.gradcheck(
        lambda a, b: plain(a, b, **extra), (za, zb), eps=1e-6, atol=1e-6, raise_exception=False
    )
    assert exact is cls.exact_gradient  # SwAV's codes are targets: a stop-gradient shows as one
