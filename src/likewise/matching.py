"""Calibrated open-set matching: "who is this?" and "is this someone new?".

Matching. :class:`Matcher` wraps a labelled :class:`likewise.index.Index` of
known identities (the *gallery*). For each query it retrieves the ``k`` nearest
stored vectors; those scoring ``>= threshold`` vote for their label (most votes
wins; a tie goes to the label with the highest score). No neighbour above the
threshold means *unknown*: :class:`Match` ``label`` is ``None``,
``is_unknown`` is true and ``answer`` is the string ``"unknown"``.

Open-set calibration. :func:`calibrate` (= :meth:`Matcher.calibrated`) picks the
threshold for the decision the matcher actually makes. A query is accepted when
its *best* gallery score passes the threshold, so a threshold chosen on single
pairs is far too permissive: with 100 identities the best of 100 impostor
scores passes much more often than one (a pair-level false-accept rate of 1e-3
gave an open-set one of 0.37). Each labelled validation embedding ``q`` (label
``y``) is searched in the index and gives two *trials*:

* a **known** trial, when the index holds identity ``y`` (other than ``q``
  itself): the matcher answers as :meth:`Matcher.match` would (``k``
  neighbours, votes). The answer is *correct* when it is ``y``; another label
  is a misidentification, "unknown" a false reject. Its genuine score is the
  best score among the gallery entries of ``y``.
* an **unknown** trial: ``q`` stands for a person who is not enrolled, i.e. the
  matcher sees the gallery without identity ``y``. Its impostor score is the
  best score among gallery entries of *other* identities; the matcher accepts
  it — a false accept, whatever ``k`` — when that score ``>= threshold``. The
  correct decision is "unknown".

With ``G`` known and ``U`` unknown trials, at threshold ``t``: ``C`` known
trials answered correctly, ``A`` known trials given any label, ``F`` unknown
trials accepted. Then ``precision = C / (A + F)``, ``recall = C / G``,
``false_accept_rate = F / U``, ``accuracy = (C + U - F) / (G + U)`` and
``f1 = 2 C / (A + F + G)``. Targets:

* ``"far"``: the lowest threshold with ``false_accept_rate <= far`` (it answers
  the most known queries under that bound);
* ``"f1"`` / ``"accuracy"``: the threshold maximising that value; ties go to
  the highest threshold (fewest false accepts).

Candidate thresholds are the scores at which some trial's decision changes, plus
``inf`` (accept nothing). The measured values at the chosen threshold are kept in
:attr:`Matcher.calibration` and saved with the matcher.

Leave-one-out. When the validation embeddings are themselves stored in the index
(e.g. calibrating on the gallery), a query must not be matched with its own
entry. Pass ``ids=``: the index id of each validation row (``-1`` for rows not
stored); that entry is left out of the row's search. Without ``ids``, a row
whose nearest same-label neighbour is an exact copy of it (its score equals the
row's similarity with itself, up to float32 rounding) is taken to be stored
there, and that one entry is left out. A validation set kept apart from the
gallery needs neither.

Pairs. :func:`calibrate_threshold` is the pair-level rule (a pair is accepted
when ``score >= threshold``; the rules of
:func:`likewise.evaluation.verification_metrics`): use it for verification
("are these two the same?"), not for the matcher.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from likewise.index import Index, as_labels, as_matrix
from likewise.io import atomic_directory, atomic_write_json

TARGETS = ("f1", "accuracy", "far")
FORMAT = "likewise-matcher"
VERSION = 1
#: what :attr:`Match.answer` says for a query matched to no known identity
UNKNOWN = "unknown"
#: keys of :attr:`Matcher.calibration` besides ``target``/``far`` (all floats but the counts)
CALIBRATION_KEYS = (
    "threshold",
    "precision",
    "recall",
    "f1",
    "accuracy",
    "false_accept_rate",
    "false_reject_rate",
    "misidentification_rate",
    "n_known",
    "n_unknown",
)


def _scores_and_flags(scores: Any, is_same: Any) -> tuple[np.ndarray, np.ndarray]:
    def to_numpy(a: Any, name: str) -> np.ndarray:
        if hasattr(a, "detach") and hasattr(a, "cpu"):
            a = a.detach().cpu().numpy()
        if not isinstance(a, np.ndarray | list | tuple):
            raise TypeError(f"{name} must be a NumPy array or a torch tensor, got {type(a).__name__}")
        arr = np.asarray(a)
        if arr.ndim != 1:
            raise ValueError(f"{name} must be 1-D (one value per pair), got shape {arr.shape}")
        return arr

    s, y = to_numpy(scores, "scores"), to_numpy(is_same, "is_same")
    if s.dtype.kind not in "fiu" or s.dtype == np.bool_:
        raise TypeError(f"scores must be real numbers, got dtype {s.dtype}")
    s = s.astype(np.float64)
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    if y.shape != s.shape:
        raise ValueError(f"is_same has {y.size} entries but there are {s.size} scores")
    if y.dtype != np.bool_:
        if y.dtype.kind not in "iuf" or not np.isin(y, (0, 1)).all():
            raise ValueError("is_same must be booleans (or 0/1)")
        y = y.astype(bool)
    return s, y


def _check_target(target: Any, far: Any) -> None:
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
    if target == "far" and (
        isinstance(far, bool) or not isinstance(far, int | float) or not 0.0 <= far <= 1.0
    ):
        raise ValueError(f"far must be a rate in [0, 1], got {far!r}")


def calibrate_threshold(scores: Any, is_same: Any, *, target: str = "f1", far: float = 1e-3) -> float:
    """Pair-level threshold for the decision ``score >= threshold`` on single pairs.

    Candidate thresholds are the distinct scores plus ``inf`` (accept nothing).
    ``"f1"`` maximises F1 = 2 TP / (2 TP + FP + FN) of the same-class decision,
    ``"accuracy"`` (TP + TN) / (P + N), both with ties to the highest threshold;
    ``"far"`` takes the lowest threshold whose false-accept rate FP / N is
    ``<= far``. The rules of :func:`likewise.evaluation.verification_metrics`
    (``best_f1_threshold``, ``best_accuracy_threshold``, ``threshold_at_far_*``).

    This is for verification of pairs; a :class:`Matcher` needs :func:`calibrate`.

    Args:
        scores: ``[n]`` similarities of validation pairs (NumPy or torch).
        is_same: ``[n]`` bool (or 0/1): the pair is one class.
        target: ``"f1"`` | ``"accuracy"`` | ``"far"``.
        far: the false-accept rate allowed with ``target="far"``.

    Returns:
        the threshold (a float; ``inf`` means nothing can be accepted under the target).
    """
    _check_target(target, far)
    s, y = _scores_and_flags(scores, is_same)
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"calibration needs both same-class and different-class pairs (got {n_pos} and {n_neg})"
        )
    order = np.argsort(-s, kind="stable")
    s_sorted = s[order]
    last = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), s.size - 1]  # end of each run of equal scores
    tp = np.r_[0, np.cumsum(y[order])[last]].astype(np.float64)  # point 0: threshold inf
    fp = np.r_[0, last + 1].astype(np.float64) - tp
    thresholds = np.r_[np.inf, s_sorted[last]]  # descending
    if target == "far":
        ok = np.flatnonzero(fp <= far * n_neg + 1e-9)  # fp is non-decreasing; point 0 always ok
        return float(thresholds[ok[-1]])
    if target == "f1":
        objective = 2 * tp / (tp + fp + n_pos)
    else:
        objective = (tp + n_neg - fp) / (n_pos + n_neg)
    return float(thresholds[int(np.argmax(objective))])  # argmax: first = highest threshold


def calibrate_from_embeddings(
    embeddings: Any,
    labels: Any,
    *,
    metric: str = "cosine",
    target: str = "f1",
    far: float = 1e-3,
    max_pairs: int | None = 1_000_000,
    balanced: bool = False,
    seed: int = 0,
) -> float:
    """:func:`calibrate_threshold` on pairs of labelled validation embeddings (pair level).

    Pairs come from :func:`likewise.evaluation.verification_pairs` (all pairs, or
    ``max_pairs`` sampled with ``seed``; ``balanced`` for equal same/different counts).
    For a :class:`Matcher` use :func:`calibrate`, which calibrates the open-set decision.
    """
    from likewise.evaluation import verification_pairs

    scores, is_same = verification_pairs(
        embeddings, labels, metric=metric, max_pairs=max_pairs, balanced=balanced, seed=seed
    )
    return calibrate_threshold(scores, is_same, target=target, far=far)


# ----------------------------------------------------------------------------- open-set calibration


class _Trials(NamedTuple):
    """Decision curves of the validation trials (see the module doc).

    ``events``: ``(score, d_accepted, d_correct)`` rows of the known trials — at
    thresholds ``<= score`` the trial's accepted/correct flags change by these amounts;
    ``impostor``: the unknown trials' best scores (``-inf``: never accepted).
    """

    events: np.ndarray  # [E, 3] float64
    impostor: np.ndarray  # [U] float64
    n_known: int


def _own_ids(ids: Any, n: int, index: Index, labels: np.ndarray) -> np.ndarray:
    if hasattr(ids, "detach") and hasattr(ids, "cpu"):
        ids = ids.detach().cpu().numpy()
    arr = np.asarray(ids)
    if arr.shape != (n,):
        raise ValueError(
            f"ids must give one index id (or -1) per validation row ({n}), got shape {arr.shape}"
        )
    if arr.dtype.kind not in "iu" or arr.dtype == np.bool_:
        raise TypeError(f"ids must be integers, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    stored = arr[arr >= 0]
    if (arr < -1).any():
        raise ValueError("ids must be index ids or -1 (a row not stored in the index)")
    if np.unique(stored).size != stored.size:
        raise ValueError("ids: two validation rows name the same index entry")
    missing = np.setdiff1d(stored, index.ids)
    if missing.size:
        raise ValueError(f"ids not in the index: {missing[:5].tolist()}")
    if stored.size:
        differ = np.flatnonzero(index.labels_for(stored) != labels[arr >= 0])
        if differ.size:
            i = np.flatnonzero(arr >= 0)[differ[0]]
            raise ValueError(
                f"ids[{i}] = {arr[i]} is stored with label {index.labels_for(arr[i : i + 1])[0]!r} "
                f"but labels[{i}] is {labels[i]!r}"
            )
    return arr


def _self_similarity(index: Index, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's similarity with an exact copy of itself, and the tolerance of "equal"."""
    q64 = q.astype(np.float64)
    sq = (q64 * q64).sum(1)
    if index.metric == "cosine":
        self_s = (sq > 0).astype(np.float64)  # a normalised row scores 1 with itself (a zero row: 0)
        tol = np.where(sq > 0, 1e-5, -1.0)  # zero rows: never "a copy"
    elif index.metric == "dot":
        self_s, tol = sq, 1e-5 * np.maximum(sq, 1e-30)
    else:  # euclidean: -distance, 0 for a copy; FAISS' squared distance is exact to ~1e-6 |q|^2
        self_s, tol = np.zeros_like(sq), np.sqrt(1e-5 * sq)
    return self_s, tol


def _open_set_trials(index: Index, embeddings: Any, labels: Any, k: int, ids: Any) -> _Trials:
    if not isinstance(index, Index):
        raise TypeError(f"index must be a likewise Index, got {type(index).__name__}")
    if not index.has_labels:
        raise ValueError("the matcher needs an index whose vectors have labels")
    q = as_matrix(embeddings, "embeddings", index.dim)
    y = as_labels(labels, "labels", len(q))
    stored = index.labels
    if (y.dtype.kind == "U") != (stored.dtype.kind == "U"):
        raise TypeError("labels and the index labels must both be integers or both strings")
    if np.unique(stored).size < 2:
        raise ValueError(
            "open-set calibration needs an index holding at least two identities "
            "(an unknown query is simulated by leaving its own identity out)"
        )
    n, n_index = len(q), len(index)
    own = np.full(n, -1, dtype=np.int64) if ids is None else _own_ids(ids, n, index, y)
    guess_own = ids is None

    if guess_own:  # the score a row would get against its own copy in the index
        if index.metric == "cosine":  # the search normalises the same way
            norms = np.linalg.norm(q, axis=1, keepdims=True)
            q = q / np.where(norms > 0, norms, 1.0).astype(np.float32)
        self_s, tol = _self_similarity(index, q)

    impostor = np.full(n, -np.inf)
    top_s = np.full((n, k), -np.inf)
    top_l = np.zeros((n, k), dtype=stored.dtype)
    todo = np.arange(n)
    width = min(n_index, 2 * k + 8)
    while todo.size:
        s, i, lab = index.search_labels(q[todo], width)
        s = s.astype(np.float64)
        valid = i >= 0
        yy = y[todo][:, None]
        if guess_own:  # the first same-label neighbour scoring like an exact copy is the row itself
            copy = valid & (lab == yy) & (np.abs(s - self_s[todo, None]) <= tol[todo, None])
            first = np.argmax(copy, axis=1)
            has = copy[np.arange(todo.size), first]
            own[todo[has]] = i[has, first[has]]
        valid &= i != own[todo][:, None]
        other = valid & (lab != yy)
        found = other.any(1)
        impostor[todo[found]] = s[found, np.argmax(other[found], axis=1)]
        # the k best neighbours other than the row itself (width > k, so k of them are here)
        rank = np.cumsum(valid, axis=1)
        for r in range(todo.size):
            cols = np.flatnonzero(valid[r] & (rank[r] <= k))
            top_s[todo[r], : cols.size] = s[r, cols]
            top_l[todo[r], : cols.size] = lab[r, cols]
        done = found | (width >= n_index)
        todo = todo[~done]
        width = min(n_index, width * 4)

    counts = Counter(stored.tolist())
    self_stored = own >= 0
    known = np.array([counts.get(v, 0) for v in y.tolist()]) - self_stored > 0
    events: list[tuple[float, float, float]] = []
    for r in np.flatnonzero(known):
        correct_before, label_y = 0.0, y[r]
        row_s, row_l = top_s[r], top_l[r]
        n_valid = int(np.isfinite(row_s).sum())
        if n_valid == 0:
            continue
        if k == 1:
            events.append((row_s[0], 1.0, float(row_l[0] == label_y)))
            continue
        j, accepted_before = 0, 0.0
        while j < n_valid:  # one decision per distinct score level (equal scores enter together)
            level = row_s[j]
            while j < n_valid and row_s[j] == level:
                j += 1
            votes = Counter(row_l[:j].tolist())
            most = max(votes.values())
            winner = next(v for v in row_l[:j].tolist() if votes[v] == most)  # ties: the best-scored
            correct = float(winner == label_y)
            events.append((level, 1.0 - accepted_before, correct - correct_before))
            accepted_before, correct_before = 1.0, correct
    ev = np.array(events, dtype=np.float64).reshape(-1, 3)
    return _Trials(ev, impostor, int(known.sum()))


def _sweep(trials: _Trials) -> dict[str, np.ndarray]:
    """Counts at every candidate threshold (descending; the first is ``inf``)."""
    ev, imp = trials.events, trials.impostor[np.isfinite(trials.impostor)]
    values = np.unique(np.r_[ev[:, 0], imp])[::-1]
    thresholds = np.r_[np.inf, values]

    def cumulative(at: np.ndarray, amount: np.ndarray) -> np.ndarray:
        pos = 1 + (values.size - 1 - np.searchsorted(values[::-1], at))  # position in thresholds
        return np.cumsum(np.bincount(pos, weights=amount, minlength=thresholds.size))

    return {
        "threshold": thresholds,
        "accepted": cumulative(ev[:, 0], ev[:, 1]),
        "correct": cumulative(ev[:, 0], ev[:, 2]),
        "false_accepts": cumulative(imp, np.ones(imp.size)),
    }


def _rates(accepted: float, correct: float, false_accepts: float, n_known: int, n_unknown: int) -> dict:
    def rate(num: float, den: float) -> float:
        return float(num) / float(den) if den else float("nan")

    answered = accepted + false_accepts
    return {
        "precision": rate(correct, answered),
        "recall": rate(correct, n_known),
        "f1": rate(2 * correct, answered + n_known) if n_known else float("nan"),
        "accuracy": rate(correct + n_unknown - false_accepts, n_known + n_unknown),
        "false_accept_rate": rate(false_accepts, n_unknown),
        "false_reject_rate": rate(n_known - accepted, n_known),
        "misidentification_rate": rate(accepted - correct, n_known),
        "n_known": int(n_known),
        "n_unknown": int(n_unknown),
    }


def calibrate(
    index: Index,
    embeddings: Any,
    labels: Any = None,
    *,
    target: str = "f1",
    far: float = 1e-3,
    k: int = 1,
    ids: Any = None,
) -> Matcher:
    """A :class:`Matcher` over ``index`` with an open-set threshold calibrated on labelled
    validation embeddings (see the module doc for the trials and the targets).

    Args:
        index: a labelled :class:`likewise.index.Index` of the known identities (2 or more).
        embeddings: ``[n, D]`` validation embeddings (NumPy or torch).
        labels: ``[n]`` their identities; those absent from the index count only as unknowns.
        target: ``"f1"`` | ``"accuracy"`` | ``"far"``.
        far: the open-set false-accept rate allowed with ``target="far"``.
        k: neighbours that vote in the matcher.
        ids: ``[n]`` index id of each validation row stored in the index, ``-1`` for the
            others (leave-one-out; default: exact copies are recognised).

    Returns:
        the matcher; :attr:`Matcher.calibration` holds the target, the threshold and the
        precision, recall, false-accept rate (...) measured on the validation trials.

    For a threshold on pair scores (``scores, is_same``) use :func:`calibrate_threshold`.
    """
    if not isinstance(index, Index):
        raise TypeError(
            f"calibrate takes an Index of the known identities, got {type(index).__name__}; "
            "for a threshold on pair scores use calibrate_threshold(scores, is_same)"
        )
    if labels is None:
        raise TypeError("calibrate needs the labels of the validation embeddings")
    _check_target(target, far)
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    trials = _open_set_trials(index, embeddings, labels, int(k), ids)
    g, u = trials.n_known, trials.impostor.size
    if u < 2:  # every validation row is one simulated-unknown trial
        raise ValueError(
            f"calibration needs at least 2 validation embeddings, got {u}: one row cannot set a "
            "threshold (use a few per identity)"
        )
    if g == 0 and target != "far":
        raise ValueError(
            f"target {target!r} needs validation embeddings of identities stored in the index "
            "(none of the labels is enrolled, apart from the rows themselves)"
        )
    c = _sweep(trials)
    if target == "far":
        best = int(np.flatnonzero(c["false_accepts"] <= far * u + 1e-9)[-1])  # non-decreasing
    else:
        a, cc, f = c["accepted"], c["correct"], c["false_accepts"]
        objective = 2 * cc / (a + f + g) if target == "f1" else (cc + u - f) / (g + u)
        best = int(np.argmax(objective))  # first = highest threshold
    threshold = float(c["threshold"][best])
    if not np.isfinite(threshold):
        warnings.warn(
            f"the calibrated threshold is {threshold} (target {target!r}): no finite threshold does better "
            "than answering 'unknown' to every query on these validation embeddings; the matcher will "
            "accept nothing. Check that they are embedded like the index and hold enrolled identities",
            stacklevel=3,
        )
    calibration = {
        "target": target,
        **({"far": float(far)} if target == "far" else {}),
        "threshold": threshold,
    }
    calibration.update(_rates(c["accepted"][best], c["correct"][best], c["false_accepts"][best], g, u))
    return Matcher(index, threshold, k=int(k), calibration=calibration)


class Match(NamedTuple):
    """One query's answer: ``label`` (``None`` = unknown), the best ``score`` and its neighbour ``id``.

    For a known answer ``score``/``id`` are those of the best neighbour with that label;
    for an unknown one, of the nearest neighbour overall (below the threshold).
    """

    label: Any
    score: float
    id: int

    @property
    def is_unknown(self) -> bool:
        """True when no known identity passed the threshold ("is this someone new?": yes)."""
        return self.label is None

    @property
    def answer(self) -> Any:
        """The label, or the string ``"unknown"`` (:data:`UNKNOWN`) — for display."""
        return UNKNOWN if self.label is None else self.label


class Matcher:
    """Open-set identification against a labelled index (see the module doc).

    Args:
        index: a :class:`likewise.index.Index` whose vectors have labels.
        threshold: similarity threshold (``score >= threshold`` accepts).
        k: neighbours that vote (1: the nearest neighbour decides).
        calibration: how the threshold was chosen and what it measured on validation data
            (set by :func:`calibrate`; ``None`` for a threshold given by hand). Keys:
            ``target`` (and ``far``), then :data:`CALIBRATION_KEYS`.
    """

    def __init__(
        self, index: Index, threshold: float, k: int = 1, calibration: dict[str, Any] | None = None
    ) -> None:
        if not isinstance(index, Index):
            raise TypeError(f"index must be a likewise Index, got {type(index).__name__}")
        if not index.has_labels:
            raise ValueError("the matcher needs an index whose vectors have labels")
        if isinstance(threshold, bool) or not isinstance(threshold, int | float | np.floating | np.integer):
            raise TypeError(f"threshold must be a number, got {type(threshold).__name__}")
        if math.isnan(threshold):
            raise ValueError("threshold must not be NaN")
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if calibration is not None and not isinstance(calibration, dict):
            raise TypeError(f"calibration must be a dict or None, got {type(calibration).__name__}")
        self.index, self.threshold, self.k = index, float(threshold), int(k)
        self.calibration: dict[str, Any] | None = None if calibration is None else dict(calibration)

    @classmethod
    def calibrated(
        cls,
        index: Index,
        embeddings: Any,
        labels: Any,
        *,
        target: str = "f1",
        far: float = 1e-3,
        k: int = 1,
        ids: Any = None,
    ) -> Matcher:
        """:func:`calibrate`: a matcher whose open-set threshold is calibrated on labelled
        validation embeddings."""
        return calibrate(index, embeddings, labels, target=target, far=far, k=k, ids=ids)

    def __repr__(self) -> str:
        return f"Matcher({self.index!r}, threshold={self.threshold:.6g}, k={self.k})"

    def match(self, queries: Any) -> list[Match]:
        """One :class:`Match` per query row."""
        scores, ids, labels = self.index.search_labels(queries, self.k)
        out = []
        for row_s, row_i, row_l in zip(scores, ids, labels):
            accepted = (row_s >= self.threshold) & (row_i >= 0)
            if not accepted.any():
                out.append(Match(None, float(row_s[0]), int(row_i[0])))
                continue
            votes = Counter(row_l[accepted].tolist())
            most = max(votes.values())
            # rows are best first: the first accepted neighbour of a most-voted label wins ties
            j = next(j for j in np.flatnonzero(accepted) if votes[row_l[j].item()] == most)
            out.append(Match(row_l[j].item(), float(row_s[j]), int(row_i[j])))
        return out

    def evaluate(self, queries: Any, true_labels: Any, known_labels: Any = None) -> dict[str, float]:
        """Quality of the open-set decision on labelled queries.

        A query is *known* when its true label is in ``known_labels`` (default: the
        labels stored in the index), else *unknown*; the right answer is its label,
        resp. "unknown". Returns (rates with an empty denominator are NaN):

        * ``accuracy``: right answers / queries;
        * ``precision``: correct labels / queries given a label;
        * ``recall``: known queries given their correct label / known queries;
        * ``f1`` of those two;
        * ``false_accept_rate``: unknown queries given a label / unknown queries;
        * ``false_reject_rate``: known queries answered "unknown" / known queries;
        * ``misidentification_rate``: known queries given a wrong label / known queries;
        * ``n_queries``, ``n_known``, ``n_unknown``.

        Without unknown queries the false-accept rate is NaN, without known ones the recall
        and the reject/misidentification rates are: a ``UserWarning`` says so.
        """
        matches = self.match(queries)
        truth = as_labels(true_labels, "true_labels", len(matches))
        stored = self.index.labels
        if (truth.dtype.kind == "U") != (stored.dtype.kind == "U"):
            raise TypeError("true_labels and the index labels must both be integers or both strings")
        known_set = stored if known_labels is None else as_labels(known_labels, "known_labels")
        known = np.isin(truth, known_set)
        accepted = np.array([m.label is not None for m in matches], dtype=bool)
        correct_label = np.array(
            [m.label is not None and m.label == t for m, t in zip(matches, truth.tolist())]
        )
        right = np.where(known, correct_label, ~accepted)
        n_known, n_unknown = int(known.sum()), int((~known).sum())
        for count, what, rates in (
            (n_unknown, "unknown", "false_accept_rate"),
            (n_known, "known", "recall, false_reject_rate and misidentification_rate"),
        ):
            if count == 0:
                warnings.warn(
                    f"no {what} queries were given (every true label is "
                    f"{'enrolled' if what == 'unknown' else 'absent from the index'}): {rates} "
                    "cannot be measured (NaN)",
                    stacklevel=2,
                )

        def rate(num: Any, den: int) -> float:
            return float(np.sum(num)) / den if den else float("nan")

        precision = rate(correct_label, int(accepted.sum()))
        recall = rate(correct_label & known, n_known)
        f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else float("nan")
        return {
            "accuracy": rate(right, len(matches)),
            "precision": precision,
            "recall": recall,
            "f1": f1 if not (math.isnan(precision) or math.isnan(recall)) else float("nan"),
            "false_accept_rate": rate(accepted & ~known, n_unknown),
            "false_reject_rate": rate(~accepted & known, n_known),
            "misidentification_rate": rate(accepted & known & ~correct_label, n_known),
            "n_queries": len(matches),
            "n_known": n_known,
            "n_unknown": n_unknown,
        }

    # -- persistence -----------------------------------------------------------------

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write ``path/matcher.json`` (threshold, k, calibration) and ``path/index/`` atomically.

        ``path`` may be new, an empty folder or a matcher written before; with
        ``overwrite=True`` also another likewise artifact; anything else raises
        :class:`FileExistsError` (see :mod:`likewise.artifacts`).

        ``matcher.json`` is strict JSON; a non-finite number (an ``inf`` threshold, a NaN
        rate) is written as the string ``"inf"``, ``"-inf"`` or ``"nan"``.
        """
        meta: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION,
            "threshold": _encode_number(self.threshold),
            "k": self.k,
        }
        if self.calibration is not None:
            meta["calibration"] = {key: _encode_number(v) for key, v in self.calibration.items()}
        with atomic_directory(path, "matcher", overwrite=overwrite) as tmp:
            (tmp / "index").mkdir()
            self.index._write_into(tmp / "index")
            atomic_write_json(tmp / "matcher.json", meta)
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Matcher:
        """Read a matcher written by :meth:`save` (``ValueError`` if ``path`` is not one).

        Files without ``calibration`` (written before it existed) load with ``None``.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(2, "No such file or directory", str(path))
        meta_file = path / "matcher.json"
        if not meta_file.is_file():
            raise ValueError(f"{path} is not a likewise matcher (expected a directory with matcher.json)")
        try:
            meta = json.loads(meta_file.read_text(encoding="utf-8"))
            if meta.get("format") != FORMAT or meta.get("version") != VERSION:
                raise ValueError(f"format {meta.get('format')!r} version {meta.get('version')!r}")
            threshold, k = _decode_number(meta["threshold"]), meta["k"]
            calibration = meta.get("calibration")
            if calibration is not None:
                if not isinstance(calibration, dict):
                    raise ValueError("calibration is not an object")
                calibration = {key: _decode_number(v) for key, v in calibration.items()}
        except (
            OSError,
            UnicodeDecodeError,
            json.JSONDecodeError,
            AttributeError,
            KeyError,
            TypeError,
            ValueError,
        ) as exc:
            raise ValueError(f"{path} is not a likewise matcher: {exc}") from exc
        return cls(Index.load(path / "index"), threshold, k=k, calibration=calibration)


_NON_FINITE = {"inf": math.inf, "-inf": -math.inf, "nan": math.nan}


def _encode_number(value: Any) -> Any:
    """Floats that strict JSON cannot hold -> ``"inf"``/``"-inf"``/``"nan"``; others unchanged."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _decode_number(value: Any) -> Any:
    """Inverse of :func:`_encode_number` (other strings stay strings)."""
    if isinstance(value, str) and value in _NON_FINITE:
        return _NON_FINITE[value]
    return value


__all__ = [
    "CALIBRATION_KEYS",
    "TARGETS",
    "UNKNOWN",
    "Match",
    "Matcher",
    "calibrate",
    "calibrate_from_embeddings",
    "calibrate_threshold",
]
