"""Cost volume (learned features, census) against naive loops; WTA; bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from likewise.stereo.census import census_cost_volume, census_transform
from likewise.stereo.cost_volume import OUTSIDE_COST, cost_volume, winner_takes_all


def naive_volume(fl, fr, d):
    c, h, w = fl.shape
    out = torch.empty(d, h, w)
    for e in range(d):
        for i in range(h):
            for j in range(w):
                out[e, i, j] = OUTSIDE_COST if j - e < 0 else 1 - float(fl[:, i, j] @ fr[:, i, j - e])
    return out


@pytest.mark.parametrize(
    ("d", "block_columns", "block_elements"), [(5, 128, 1 << 22), (7, 3, 64), (11, 4, 1)]
)
def test_cost_volume_matches_a_naive_loop(d, block_columns, block_elements):
    g = torch.Generator().manual_seed(d)
    fl = F.normalize(torch.randn(6, 5, 13, generator=g), dim=0)
    fr = F.normalize(torch.randn(6, 5, 13, generator=g), dim=0)
    got = cost_volume(fl, fr, d, block_columns=block_columns, block_elements=block_elements)
    torch.testing.assert_close(got, naive_volume(fl, fr, d), atol=1e-5, rtol=0)


def test_winner_takes_all_finds_a_known_shift():
    g = torch.Generator().manual_seed(0)
    fr = F.normalize(torch.randn(8, 6, 40, generator=g), dim=0)
    fl = torch.roll(fr, shifts=3, dims=2)  # left pixel j matches right pixel j - 3
    best = winner_takes_all(cost_volume(fl, fr, 8))
    assert (best[:, 3:] == 3).all()


def naive_census(img, wh, ww):
    h, w = img.shape
    rh, rw = wh // 2, ww // 2
    out = np.zeros((h, w), dtype=np.uint64)
    for y in range(h):
        for x in range(w):
            code = 0
            for dy in range(-rh, rh + 1):
                for dx in range(-rw, rw + 1):
                    if dy == 0 and dx == 0:
                        continue
                    q = img[min(max(y + dy, 0), h - 1), min(max(x + dx, 0), w - 1)]
                    code = (code << 1) | int(q < img[y, x])
            out[y, x] = code
    return out


def test_census_matches_a_naive_loop():
    rng = np.random.default_rng(1)
    left = rng.integers(0, 255, size=(6, 11)).astype(np.float32)
    right = rng.integers(0, 255, size=(6, 11)).astype(np.float32)
    cl, cr = naive_census(left, 3, 5), naive_census(right, 3, 5)
    np.testing.assert_array_equal(census_transform(left, (3, 5)), cl)
    vol = census_cost_volume(left, right, 4, window=(3, 5)).numpy()
    for e in range(4):
        for y in range(6):
            for x in range(11):
                want = 14 if x - e < 0 else bin(int(cl[y, x]) ^ int(cr[y, x - e])).count("1")
                assert vol[e, y, x] == want


def test_bad_inputs_raise_clear_errors():
    f = torch.zeros(4, 5, 9)
    with pytest.raises(ValueError, match="max_disparity must be >= 1"):
        cost_volume(f, f, 0)
    with pytest.raises(ValueError, match="exceeds the image width"):
        cost_volume(f, f, 10)
    with pytest.raises(TypeError, match="max_disparity must be an int"):
        cost_volume(f, f, 2.5)
    with pytest.raises(ValueError, match="of one shape"):
        cost_volume(f, torch.zeros(4, 5, 8), 2)
    with pytest.raises(ValueError, match="differ in shape"):
        census_cost_volume(np.zeros((5, 9)), np.zeros((5, 8)), 2)
    with pytest.raises(ValueError, match="census window"):
        census_transform(np.zeros((5, 9)), (4, 4))
