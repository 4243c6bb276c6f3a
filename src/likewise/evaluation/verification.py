"""Verification: is a pair of items the same class? Scores of pairs -> ROC / PR metrics.

A pair is *accepted* when its similarity ``score >= threshold``. Sweeping the
threshold over every distinct score (descending) gives, at each threshold, the
true-accept rate ``TAR = TPR = TP / P`` and the false-accept rate
``FAR = FPR = FP / N``; tied scores are one threshold (as in scikit-learn).

* ``roc_auc``: trapezoidal area under (FPR, TPR) — equal to
  ``sklearn.metrics.roc_auc_score`` (ties count 1/2, Mann–Whitney).
* ``average_precision``: ``sum_t (R_t - R_{t-1}) P_t`` — equal to
  ``sklearn.metrics.average_precision_score``.
* ``eer`` (equal error rate): where FAR = FRR (= 1 - TAR), linearly interpolated
  between the two ROC points that bracket the crossing; ``eer_threshold`` is the
  threshold of the first point with FAR >= FRR.
* ``tar_at_far_<f>``: the largest TAR over thresholds with FAR <= f, and
  ``threshold_at_far_<f>`` the threshold that reaches it (``inf``: accept nothing).
* ``best_accuracy`` / ``best_accuracy_threshold`` and ``best_f1`` /
  ``best_f1_threshold``: the threshold (among the observed scores, plus ``inf`` =
  accept nothing) maximising accuracy (TP + TN) / (P + N), resp. F1; the highest
  such threshold when several tie.
* curve points for plotting: ``roc_fpr``, ``roc_tpr``, ``roc_thresholds`` (starting at
  (0, 0), threshold ``inf``) and ``pr_recall``, ``pr_precision``, ``pr_thresholds``,
  thinned to at most ``max_curve_points`` (the scalar metrics use every point).

Pair thresholds: :func:`calibrate_threshold` picks the threshold of one of those
rules (best F1, best accuracy, a false-accept rate) from validation pairs;
:func:`calibrate_from_embeddings` does it on the pairs of labelled embeddings. The
counts at every threshold come from :func:`roc_counts` (scikit-learn's ``roc_curve``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from likewise.evaluation._inputs import (
    binary_array,
    check_metric_name,
    embeddings_tensor,
    range_exponent,
    resolve_device,
    scale_by_power_of_two,
    scores_array,
)
from likewise.inputs import labels_array


def verification_metrics(
    scores: Any,
    is_same: Any,
    *,
    far_targets: Sequence[float] = (1e-3, 1e-2, 1e-1),
    max_curve_points: int | None = 1000,
) -> dict[str, Any]:
    """ROC/PR metrics of pair scores.

    Args:
        scores: ``[n]`` pair similarities (larger = more likely the same class).
        is_same: ``[n]`` bool (or 0/1): the pair is of one class. Both values must occur.
        far_targets: false-accept rates at which to report the true-accept rate.
        max_curve_points: thin the returned curves to this many points (None: all).

    Returns:
        dict: floats described in the module doc, ``n_pairs``/``n_positive``/``n_negative``
        (ints) and the curve arrays (NumPy).
    """
    s = scores_array(scores, "scores")
    y = binary_array(is_same, "is_same", s.shape[0])
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"is_same needs both same-class and different-class pairs (got {n_pos} and {n_neg})")
    fars = _far_targets(far_targets)
    if max_curve_points is not None and (
        isinstance(max_curve_points, bool) or not isinstance(max_curve_points, int | np.integer)
    ):
        raise TypeError(f"max_curve_points must be an integer >= 2 or None, got {max_curve_points!r}")
    if max_curve_points is not None and max_curve_points < 2:
        raise ValueError(f"max_curve_points must be an integer >= 2 or None, got {max_curve_points!r}")

    # ROC points, starting with "accept nothing" (threshold inf)
    tp0, fp0, thresholds = roc_counts(s, y)
    tp, fp = tp0[1:], fp0[1:]
    tpr, fpr = tp0 / n_pos, fp0 / n_neg
    out: dict[str, Any] = {
        "roc_auc": float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2)),
    }
    precision = tp / (tp + fp)
    recall = tp / n_pos
    out["average_precision"] = float(np.sum(np.diff(np.r_[0.0, recall]) * precision))
    out.update(_eer(fpr, tpr, thresholds))
    for f in fars:
        ok = np.flatnonzero(fpr <= f + 1e-12)[-1]  # fpr is non-decreasing; point 0 has fpr 0
        out[f"tar_at_far_{f:.0e}"] = float(tpr[ok])
        out[f"threshold_at_far_{f:.0e}"] = float(thresholds[ok])
    accuracy = (tp0 + (n_neg - fp0)) / (n_pos + n_neg)
    i = int(np.argmax(accuracy))
    out["best_accuracy"], out["best_accuracy_threshold"] = float(accuracy[i]), float(thresholds[i])
    f1 = 2 * tp0 / (tp0 + fp0 + n_pos)
    i = int(np.argmax(f1))
    out["best_f1"], out["best_f1_threshold"] = float(f1[i]), float(thresholds[i])
    out["n_pairs"], out["n_positive"], out["n_negative"] = int(s.size), n_pos, n_neg
    keep = _thin(fpr.size, max_curve_points)
    out["roc_fpr"], out["roc_tpr"], out["roc_thresholds"] = fpr[keep], tpr[keep], thresholds[keep]
    keep = _thin(recall.size, max_curve_points)
    out["pr_recall"], out["pr_precision"] = recall[keep], precision[keep]
    out["pr_thresholds"] = thresholds[1:][keep]
    return out


def roc_counts(scores: np.ndarray, is_same: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Accepted same-class (``tp``) and different-class (``fp``) pairs at every threshold.

    Thresholds: ``inf`` (accept nothing), then every distinct score, descending (tied
    scores are one threshold); ``score >= threshold`` accepts. Built on
    ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``. Needs both classes.

    Returns ``tp [T]``, ``fp [T]`` (float64 counts) and ``thresholds [T]``.
    """
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(is_same, scores, drop_intermediate=False)
    n_pos = int(is_same.sum())
    thresholds = thresholds.astype(np.float64)
    thresholds[0] = np.inf  # scikit-learn's "accept nothing" point
    return np.rint(tpr * n_pos), np.rint(fpr * (is_same.size - n_pos)), thresholds


#: what a pair or open-set threshold can be calibrated for
TARGETS = ("f1", "accuracy", "far")


def check_target(target: Any, far: Any) -> None:
    """``target`` one of :data:`TARGETS`; with ``"far"``, ``far`` a rate in ``[0, 1]``."""
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")
    if target == "far" and (
        isinstance(far, bool) or not isinstance(far, int | float) or not 0.0 <= far <= 1.0
    ):
        raise ValueError(f"far must be a rate in [0, 1], got {far!r}")


def calibrate_threshold(scores: Any, is_same: Any, *, target: str = "f1", far: float = 1e-3) -> float:
    """Pair-level threshold for the decision ``score >= threshold`` on single pairs.

    Candidate thresholds are the distinct scores plus ``inf`` (accept nothing; see
    :func:`roc_counts`). ``"f1"`` maximises F1 = 2 TP / (2 TP + FP + FN) of the same-class
    decision, ``"accuracy"`` (TP + TN) / (P + N), both with ties to the highest threshold;
    ``"far"`` takes the lowest threshold whose false-accept rate FP / N is ``<= far``. The
    rules of :func:`verification_metrics` (``best_f1_threshold``,
    ``best_accuracy_threshold``, ``threshold_at_far_*``).

    This is for verification of pairs; a :class:`likewise.matching.Matcher` needs
    :func:`likewise.matching.calibrate` (the open-set decision).

    Args:
        scores: ``[n]`` similarities of validation pairs (NumPy or torch).
        is_same: ``[n]`` bool (or 0/1): the pair is one class.
        target: ``"f1"`` | ``"accuracy"`` | ``"far"``.
        far: the false-accept rate allowed with ``target="far"``.

    Returns:
        the threshold (a float; ``inf`` means nothing can be accepted under the target).
    """
    check_target(target, far)
    s = scores_array(scores, "scores")
    y = binary_array(is_same, "is_same", s.shape[0])
    n_pos = int(y.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        raise ValueError(
            f"calibration needs both same-class and different-class pairs (got {n_pos} and {n_neg})"
        )
    tp, fp, thresholds = roc_counts(s, y)
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

    Pairs come from :func:`verification_pairs` (all pairs, or ``max_pairs`` sampled with
    ``seed``; ``balanced`` for equal same/different counts). For a
    :class:`likewise.matching.Matcher` use :func:`likewise.matching.calibrate`, which
    calibrates the open-set decision.
    """
    scores, is_same = verification_pairs(
        embeddings, labels, metric=metric, max_pairs=max_pairs, balanced=balanced, seed=seed
    )
    return calibrate_threshold(scores, is_same, target=target, far=far)


def _eer(fpr: np.ndarray, tpr: np.ndarray, thresholds: np.ndarray) -> dict[str, float]:
    fnr = 1.0 - tpr
    d = fpr - fnr  # -1 at the first point, +1 at the last: increasing
    i = int(np.flatnonzero(d >= 0)[0])
    w = -d[i - 1] / (d[i] - d[i - 1])
    eer = fpr[i - 1] + w * (fpr[i] - fpr[i - 1])
    return {"eer": float(eer), "eer_threshold": float(thresholds[i])}


def _far_targets(far_targets: Any) -> tuple[float, ...]:
    """One rate or a sequence of rates, each a real number in [0, 1]."""
    number = int | float | np.integer | np.floating
    items = (far_targets,) if isinstance(far_targets, number) else far_targets
    if isinstance(items, str | bytes) or not isinstance(items, Sequence | np.ndarray):
        raise TypeError(
            f"far_targets must be a number or a sequence of numbers in [0, 1], got {far_targets!r}"
        )
    for f in items:
        if isinstance(f, bool) or not isinstance(f, number):
            raise TypeError(f"far_targets must be numbers in [0, 1], got {f!r}")
        if not 0.0 <= f <= 1.0:
            raise ValueError(f"far_targets must lie in [0, 1], got {f!r}")
    return tuple(float(f) for f in items)


def _thin(n: int, max_points: int | None) -> np.ndarray:
    if max_points is None or n <= max_points:
        return np.arange(n)
    return np.unique(np.round(np.linspace(0, n - 1, max_points)).astype(np.int64))


def verification_pairs(
    embeddings: Any,
    labels: Any,
    *,
    metric: str = "cosine",
    max_pairs: int | None = None,
    balanced: bool = False,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of labelled embeddings -> ``(scores, is_same)`` for :func:`verification_metrics`.

    * default: every pair ``i < j`` (``n (n - 1) / 2`` of them, ordered by ``(i, j)``),
      or, with ``max_pairs`` smaller than that, a uniform sample of that many
      distinct pairs (seeded);
    * ``balanced=True``: equally many same-class and different-class pairs — all
      same-class pairs (or ``max_pairs // 2`` sampled) and as many different-class
      pairs sampled uniformly (seeded).

    Scores are similarities of ``metric`` (negated distances for the Euclidean ones).
    Returns NumPy ``float64 [P]`` scores and ``bool [P]`` same-class flags, pairs
    ordered by ``(i, j)``.
    """
    dev = resolve_device(device, embeddings)
    check_metric_name(metric)
    x = embeddings_tensor(embeddings, "embeddings", dev, min_rows=2)
    y = labels_array(labels, "labels", x.shape[0])
    _, codes = np.unique(y, return_inverse=True)
    codes = codes.reshape(-1)
    if max_pairs is not None and (isinstance(max_pairs, bool) or not isinstance(max_pairs, int | np.integer)):
        raise TypeError(f"max_pairs must be a positive integer or None, got {max_pairs!r}")
    if max_pairs is not None and max_pairs < 1:
        raise ValueError(f"max_pairs must be a positive integer or None, got {max_pairs!r}")
    if not isinstance(balanced, bool | np.bool_):
        raise TypeError(f"balanced must be True or False, got {balanced!r}")
    rng = np.random.default_rng(seed)
    n = x.shape[0]
    total = n * (n - 1) // 2
    if balanced:
        lin = _balanced_pairs(codes, max_pairs, rng)
    elif max_pairs is None or max_pairs >= total:
        lin = np.arange(total, dtype=np.int64)
    else:
        lin = np.sort(rng.choice(total, size=max_pairs, replace=False))
    i, j = _unrank(lin, n)
    scores = _pair_scores(x, i, j, metric)
    return scores, codes[i] == codes[j]


def _unrank(lin: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-major index of the strict upper triangle of an ``n x n`` matrix -> ``(i, j)``."""
    rows = np.arange(n, dtype=np.int64)
    start = rows * (2 * n - rows - 1) // 2
    i = np.searchsorted(start, lin, side="right") - 1
    j = i + 1 + (lin - start[i])
    return i, j


def _balanced_pairs(codes: np.ndarray, max_pairs: int | None, rng: np.random.Generator) -> np.ndarray:
    n = codes.size
    members = [np.flatnonzero(codes == c) for c in range(codes.max() + 1)]
    sizes = np.array([m.size * (m.size - 1) // 2 for m in members], dtype=np.int64)
    n_pos_all = int(sizes.sum())
    total = n * (n - 1) // 2
    n_neg_all = total - n_pos_all
    if n_pos_all == 0:
        raise ValueError("no two embeddings share a label: there are no same-class pairs")
    if n_neg_all == 0:
        raise ValueError("all embeddings share one label: there are no different-class pairs")
    n_pos = n_pos_all if max_pairs is None else min(n_pos_all, max(1, max_pairs // 2))
    n_neg = min(n_pos, n_neg_all)
    pos_lin = np.sort(rng.choice(n_pos_all, size=n_pos, replace=False))
    class_start = np.cumsum(sizes) - sizes
    cls = np.searchsorted(class_start, pos_lin, side="right") - 1
    # a class's triangle may be empty (size 0): searchsorted 'right' lands on the last class
    # with that start, which is the non-empty one because later empty classes share its end
    pos_i = np.empty(n_pos, dtype=np.int64)
    pos_j = np.empty(n_pos, dtype=np.int64)
    for c in np.unique(cls):
        sel = cls == c
        a, b = _unrank(pos_lin[sel] - class_start[c], members[c].size)
        pos_i[sel], pos_j[sel] = members[c][a], members[c][b]
    lo, hi = np.minimum(pos_i, pos_j), np.maximum(pos_i, pos_j)
    pos_codes = lo * (2 * n - lo - 1) // 2 + (hi - lo - 1)
    neg: np.ndarray = np.empty(0, dtype=np.int64)
    while neg.size < n_neg:
        draw = rng.integers(0, total, size=max(64, 2 * (n_neg - neg.size) * total // max(n_neg_all, 1)))
        i, j = _unrank(draw, n)
        draw = draw[codes[i] != codes[j]]
        neg = np.unique(np.r_[neg, draw])
    neg = rng.choice(neg, size=n_neg, replace=False) if neg.size > n_neg else neg
    return np.sort(np.r_[pos_codes, neg])


def _pair_scores(
    x: torch.Tensor, i: np.ndarray, j: np.ndarray, metric: str, chunk: int = 1 << 20
) -> np.ndarray:
    e = range_exponent(x)
    if e != 0:  # huge or tiny values: float64, or (cosine, scale-free) an exact power-of-two rescale
        x = scale_by_power_of_two(x, e) if metric == "cosine" else x.double()
        if metric != "cosine" and range_exponent(x) != 0:
            raise ValueError(
                f"embeddings are too large or too small for {metric} scores (they overflow even in "
                "float64); rescale them or use metric='cosine'"
            )
    if metric == "cosine":
        x = torch.nn.functional.normalize(x, dim=1)
    out = np.empty(i.size, dtype=np.float64)
    ti = torch.from_numpy(i).to(x.device)
    tj = torch.from_numpy(j).to(x.device)
    for a in range(0, i.size, chunk):
        xi, xj = x[ti[a : a + chunk]], x[tj[a : a + chunk]]
        if metric in ("cosine", "dot"):
            s = (xi * xj).sum(1)
        else:
            d2 = (xi - xj).pow(2).sum(1)
            s = -(d2.sqrt() if metric == "euclidean" else d2)
        out[a : a + chunk] = s.double().cpu().numpy()
    return out
