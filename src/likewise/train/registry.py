"""Losses and miners by class name, from their one registry each.

A config names a loss (``MultiSimilarityLoss``) and a miner (``MultiSimilarityMiner``);
:func:`loss_class` / :func:`miner_class` look it up in :data:`likewise.losses.LOSSES` /
:data:`likewise.mining.MINERS` (the registries the contract tests run over).
:func:`check_kwargs` validates keyword arguments against the
class's ``__init__`` signature (unknown names, types from the annotations), so a
config error names its path (``loss.margin``) before anything is built.
"""

from __future__ import annotations

import inspect
import typing
from typing import Any

from pydantic import ConfigDict, ValidationError, create_model

#: constructor arguments the trainer fills in itself (not taken from the config)
MANAGED_ARGS = ("self", "miner", "num_classes", "embedding_size")


def _find(name: str, registry: dict[str, type], kind: str) -> type:
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"{kind} name must be a class name, got {name!r}")
    if name not in registry:
        raise ValueError(f"unknown {kind} {name!r}; expected one of: {', '.join(sorted(registry))}")
    return registry[name]


def loss_class(name: str) -> type:
    """The loss class called ``name``: an entry of :data:`likewise.losses.LOSSES`."""
    from likewise.losses import LOSSES

    return _find(name, LOSSES, "loss")


def miner_class(name: str) -> type:
    """The miner class called ``name``: an entry of :data:`likewise.mining.MINERS`."""
    from likewise.mining import MINERS

    return _find(name, MINERS, "miner")


def init_parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The configurable ``__init__`` parameters of ``cls`` (without the managed ones)."""
    params = inspect.signature(cls.__init__).parameters
    return {
        k: p
        for k, p in params.items()
        if k not in MANAGED_ARGS and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def accepts(cls: type, name: str) -> bool:
    return name in inspect.signature(cls.__init__).parameters


def check_kwargs(cls: type, kwargs: dict[str, Any], path: str) -> dict[str, Any]:
    """Validate ``kwargs`` for ``cls(**kwargs)``; raise ValueError ``"path.key: reason"``.

    Unknown keys and values of the wrong type (per the annotations) are refused;
    then the class is built once so that its own checks (``margin must be > 0``)
    run too, and a message that names a parameter is reported at that parameter.
    """
    params = init_parameters(cls)
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001 - annotations that cannot be resolved are not checked
        hints = {}
    fields: dict[str, Any] = {}
    for k, p in params.items():
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[k] = (hints.get(k, Any), default)
    model = create_model(
        f"{cls.__name__}Args", __config__=ConfigDict(extra="forbid", arbitrary_types_allowed=True), **fields
    )
    try:
        model(**kwargs)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(x) for x in err["loc"])
        reason = err["msg"]
        if err["type"] == "extra_forbidden":
            reason = f"unknown parameter of {cls.__name__} (it takes: {', '.join(params) or 'none'})"
        elif err["type"] == "missing":
            reason = f"required by {cls.__name__}"
        raise ValueError(f"{path}.{loc}: {reason}") from None
    return dict(kwargs)


def build(cls: type, kwargs: dict[str, Any], path: str, **managed: Any) -> Any:
    """``cls(**kwargs, **managed)`` with construction errors reported at ``path``."""
    extra = {k: v for k, v in managed.items() if accepts(cls, k)}
    try:
        return cls(**kwargs, **extra)
    except (ValueError, TypeError) as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        for key in kwargs:
            if message.startswith(key + " ") or message.startswith(key + ":"):
                raise ValueError(f"{path}.{key}: {message[len(key) :].lstrip(' :')}") from None
        raise ValueError(f"{path}: {message}") from None
