"""Plain-torch pieces shared by both sides of ``benchmarks/pretraining.py`` (imports only torch and numpy).

The likewise side imports this module in-process; the lightly side runs
``_ssl_lightly.py`` in its own virtual environment, which imports it too. So both train
the same encoder on the same views with the same optimiser, batches and epochs.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn


class Encoder(nn.Module):
    """The MNIST-1D notebook's encoder: three Conv1d (25 channels, kernels 5/3/3, stride 2) -> 125-d."""

    def __init__(self, channels: int = 25) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv1d(1, channels, 5, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv1d(channels, channels, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Flatten(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x[:, None])


def augment(
    x: torch.Tensor, max_shift: int = 9, slope_std: float = 0.04, offset_std: float = 0.3
) -> torch.Tensor:
    """The notebook's recipe: remove mean and linear trend, circular shift 0..max_shift, random line."""
    n = x.shape[1]
    t = torch.arange(n, dtype=x.dtype) - (n - 1) / 2
    y = x - x.mean(1, keepdim=True)
    y = y - ((y * t).sum(1, keepdim=True) / (t * t).sum()) * t
    shifts = torch.randint(0, max_shift + 1, (x.shape[0],))
    index = (torch.arange(n)[None, :] - shifts[:, None]) % n
    y = y.gather(1, index)
    return y + torch.randn(x.shape[0], 1) * slope_std * t + torch.randn(x.shape[0], 1) * offset_std


def train(
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    parameters: list[nn.Parameter],
    x: np.ndarray,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    after_step: Callable[[int, int], None] | None = None,
) -> list[float]:
    """Adam + cosine learning rate over all steps; returns the seconds of each epoch."""
    data = torch.as_tensor(x, dtype=torch.float32)
    steps_per_epoch = len(data) // batch_size
    total = epochs * steps_per_epoch
    opt = torch.optim.Adam(parameters, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    rng = np.random.default_rng(seed)
    seconds, step = [], 0
    for _ in range(epochs):
        start = time.perf_counter()
        order = torch.as_tensor(rng.permutation(len(data)))
        for b in range(steps_per_epoch):
            batch = data[order[b * batch_size : (b + 1) * batch_size]]
            loss = loss_fn(augment(batch), augment(batch))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if after_step is not None:
                after_step(step, total)
        seconds.append(time.perf_counter() - start)
    return seconds


@torch.no_grad()
def embed(fn: Callable[[torch.Tensor], torch.Tensor], x: np.ndarray) -> np.ndarray:
    return fn(torch.as_tensor(x, dtype=torch.float32)).float().numpy()
