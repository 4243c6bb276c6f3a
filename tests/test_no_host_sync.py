"""No loss or miner synchronises with the host in forward or backward (default settings).

On a GPU, ``Tensor.item()``, ``float(t)``, ``int(t)``, ``bool(t)`` (an ``if`` on a tensor),
``t.tolist()``, ``t.numpy()`` and using a tensor as a Python index wait for the device: a
training step that calls one stalls the stream. This test replaces those ``Tensor`` methods
by a trap while every registered loss (:data:`likewise.losses.LOSSES`,
:data:`likewise.losses.TWO_VIEW_LOSSES`) runs forward and backward and every registered
miner (:data:`likewise.mining.MINERS`) mines, on the CPU (the same Python code runs on a
GPU). Statistics are not read: they are computed when read (``loss.stats``).
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from likewise.losses import LOSSES, TWO_VIEW_LOSSES
from likewise.mining import MINERS

SYNCING = ("item", "tolist", "numpy", "__float__", "__int__", "__bool__", "__index__")

# losses and miners that still synchronise (the list must shrink to empty: xfail is strict, so a
# fixed one fails here until it is removed from the list)
KNOWN_SYNCS: set[str] = {
    "TripletMarginLoss",
    "FastAPLoss",
    "LogRatioLoss",
    "ProxyAnchorLoss",
    "ArcFaceLoss",
    "BatchAllMiner",
    "SemiHardMiner",
    "DistanceWeightedMiner",
}


class HostSync(AssertionError):
    pass


@contextlib.contextmanager
def trapped():
    """Every synchronising ``Tensor`` method raises :class:`HostSync` naming itself."""
    saved = {name: getattr(torch.Tensor, name) for name in SYNCING}

    def trap(name):
        def raiser(self, *args, **kwargs):
            raise HostSync(f"host synchronisation: Tensor.{name}")

        return raiser

    try:
        for name in SYNCING:
            setattr(torch.Tensor, name, trap(name))
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.Tensor, name, fn)


def test_the_trap_catches_each_synchronising_call():
    t = torch.ones(())
    calls = {
        "item": lambda: t.item(),
        "tolist": lambda: t.tolist(),
        "numpy": lambda: t.numpy(),
        "__float__": lambda: float(t),
        "__int__": lambda: int(t),
        "__bool__": lambda: bool(t),
        "__index__": lambda: [0, 1][t.long()],
    }
    assert set(calls) == set(SYNCING)
    for name, call in calls.items():
        with trapped(), pytest.raises(HostSync, match=f"Tensor.{name}"):
            call()
    assert float(t) == 1.0  # restored


def _inputs(kind: str):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 8, generator=g, requires_grad=True)
    if kind == "continuous":
        return x, torch.randn(32, 2, generator=g)
    return x, torch.arange(32) % 4


def _marks(name: str):
    return [pytest.mark.xfail(raises=HostSync, strict=True)] if name in KNOWN_SYNCS else []


def _build(cls):
    import inspect

    params = inspect.signature(cls.__init__).parameters
    kwargs = {}
    if "num_classes" in params:
        kwargs["num_classes"] = 4
    if "embedding_size" in params:
        kwargs["embedding_size"] = 8
    return cls(**kwargs)


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n)) for n in LOSSES])
def test_a_loss_step_does_not_synchronise(name):
    loss = _build(LOSSES[name])
    x, y = _inputs(loss.label_kind)
    with trapped():
        value = loss(x, y)
        value.backward()
    assert x.grad is not None


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n)) for n in TWO_VIEW_LOSSES])
def test_a_two_view_loss_step_does_not_synchronise(name):
    cls = TWO_VIEW_LOSSES[name]
    loss = cls(8) if name == "DINOLoss" else cls()
    g = torch.Generator().manual_seed(0)
    za = torch.randn(32, 8, generator=g, requires_grad=True)
    zb = torch.randn(32, 8, generator=g, requires_grad=True)
    with trapped():
        loss(za, zb).backward()
    assert za.grad is not None


@pytest.mark.parametrize("name", [pytest.param(n, marks=_marks(n)) for n in MINERS])
def test_a_miner_does_not_synchronise(name):
    miner = MINERS[name]()
    x, y = _inputs("class_ids")
    with trapped():
        mined = miner(x.detach(), y)
    assert mined is not None
