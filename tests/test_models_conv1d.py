"""The 1-D ConvNet trunk (MNIST-1D encoder) against plain conv1d calls; export round trip."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from likewise.models import Conv1dNet, build_model


def test_conv1d_trunk_is_three_strided_convolutions_flattened():
    net = Conv1dNet(40).double()
    x = torch.randn(4, 40, dtype=torch.float64)
    h = x[:, None]
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv1d)]
    assert [c.kernel_size[0] for c in convs] == [5, 3, 3] and all(c.out_channels == 25 for c in convs)
    for c in convs:
        h = F.relu(F.conv1d(h, c.weight, c.bias, stride=2, padding=1))
    assert net.out_features == 125
    torch.testing.assert_close(net(x), h.flatten(1))
    torch.testing.assert_close(net(x[:, None]), h.flatten(1))


def test_conv1d_in_build_model_and_errors():
    m = build_model("conv1d", (2, 40), embedding_dim=3, embed="features", normalize=False)
    assert m(torch.randn(5, 2, 40)).shape == (5, 125)
    with pytest.raises(ValueError, match="trunk 'conv1d' needs signal inputs"):
        build_model("conv1d", (1, 8, 8))
    with pytest.raises(ValueError, match="too short"):
        Conv1dNet(2)
