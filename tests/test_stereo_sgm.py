"""Semi-global matching against a per-pixel loop of Hirschmuller's recursion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from likewise.stereo.sgm import sgm

DIRS4 = [(0, 1), (0, -1), (1, 0), (-1, 0)]
DIRS8 = DIRS4 + [(1, 1), (1, -1), (-1, 1), (-1, -1)]


def loop_sgm(cost, p1, p2, dirs, guide=None, gamma=10.0):
    """Brute force: every path visits pixels so that each predecessor comes first."""
    d, h, w = cost.shape
    total = np.zeros_like(cost, dtype=np.float64)
    for dy, dx in dirs:
        agg = np.zeros_like(total)
        ys = range(h) if dy >= 0 else range(h - 1, -1, -1)
        xs = list(range(w)) if dx >= 0 else list(range(w - 1, -1, -1))
        order = [(y, x) for x in xs for y in range(h)] if dy == 0 else [(y, x) for y in ys for x in xs]
        for y, x in order:
            py, px = y - dy, x - dx
            if not (0 <= py < h and 0 <= px < w):
                agg[:, y, x] = cost[:, y, x]
                continue
            prev = agg[:, py, px]
            low = prev.min()
            pen2 = p2 if guide is None else max(p1, p2 / (1 + abs(guide[y, x] - guide[py, px]) / gamma))
            for k in range(d):
                options = [prev[k], low + pen2]
                if k > 0:
                    options.append(prev[k - 1] + p1)
                if k < d - 1:
                    options.append(prev[k + 1] + p1)
                agg[k, y, x] = cost[k, y, x] + min(options) - low
        total += agg
    return total


@pytest.mark.parametrize("paths", [4, 8])
@pytest.mark.parametrize("use_guide", [False, True])
def test_sgm_matches_the_loop(paths, use_guide):
    rng = np.random.default_rng(paths + use_guide)
    cost = rng.random((6, 5, 7)).astype(np.float32)
    guide = (rng.random((5, 7)) * 60).astype(np.float32) if use_guide else None
    got = sgm(
        torch.from_numpy(cost),
        0.15,
        0.8,
        paths=paths,
        guide=None if guide is None else torch.from_numpy(guide),
    ).numpy()
    want = loop_sgm(cost, 0.15, 0.8, DIRS4 if paths == 4 else DIRS8, guide)
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_sgm_smooths_a_noisy_winner():
    # a constant true disparity 2 with one pixel whose raw cost prefers 5: SGM restores 2
    cost = np.ones((8, 1, 9), dtype=np.float32)
    cost[2] = 0.0
    cost[5, 0, 4], cost[2, 0, 4] = -0.2, 0.1
    assert cost.argmin(0)[0, 4] == 5
    agg = sgm(torch.from_numpy(cost), 0.1, 1.0, paths=4)
    assert (agg.argmin(0) == 2).all()


def test_bad_settings_raise():
    vol = torch.zeros(3, 4, 5)
    with pytest.raises(ValueError, match="0 <= P1 <= P2"):
        sgm(vol, 1.0, 0.5)
    with pytest.raises(ValueError, match="4 or 8 paths"):
        sgm(vol, 0.1, 0.5, paths=3)
    with pytest.raises(ValueError, match="does not match the cost volume"):
        sgm(vol, 0.1, 0.5, guide=torch.zeros(4, 4))
    with pytest.raises(ValueError, match=r"\[D, H, W\]"):
        sgm(torch.zeros(4, 5), 0.1, 0.5)
