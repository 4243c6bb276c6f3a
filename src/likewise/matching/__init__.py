"""Calibrated open-set matching: "who is this?" and "is this someone new?".

* :mod:`likewise.matching.matcher`: :class:`Matcher` (votes of the ``k`` nearest gallery
  entries above a threshold, else *unknown*), :class:`Match`, persistence;
* :mod:`likewise.matching.open_set`: :func:`calibrate`, the open-set threshold from labelled
  validation embeddings (the decision the matcher makes, not single pairs);
* pair thresholds (verification) live with the verification metrics:
  :func:`calibrate_threshold` and :func:`calibrate_from_embeddings` of
  :mod:`likewise.evaluation.verification`, re-exported here.
"""

from likewise.evaluation.verification import TARGETS, calibrate_from_embeddings, calibrate_threshold
from likewise.matching.matcher import CALIBRATION_KEYS, UNKNOWN, Match, Matcher
from likewise.matching.open_set import calibrate

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
