"""Open-set calibration (likewise.matching.calibrate) against a naive loop over gallery rows."""

import json

import numpy as np
import pytest

from likewise.index import Index
from likewise.matching import (
    CALIBRATION_KEYS,
    Matcher,
    calibrate,
    calibrate_from_embeddings,
)
from likewise.matching.open_set import _open_set_trials, _sweep


def _sample(centres, per, rng, spread=0.8, offset=0):
    y = np.repeat(np.arange(len(centres)), per)
    x = centres[y] + spread * rng.standard_normal((y.size, centres.shape[1]))
    return x.astype(np.float32), y + offset


def _gallery(n_ids=30, per=3, d=16, seed=0, kind="flat", metric="cosine"):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_ids, d))
    g, gy = _sample(centres, per, rng)
    index = Index(d, kind=kind, metric=metric)
    index.add(g, labels=gy)
    return index, g, gy, centres, rng


def _similarity(q, g, metric):
    q, g = q.astype(np.float64), g.astype(np.float64)
    if metric == "cosine":
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        g = g / np.linalg.norm(g, axis=1, keepdims=True)
    if metric == "euclidean":
        return -np.sqrt(((q[:, None] - g[None]) ** 2).sum(-1))
    return q @ g.T


def _naive_trials(g, gy, q, qy, own, k, metric="cosine"):
    """Per validation row, looping over gallery rows (row ``own[i]`` left out):
    the best impostor score, and for enrolled rows the k best (score, label) neighbours."""
    s = _similarity(q, g, metric)
    impostor, known = [], []
    for i in range(len(q)):
        best_other = -np.inf
        neighbours = []
        for j in range(len(g)):
            if j == own[i]:
                continue
            if gy[j] != qy[i]:
                best_other = max(best_other, s[i, j])
            neighbours.append((s[i, j], gy[j]))
        impostor.append(best_other)
        if any(label == qy[i] for _, label in neighbours):
            neighbours.sort(key=lambda t: -t[0])
            known.append((qy[i], neighbours[:k]))
    return np.array(impostor), known


def _naive_answer(neighbours, t):
    """The matcher's vote among neighbours scoring >= t (None: unknown)."""
    ok = [(s, label) for s, label in neighbours if s >= t]
    if not ok:
        return None
    votes = {}
    for _, label in ok:
        votes[label] = votes.get(label, 0) + 1
    most = max(votes.values())
    return next(label for _, label in ok if votes[label] == most)


def _naive_counts(impostor, known, t):
    answers = [(_naive_answer(nb, t), y) for y, nb in known]
    accepted = sum(a is not None for a, _ in answers)
    correct = sum(a == y for a, y in answers)
    false_accepts = int((impostor >= t).sum())
    return accepted, correct, false_accepts


def _naive_calibration(impostor, known, target, far=None):
    g, u = len(known), len(impostor)
    candidates = {np.inf, *impostor.tolist()} | {s for _, nb in known for s, _ in nb}
    best, best_t, feasible = -1.0, None, []
    for t in sorted(candidates, reverse=True):
        a, c, f = _naive_counts(impostor, known, t)
        if target == "far":
            if f / u <= far:
                feasible.append(t)
            continue
        value = 2 * c / (a + f + g) if target == "f1" else (c + u - f) / (g + u)
        if value > best + 1e-12:
            best, best_t = value, t
    return min(feasible) if target == "far" else best_t


def _check_against_naive(matcher, impostor, known, target, far=None):
    want = _naive_calibration(impostor, known, target, far)
    assert matcher.threshold == pytest.approx(want, abs=1e-5)
    a, c, f = _naive_counts(impostor, known, matcher.threshold - 1e-6)  # float32 vs float64 scores
    cal = matcher.calibration
    assert cal["target"] == target and cal["threshold"] == matcher.threshold
    assert cal["n_known"] == len(known) and cal["n_unknown"] == len(impostor)
    assert cal["false_accept_rate"] == pytest.approx(f / len(impostor))
    assert cal["recall"] == pytest.approx(c / len(known))
    assert cal["precision"] == pytest.approx(c / (a + f))
    assert cal["false_reject_rate"] == pytest.approx((len(known) - a) / len(known))


@pytest.mark.parametrize("target", ["far", "f1", "accuracy"])
@pytest.mark.parametrize("k", [1, 3])
def test_calibration_equals_a_naive_loop_over_the_gallery(target, k):
    index, g, gy, centres, rng = _gallery(seed=k)
    # validation: 20 enrolled identities and 10 never enrolled
    v, vy = _sample(centres[:20], 2, rng)
    w, wy = _sample(rng.standard_normal((10, centres.shape[1])), 2, rng, offset=100)
    v, vy = np.r_[v, w], np.r_[vy, wy]
    own = np.full(len(v), -1)
    impostor, known = _naive_trials(g, gy, v, vy, own, k)
    assert len(known) == 40 and len(impostor) == 60
    for far in (0.0, 0.05, 0.2) if target == "far" else (None,):
        matcher = calibrate(index, v, vy, target=target, far=far if far is not None else 1e-3, k=k)
        assert isinstance(matcher, Matcher) and matcher.k == k
        extra = {"far"} if target == "far" else set()
        assert set(matcher.calibration) == {"target", *extra, *CALIBRATION_KEYS}
        _check_against_naive(matcher, impostor, known, target, far)


@pytest.mark.parametrize("seed", range(3))
def test_decision_counts_at_every_threshold_equal_the_naive_vote(seed):
    """The whole sweep, k=3 with votes: between consecutive candidate thresholds the counts of
    answered / correctly answered known trials and accepted unknown trials match the naive loop."""

    index, g, gy, centres, rng = _gallery(seed=seed)
    v, vy = _sample(centres[:20], 2, rng, spread=1.0)
    impostor, known = _naive_trials(g, gy, v, vy, np.full(len(v), -1), 3)
    curve = _sweep(_open_set_trials(index, v, vy, 3, None))
    t = curve["threshold"]
    assert t[0] == np.inf and np.all(np.diff(t) < 0)
    checked = 0
    for j in range(t.size):
        lower = t[j + 1] if j + 1 < t.size else t[j] - 1.0
        if t[j] - lower < 1e-4:  # float32 scores vs the naive float64 ones
            continue
        mid = (t[j] + lower) / 2 if np.isfinite(t[j]) else lower + 1.0
        a, c, f = _naive_counts(impostor, known, mid)
        assert (curve["accepted"][j], curve["correct"][j], curve["false_accepts"][j]) == (a, c, f)
        checked += 1
    assert checked > 0.8 * t.size
    # the votes matter somewhere: the top label alone would not give these counts
    top_only = [(y, nb[:1]) for y, nb in known]
    assert any(
        _naive_counts(impostor, top_only, m) != _naive_counts(impostor, known, m) for m in t[1:] - 1e-6
    )


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_impostor_beyond_the_first_neighbours_is_found(kind):
    """An identity with 60 tight entries: the best other identity lies past the first search."""
    rng = np.random.default_rng(4)
    centres = rng.standard_normal((4, 8)) * 3
    g = np.r_[centres[0] + 0.05 * rng.standard_normal((60, 8)), centres[1:] + rng.standard_normal((3, 8))]
    gy = np.r_[np.zeros(60, dtype=int), 1, 2, 3]
    index = Index(8, kind=kind)
    index.add(g.astype(np.float32), labels=gy)
    v = (centres[[0, 0, 1]] + 0.05 * rng.standard_normal((3, 8))).astype(np.float32)
    vy = np.array([0, 0, 1])
    impostor, known = _naive_trials(g, gy, v, vy, np.full(3, -1), 1)

    trials = _open_set_trials(index, v, vy, 1, None)
    np.testing.assert_allclose(trials.impostor, impostor, atol=1e-5)
    assert trials.n_known == 3


@pytest.mark.parametrize("metric", ["cosine", "dot", "euclidean"])
def test_gallery_as_validation_is_leave_one_out(metric):
    """Calibrating on the gallery itself: a row is never matched with its own entry."""
    index, g, gy, _, _ = _gallery(n_ids=25, per=3, seed=5, metric=metric)
    impostor, known = _naive_trials(g, gy, g, gy, np.arange(len(g)), 1, metric)
    by_ids = calibrate(index, g, gy, target="f1", ids=index.ids)
    _check_against_naive(by_ids, impostor, known, "f1")
    guessed = calibrate(index, g, gy, target="f1")  # exact copies recognised
    assert guessed.threshold == by_ids.threshold and guessed.calibration == by_ids.calibration
    # without leaving the row out, known trials match themselves (cosine/euclidean: always first)
    selfish = calibrate(index, g, gy, target="f1", ids=np.full(len(g), -1))
    assert selfish.calibration["recall"] > by_ids.calibration["recall"]
    if metric != "dot":
        assert selfish.calibration["recall"] == 1.0 and by_ids.calibration["recall"] < 0.95


def test_open_set_far_holds_on_fresh_unknown_identities():
    """Target FAR 0.05 -> at most 0.1 of 600 never-seen identities accepted (sd ~0.009 at 0.05);
    the pair-level threshold for the same rate accepts far more of them."""
    index, g, gy, centres, rng = _gallery(n_ids=150, per=3, d=32, seed=11)
    v, vy = _sample(centres, 2, rng)
    fresh, fresh_y = _sample(rng.standard_normal((600, 32)), 1, rng, offset=10_000)
    matcher = calibrate(index, v, vy, target="far", far=0.05)
    assert matcher.calibration["false_accept_rate"] <= 0.05
    impostor, _ = _naive_trials(g, gy, fresh, fresh_y, np.full(len(fresh), -1), 1)
    measured = float(np.mean(impostor >= matcher.threshold))  # naive: best gallery score accepted
    assert measured <= 0.1
    assert matcher.evaluate(fresh, fresh_y)["false_accept_rate"] == pytest.approx(measured, abs=2 / 600)
    # it still answers known queries
    known_q, known_y = _sample(centres, 1, rng)
    assert matcher.evaluate(known_q, known_y)["recall"] > 0.3
    pair_level = Matcher(index, calibrate_from_embeddings(v, vy, target="far", far=0.05))
    assert pair_level.evaluate(fresh, fresh_y)["false_accept_rate"] > 0.3


def test_calibrated_matcher_save_load_keeps_the_calibration(tmp_path):
    index, g, gy, centres, rng = _gallery(seed=3)
    v, vy = _sample(centres, 2, rng)
    names = np.array([f"id{i}" for i in range(30)])
    index_s = Index(16)
    index_s.add(g, labels=names[gy])
    matcher = Matcher.calibrated(index_s, v, names[vy], target="accuracy", k=2)
    matcher.save(tmp_path / "m")
    text = (tmp_path / "m" / "matcher.json").read_text()
    meta = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    assert meta["calibration"]["target"] == "accuracy"
    loaded = Matcher.load(tmp_path / "m")
    assert loaded.calibration == matcher.calibration and loaded.threshold == matcher.threshold
    assert loaded.k == 2 and loaded.match(v) == matcher.match(v)


def test_calibration_errors():
    index, g, gy, centres, rng = _gallery(seed=1)
    v, vy = _sample(centres[:5], 2, rng)
    with pytest.raises(TypeError, match="calibrate takes an Index of the known identities, got str"):
        calibrate("index", v, vy)
    unlabelled = Index(16)
    unlabelled.add(g)
    with pytest.raises(ValueError, match="needs an index whose vectors have labels"):
        calibrate(unlabelled, v, vy)
    single = Index(16)
    single.add(g[:3], labels=[0, 0, 0])
    with pytest.raises(ValueError, match="at least two identities"):
        calibrate(single, v, vy)
    with pytest.raises(ValueError, match="unknown target 'recall'"):
        calibrate(index, v, vy, target="recall")
    with pytest.raises(ValueError, match=r"far must be a rate in \[0, 1\]"):
        calibrate(index, v, vy, target="far", far=1.5)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        calibrate(index, v, vy, k=0)
    with pytest.raises(ValueError, match="labels has 3 entries but there are 10 vectors"):
        calibrate(index, v, vy[:3])
    with pytest.raises(TypeError, match="both be integers or both strings"):
        calibrate(index, v, [f"x{i}" for i in vy])
    with pytest.raises(ValueError, match="embeddings have 8 dimensions"):
        calibrate(index, v[:, :8], vy)
    with pytest.raises(ValueError, match="none of the labels is enrolled"):
        calibrate(index, v, vy + 1000, target="f1")
    assert calibrate(index, v, vy + 1000, target="far", far=0.1).calibration["n_known"] == 0
    with pytest.raises(ValueError, match="one index id"):
        calibrate(index, v, vy, ids=[0, 1])
    with pytest.raises(ValueError, match="ids not in the index"):
        calibrate(index, v, vy, ids=np.arange(10) + 10_000)
    with pytest.raises(ValueError, match="same index entry"):
        calibrate(index, v, vy, ids=np.zeros(10, dtype=int))
    with pytest.raises(ValueError, match=r"ids\[1\] = 1 is stored with label .*0.* but labels\[1\] is .*7"):
        calibrate(index, v, np.r_[vy[:1], 7, vy[2:]], ids=np.arange(10))
    with pytest.raises(TypeError, match="ids must be integers"):
        calibrate(index, v, vy, ids=np.zeros(10))
    with pytest.raises(TypeError, match="unexpected keyword argument 'max_pairs'"):
        Matcher.calibrated(index, v, vy, max_pairs=10)
