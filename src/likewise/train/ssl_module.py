"""The LightningModule of self-supervised pre-training: views, method loss, optimiser, momentum update.

Each batch of raw inputs becomes two augmented views (plus local crops for multi-crop),
standardised after augmentation; ``method(*views)`` is the loss (the method gathers or
all-reduces across processes itself, see :mod:`likewise.ssl.base`). After every optimiser
step :class:`MethodUpdate` calls ``method.update(step, total_steps)`` (momentum teachers,
schedules). Random
number generator states go into every checkpoint, as in supervised training, and the
method's state (teacher, queue, centre) is part of the module's state dict.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor, nn

from likewise.ssl.base import SSLMethod
from likewise.train.module import MetricLearningModule
from likewise.train.pretrain_config import PretrainConfig


class PretrainModule(pl.LightningModule):
    def __init__(
        self,
        config: PretrainConfig,
        method: SSLMethod,
        views: nn.Module,
        mean: np.ndarray,
        std: np.ndarray,
    ) -> None:
        super().__init__()
        self.config = config
        self.method = method
        self.views = views
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32), persistent=False)
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32), persistent=False)

    def _standardise(self, x: Tensor) -> Tensor:
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x = batch[0]
        drawn = self.views(x)
        views = drawn if isinstance(drawn, list) else [drawn, self.views(x)]
        loss = self.method(*[self._standardise(v) for v in views])
        self.log("train/loss", loss.detach(), prog_bar=True, on_step=True, on_epoch=True, batch_size=len(x))
        return loss

    def configure_optimizers(self) -> Any:
        opt = self.config.optimizer
        params = [p for p in self.method.parameters() if p.requires_grad]
        if opt.name == "sgd":
            optimizer: Any = torch.optim.SGD(
                params, lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay
            )
        elif opt.name == "adamw":
            optimizer = torch.optim.AdamW(params, lr=opt.lr, weight_decay=opt.weight_decay)
        else:
            optimizer = torch.optim.Adam(params, lr=opt.lr, weight_decay=opt.weight_decay)
        if opt.scheduler == "none":
            return optimizer
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # the generators' states, exactly as supervised training saves and restores them
    on_save_checkpoint = MetricLearningModule.on_save_checkpoint
    on_load_checkpoint = MetricLearningModule.on_load_checkpoint


class MethodUpdate(pl.Callback):
    """``method.update(step, total_steps)`` after every optimiser step (momentum teachers, schedules).

    A callback, placed before the checkpoint callback, so that a checkpoint written at a
    step already holds that step's update (the module's own hook would run after it).
    """

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        total = max(1, int(trainer.estimated_stepping_batches))
        pl_module.method.update(trainer.global_step, total)


__all__ = ["MethodUpdate", "PretrainModule"]
