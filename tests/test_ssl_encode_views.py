"""encode_views: one encoder call for all views only where that equals one call per view."""

from __future__ import annotations

import torch
from torch import nn

from likewise import ssl
from likewise.ssl.base import encode_views, per_sample


class Counting(nn.Module):
    """Wraps an encoder and counts its calls."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


def _views(*shapes):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(*s, generator=g) for s in shapes]


def test_a_per_sample_encoder_runs_once_and_gives_each_views_features():
    enc = Counting(nn.Sequential(nn.Linear(6, 8), nn.GELU(), nn.LayerNorm(8), nn.Linear(8, 3)))
    views = _views((5, 6), (5, 6), (5, 6))
    got = encode_views(enc, views)
    assert enc.calls == 1 and per_sample(enc)
    for g, v in zip(got, views):
        torch.testing.assert_close(g, enc.inner(v), rtol=1e-6, atol=1e-6)


def test_batch_norm_keeps_one_call_per_view_and_its_statistics():
    torch.manual_seed(0)
    enc = Counting(nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8)))
    a, b = _views((5, 6), (5, 6))
    b = b * 3 + 2  # other statistics than a's
    got = encode_views(enc, [a, b])
    assert enc.calls == 2 and not per_sample(enc)
    assert torch.equal(got[1], enc.inner(b))  # normalised with b's own batch statistics
    joint = enc.inner(torch.cat([a, b]))[5:]
    assert not torch.allclose(got[1], joint, atol=1e-3)


def test_views_of_different_shapes_are_encoded_one_by_one():
    enc = Counting(nn.Flatten())
    got = encode_views(enc, _views((4, 2, 3), (4, 1, 3)))
    assert enc.calls == 2 and [tuple(g.shape) for g in got] == [(4, 6), (4, 3)]


def test_a_method_gives_the_loss_of_separate_encoder_calls():
    """SimCLR with a per-sample encoder: the loss of one concatenated call is the loss of two."""
    torch.manual_seed(0)
    method = ssl.SimCLR(
        nn.Sequential(nn.Linear(6, 8), nn.ReLU()), 8, hidden_dim=8, out_dim=4, batch_norm=False
    )
    a, b = _views((6, 6), (6, 6))
    z_a, z_b = method.projector(method.encoder(a)), method.projector(method.encoder(b))
    labels = torch.arange(6).repeat(2)
    expected = method.criterion(torch.cat([z_a, z_b]), labels)
    torch.testing.assert_close(method(a, b), expected, rtol=1e-6, atol=1e-6)
