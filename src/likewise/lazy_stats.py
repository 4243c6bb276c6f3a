"""Statistics of a module's last call, computed when they are read.

A loss or miner reports what it saw (number of pairs, mean distances, fractions) through
:meth:`LazyStats._record`: numbers, tensors of one element, or functions of no argument
returning one. ``module.stats`` turns them into floats on first read. On a GPU each
``float(tensor)`` makes the host wait for the device, so a training step that never reads
the statistics pays for none of them, and one that reads them pays once.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class LazyStats:
    """Mixin (before ``nn.Module``): ``stats``, ``_record`` and ``_record_more``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending_stats: dict[str, Any] = {}
        self._stats: dict[str, float] = {}

    @property
    def stats(self) -> dict[str, float]:
        """Statistics of the last call as floats (``{}`` before the first)."""
        if self._pending_stats:
            with torch.no_grad():
                self._stats = {k: float(v() if callable(v) else v) for k, v in self._pending_stats.items()}
            self._pending_stats = {}
        return self._stats

    def _record(self, **values: Any) -> None:
        """The statistics of this call (replacing the last call's)."""
        # tensors are copied: the caller may change them in place after returning
        copy = {k: v.detach().clone() for k, v in values.items() if isinstance(v, Tensor)}
        self._pending_stats = {**values, **copy}
        self._stats = {}

    def _record_more(self, **values: Any) -> None:
        """Add statistics to this call's."""
        earlier = self._pending_stats or dict(self._stats)
        self._record(**earlier, **values)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # type: ignore[misc]
        # modules pickled before the statistics became lazy kept them in ``stats``
        self.__dict__.setdefault("_stats", self.__dict__.pop("stats", {}))
        self.__dict__.setdefault("_pending_stats", {})

    def __getstate__(self) -> dict[str, Any]:
        self.stats  # noqa: B018 -- evaluate pending statistics first: functions do not pickle
        return super().__getstate__()  # type: ignore[misc]


__all__ = ["LazyStats"]
