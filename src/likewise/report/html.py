"""One self-contained HTML report: metrics table plus plots embedded as base64 PNGs.

The file needs nothing else (no scripts, no external images or styles), so it
can be mailed or attached to a ticket. It is written atomically.
"""

from __future__ import annotations

import base64
import html
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from likewise.io import atomic_write_text
from likewise.report._figure import figure_png

#: one-line meanings shown beside the metrics (keys matched exactly, then by prefix)
DESCRIPTIONS = {
    "precision_at_1": "queries whose nearest neighbour has their label",
    "r_precision": "precision in the top R, R = number of items sharing the query's label",
    "map_at_r": "mean average precision within the top R (Musgrave et al. 2020)",
    "map": "mean average precision over the full ranking",
    "mrr": "mean reciprocal rank of the first item with the query's label",
    "recall_at_": "queries with at least one same-label item in the top K",
    "n_queries_without_relevant": "queries skipped: no other item has their label",
    "n_queries": "queries evaluated",
    "roc_auc": "area under the ROC curve of same/different pair decisions",
    "average_precision": "area under the precision-recall curve of pair decisions",
    "eer_threshold": "similarity threshold at the equal error rate",
    "eer": "equal error rate: false accepts = false rejects",
    "tar_at_far_": "true-accept rate while accepting at most this fraction of different pairs",
    "threshold_at_far_": "similarity threshold reaching that false-accept rate",
    "best_accuracy_threshold": "threshold of the best accuracy",
    "best_accuracy": "best accuracy of the same/different decision over thresholds",
    "best_f1_threshold": "threshold of the best F1",
    "best_f1": "best F1 of the same/different decision over thresholds",
    "n_pairs": "pairs scored",
    "n_positive": "same-label pairs",
    "n_negative": "different-label pairs",
}

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;
color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd}
.meta{color:#666;margin-top:0}table{border-collapse:collapse;margin:.5em 0}
td,th{padding:.25em .8em;border-bottom:1px solid #eee;text-align:left}td.v{text-align:right;
font-variant-numeric:tabular-nums;font-weight:600}td.d{color:#666;font-size:.9em}
figure{margin:1em 0}figcaption{color:#555;font-size:.92em;max-width:900px}img{max-width:100%}
.note{color:#8a5a00}
"""


def describe(key: str) -> str:
    """The one-line meaning of a metric name ('' when unknown)."""
    if key in DESCRIPTIONS:
        return DESCRIPTIONS[key]
    for prefix, text in DESCRIPTIONS.items():
        if prefix.endswith("_") and key.startswith(prefix):
            return text
    return ""


def format_value(value: Any) -> str:
    """Numbers for people: ints with separators, floats with 4 decimals, NaN as n/a."""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        v = float(value)
        if math.isnan(v):
            return "n/a"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.4f}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"
    return str(value)


def scalar_sections(metrics: Mapping[str, Any]) -> list[tuple[str, list[tuple[str, Any]]]]:
    """``{section: {name: value}}`` or a flat ``{name: value}`` -> ``[(section, [(name, value)])]``,
    keeping scalars only (curve arrays are plotted, not tabulated)."""

    def scalars(d: Mapping[str, Any]) -> list[tuple[str, Any]]:
        return [(k, v) for k, v in d.items() if isinstance(v, int | float | np.integer | np.floating | bool)]

    nested = [(str(k), v) for k, v in metrics.items() if isinstance(v, Mapping)]
    sections = [("metrics", scalars(metrics))] if scalars(metrics) else []
    sections += [(name, scalars(d)) for name, d in nested if scalars(d)]
    return sections


def metrics_table_html(metrics: Mapping[str, Any]) -> str:
    parts = []
    for section, rows in scalar_sections(metrics):
        parts.append(f"<h2>{html.escape(section.replace('_', ' ').capitalize())}</h2><table>")
        for key, value in rows:
            parts.append(
                f"<tr><th>{html.escape(key)}</th><td class=v>{html.escape(format_value(value))}</td>"
                f"<td class=d>{html.escape(describe(key))}</td></tr>"
            )
        parts.append("</table>")
    return "\n".join(parts)


def _img(fig: Any, caption: str) -> str:
    data = base64.b64encode(figure_png(fig)).decode("ascii")
    fig.clear()
    return (
        f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def render_report(
    metrics: Mapping[str, Any],
    *,
    embeddings: Any = None,
    labels: Any = None,
    images: Any = None,
    scores: Any = None,
    is_same: Any = None,
    threshold: float | None = None,
    metric: str = "cosine",
    title: str = "likewise evaluation report",
    subtitle: str = "",
    max_points: int = 2000,
    map_method: str = "auto",
    max_pairs: int = 200_000,
    seed: int = 0,
) -> str:
    """The report as an HTML string (see :func:`write_report` for the arguments)."""
    from likewise.report.curves import plot_pr, plot_roc, plot_score_histogram
    from likewise.report.embedding_map import plot_embedding_map
    from likewise.report.retrieval_examples import plot_retrieval_examples

    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a dict, got {type(metrics).__name__}")
    if (embeddings is None) != (labels is None):
        raise ValueError("pass embeddings and labels together")
    if images is not None and embeddings is None:
        raise ValueError("images need embeddings and labels (for the retrieval examples)")
    if images is not None:
        from likewise.report.retrieval_examples import as_display_images

        as_display_images(images, len(embeddings))  # fail before the slow plots
    body = [f"<h1>{html.escape(title)}</h1>"]
    if subtitle:
        body.append(f'<p class="meta">{html.escape(subtitle)}</p>')
    body.append(metrics_table_html(metrics))

    figures: list[str] = []
    if scores is None and embeddings is not None:
        from likewise.evaluation import verification_pairs

        scores, is_same = verification_pairs(
            embeddings, labels, metric=metric, max_pairs=max_pairs, seed=seed
        )
    if scores is not None:
        y = np.asarray(is_same.detach().cpu().numpy() if hasattr(is_same, "detach") else is_same).astype(bool)
        if y.any() and not y.all():
            if threshold is None:
                from likewise.matching import calibrate_threshold

                threshold = calibrate_threshold(scores, y, target="f1")
            n = f"{y.size:,} pairs ({int(y.sum()):,} same-label)"
            figures.append(
                _img(
                    plot_score_histogram(scores, y, threshold=threshold),
                    f"Similarity of same-label (green) and different-label (red) pairs, {n}. "
                    "The dashed line is the decision threshold: pairs to its right are accepted as a match.",
                )
            )
            figures.append(
                _img(
                    plot_roc(scores, y),
                    "ROC: the fraction of same-label pairs accepted against the fraction of different-label "
                    "pairs accepted, as the threshold is lowered. Left: linear axis; right: log axis, where "
                    "the low false-accept rates used in practice are visible.",
                )
            )
            figures.append(
                _img(plot_pr(scores, y), "Precision-recall of the same-label decision over all thresholds.")
            )
        else:
            figures.append(
                '<p class="note">No pair of the same label (or none of different labels): '
                "verification plots omitted.</p>"
            )
    if embeddings is not None:
        figures.append(
            _img(
                plot_embedding_map(embeddings, labels, method=map_method, max_points=max_points, seed=seed),
                "Each point is one embedding, placed so that neighbours in the embedding space stay close; "
                "colours are labels. Distances between far-apart clusters are not meaningful.",
            )
        )
    if images is not None:
        figures.append(
            _img(
                plot_retrieval_examples(images, embeddings, labels, metric=metric, seed=seed),
                "Random queries (left, blue) and their nearest neighbours by similarity (score below the "
                "label); green frames share the query's label, red ones do not.",
            )
        )
    if figures:
        body.append("<h2>Plots</h2>")
        body.extend(figures)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def write_report(
    path: str | os.PathLike,
    metrics: Mapping[str, Any],
    *,
    embeddings: Any = None,
    labels: Any = None,
    images: Any = None,
    **options: Any,
) -> Path:
    """Write a self-contained HTML report to ``path`` (atomically).

    Args:
        path: the ``.html`` file.
        metrics: ``{name: number}`` or ``{section: {name: number}}`` (e.g. the dicts of
            :func:`likewise.evaluation.retrieval_metrics` / ``verification_metrics``);
            non-scalar entries (curve arrays) are left out of the table.
        embeddings, labels: ``[n, D]`` and ``[n]``: give the 2-D map and, unless
            ``scores``/``is_same`` are passed, the verification pairs.
        images: ``[n, H, W(, C)]`` or ``[n, C, H, W]``: adds retrieval examples.
        **options: ``scores``, ``is_same`` (pair scores and flags), ``threshold`` (drawn on
            the histogram; default the best-F1 threshold), ``metric``, ``title``, ``subtitle``,
            ``max_points`` (2-D map subsample, 2,000), ``map_method`` (``"auto"``: UMAP if
            installed, else t-SNE; or ``"tsne"``, ``"umap"``, ``"pca"``), ``max_pairs``
            (verification pairs sampled, 200,000), ``seed``.
    """
    text = render_report(metrics, embeddings=embeddings, labels=labels, images=images, **options)
    return atomic_write_text(path, text)
