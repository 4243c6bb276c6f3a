"""Matplotlib plumbing for the report: Agg figures (no pyplot state) and PNG bytes."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

#: colour of "same class" / "positive" and "different class" / "negative" everywhere
POSITIVE = "#2a9d4b"
NEGATIVE = "#d1495b"


def new_figure(width: float, height: float) -> Any:
    """A matplotlib ``Figure`` drawn by the Agg canvas (no global pyplot state, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def figure_png(fig: Any, dpi: int = 100) -> bytes:
    """Render a figure to PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def to_numpy(x: Any, name: str) -> np.ndarray:
    """NumPy array or torch tensor -> NumPy array (no validation beyond the type)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        return x.detach().cpu().numpy()
    if isinstance(x, np.ndarray | list | tuple):
        return np.asarray(x)
    raise TypeError(f"{name} must be a NumPy array or a torch tensor, got {type(x).__name__}")
