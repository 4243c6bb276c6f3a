"""Synthetic stereo pairs: the right view is the left one warped by the ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from likewise.stereo.synthetic import synthetic_pair


@pytest.mark.parametrize("seed", [0, 1])
def test_visible_pixels_reappear_at_their_disparity(seed):
    pair = synthetic_pair(np.random.default_rng(seed), 48, 80, 24.0, integer=True, slant=False, noise=False)
    ys, xs = np.nonzero(pair.visible)
    assert 0.3 < pair.visible.mean() < 1.0  # occlusions exist, most pixels are seen twice
    xr = xs - pair.disparity[ys, xs].astype(int)
    np.testing.assert_allclose(pair.left[ys, xs], pair.right[ys, xr], atol=1e-6)


def test_slanted_pairs_agree_up_to_interpolation_and_occluded_pixels_do_not():
    pair = synthetic_pair(np.random.default_rng(3), 64, 96, 32.0, noise=False)
    ys, xs = np.nonzero(pair.visible)
    xr = xs - pair.disparity[ys, xs]
    x0 = np.floor(xr).astype(int)
    t = (xr - x0)[:, None]
    x1 = np.minimum(x0 + 1, pair.left.shape[1] - 1)
    warped = pair.right[ys, x0] * (1 - t) + pair.right[ys, x1] * t
    err = np.abs(warped - pair.left[ys, xs]).mean()
    assert err < 0.03
    assert np.isfinite(pair.disparity).all() and (pair.disparity >= 1).all() and (pair.disparity <= 32).all()


def test_bad_sizes_raise():
    with pytest.raises(ValueError, match="at least 16x16"):
        synthetic_pair(np.random.default_rng(0), 8, 80)
    with pytest.raises(ValueError, match="max_disparity"):
        synthetic_pair(np.random.default_rng(0), 32, 40, 50.0)
