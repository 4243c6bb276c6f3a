"""Every loss under torch.autocast: computed in float32, as autocast does for PyTorch's losses."""

from __future__ import annotations

import inspect

import pytest
import torch

import likewise.losses as L
from likewise.mining import SemiHardMiner


def make(cls):
    """``cls`` with the class count / embedding size the proxy losses require (4 classes, 8-d)."""
    params = inspect.signature(cls.__init__).parameters
    return cls(**{k: v for k, v in (("num_classes", 4), ("embedding_size", 8)) if k in params})


#: every registered loss (with the class count and size the proxy losses need), plus a mined variant
MAKERS = {
    **{name: (lambda cls=cls: make(cls)) for name, cls in L.LOSSES.items()},
    "TripletMarginLoss-semihard": lambda: L.TripletMarginLoss(miner=SemiHardMiner(0.2)),
}


def _inputs(name):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 8, generator=g)
    if L.LOSSES.get(name, L.MetricLoss).label_kind == "continuous":
        return x, torch.randn(16, 1, generator=g)
    return x, torch.randint(0, 4, (16,), generator=g)


def _value_and_grads(loss, emb, labels, autocast):
    emb = emb.detach().clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        value = loss(emb, labels)
    value.backward()  # outside the autocast region, as the AMP recipe has it
    return value.detach(), emb.grad, [p.grad.clone() for p in loss.parameters()]


@pytest.mark.parametrize("name", list(MAKERS))
def test_float32_embeddings_under_autocast_give_the_float32_loss(name):
    x, labels = _inputs(name)
    loss = MAKERS[name]()
    plain = _value_and_grads(loss, x, labels, autocast=False)
    loss.zero_grad()
    mixed = _value_and_grads(loss, x, labels, autocast=True)
    assert mixed[0].dtype == torch.float32
    torch.testing.assert_close(mixed[0], plain[0], rtol=0, atol=0)
    torch.testing.assert_close(mixed[1], plain[1], rtol=0, atol=0)
    for a, b in zip(mixed[2], plain[2]):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", list(MAKERS))
def test_bfloat16_embeddings_under_autocast_are_promoted(name):
    x, labels = _inputs(name)
    loss = MAKERS[name]()
    net = torch.nn.Linear(8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        emb = net(x)
        value = loss(emb, labels)
    assert emb.dtype == torch.bfloat16 and value.dtype == torch.float32
    # the same as the loss of those bfloat16 embeddings taken to float32 without autocast
    assert value.item() == loss(emb.detach().float(), labels).item()
    value.backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.mark.parametrize("name", list(MAKERS))
def test_bfloat16_embeddings_without_autocast_stay_bfloat16(name):
    x, labels = _inputs(name)
    loss = MAKERS[name]().to(torch.bfloat16)
    emb = x.to(torch.bfloat16).requires_grad_(True)
    value = loss(emb, labels)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(emb.grad).all()
    assert emb.grad.dtype == torch.bfloat16
