"""Lightning's tqdm progress bar, drawn on stderr so that stdout stays parseable.

Lightning's ``TQDMProgressBar`` writes its bars to ``sys.stdout``; likewise commands print
their results there (one summary, JSON lines), so the bars go to ``sys.stderr`` instead,
where progress belongs.
"""

from __future__ import annotations

import contextlib
import sys
from typing import Any

from lightning.pytorch.callbacks import TQDMProgressBar


class StderrProgressBar(TQDMProgressBar):
    """``TQDMProgressBar`` whose bars are written to ``sys.stderr``."""

    def _on_stderr(self, make: Any) -> Any:
        with contextlib.redirect_stdout(sys.stderr):  # Lightning passes file=sys.stdout when it builds a bar
            return make()

    def init_sanity_tqdm(self) -> Any:
        return self._on_stderr(super().init_sanity_tqdm)

    def init_train_tqdm(self) -> Any:
        return self._on_stderr(super().init_train_tqdm)

    def init_validation_tqdm(self) -> Any:
        return self._on_stderr(super().init_validation_tqdm)

    def init_predict_tqdm(self) -> Any:
        return self._on_stderr(super().init_predict_tqdm)

    def init_test_tqdm(self) -> Any:
        return self._on_stderr(super().init_test_tqdm)
