"""Post-processing steps against plain implementations written here."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from likewise.stereo.postprocess import (
    fill_invalid,
    left_right_check,
    median_filter,
    right_disparity,
    subpixel,
)


def test_subpixel_recovers_the_vertex_of_a_parabola():
    d, true = 10, 4.3
    ks = torch.arange(d, dtype=torch.float32)[:, None, None]
    volume = (ks - true) ** 2 * 0.7 + 1.0
    best = volume.argmin(0)
    assert int(best) == 4
    assert float(subpixel(volume, best)) == pytest.approx(true, abs=1e-5)
    # at the ends of the range (no neighbour on one side) the integer disparity is kept
    edge = (ks - 0.2) ** 2
    assert float(subpixel(edge, edge.argmin(0))) == 0.0


def test_right_disparity_and_left_right_check_match_loops():
    rng = np.random.default_rng(0)
    d, h, w = 5, 4, 12
    volume = torch.from_numpy(rng.random((d, h, w)).astype(np.float32))
    dr = right_disparity(volume).numpy()
    for y in range(h):
        for x in range(w):
            costs = [float(volume[e, y, x + e]) if x + e < w else np.inf for e in range(d)]
            assert dr[y, x] == int(np.argmin(costs))
    dl = volume.argmin(0).numpy().astype(np.float64)
    ok = left_right_check(dl, dr, 1.0)
    for y in range(h):
        for x in range(w):
            xr = x - int(dl[y, x])
            want = 0 <= xr < w and abs(dl[y, x] - dr[y, xr]) <= 1.0
            assert ok[y, x] == want


def test_fill_takes_the_background_neighbour():
    disp = np.array(
        [
            [5.0, np.nan, np.nan, 9.0, 9.0],
            [np.nan, np.nan, 3.0, np.nan, np.nan],
            [np.nan, np.nan, np.nan, np.nan, np.nan],
        ],
        dtype=np.float32,
    )
    out = fill_invalid(disp)
    np.testing.assert_array_equal(out[0], [5, 5, 5, 9, 9])
    np.testing.assert_array_equal(out[1], [3, 3, 3, 3, 3])
    np.testing.assert_array_equal(out[2], out[1])  # an empty row is filled along columns
    assert np.isnan(fill_invalid(np.full((2, 2), np.nan))).all()


def test_median_filter_matches_scipy_and_keeps_missing_pixels():
    rng = np.random.default_rng(2)
    disp = rng.random((9, 11)).astype(np.float32)
    np.testing.assert_array_equal(median_filter(disp, 3), ndimage.median_filter(disp, 3, mode="nearest"))
    disp[4, 5] = np.nan
    out = median_filter(disp, 3)
    assert np.isnan(out[4, 5]) and np.isfinite(np.delete(out.ravel(), 4 * 11 + 5)).all()
    with pytest.raises(ValueError, match="odd"):
        median_filter(disp, 4)
