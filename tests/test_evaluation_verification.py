"""verification_metrics vs scikit-learn and threshold sweeps written as loops; verification_pairs."""

import itertools
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from likewise.evaluation import verification_metrics, verification_pairs


def sweep(scores, same):
    """(threshold, TP, FP, TN, FN) for 'accept nothing' and each distinct score, descending."""
    rows = [(math.inf, 0, 0, sum(not v for v in same), sum(same))]
    for t in sorted(set(scores), reverse=True):
        tp = sum(1 for s, v in zip(scores, same) if s >= t and v)
        fp = sum(1 for s, v in zip(scores, same) if s >= t and not v)
        rows.append((t, tp, fp, rows[0][3] - fp, rows[0][4] - tp))
    return rows


def data(seed, n=300, ties=False):
    rng = np.random.default_rng(seed)
    same = rng.random(n) < 0.3
    s = rng.normal(size=n) + 1.2 * same
    if ties:
        s = np.round(s, 1)
    return s, same


@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("seed", [0, 1])
def test_auc_and_ap_equal_sklearn(seed, ties):
    s, same = data(seed, ties=ties)
    m = verification_metrics(s, same)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(same, s), abs=1e-12)
    assert m["average_precision"] == pytest.approx(average_precision_score(same, s), abs=1e-12)


@pytest.mark.parametrize("ties", [False, True])
def test_thresholded_metrics_equal_loops(ties):
    s, same = data(2, n=150, ties=ties)
    m = verification_metrics(s, same, far_targets=(0.01, 0.1, 0.5), max_curve_points=None)
    rows = sweep(s.tolist(), same.tolist())
    P, N = int(same.sum()), int((~same).sum())
    # accuracy / F1: best over the sweep, first (highest threshold) on ties
    acc = [(tp + tn) / (P + N) for _, tp, fp, tn, fn in rows]
    i = int(np.argmax(acc))
    assert m["best_accuracy"] == pytest.approx(acc[i]) and m["best_accuracy_threshold"] == rows[i][0]
    f1 = [2 * tp / (2 * tp + fp + fn) for _, tp, fp, tn, fn in rows]
    i = int(np.argmax(f1))
    assert m["best_f1"] == pytest.approx(f1[i]) and m["best_f1_threshold"] == rows[i][0]
    # TAR at FAR: best TPR among thresholds whose FPR is within the target
    for f in (0.01, 0.1, 0.5):
        best = max((tp / P, t) for t, tp, fp, _, _ in rows if fp / N <= f)
        assert m[f"tar_at_far_{f:.0e}"] == pytest.approx(best[0])
        thr = min(t for t, tp, fp, _, _ in rows if fp / N <= f and tp / P == best[0])
        assert m[f"threshold_at_far_{f:.0e}"] == thr
    # EER: first sweep point with FAR >= FRR, interpolated with the one before it
    far = [fp / N for _, tp, fp, _, _ in rows]
    frr = [fn / P for _, tp, fp, _, fn in rows]
    j = next(j for j in range(len(rows)) if far[j] >= frr[j])
    d0, d1 = far[j - 1] - frr[j - 1], far[j] - frr[j]
    w = -d0 / (d1 - d0)
    assert m["eer"] == pytest.approx(far[j - 1] + w * (far[j] - far[j - 1]))
    assert m["eer"] == pytest.approx(frr[j - 1] + w * (frr[j] - frr[j - 1]))
    assert m["eer_threshold"] == rows[j][0]
    # curves: one point per sweep row
    assert np.allclose(m["roc_fpr"], far) and np.allclose(m["roc_tpr"], [1 - v for v in frr])
    assert np.array_equal(m["roc_thresholds"], [r[0] for r in rows])
    assert np.allclose(m["pr_recall"], [tp / P for _, tp, _, _, _ in rows[1:]])
    assert np.allclose(m["pr_precision"], [tp / (tp + fp) for _, tp, fp, _, _ in rows[1:]])
    assert (m["n_pairs"], m["n_positive"], m["n_negative"]) == (150, P, N)


def test_separable_and_hand_worked_cases():
    m = verification_metrics([0.9, 0.8, 0.3, 0.1], [1, 1, 0, 0])
    assert m["roc_auc"] == 1.0 and m["eer"] == 0.0 and m["best_accuracy"] == 1.0
    assert m["best_accuracy_threshold"] == 0.8 and m["tar_at_far_1e-03"] == 1.0
    # scores 4,3,2,1 with labels 1,0,1,0: the curve FAR/FRR crosses at 0.5
    m = verification_metrics([4.0, 3.0, 2.0, 1.0], [1, 0, 1, 0])
    assert m["eer"] == pytest.approx(0.5)
    assert m["roc_auc"] == pytest.approx(0.75)
    assert m["tar_at_far_1e-01"] == pytest.approx(0.5) and m["threshold_at_far_1e-01"] == 4.0


def test_curves_are_thinned_but_metrics_are_not():
    s, same = data(3, n=5000)
    full = verification_metrics(s, same, max_curve_points=None)
    thin = verification_metrics(torch.from_numpy(s), torch.from_numpy(same), max_curve_points=50)
    assert len(thin["roc_fpr"]) <= 50 and len(full["roc_fpr"]) == 5001
    assert thin["roc_fpr"][0] == 0 and thin["roc_fpr"][-1] == 1
    for key in ("roc_auc", "average_precision", "eer", "tar_at_far_1e-02", "best_f1"):
        assert thin[key] == full[key]


def test_metric_errors():
    with pytest.raises(ValueError, match="both same-class and different-class pairs"):
        verification_metrics([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="is_same has 1 entries but scores has 2"):
        verification_metrics([0.1, 0.2], [1])
    with pytest.raises(ValueError, match="far_targets must lie in"):
        verification_metrics([0.1, 0.2], [0, 1], far_targets=(2.0,))
    with pytest.raises(ValueError, match="scores contains NaN"):
        verification_metrics([np.nan, 0.2], [0, 1])
    with pytest.raises(ValueError, match="scores must be 1-D"):
        verification_metrics(np.zeros((2, 2)), [0, 1])


def test_all_pairs_equal_loops():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(13, 4))
    y = rng.integers(0, 3, 13)
    for metric in ("cosine", "euclidean"):
        s, same = verification_pairs(x, y, metric=metric)
        want_s, want_same = [], []
        for i, j in itertools.combinations(range(13), 2):
            if metric == "cosine":
                v = float(x[i] @ x[j] / (np.linalg.norm(x[i]) * np.linalg.norm(x[j])))
            else:
                v = -float(np.sqrt(((x[i] - x[j]) ** 2).sum()))
            want_s.append(v)
            want_same.append(y[i] == y[j])
        assert np.allclose(s, want_s, atol=1e-12) and np.array_equal(same, want_same)


def pair_index(x, s):
    """Map each score back to its pair by recomputing all pairs (scores are distinct here)."""
    all_s, _ = verification_pairs(x, np.zeros(len(x)))
    lookup = {round(v, 12): p for v, p in zip(all_s, itertools.combinations(range(len(x)), 2))}
    return [lookup[round(v, 12)] for v in s]


def test_sampled_and_balanced_pairs():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(60, 8))
    y = rng.integers(0, 6, 60)
    s, same = verification_pairs(x, y, max_pairs=100, seed=1)
    pairs = pair_index(x, s)
    assert len(set(pairs)) == 100 and all(i < j for i, j in pairs)
    assert np.array_equal(same, [y[i] == y[j] for i, j in pairs])
    s2, _ = verification_pairs(x, y, max_pairs=100, seed=1)
    s3, _ = verification_pairs(x, y, max_pairs=100, seed=2)
    assert np.array_equal(s, s2) and not np.array_equal(s, s3)

    s, same = verification_pairs(x, y, balanced=True, max_pairs=120, seed=0)
    pairs = pair_index(x, s)
    assert same.sum() == 60 and (~same).sum() == 60 and len(set(pairs)) == 120
    assert np.array_equal(same, [y[i] == y[j] for i, j in pairs])
    # without max_pairs: every same-class pair and as many different-class ones
    n_pos = sum(1 for i, j in itertools.combinations(range(60), 2) if y[i] == y[j])
    s, same = verification_pairs(torch.from_numpy(x), torch.from_numpy(y), balanced=True)
    assert same.sum() == n_pos and (~same).sum() == n_pos


def test_pairs_errors():
    x = np.zeros((4, 2))
    with pytest.raises(ValueError, match="no two embeddings share a label"):
        verification_pairs(x, [0, 1, 2, 3], balanced=True)
    with pytest.raises(ValueError, match="all embeddings share one label"):
        verification_pairs(x, [1, 1, 1, 1], balanced=True)
    with pytest.raises(ValueError, match="max_pairs must be a positive integer"):
        verification_pairs(x, [0, 0, 1, 1], max_pairs=0)
    with pytest.raises(ValueError, match="at least 2 row"):
        verification_pairs(x[:1], [0])
