"""Triplet training of the patch network on synthetic stereo pairs (MC-CNN fast recipe).

For a left pixel ``(x, y)`` visible in both views with true disparity ``d`` (Zbontar &
LeCun 2016, sec. 4.1)::

    anchor   = left 9x9 patch at (x, y)
    positive = right patch at (x - d + o_pos, y),  o_pos ~ U(-0.5, 0.5)
    negative = right patch at (x - d + o_neg, y),  |o_neg| ~ U(1.5, 6), random sign

Patches are read with bilinear interpolation, so sub-pixel disparities are exact. The loss is
likewise's :class:`~likewise.losses.TripletMarginLoss` on cosine similarity: every anchor is
scored against its own positive and against all negatives of the batch (the MC-CNN
negative and, as easier extras, the positives and negatives of the other anchors), with
``hard_negatives=True`` only the hardest negative of each anchor
(:class:`~likewise.mining.BatchHardMiner`). The training pairs are re-rendered as training
goes, so the network seldom sees the same pair twice. The loop runs on Lightning
(:mod:`likewise.stereo.train_module`), imported only when training starts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from likewise.stereo.network import PATCH, RADIUS, PatchNet, standardize
from likewise.stereo.synthetic import SyntheticPair

#: negatives lie 1.5 to 6 pixels from the true match; positives within 0.5
NEG_LOW, NEG_HIGH, POS_RANGE = 1.5, 6.0, 0.5


@dataclass(frozen=True)
class TrainSettings:
    steps: int = 2000
    batch_size: int = 128
    lr: float = 2e-3
    margin: float = 0.2
    pairs: int = 48
    refresh_every: int = 50
    refresh_count: int = 6
    height: int = 128
    width: int = 192
    max_disparity: float = 64.0
    hidden: int = 32
    features: int = 64
    hard_negatives: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "pairs", "refresh_every", "hidden", "features"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not (self.lr > 0 and self.margin > 0):
            raise ValueError(f"lr and margin must be > 0, got lr={self.lr}, margin={self.margin}")


class PairPool:
    """Synthetic pairs stacked into one tall image per view, for one ``grid_sample`` per batch."""

    def __init__(self, pairs: list[SyntheticPair]) -> None:
        self.h, self.w = pairs[0].disparity.shape
        self.pairs = list(pairs)
        self._stack()

    def replace(self, index: int, pair: SyntheticPair) -> None:
        self.pairs[index] = pair

    def _stack(self) -> None:
        self.left = torch.cat([standardize(p.left) for p in self.pairs], dim=1)[None]  # [1, 3, N*H, W]
        self.right = torch.cat([standardize(p.right) for p in self.pairs], dim=1)[None]
        disp = np.stack([p.disparity for p in self.pairs])
        ys, xs = np.mgrid[0 : self.h, 0 : self.w]
        margin = RADIUS + NEG_HIGH + 1
        ok = np.stack([p.visible for p in self.pairs])
        ok &= (ys >= RADIUS) & (ys < self.h - RADIUS) & (xs >= RADIUS) & (xs < self.w - RADIUS)
        with np.errstate(invalid="ignore"):
            ok &= (xs - disp >= margin) & (xs - disp <= self.w - 1 - margin)
        self.index = np.flatnonzero(ok)
        self.disp = disp.reshape(-1)

    def refresh(self) -> None:
        self._stack()

    def patches(self, image: Tensor, rows: np.ndarray, cols: np.ndarray) -> Tensor:
        """``[B, 3, 9, 9]`` bilinear patches of ``image`` centred at (tall-image) ``rows, cols``."""
        offsets = np.arange(-RADIUS, RADIUS + 1, dtype=np.float64)
        py = rows[:, None, None] + offsets[None, :, None]
        px = cols[:, None, None] + offsets[None, None, :]
        th, tw = image.shape[-2:]
        gx = 2.0 * px / (tw - 1) - 1.0
        gy = 2.0 * py / (th - 1) - 1.0
        grid = np.stack(np.broadcast_arrays(gx, gy), axis=-1).reshape(1, -1, PATCH, 2)
        out = F.grid_sample(image, torch.from_numpy(grid.astype(np.float32)), align_corners=True)
        return out[0].reshape(3, -1, PATCH, PATCH).permute(1, 0, 2, 3).contiguous()

    def triplets(self, rng: np.random.Generator, batch: int) -> tuple[Tensor, Tensor, Tensor]:
        pick = self.index[rng.integers(len(self.index), size=batch)]
        n, rem = np.divmod(pick, self.h * self.w)
        y, x = np.divmod(rem, self.w)
        rows = (n * self.h + y).astype(np.float64)
        match = x - self.disp[pick]
        pos = match + rng.uniform(-POS_RANGE, POS_RANGE, size=batch)
        neg = match + rng.choice([-1.0, 1.0], size=batch) * rng.uniform(NEG_LOW, NEG_HIGH, size=batch)
        return (
            self.patches(self.left, rows, x.astype(np.float64)),
            self.patches(self.right, rows, pos),
            self.patches(self.right, rows, neg),
        )


def triplet_loss(settings: TrainSettings) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
    """``loss(anchor, positive, negative)`` on likewise's TripletMarginLoss (cosine)."""
    from likewise.losses import TripletMarginLoss

    miner = None
    if settings.hard_negatives:
        from likewise.mining import BatchHardMiner

        miner = BatchHardMiner()
    loss = TripletMarginLoss(margin=settings.margin, distance="cosine", miner=miner)

    def compute(a: Tensor, p: Tensor, n: Tensor) -> Tensor:
        b = a.shape[0]
        ids = torch.arange(b)
        # anchor i matches only positive i; every negative (and other positives) is a negative
        return loss(a, ids, ref_emb=torch.cat([p, n]), ref_labels=torch.cat([ids, ids + b]))

    return compute


def train_patch_net(
    settings: TrainSettings = TrainSettings(),
    log: Callable[[str], None] | None = None,
    *,
    progress_bar: bool = True,
) -> tuple[PatchNet, dict]:
    """Train a :class:`PatchNet` from scratch with Lightning; returns it (eval mode) and a summary.

    The run is likewise's trainer set-up at a small scale: a ``pl.Trainer`` for
    ``settings.steps`` optimiser steps on the CPU (the batches are 384 patches of 9x9, sampled
    on the host), progress on stderr (:class:`~likewise.train.progress.StderrProgressBar`), no
    checkpoints or logger, everything seeded by ``settings.seed``
    (:class:`~likewise.stereo.train_module.PatchNetModule` holds the step). ``log`` receives a
    line with the running loss every 200 steps. Summary: ``steps``, ``final_loss`` (running
    average), ``seconds``.
    """
    threads = torch.get_num_threads()
    # the steps are small (384 patches of 9x9): one thread beats two that wait on each other
    torch.set_num_threads(1)
    try:
        return _train(settings, log, progress_bar)
    finally:
        torch.set_num_threads(threads)


def _train(
    settings: TrainSettings, log: Callable[[str], None] | None, progress_bar: bool
) -> tuple[PatchNet, dict]:
    import warnings

    import lightning.pytorch as pl

    from likewise.stereo.train_module import PatchNetModule
    from likewise.train.progress import StderrProgressBar

    start = time.perf_counter()
    pl.seed_everything(settings.seed, workers=True, verbose=False)
    module = PatchNetModule(settings, np.random.default_rng(settings.seed), log)
    trainer = pl.Trainer(
        max_steps=settings.steps,
        max_epochs=-1,
        accelerator="cpu",  # the host samples every batch; a GPU would wait on it
        devices=1,
        deterministic=True,
        callbacks=[StderrProgressBar()] if progress_bar else [],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
    )
    # the loader only counts steps: the patches are drawn from the pool in training_step
    steps = torch.utils.data.DataLoader(range(settings.steps), batch_size=None)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        trainer.fit(module, train_dataloaders=steps)
    if trainer.global_step != settings.steps:
        raise RuntimeError(f"training stopped after {trainer.global_step} of {settings.steps} steps")
    net = module.net.cpu().eval()
    summary = {"steps": settings.steps, "final_loss": module.running, "seconds": time.perf_counter() - start}
    return net, summary


__all__ = ["PairPool", "TrainSettings", "train_patch_net", "triplet_loss"]
