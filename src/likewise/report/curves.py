"""Verification plots: ROC curve, precision-recall curve, and same/different score histograms.

Each function takes pair scores (similarities, larger = more alike) and
same-class flags — e.g. from :func:`likewise.evaluation.verification_pairs` —
and returns a matplotlib ``Figure`` (Agg). Curve points and the summary numbers
come from :func:`likewise.evaluation.verification_metrics`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from likewise.report._figure import NEGATIVE, POSITIVE, new_figure, to_numpy


def _metrics(scores: Any, is_same: Any) -> dict[str, Any]:
    from likewise.evaluation import verification_metrics

    return verification_metrics(scores, is_same, max_curve_points=2000)


def plot_roc(scores: Any, is_same: Any) -> Any:
    """ROC curve (true-accept vs false-accept rate), linear and log false-accept axes side by side."""
    m = _metrics(scores, is_same)
    fig = new_figure(9.0, 4.0)
    ax_lin, ax_log = fig.subplots(1, 2)
    fpr, tpr = m["roc_fpr"], m["roc_tpr"]
    for ax, log in ((ax_lin, False), (ax_log, True)):
        ax.plot(fpr, tpr, color="#1f4e89", lw=2, label=f"ROC (AUC = {m['roc_auc']:.3f})")
        ax.plot([m["eer"]], [1 - m["eer"]], "o", color=NEGATIVE, label=f"EER = {m['eer']:.3f}")
        ax.set_xlabel("false-accept rate (different-class pairs accepted)")
        ax.set_ylabel("true-accept rate (same-class pairs accepted)")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        if log:
            floor = 1.0 / max(m["n_negative"], 1)
            ax.set_xscale("log")
            ax.set_xlim(floor, 1)
            for f in (1e-3, 1e-2, 1e-1):
                key = f"tar_at_far_{f:.0e}"
                if key in m and f >= floor:
                    ax.plot([f], [m[key]], "s", color="#444", ms=5)
                    ax.annotate(f"{m[key]:.2f}", (f, m[key]), textcoords="offset points", xytext=(4, -12))
            ax.set_title("ROC, log scale (squares: TAR at FAR 1e-3, 1e-2, 1e-1)", fontsize=10)
        else:
            ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="chance")
            ax.set_xlim(0, 1)
            ax.set_title("ROC: higher and further left is better", fontsize=10)
        ax.legend(loc="lower right", fontsize=9)
    return fig


def plot_pr(scores: Any, is_same: Any) -> Any:
    """Precision-recall curve of the same-class decision, with the chance level."""
    m = _metrics(scores, is_same)
    fig = new_figure(4.8, 4.0)
    ax = fig.subplots()
    ax.plot(
        m["pr_recall"], m["pr_precision"], color="#1f4e89", lw=2, label=f"AP = {m['average_precision']:.3f}"
    )
    base = m["n_positive"] / m["n_pairs"]
    ax.axhline(base, ls="--", color="grey", lw=1, label=f"chance ({base:.3f})")
    ax.set_xlabel("recall (same-class pairs found)")
    ax.set_ylabel("precision (accepted pairs that are same-class)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title("Precision-recall: higher is better", fontsize=10)
    ax.legend(loc="lower left", fontsize=9)
    return fig


def plot_score_histogram(scores: Any, is_same: Any, *, threshold: float | None = None, bins: int = 60) -> Any:
    """Overlaid histograms (densities) of same-class and different-class pair similarities.

    ``threshold``, if given, is drawn as a vertical line (pairs to its right are accepted).
    """
    s = to_numpy(scores, "scores").astype(np.float64).reshape(-1)
    y = to_numpy(is_same, "is_same").astype(bool).reshape(-1)
    if s.shape != y.shape:
        raise ValueError(f"is_same has {y.size} entries but there are {s.size} scores")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    if not y.any() or y.all():
        raise ValueError("the histogram needs both same-class and different-class pairs")
    fig = new_figure(6.0, 4.0)
    ax = fig.subplots()
    edges = np.histogram_bin_edges(s, bins=bins)
    ax.hist(
        s[~y], bins=edges, density=True, alpha=0.55, color=NEGATIVE, label=f"different class ({(~y).sum():,})"
    )
    ax.hist(s[y], bins=edges, density=True, alpha=0.55, color=POSITIVE, label=f"same class ({y.sum():,})")
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(threshold, color="black", ls="--", lw=1.5, label=f"threshold {threshold:.3f}")
    ax.set_xlabel("similarity of the pair")
    ax.set_ylabel("density")
    ax.set_title("Pair similarities: the less the two overlap, the better", fontsize=10)
    ax.legend(fontsize=9, loc="upper left")
    return fig
