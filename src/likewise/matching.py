"""Calibrated open-set matching: "who is this?" and "is this someone new?".

Calibration. :func:`calibrate` chooses a similarity threshold from labelled
validation pairs: a pair is *accepted* (judged same-class) when
``score >= threshold``. Candidate thresholds are the distinct observed scores
plus ``inf`` (accept nothing). Targets:

* ``"f1"``: maximise F1 = 2 TP / (2 TP + FP + FN) of the same-class decision;
* ``"accuracy"``: maximise (TP + TN) / (P + N);
* ``"far"``: the false-accept rate FP / N must stay ``<= far``; among such
  thresholds the lowest (it accepts the most true pairs).

For ``f1``/``accuracy`` ties go to the highest threshold (fewest false accepts).
The rules match :func:`likewise.evaluation.verification_metrics`
(``best_f1_threshold``, ``best_accuracy_threshold``, ``threshold_at_far_*``).

Matching. :class:`Matcher` wraps a labelled :class:`likewise.index.Index` of
known identities. For each query it retrieves the ``k`` nearest stored vectors;
those scoring ``>= threshold`` vote for their label (most votes wins; a tie goes
to the label with the highest score). No neighbour above the threshold means
*unknown* (label ``None``).
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from likewise.index import Index, as_labels
from likewise.io import atomic_directory, atomic_write_json

TARGETS = ("f1", "accuracy", "far")
FORMAT = "likewise-matcher"
VERSION = 1


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


def calibrate(scores: Any, is_same: Any, *, target: str = "f1", far: float = 1e-3) -> float:
    """Similarity threshold for the decision ``score >= threshold`` (see the module doc).

    Args:
        scores: ``[n]`` similarities of validation pairs (NumPy or torch).
        is_same: ``[n]`` bool (or 0/1): the pair is one class.
        target: ``"f1"`` | ``"accuracy"`` | ``"far"``.
        far: the false-accept rate allowed with ``target="far"``.

    Returns:
        the threshold (a float; ``inf`` means nothing can be accepted under the target).
    """
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
    if target == "far" and not (isinstance(far, int | float) and 0.0 <= far <= 1.0):
        raise ValueError(f"far must be a rate in [0, 1], got {far!r}")
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
    """:func:`calibrate` on pairs of labelled validation embeddings.

    Pairs come from :func:`likewise.evaluation.verification_pairs` (all pairs, or
    ``max_pairs`` sampled with ``seed``; ``balanced`` for equal same/different counts).
    ``metric`` must be the one the index searches with.
    """
    from likewise.evaluation import verification_pairs

    scores, is_same = verification_pairs(
        embeddings, labels, metric=metric, max_pairs=max_pairs, balanced=balanced, seed=seed
    )
    return calibrate(scores, is_same, target=target, far=far)


class Match(NamedTuple):
    """One query's answer: ``label`` (None = unknown), the best ``score`` and its neighbour ``id``.

    For a known answer ``score``/``id`` are those of the best neighbour with that label;
    for an unknown one, of the nearest neighbour overall (below the threshold).
    """

    label: Any
    score: float
    id: int


class Matcher:
    """Open-set identification against a labelled index (see the module doc).

    Args:
        index: a :class:`likewise.index.Index` whose vectors have labels.
        threshold: similarity threshold (``score >= threshold`` accepts).
        k: neighbours that vote (1: the nearest neighbour decides).
    """

    def __init__(self, index: Index, threshold: float, k: int = 1) -> None:
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
        self.index, self.threshold, self.k = index, float(threshold), int(k)

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
        **pair_options: Any,
    ) -> Matcher:
        """A matcher whose threshold is calibrated on labelled validation embeddings
        (with the index's metric; see :func:`calibrate_from_embeddings`)."""
        threshold = calibrate_from_embeddings(
            embeddings, labels, metric=index.metric, target=target, far=far, **pair_options
        )
        return cls(index, threshold, k=k)

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

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``path/matcher.json`` (threshold, k) and ``path/index/`` atomically."""
        with atomic_directory(path) as tmp:
            (tmp / "index").mkdir()
            self.index._write_into(tmp / "index")
            threshold: float | str = self.threshold if math.isfinite(self.threshold) else str(self.threshold)
            atomic_write_json(
                tmp / "matcher.json",
                {"format": FORMAT, "version": VERSION, "threshold": threshold, "k": self.k},
            )
        return Path(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Matcher:
        """Read a matcher written by :meth:`save` (``ValueError`` if ``path`` is not one)."""
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
            threshold, k = float(meta["threshold"]), meta["k"]
        except (
            OSError,
            UnicodeDecodeError,
            json.JSONDecodeError,
            AttributeError,
            KeyError,
            ValueError,
        ) as exc:
            raise ValueError(f"{path} is not a likewise matcher: {exc}") from exc
        return cls(Index.load(path / "index"), threshold, k=k)
