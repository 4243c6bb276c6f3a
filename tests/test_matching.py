import json

import numpy as np
import pytest
import torch

from likewise.evaluation import verification_metrics, verification_pairs
from likewise.index import Index
from likewise.matching import (
    Match,
    Matcher,
    calibrate,
    calibrate_from_embeddings,
    calibrate_threshold,
)


def _naive_threshold(s, y, target, far=None):
    """Try every candidate threshold (each distinct score, and inf) one by one."""
    candidates = sorted(set(s.tolist()) | {np.inf}, reverse=True)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    best, best_t = -1.0, None
    feasible = []
    for t in candidates:
        acc = s >= t
        tp, fp = int((acc & y).sum()), int((acc & ~y).sum())
        if target == "far":
            if fp / n_neg <= far:
                feasible.append(t)
            continue
        if target == "f1":
            value = 2 * tp / (2 * tp + fp + (n_pos - tp))
        else:
            value = (tp + n_neg - fp) / (n_pos + n_neg)
        if value > best:  # strict: the first (highest) threshold keeps a tie
            best, best_t = value, t
    return min(feasible) if target == "far" else best_t


@pytest.mark.parametrize("seed", range(6))
def test_calibrate_threshold_equals_a_naive_sweep(seed):
    rng = np.random.default_rng(seed)
    n = 300
    y = rng.random(n) < 0.3
    s = rng.normal(loc=np.where(y, 1.0, 0.0), scale=0.8)
    if seed % 2:
        s = np.round(s, 1)  # many ties
    for target in ("f1", "accuracy"):
        assert calibrate_threshold(s, y, target=target) == _naive_threshold(s, y, target)
    for far in (0.0, 0.01, 0.1, 0.5, 1.0):
        assert calibrate_threshold(s, y, target="far", far=far) == _naive_threshold(s, y, "far", far)


def test_calibrate_threshold_agrees_with_verification_metrics_and_simple_cases():
    rng = np.random.default_rng(7)
    y = rng.random(500) < 0.4
    s = np.round(rng.normal(np.where(y, 0.8, 0.2), 0.3), 2)
    m = verification_metrics(s, y)
    assert calibrate_threshold(s, y, target="f1") == m["best_f1_threshold"]
    assert calibrate_threshold(s, y, target="accuracy") == m["best_accuracy_threshold"]
    assert calibrate_threshold(s, y, target="far", far=0.01) == m["threshold_at_far_1e-02"]
    # separable: the threshold is the lowest same-class score
    assert calibrate_threshold([0.9, 0.8, 0.7, 0.2, 0.1], [1, 1, 1, 0, 0]) == 0.7
    assert calibrate_threshold(
        torch.tensor([0.9, 0.8, 0.7, 0.2, 0.1]), torch.tensor([1, 1, 1, 0, 0]), target="accuracy"
    ) == (pytest.approx(0.7))
    # the most similar pair is different-class: no false accept allowed -> accept nothing
    assert calibrate_threshold([0.9, 0.8, 0.1], [False, True, False], target="far", far=0.0) == np.inf


def test_calibrate_threshold_errors():
    with pytest.raises(ValueError, match="both same-class and different-class pairs"):
        calibrate_threshold([0.1, 0.2], [True, True])
    with pytest.raises(ValueError, match="scores contains NaN"):
        calibrate_threshold([0.1, np.nan], [True, False])
    with pytest.raises(ValueError, match="is_same has 3 entries but scores has 2"):
        calibrate_threshold([0.1, 0.2], [True, False, True])
    with pytest.raises(ValueError, match="unknown target 'recall'"):
        calibrate_threshold([0.1, 0.2], [True, False], target="recall")
    with pytest.raises(ValueError, match=r"far must be a rate in \[0, 1\]"):
        calibrate_threshold([0.1, 0.2], [True, False], target="far", far=2)
    with pytest.raises(ValueError, match="is_same must be boolean"):
        calibrate_threshold([0.1, 0.2], [2, 0])


def test_calibrate_on_pair_scores_points_to_calibrate_threshold():
    rng = np.random.default_rng(3)
    y = rng.random(200) < 0.3
    s = rng.normal(np.where(y, 1.0, 0.0), 0.8)
    expected = r"calibrate takes an Index .* use calibrate_threshold\(scores, is_same\)"
    with pytest.raises(TypeError, match=expected):
        calibrate(s, y, target="far", far=0.05)


def _world(seed=0, d=16):
    """Gallery of 8 known identities, queries of those plus 4 unknown identities."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((12, d)) * 2

    def sample(classes, per):
        y = np.repeat(classes, per)
        return (centers[y] + 0.6 * rng.standard_normal((y.size, d))).astype(np.float32), y

    gallery, g_labels = sample(np.arange(8), 5)
    val, val_labels = sample(np.arange(12), 6)
    queries, q_labels = sample(np.arange(12), 4)
    return gallery, g_labels, val, val_labels, queries, q_labels


def _naive_match(gallery, g_labels, queries, threshold, k):
    g = gallery / np.linalg.norm(gallery, axis=1, keepdims=True)
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    s = q @ g.T
    out = []
    for row in s:
        top = np.argsort(-row)[:k]
        ok = [j for j in top if row[j] >= threshold]
        if not ok:
            out.append((None, row[top[0]], top[0]))
            continue
        counts = {}
        for j in ok:
            counts[g_labels[j]] = counts.get(g_labels[j], 0) + 1
        winner = max(ok, key=lambda j: (counts[g_labels[j]], row[j]))
        out.append((g_labels[winner], row[winner], winner))
    return out


@pytest.mark.parametrize("k", [1, 3])
def test_matcher_equals_naive_decision(k):
    gallery, g_labels, val, val_labels, queries, q_labels = _world()
    index = Index(16)
    index.add(gallery, labels=g_labels)
    threshold = calibrate_from_embeddings(val, val_labels, target="f1")
    s, same = verification_pairs(val, val_labels)
    assert threshold == calibrate_threshold(s, same)
    matcher = Matcher(index, threshold, k=k)
    got = matcher.match(queries)
    want = _naive_match(gallery, g_labels, queries, threshold, k)
    assert all(isinstance(m, Match) for m in got)
    assert [m.label for m in got] == [w[0] for w in want]
    assert [m.id for m in got] == [w[2] for w in want]
    np.testing.assert_allclose([m.score for m in got], [w[1] for w in want], atol=1e-5)
    assert any(m.label is None for m in got) and any(m.label is not None for m in got)


def test_matcher_evaluate_counts():
    gallery, g_labels, val, val_labels, queries, q_labels = _world(seed=1)
    index = Index(16)
    index.add(gallery, labels=g_labels)
    matcher = Matcher.calibrated(index, val, val_labels, target="accuracy")
    pred = [m.label for m in matcher.match(queries)]
    known = [t in set(g_labels.tolist()) for t in q_labels]
    right = [(p == t) if kn else (p is None) for p, t, kn in zip(pred, q_labels, known)]
    given = [p is not None for p in pred]
    correct = [p is not None and p == t for p, t in zip(pred, q_labels)]
    result = matcher.evaluate(queries, q_labels)
    assert result["n_known"] == 32 and result["n_unknown"] == 16 and result["n_queries"] == 48
    assert result["accuracy"] == pytest.approx(np.mean(right))
    assert result["precision"] == pytest.approx(sum(correct) / sum(given))
    assert result["recall"] == pytest.approx(sum(c and kn for c, kn in zip(correct, known)) / 32)
    n_fa = sum(g and not kn for g, kn in zip(given, known))
    assert result["false_accept_rate"] == pytest.approx(n_fa / 16)
    n_fr = sum(not g and kn for g, kn in zip(given, known))
    assert result["false_reject_rate"] == pytest.approx(n_fr / 32)
    n_mis = sum(g and kn and not c for g, kn, c in zip(given, known, correct))
    assert result["misidentification_rate"] == pytest.approx(n_mis / 32)
    # fewer known labels than stored: classes 6, 7 now count as unknown
    narrowed = matcher.evaluate(queries, q_labels, known_labels=np.arange(6))
    assert narrowed["n_known"] == 24 and narrowed["n_unknown"] == 24
    # an impossible threshold rejects everything
    strict = Matcher(index, np.inf).evaluate(queries, q_labels)
    assert strict["false_accept_rate"] == 0 and strict["recall"] == 0 and np.isnan(strict["precision"])


def _strict_json(text):
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


def test_matcher_save_load_round_trip(tmp_path):
    gallery, g_labels, val, val_labels, queries, q_labels = _world(seed=2)
    names = np.array([f"person{i}" for i in range(12)])
    index = Index(16, kind="hnsw")
    index.add(gallery, labels=names[g_labels])
    matcher = Matcher.calibrated(index, val, names[val_labels], target="far", far=0.01, k=3)
    assert matcher.calibration["target"] == "far" and matcher.calibration["far"] == 0.01
    matcher.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["index", "matcher.json"]
    meta = _strict_json((tmp_path / "m" / "matcher.json").read_text())
    assert meta["calibration"]["threshold"] == matcher.threshold
    loaded = Matcher.load(tmp_path / "m")
    assert loaded.threshold == matcher.threshold and loaded.k == 3
    assert loaded.calibration == matcher.calibration
    assert loaded.match(queries) == matcher.match(queries)
    # non-finite numbers: strict JSON strings, read back as floats
    nan_calibration = {"target": "f1", "threshold": np.inf, "precision": float("nan"), "n_known": 3}
    Matcher(index, np.inf, calibration=nan_calibration).save(tmp_path / "inf")
    meta = _strict_json((tmp_path / "inf" / "matcher.json").read_text())
    assert meta["threshold"] == "inf" and meta["calibration"]["precision"] == "nan"
    back = Matcher.load(tmp_path / "inf")
    assert back.threshold == np.inf and back.calibration["threshold"] == np.inf
    assert np.isnan(back.calibration["precision"]) and back.calibration["n_known"] == 3
    # a file written before calibration was saved (threshold "inf", no calibration) still loads
    (tmp_path / "inf" / "matcher.json").write_text(
        json.dumps({"format": "likewise-matcher", "version": 1, "threshold": "inf", "k": 1})
    )
    old = Matcher.load(tmp_path / "inf")
    assert old.threshold == np.inf and old.calibration is None and Matcher(index, 0.5).calibration is None


def test_match_says_unknown():
    gallery, g_labels, val, val_labels, queries, q_labels = _world(seed=4)
    index = Index(16)
    index.add(gallery, labels=g_labels)
    matches = Matcher(index, 0.9).match(queries)
    unknown = [m for m in matches if m.label is None]
    known = [m for m in matches if m.label is not None]
    assert unknown and known
    assert all(m.is_unknown and m.answer == "unknown" for m in unknown)
    assert all(not m.is_unknown and m.answer == m.label for m in known)


def test_matcher_errors(tmp_path):
    x = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    unlabelled = Index(4)
    unlabelled.add(x)
    with pytest.raises(ValueError, match="needs an index whose vectors have labels"):
        Matcher(unlabelled, 0.5)
    labelled = Index(4)
    labelled.add(x, labels=np.arange(10) % 2)
    with pytest.raises(ValueError, match="threshold must not be NaN"):
        Matcher(labelled, float("nan"))
    with pytest.raises(TypeError, match="threshold must be a number"):
        Matcher(labelled, "0.5")
    with pytest.raises(ValueError, match="k must be a positive integer"):
        Matcher(labelled, 0.5, k=0)
    with pytest.raises(TypeError, match="must both be integers or both strings"):
        Matcher(labelled, 0.5).evaluate(x, ["a"] * 10)
    with pytest.raises(ValueError, match="true_labels has 3 entries but there are 10 vectors"):
        Matcher(labelled, 0.5).evaluate(x, [0, 1, 0])
    labelled.save(tmp_path / "just_index")
    with pytest.raises(ValueError, match="is not a likewise matcher"):
        Matcher.load(tmp_path / "just_index")
    with pytest.raises(FileNotFoundError):
        Matcher.load(tmp_path / "nothing")
    with pytest.raises(TypeError, match="calibration must be a dict"):
        Matcher(labelled, 0.5, calibration=[0.5])
    Matcher(labelled, 0.5).save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "matcher.json").read_text())
    (tmp_path / "m" / "matcher.json").write_text(json.dumps({**meta, "calibration": [1]}))
    with pytest.raises(ValueError, match="calibration is not an object"):
        Matcher.load(tmp_path / "m")
