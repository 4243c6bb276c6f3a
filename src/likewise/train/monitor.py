"""Collapse and geometry monitor of self-supervised training (a Lightning callback).

Every ``every_n_epochs`` epochs (and after the last) it embeds a fixed sample of
validation inputs with the method's encoder and projector (eval mode) and logs, as
``monitor/<name>`` (CSV, TensorBoard, progress bar) and in :attr:`history`:

* ``std_ratio`` / ``projection_std_ratio``: mean per-dimension standard deviation of the
  L2-normalised outputs times ``sqrt(d)`` — about 1 when spread over the sphere, 0 when
  collapsed to a point (Chen & He 2021);
* ``effective_rank`` / ``projection_effective_rank``: RankMe (Garrido et al. 2023), the
  exponential of the entropy of the normalised singular values (Roy & Vetterli 2007):
  1 for a collapse to one direction, ``d`` at most;
* ``alignment`` (mean squared distance of two views' normalised encoder outputs) and
  ``uniformity`` (log mean Gaussian potential), Wang & Isola 2020;
* ``knn_accuracy``: cosine kNN (``k``) of the validation sample against a training
  sample, when the data have labels.

It warns (``UserWarning``, once) when the representation collapses: the projection's
``std_ratio`` below ``collapse_std_ratio`` (0.05; an untrained ReLU network's outputs
already fill only a cone, about 0.1 here, and trained ones 0.3-1) or an effective rank
below 1.5. (The encoder's own ReLU features are non-negative, so their std ratio stays
lower than the projection's even when healthy: the warning reads the projection.) The views of
the alignment are drawn from a generator of their own, so monitoring does not change the
training's random stream; the history is in every checkpoint (exact resume).
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch


def _embed(fn: Any, x: np.ndarray, device: torch.device, batch_size: int = 1024) -> torch.Tensor:
    out = [fn(torch.as_tensor(x[i : i + batch_size], device=device)) for i in range(0, len(x), batch_size)]
    return torch.cat(out).double().cpu()


def encode_and_project(
    method: torch.nn.Module, x: np.ndarray, device: torch.device | str = "cpu", batch_size: int = 1024
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(method.encoder(x), method.project(x))``, float32 on the CPU, the encoder run once.

    A method with the base :meth:`likewise.ssl.base.SSLMethod.project` (``projector(encoder(x))``)
    gets its projection from the same encoder output; one that overrides ``project`` is called.
    """
    from likewise.ssl.base import SSLMethod

    shared = type(method).project is SSLMethod.project
    feats, projs = [], []
    for i in range(0, len(x), batch_size):
        xb = torch.as_tensor(x[i : i + batch_size], device=device)
        f = method.encoder(xb)
        feats.append(f.float().cpu())
        projs.append((method.projector(f) if shared else method.project(xb)).float().cpu())
    return torch.cat(feats), torch.cat(projs)


def geometry(emb: torch.Tensor) -> dict[str, float]:
    """``std_ratio`` and ``effective_rank`` of ``emb [n, d]`` (see the module docstring)."""
    from likewise.evaluation.geometry import effective_rank, per_dimension_std

    d = emb.shape[1]
    return {
        "std_ratio": float(per_dimension_std(emb).mean() * math.sqrt(d)),
        "effective_rank": effective_rank(emb),
    }


class CollapseMonitor(pl.Callback):
    """Geometry and kNN of the representation during training (module docstring).

    ``x`` are standardised validation inputs, ``y`` their labels (or None);
    ``gallery`` = ``(x, y)`` of training inputs for the kNN. ``views``: the augmentation
    module (inputs before standardisation are ``x * std + mean``).
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray | None,
        gallery: tuple[np.ndarray, np.ndarray] | None,
        *,
        views: torch.nn.Module,
        mean: np.ndarray,
        std: np.ndarray,
        every_n_epochs: int = 1,
        k: int = 10,
        collapse_std_ratio: float = 0.05,
        seed: int = 0,
    ) -> None:
        self.x, self.y, self.gallery = x, y, gallery
        self.views, self.mean, self.std = views, mean, std
        self.every_n_epochs, self.k = every_n_epochs, k
        self.collapse_std_ratio, self.seed = collapse_std_ratio, seed
        self.history: list[dict[str, Any]] = []
        self.warned = False
        self.warned_epoch: int | None = None  # the first epoch that looked collapsed
        self.seconds = 0.0  # time spent monitoring (left out of the epoch times)

    @torch.no_grad()
    def measure(self, method: torch.nn.Module, device: torch.device) -> dict[str, float]:
        from likewise.evaluation import alignment, uniformity
        from likewise.evaluation.classification import knn_accuracy

        was_training = method.training
        method.eval()
        try:
            feats, proj = (t.double() for t in encode_and_project(method, self.x, device))
            out = geometry(feats)
            out.update({f"projection_{k}": v for k, v in geometry(proj).items()})
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed)
                raw = torch.as_tensor(self.x * self.std + self.mean, device=device)
                a = (self.views(raw) - torch.as_tensor(self.mean, device=device)) / torch.as_tensor(
                    self.std, device=device
                )
                b = (self.views(raw) - torch.as_tensor(self.mean, device=device)) / torch.as_tensor(
                    self.std, device=device
                )
            fa = _embed(method.encoder, a.float().cpu().numpy(), device)
            fb = _embed(method.encoder, b.float().cpu().numpy(), device)
            out["alignment"] = alignment(fa, fb)
            out["uniformity"] = uniformity(feats)
            if self.y is not None and self.gallery is not None:
                g = _embed(method.encoder, self.gallery[0], device)
                k = min(self.k, len(g))
                out["knn_accuracy"] = knn_accuracy(g, self.gallery[1], feats, self.y, k=k, metric="cosine")
        finally:
            method.train(was_training)
        return out

    def collapsed(self, values: dict[str, float]) -> bool:
        low = values["projection_std_ratio"] < self.collapse_std_ratio
        return low or min(values["effective_rank"], values["projection_effective_rank"]) < 1.5

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        last = epoch + 1 >= (trainer.max_epochs or 0)
        if (epoch + 1) % self.every_n_epochs and not last:
            return
        start = time.perf_counter()
        values = self.measure(pl_module.method, pl_module.device)
        pl_module.log_dict({f"monitor/{k}": v for k, v in values.items()}, on_epoch=True, sync_dist=True)
        self.history = [h for h in self.history if h["epoch"] != epoch] + [{"epoch": epoch, **values}]
        if self.collapsed(values) and not self.warned:
            self.warned, self.warned_epoch = True, epoch
            warnings.warn(
                f"the representation collapsed at epoch {epoch}: std ratio {values['std_ratio']:.3f} "
                f"(projection {values['projection_std_ratio']:.3f}, about 1 when spread), effective rank "
                f"{values['effective_rank']:.2f} (projection {values['projection_effective_rank']:.2f})",
                UserWarning,
                stacklevel=1,
            )
        self.seconds += time.perf_counter() - start

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "warned": self.warned, "warned_epoch": self.warned_epoch}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
        self.warned = bool(state_dict.get("warned", False))
        self.warned_epoch = state_dict.get("warned_epoch")

    def collapsed_at_end(self) -> bool:
        """Whether the last measured epoch looks collapsed (a run can recover after a warning)."""
        return bool(self.history) and self.collapsed(max(self.history, key=lambda h: h["epoch"]))


class EpochTimer(pl.Callback):
    """Wall-clock seconds of each training epoch (monitoring excluded: put this callback first)."""

    def __init__(self) -> None:
        self.seconds: dict[int, float] = {}
        self._start: float | None = None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._start is not None:
            self.seconds[trainer.current_epoch] = time.perf_counter() - self._start

    def state_dict(self) -> dict[str, Any]:
        return {"seconds": {str(k): v for k, v in self.seconds.items()}}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.seconds = {int(k): float(v) for k, v in state_dict.get("seconds", {}).items()}


__all__ = ["CollapseMonitor", "EpochTimer", "encode_and_project", "geometry"]
