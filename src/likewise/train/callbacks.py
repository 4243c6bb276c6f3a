"""Callbacks of a run: periodic held-out evaluation with best-model selection, and checkpoints.

* :class:`HeldOutEvaluation` embeds the *selection* split every ``every_n_epochs``
  epochs (and after the last), computes :func:`likewise.evaluation.retrieval_metrics`,
  logs them as ``<split>/<name>`` (``validation/map_at_r``) and keeps the weights of the
  best epoch by ``metric`` (written atomically to ``best.safetensors``). Optionally it
  also evaluates the held-out classes (``heldout/<name>``) for learning curves only:
  they never choose the epoch. Its state (best value and epoch, history) is saved in
  every checkpoint.
* :class:`StepCheckpoint` writes ``last.ckpt`` every ``every_n_steps`` optimizer
  steps and at the end of every epoch (atomically, see ``checkpoint_io``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import nn

from likewise.io import atomic_write_bytes


@torch.no_grad()
def embed_array(model: nn.Module, x: np.ndarray, batch_size: int, device: torch.device) -> np.ndarray:
    """Embeddings of ``x`` in eval mode, in batches, as float32 NumPy."""
    was_training = model.training
    model.eval()
    try:
        out = []
        for start in range(0, len(x), batch_size):
            chunk = torch.as_tensor(x[start : start + batch_size], dtype=torch.float32, device=device)
            dtype = next(model.parameters()).dtype
            out.append(model(chunk.to(dtype)).float().cpu().numpy())
        return np.concatenate(out)
    finally:
        model.train(was_training)


def evaluate(
    model: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    *,
    distance: str,
    batch_size: int,
    device: torch.device,
    include_all: bool = False,
    selection: str | None = None,
) -> dict[str, float]:
    """Leave-one-out retrieval metrics of the held-out set: the default ones, plus the ``selection``
    metric (``mrr``, ``map``) if it is not among them, or every one with ``include_all``."""
    from likewise.evaluation import retrieval_metrics
    from likewise.evaluation.retrieval import DEFAULT_INCLUDE

    emb = embed_array(model, x, batch_size, device)
    include = "all" if include_all else DEFAULT_INCLUDE + tuple({selection} - set(DEFAULT_INCLUDE) - {None})
    metrics = retrieval_metrics(emb, y, metric=distance, include=include)
    return {k: v if isinstance(v, int) else float(v) for k, v in metrics.items()}  # counts stay counts


def state_dict_bytes(model: nn.Module) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})


class HeldOutEvaluation(pl.Callback):
    """Periodic retrieval evaluation; the best epoch by ``metric`` on ``(x, y)`` is kept.

    ``split`` names the selection data in logs and history: ``"validation"`` (samples of
    the training classes held out of training, the protocol of Musgrave et al. 2020) or
    ``"heldout"`` (the unseen classes themselves: optimistic, the figures then picked
    the epoch). ``curves``: ``(x, y)`` of the held-out classes, evaluated at the same
    epochs for the logs and ``history`` only.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        *,
        every_n_epochs: int,
        metric: str,
        distance: str,
        batch_size: int,
        best_path: str | Path,
        split: str = "heldout",
        curves: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        self.x, self.y = x, y
        self.split = split
        self.curves = curves
        self.every_n_epochs = every_n_epochs
        self.metric = metric
        self.distance = distance
        self.batch_size = batch_size
        self.best_path = Path(best_path)
        self.best_value: float | None = None
        self.best_epoch: int | None = None
        self.history: list[dict[str, Any]] = []

    def _evaluate(self, pl_module: pl.LightningModule, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        return evaluate(
            pl_module.model,
            x,
            y,
            distance=self.distance,
            batch_size=self.batch_size,
            device=pl_module.device,
            selection=self.metric,
        )

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        last = epoch + 1 >= (trainer.max_epochs or 0)
        if (epoch + 1) % self.every_n_epochs and not last:
            return
        metrics = self._evaluate(pl_module, self.x, self.y)
        entry: dict[str, Any] = {"epoch": epoch, self.split: metrics}
        logged = {f"{self.split}/{k}": v for k, v in metrics.items()}
        if self.curves is not None:
            entry["heldout"] = self._evaluate(pl_module, *self.curves)
            logged.update({f"heldout/{k}": v for k, v in entry["heldout"].items()})
        # identical on every rank (each evaluates the whole split): the mean is the value
        pl_module.log_dict(logged, on_epoch=True, sync_dist=True)
        self.history = [h for h in self.history if h["epoch"] != epoch] + [entry]
        value = metrics[self.metric]
        if self.best_value is None or value > self.best_value:
            self.best_value, self.best_epoch = value, epoch
            if trainer.is_global_zero:
                atomic_write_bytes(self.best_path, state_dict_bytes(pl_module.model))

    def state_dict(self) -> dict[str, Any]:
        return {"best_value": self.best_value, "best_epoch": self.best_epoch, "history": self.history}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_value = state_dict.get("best_value")
        self.best_epoch = state_dict.get("best_epoch")
        self.history = list(state_dict.get("history", []))


class SamplerEpoch(pl.Callback):
    """Tell the datamodule's batch sampler which epoch starts (Lightning itself only calls
    ``set_epoch`` on ``loader.sampler`` / ``loader.batch_sampler.sampler``, not on a batch sampler).

    Not called when a run resumes mid-epoch: the sampler is then positioned from the step count.
    """

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        sampler = getattr(trainer.datamodule, "batch_sampler", None)
        if sampler is not None:
            sampler.set_epoch(trainer.current_epoch)


class StepCheckpoint(pl.Callback):
    def __init__(self, path: str | Path, every_n_steps: int) -> None:
        self.path = Path(path)
        self.every_n_steps = every_n_steps

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            trainer.save_checkpoint(self.path, weights_only=False)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        trainer.save_checkpoint(self.path, weights_only=False)


__all__ = [
    "HeldOutEvaluation",
    "SamplerEpoch",
    "StepCheckpoint",
    "embed_array",
    "evaluate",
    "state_dict_bytes",
]
