"""Alignment, uniformity, effective rank, per-dimension std: loops and known cases."""

import math

import numpy as np
import pytest
import torch

from likewise.evaluation import (
    alignment,
    collapse_indicators,
    effective_rank,
    per_dimension_std,
    uniformity,
)


def unit(v):
    n = math.sqrt(sum(a * a for a in v))
    return [a / n for a in v]


def test_alignment_equals_loop():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 5)), rng.normal(size=(30, 5))
    for alpha in (1.0, 2.0, 3.0):
        want = np.mean(
            [
                math.sqrt(sum((a - b) ** 2 for a, b in zip(unit(xi), unit(yi)))) ** alpha
                for xi, yi in zip(x, y)
            ]
        )
        assert alignment(x, y, alpha=alpha) == pytest.approx(want)
    raw = np.mean([sum((a - b) ** 2 for a, b in zip(xi, yi)) for xi, yi in zip(x, y)])
    assert alignment(torch.from_numpy(x), y, normalize=False) == pytest.approx(raw)
    assert alignment(x, x) == pytest.approx(0.0)


def test_uniformity_equals_loop():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(45, 4))
    for t in (1.0, 2.0):
        terms = []
        for i in range(45):
            for j in range(i + 1, 45):
                a, b = unit(x[i]), unit(x[j])
                terms.append(math.exp(-t * sum((p - q) ** 2 for p, q in zip(a, b))))
        want = math.log(sum(terms) / len(terms))
        assert uniformity(x, t=t, batch_size=7) == pytest.approx(want, abs=1e-12)
    # all points equal: every distance 0 -> log(1) = 0, the least uniform value
    assert uniformity(np.ones((5, 3))) == pytest.approx(0.0)


def test_effective_rank():
    rng = np.random.default_rng(2)
    # orthogonal columns of equal norm: all singular values equal -> erank = number of columns
    q, _ = np.linalg.qr(rng.normal(size=(50, 6)))
    assert effective_rank(q) == pytest.approx(6.0)
    # rank one -> 1
    assert effective_rank(np.outer(rng.normal(size=40), rng.normal(size=8))) == pytest.approx(1.0)
    # against the formula on the singular values
    x = rng.normal(size=(100, 10)) * np.arange(1, 11)
    s = np.linalg.svd(x, compute_uv=False)
    p = s / s.sum()
    assert effective_rank(x) == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    xc = x - x.mean(0)
    s = np.linalg.svd(xc, compute_uv=False)
    p = s / s.sum()
    assert effective_rank(torch.from_numpy(x), center=True) == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    assert effective_rank(np.ones((5, 3)), center=True) == 0.0


def test_per_dimension_std_and_collapse():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(4000, 64))
    std = per_dimension_std(x)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert np.allclose(std, xn.std(0))
    assert std.mean() == pytest.approx(1 / math.sqrt(64), rel=0.05)  # spread over the sphere
    collapsed = np.tile(rng.normal(size=(1, 64)), (100, 1)) + 1e-9 * rng.normal(size=(100, 64))
    assert per_dimension_std(collapsed).max() < 1e-6
    ind = collapse_indicators(collapsed)
    assert ind["std_ratio"] < 1e-4 and ind["effective_rank"] < 1.01
    ind = collapse_indicators(x)
    assert ind["std_ratio"] == pytest.approx(1.0, rel=0.05) and ind["effective_rank_ratio"] > 0.9


def test_errors():
    with pytest.raises(ValueError, match="x and y must have one shape"):
        alignment(np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="t must be positive"):
        uniformity(np.ones((3, 2)), t=0)
    with pytest.raises(ValueError, match="at least 2 row"):
        uniformity(np.ones((1, 2)))
    with pytest.raises(ValueError, match="embeddings contains NaN"):
        effective_rank(np.array([[np.nan, 1.0]]))
