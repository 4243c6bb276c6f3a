"""SSL view presets: the MNIST-1D recipe against NumPy, multi-crop, image presets, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from likewise.ssl.views import MultiCrop, SignalAugment, build_views, circular_shift, detrend


def test_detrend_removes_the_least_squares_line_like_numpy_polyfit():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 40, generator=g, dtype=torch.float64)
    got = detrend(x).numpy()
    t = np.arange(40)
    for i in range(6):
        b, a = np.polyfit(t, x[i].numpy(), 1)
        np.testing.assert_allclose(got[i], x[i].numpy() - (a + b * t), atol=1e-12)


def test_circular_shift_is_numpy_roll_per_row():
    x = torch.arange(20.0).reshape(2, 10)
    out = circular_shift(x, torch.tensor([3, 0]))
    np.testing.assert_array_equal(out[0].numpy(), np.roll(np.arange(10.0), 3))
    np.testing.assert_array_equal(out[1].numpy(), np.arange(10.0, 20.0))
    x3 = x[:, None].repeat(1, 2, 1)
    assert torch.equal(circular_shift(x3, torch.tensor([3, 0]))[:, 1], out)


def test_signal_recipe_is_a_shift_plus_a_random_line():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200, 40, generator=g, dtype=torch.float64)
    torch.manual_seed(0)
    views = SignalAugment(max_shift=9)(x)
    base = detrend(x)
    t = np.arange(40) - 19.5
    slopes, offsets = [], []
    for i in range(200):
        diffs = []
        for s in range(10):  # exactly one shift in 0..9 leaves a pure line
            r = views[i].numpy() - np.roll(base[i].numpy(), s)
            b, a = np.polyfit(t, r, 1)
            diffs.append((np.abs(r - (a + b * t)).max(), b, a))
        best = min(diffs)
        assert best[0] < 1e-9
        slopes.append(best[1])
        offsets.append(best[2])
    assert np.std(slopes) == pytest.approx(0.04, rel=0.2)
    assert np.std(offsets) == pytest.approx(0.3, rel=0.2)
    still = SignalAugment(max_shift=0, slope_std=0, offset_std=0)(x)
    torch.testing.assert_close(still, base)


def test_multicrop_gives_two_global_and_local_views_of_the_input_shape():
    x = torch.randn(4, 40)
    views = MultiCrop(SignalAugment(), n_local=3)(x)
    assert len(views) == 5 and all(v.shape == x.shape for v in views)
    ramp = torch.linspace(0, 1, 40).repeat(3, 1)
    local = MultiCrop(torch.nn.Identity(), n_local=1, scale=(0.5, 0.5))(ramp)[2]
    widths = local[:, -1] - local[:, 0]
    torch.testing.assert_close(widths, torch.full((3,), 0.5), atol=1e-5, rtol=0)  # half the length, stretched
    img = torch.rand(2, 1, 16, 16)
    assert [v.shape for v in MultiCrop(build_views("grey", (1, 16, 16)), n_local=2)(img)] == [img.shape] * 4


def test_image_presets_keep_shape_and_grey_has_no_flip():
    grey = build_views("grey", (1, 28, 28))
    assert not any("Flip" in type(m).__name__ for m in grey.modules())
    x = torch.rand(3, 1, 28, 28)
    assert grey(x).shape == x.shape and not torch.allclose(grey(x), x)
    rgb = build_views("rgb", (3, 32, 32))
    assert rgb(torch.rand(2, 3, 32, 32)).shape == (2, 3, 32, 32)
    assert isinstance(build_views("none", (5,)), torch.nn.Identity)


def test_bad_input():
    with pytest.raises(ValueError, match="unknown view preset 'blur'"):
        build_views("blur", (40,))
    with pytest.raises(ValueError, match="the signal preset needs 1-D inputs"):
        build_views("signal", (1, 8, 8))
    with pytest.raises(ValueError, match="the grey preset needs image inputs"):
        build_views("grey", (40,))
    with pytest.raises(ValueError, match="signal views need float signals"):
        SignalAugment()(torch.zeros(2, 3, 4, 5))
    with pytest.raises(ValueError, match="max_shift must be a non-negative integer"):
        SignalAugment(max_shift=-1)
    with pytest.raises(ValueError, match="n_local must be a non-negative integer"):
        MultiCrop(SignalAugment(), n_local=-2)
