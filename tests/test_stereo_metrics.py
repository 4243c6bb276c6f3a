"""bad-N / EPE / coverage against a plain per-pixel loop."""

from __future__ import annotations

import numpy as np
import pytest

from likewise.stereo.metrics import bad_pixel_rate, coverage, disparity_metrics, end_point_error


def plain_metrics(disp, gt, threshold):
    scored = errors = 0
    abs_sum, both = 0.0, 0
    for y in range(gt.shape[0]):
        for x in range(gt.shape[1]):
            g = gt[y, x]
            if not np.isfinite(g):
                continue
            scored += 1
            d = disp[y, x]
            if not np.isfinite(d):
                errors += 1
                continue
            both += 1
            abs_sum += abs(float(d) - float(g))
            if abs(float(d) - float(g)) > threshold:
                errors += 1
    return errors / scored, abs_sum / both, both / scored


@pytest.mark.parametrize("threshold", [0.5, 1.0, 2.0, 4.0])
def test_metrics_match_a_plain_loop(threshold):
    rng = np.random.default_rng(0)
    gt = rng.uniform(0, 60, size=(13, 17)).astype(np.float32)
    gt[rng.random(gt.shape) < 0.2] = np.inf
    gt[0, 0] = np.nan
    disp = (gt + rng.normal(0, 3, size=gt.shape)).astype(np.float32)
    disp[rng.random(gt.shape) < 0.15] = np.nan
    disp[1, 1] = np.inf
    bad, epe, cov = plain_metrics(disp, gt, threshold)
    assert bad_pixel_rate(disp, gt, threshold) == pytest.approx(bad, abs=1e-12)
    assert end_point_error(disp, gt) == pytest.approx(epe, rel=1e-6)
    assert coverage(disp, gt) == pytest.approx(cov, abs=1e-12)


def test_missing_disparity_is_an_error_and_unknown_truth_is_not_scored():
    gt = np.array([[1.0, np.inf], [3.0, 4.0]])
    disp = np.array([[1.0, 100.0], [np.nan, 4.4]])
    # scored: 3 pixels; the NaN one is an error; the error of 0.4 is bad only at threshold < 0.4
    assert bad_pixel_rate(disp, gt, 0.5) == pytest.approx(1 / 3)
    assert bad_pixel_rate(disp, gt, 0.25) == pytest.approx(2 / 3)
    assert end_point_error(disp, gt) == pytest.approx(0.2)
    m = disparity_metrics(disp, gt)
    assert set(m) == {"bad-0.5", "bad-1", "bad-2", "bad-4", "epe", "coverage"}


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="2-D maps of one shape"):
        bad_pixel_rate(np.zeros((3, 4)), np.zeros((4, 3)), 1.0)
    with pytest.raises(ValueError, match="no finite disparity"):
        end_point_error(np.zeros((2, 2)), np.full((2, 2), np.inf))
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        bad_pixel_rate(np.zeros((2, 2)), np.zeros((2, 2)), -1)
