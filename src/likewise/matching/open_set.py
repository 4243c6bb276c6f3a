"""Open-set calibration: the matcher's threshold from labelled validation embeddings.

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

Pairs: :func:`likewise.evaluation.verification.calibrate_threshold` is the pair-level rule
(verification, "are these two the same?"), not the matcher's.
"""

from __future__ import annotations

import warnings
from collections import Counter
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from likewise.evaluation.verification import check_target
from likewise.index import Index
from likewise.inputs import as_labels, as_matrix, integer_array

if TYPE_CHECKING:
    from likewise.matching.matcher import Matcher


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
    arr = integer_array(ids, "ids")
    if arr.shape != (n,):
        raise ValueError(
            f"ids must give one index id (or -1) per validation row ({n}), got shape {arr.shape}"
        )
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
    check_target(target, far)
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
    from likewise.matching.matcher import Matcher

    return Matcher(index, threshold, k=int(k), calibration=calibration)


__all__ = ["calibrate"]
