"""The matcher: "who is this?" and "is this someone new?" against a labelled gallery.

Matching. :class:`Matcher` wraps a labelled :class:`likewise.index.Index` of
known identities (the *gallery*). For each query it retrieves the ``k`` nearest
stored vectors; those scoring ``>= threshold`` vote for their label (most votes
wins; a tie goes to the label with the highest score). No neighbour above the
threshold means *unknown*: :class:`Match` ``label`` is ``None``,
``is_unknown`` is true and ``answer`` is the string ``"unknown"``.

Persistence: :meth:`Matcher.save` writes ``matcher.json`` (threshold, ``k``, calibration)
and the index atomically; :meth:`Matcher.load` verifies what it reads.
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

from likewise.index import Index
from likewise.inputs import as_labels
from likewise.io import atomic_directory, atomic_write_json

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
        """:func:`likewise.matching.calibrate`: a matcher whose open-set threshold is calibrated
        on labelled validation embeddings."""
        from likewise.matching.open_set import calibrate

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


__all__ = ["CALIBRATION_KEYS", "UNKNOWN", "Match", "Matcher"]
