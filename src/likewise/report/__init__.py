"""Plots and a self-contained HTML report of an evaluation.

* :func:`plot_roc`, :func:`plot_pr`, :func:`plot_score_histogram`: verification pairs;
* :func:`plot_embedding_map`: a 2-D map (t-SNE, or UMAP when installed) coloured by label;
* :func:`plot_retrieval_examples`: queries and their top-k neighbours as thumbnails;
* :func:`write_report`: one HTML file with the metrics table and those plots.

Figures are matplotlib ``Figure`` objects drawn with the Agg canvas (no pyplot
state, nothing shown); matplotlib and scikit-learn load on first use.
"""

from likewise.report.curves import plot_pr, plot_roc, plot_score_histogram
from likewise.report.embedding_map import plot_embedding_map, project_2d
from likewise.report.html import render_report, write_report
from likewise.report.retrieval_examples import plot_retrieval_examples

__all__ = [
    "plot_embedding_map",
    "plot_pr",
    "plot_retrieval_examples",
    "plot_roc",
    "plot_score_histogram",
    "project_2d",
    "render_report",
    "write_report",
]
