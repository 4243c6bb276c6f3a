"""The LightningModule of the patch network's triplet training (imports Lightning: training only).

Each step draws a fresh batch of ``(anchor, positive, negative)`` 9x9 patches from the
current pool of synthetic pairs (:meth:`PairPool.triplets`), embeds the ``3B`` patches in one
pass and scores them with likewise's :class:`~likewise.losses.TripletMarginLoss`
(:func:`~likewise.stereo.training.triplet_loss`). Every ``refresh_every`` optimiser steps
``refresh_count`` pairs of the pool are re-rendered, so the network seldom sees a pair twice.
Adam with a one-cycle learning rate (5% warm-up), stepped per batch.

The batches do not come from the data loader: it only counts the steps (``range(steps)``),
the patches are sampled here from the pool with the run's seeded ``numpy`` generator, so a run
is a function of its settings.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor

from likewise.stereo.network import PatchNet
from likewise.stereo.synthetic import SyntheticPair, synthetic_pair
from likewise.stereo.training import PairPool, TrainSettings, triplet_loss


class PatchNetModule(pl.LightningModule):
    """:class:`PatchNet` trained with triplets sampled from a refreshed pool of synthetic pairs."""

    def __init__(
        self,
        settings: TrainSettings,
        rng: np.random.Generator,
        log: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__()
        self.settings, self.rng, self.report = settings, rng, log
        self.pool = PairPool([self._render() for _ in range(settings.pairs)])
        self.net = PatchNet(3, settings.hidden, settings.features)
        self.loss_fn = triplet_loss(settings)
        self.running: float | None = None  # exponential moving average of the loss (0.98)
        self.slot = 0  # the next pool entry to re-render
        self.start = time.perf_counter()

    def _render(self) -> SyntheticPair:
        s = self.settings
        return synthetic_pair(self.rng, s.height, s.width, s.max_disparity)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        b = self.settings.batch_size
        a, p, n = (t.to(self.device) for t in self.pool.triplets(self.rng, b))
        fa, fp, fn = self.net(torch.cat([a, p, n])).split(b)
        loss = self.loss_fn(fa, fp, fn)
        value = float(loss.detach())  # one host synchronisation per step, for the running loss
        self.running = value if self.running is None else 0.98 * self.running + 0.02 * value
        self.log("loss", self.running, prog_bar=True, on_step=True, on_epoch=False, batch_size=b)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        s, step = self.settings, self.global_step  # optimiser steps taken so far
        if step % s.refresh_every == 0 and step < s.steps:
            for _ in range(s.refresh_count):
                self.pool.replace(self.slot, self._render())
                self.slot = (self.slot + 1) % s.pairs
            self.pool.refresh()
        if self.report is not None and (step % 200 == 0 or step == s.steps):
            self.report(
                f"step {step}/{s.steps}  loss {self.running:.4f}  {time.perf_counter() - self.start:.0f} s"
            )

    def configure_optimizers(self) -> Any:
        s = self.settings
        opt = torch.optim.Adam(self.net.parameters(), lr=s.lr)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s.lr, total_steps=s.steps, pct_start=0.05)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


__all__ = ["PatchNetModule"]
