"""The LightningModule of supervised metric learning: embed, gather, loss, optimise.

The loss sees the *global* batch when several processes train together (see
:mod:`likewise.distributed`), and is computed in float32 even under mixed precision.
Random number generator states go into every checkpoint so that a resumed run
continues exactly.
"""

from __future__ import annotations

import random
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor, nn

from likewise.augment import Views, build_augmentation
from likewise.distributed import all_reduce_mean, distributed_loss
from likewise.train.config import TrainConfig


def _numpy_state_to_plain(state: tuple) -> tuple:
    """NumPy's RNG state with its key array as a tensor (loadable with ``weights_only=True``)."""
    kind, keys, pos, has_gauss, cached = state
    return (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))


def _numpy_state_from_plain(state: tuple) -> tuple:
    kind, keys, pos, has_gauss, cached = state
    return (kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached)


class MetricLearningModule(pl.LightningModule):
    """``model`` (inputs -> embeddings) trained with ``loss`` (a likewise loss module)."""

    def __init__(
        self,
        config: TrainConfig,
        model: nn.Module,
        loss: nn.Module,
        mean: np.ndarray | None = None,
        std: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.model = model
        self.loss = loss
        # input standardisation, applied after augmentation (non-persistent: not in checkpoints)
        self.register_buffer("mean", torch.as_tensor(0.0 if mean is None else mean), persistent=False)
        self.register_buffer("std", torch.as_tensor(1.0 if std is None else std), persistent=False)
        aug = config.augment
        self.views = None
        #: pairs supervision (likewise.data.pairs.PairRelation): batch labels are item ids
        self.relation: Any = None
        if aug is not None:
            jitter = build_augmentation(
                "light", degrees=aug.degrees, scale=aug.scale, translate=aug.translate
            )
            self.views = Views(jitter, aug.views)

    def forward(self, x: Tensor) -> Tensor:
        return self.model((x - self.mean) / self.std)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        if self.views is not None:
            x, y = self.views(x), y.repeat(self.views.views)
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        emb = self.model.train_output(x)
        if self.config.model.projection_dim:
            emb = torch.nn.functional.normalize(emb, dim=1)
        with torch.autocast(device_type=emb.device.type, enabled=False):
            emb = emb.float() if emb.dtype in (torch.float16, torch.bfloat16) else emb
            try:
                if self.relation is not None:  # the batch's known pairs; the others are unknown
                    value = self.loss(emb, None, indices_tuple=self.relation.batch_tuple(y))
                else:
                    value = distributed_loss(self.loss, emb, y, mode=self.config.trainer.gather)
            except ValueError as exc:
                if "NaN" not in str(exc):
                    raise
                raise self._diverged("the model's embeddings") from None
        # one host synchronisation per step (Lightning's step logging makes one anyway)
        if not bool(torch.isfinite(value.detach())):
            raise self._diverged("the loss")
        shown = all_reduce_mean(value) if self.config.trainer.gather == "local" else value.detach()
        self.log("train/loss", shown, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(y))
        return value

    def _diverged(self, what: str) -> ValueError:
        """The error that ends a run whose numbers blew up, saying where and what to try."""
        opt = self.config.optimizer
        return ValueError(
            f"training diverged at epoch {self.current_epoch}, step {self.global_step}: {what} became NaN "
            f"or infinite (optimizer.lr = {opt.lr:g}, {opt.name}); lower optimizer.lr (e.g. 10x), "
            "check the inputs' scale, or use a scheduler with warm-up (onecycle)"
        )

    def configure_optimizers(self) -> Any:
        opt = self.config.optimizer
        groups = [{"params": [p for p in self.model.parameters() if p.requires_grad]}]
        loss_params = [p for p in self.loss.parameters() if p.requires_grad]
        if loss_params:
            groups.append({"params": loss_params, "lr": opt.loss_lr or opt.lr})
        if opt.name == "sgd":
            optimizer = torch.optim.SGD(
                groups, lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay
            )
        elif opt.name == "adamw":
            optimizer = torch.optim.AdamW(groups, lr=opt.lr, weight_decay=opt.weight_decay)
        else:
            optimizer = torch.optim.Adam(groups, lr=opt.lr, weight_decay=opt.weight_decay)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        if opt.scheduler != "none":
            if opt.scheduler == "cosine":
                scheduler: Any = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
            else:
                max_lr = [g.get("lr", opt.lr) for g in groups]
                scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=total)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
        return optimizer

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["likewise_rng"] = {
            "torch": torch.get_rng_state(),
            "numpy": _numpy_state_to_plain(np.random.get_state()),
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("likewise_rng")
        if not state:
            return
        torch.set_rng_state(state["torch"])
        np.random.set_state(_numpy_state_from_plain(state["numpy"]))
        random.setstate(state["python"])
        if state.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


__all__ = ["MetricLearningModule"]
