"""Training: a validated YAML config, a Lightning module and trainer with exact resume.

``likewise.train.config`` (the schema) imports no Lightning; :func:`fit` does.
"""

from __future__ import annotations

from typing import Any

from likewise.train.config import TrainConfig, load_config, validate_config


def fit(*args: Any, **kwargs: Any) -> Any:
    """Train a run (see :func:`likewise.train.run.fit`)."""
    from likewise.train.run import fit as _fit

    return _fit(*args, **kwargs)


__all__ = ["TrainConfig", "fit", "load_config", "validate_config"]
