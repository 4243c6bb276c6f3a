"""average_precision: the seed's worked exercise, scikit-learn, and a plain loop."""

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from likewise.evaluation import average_precision


def naive_ap_index_ties(scores, rel):
    """Rank by score descending, ties by index; AP = mean over relevant of precision there."""
    order = sorted(range(len(scores)), key=lambda m: (-scores[m], m))
    hits, total = 0, 0.0
    for pos, m in enumerate(order, start=1):
        if rel[m]:
            hits += 1
            total += hits / pos
    return total / hits


def test_seed_exercise():
    # distances from x1 to x1..x5 = [0, 5, 2, 3, 1], labels [1, 0, 0, 1, 1]; x1 itself excluded
    d = np.array([0.0, 5.0, 2.0, 3.0, 1.0])
    y = np.array([1, 0, 0, 1, 1])
    scores, rel = -d[1:], y[1:] == y[0]
    ap = average_precision(scores, rel)
    assert ap == pytest.approx(0.83, abs=0.005)
    assert ap == pytest.approx(0.5 * (1 / 1 + 2 / 3), abs=1e-12)
    assert ap == pytest.approx(average_precision_score(rel, scores), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_equals_sklearn_without_ties(seed):
    rng = np.random.default_rng(seed)
    s = rng.normal(size=200)
    rel = rng.random(200) < 0.2
    rel[0] = True
    assert average_precision(s, rel) == pytest.approx(average_precision_score(rel, s), abs=1e-12)
    assert average_precision(s, rel, ties="index") == pytest.approx(naive_ap_index_ties(s, rel), abs=1e-12)


@pytest.mark.parametrize("seed", range(5))
def test_ties_threshold_equals_sklearn_and_index_equals_loop(seed):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 6, size=80).astype(float)  # many ties
    rel = rng.random(80) < 0.3
    rel[3] = True
    assert average_precision(s, rel) == pytest.approx(average_precision_score(rel, s), abs=1e-12)
    by_index = average_precision(s, rel, ties="index")
    assert by_index == pytest.approx(naive_ap_index_ties(s, rel), abs=1e-12)


def test_tie_conventions_differ_on_a_tie():
    # one relevant and one non-relevant item share the top score
    s, rel = [1.0, 1.0, 0.0], [False, True, True]
    # threshold: the tied pair enters together -> precision 1/2 at recall 1/2, then 2/3 at recall 1
    assert average_precision(s, rel) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    # index: order is item0 (non-rel), item1 (rel), item2 (rel) -> (1/2 + 2/3) / 2
    assert average_precision(s, rel, ties="index") == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_accepts_tensors():
    s = torch.tensor([0.3, 0.9, 0.1, 0.5])
    rel = torch.tensor([1, 0, 0, 1])
    assert average_precision(s, rel) == pytest.approx(average_precision_score(rel.numpy(), s.numpy()))


def test_perfect_and_worst_rankings():
    assert average_precision([3, 2, 1, 0], [1, 1, 0, 0]) == 1.0
    assert average_precision([3, 2, 1, 0], [0, 0, 0, 1]) == pytest.approx(0.25)


def test_errors():
    with pytest.raises(ValueError, match="no True entry"):
        average_precision([1.0, 2.0], [0, 0])
    with pytest.raises(ValueError, match="is_relevant has 3 entries but scores has 2"):
        average_precision([1.0, 2.0], [0, 1, 1])
    with pytest.raises(ValueError, match="NaN"):
        average_precision([np.nan, 2.0], [0, 1])
    with pytest.raises(ValueError, match="ties must be"):
        average_precision([1.0, 2.0], [0, 1], ties="random")
    with pytest.raises(ValueError, match="boolean"):
        average_precision([1.0, 2.0], [0, 2])
    with pytest.raises(TypeError, match="NumPy array or a torch tensor"):
        average_precision("abc", [0, 1])
