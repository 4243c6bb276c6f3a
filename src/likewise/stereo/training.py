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
goes, so the network seldom sees the same pair twice.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from likewise.stereo.network import PATCH, RADIUS, PatchNet, standardize
from likewise.stereo.synthetic import SyntheticPair, synthetic_pair

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
    settings: TrainSettings = TrainSettings(), log: Callable[[str], None] | None = None
) -> tuple[PatchNet, dict]:
    """Train a :class:`PatchNet` from scratch; returns it (eval mode) and a summary dict."""
    threads = torch.get_num_threads()
    # the steps are small (384 patches of 9x9): one thread beats two that wait on each other
    torch.set_num_threads(1)
    try:
        return _train(settings, log or (lambda text: print(text, file=sys.stderr)))
    finally:
        torch.set_num_threads(threads)


def _train(settings: TrainSettings, log: Callable[[str], None]) -> tuple[PatchNet, dict]:
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)

    def render() -> SyntheticPair:
        return synthetic_pair(rng, settings.height, settings.width, settings.max_disparity)

    start = time.perf_counter()
    pool = PairPool([render() for _ in range(settings.pairs)])
    net = PatchNet(3, settings.hidden, settings.features)
    opt = torch.optim.Adam(net.parameters(), lr=settings.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=settings.lr, total_steps=settings.steps, pct_start=0.05
    )
    loss_fn = triplet_loss(settings)
    running = None
    slot = 0
    for step in range(1, settings.steps + 1):
        a, p, n = pool.triplets(rng, settings.batch_size)
        out = net(torch.cat([a, p, n]))
        fa, fp, fn = out.split(settings.batch_size)
        loss = loss_fn(fa, fp, fn)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        value = float(loss.detach())
        running = value if running is None else 0.98 * running + 0.02 * value
        if step % settings.refresh_every == 0 and step < settings.steps:
            for _ in range(settings.refresh_count):
                pool.replace(slot, render())
                slot = (slot + 1) % settings.pairs
            pool.refresh()
        if step % 200 == 0 or step == settings.steps:
            log(f"step {step}/{settings.steps}  loss {running:.4f}  {time.perf_counter() - start:.0f} s")
    net.eval()
    summary = {"steps": settings.steps, "final_loss": running, "seconds": time.perf_counter() - start}
    return net, summary


__all__ = ["PairPool", "TrainSettings", "train_patch_net", "triplet_loss"]
