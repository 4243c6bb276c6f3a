"""One training run, from a validated config to a model directory and ``metrics.json``.

Output directory::

    config.yaml              the resolved config of the run
    checkpoints/last.ckpt    Lightning checkpoint (atomic), every N steps and every epoch
    checkpoints/best.safetensors   weights of the best epoch by ``eval.metric`` on the validation split
    logs/csv/version_*/      CSV metrics;  logs/tensorboard/version_*/  TensorBoard events
    metrics.json             held-out metrics of the selected model, validation metrics, best epoch,
                             history, skipped inputs
    model/                   the exported model (see ``likewise.export``), index, matcher

Model selection follows "A Metric Learning Reality Check" (Musgrave et al. 2020): the
best epoch is chosen on a validation split of the training classes' samples
(``eval.validation_fraction``), and the unseen held-out classes are evaluated with the
selected weights (``eval.validation_fraction: 0`` selects on the held-out classes
instead, which makes their figures optimistic).

Everything that can be checked before training is checked before anything is written
to ``out`` (accelerator, data, sampler against the data), with errors that name the
config key.

Exact resume: every batch is a function of ``(seed, epoch)`` and the checkpoint
holds the weights, optimizer, loss state (e.g. the cross-batch memory), RNG states
and the step count; the restarted sampler skips the batches already trained on.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader

from likewise.artifacts import RUN_ENTRIES, check_output_dir
from likewise.data import ArrayDataset
from likewise.io import atomic_write_json, atomic_write_text
from likewise.train.callbacks import HeldOutEvaluation, SamplerEpoch, StepCheckpoint, evaluate
from likewise.train.checkpoint_io import check_checkpoint
from likewise.train.config import TrainConfig
from likewise.train.data import RunData, check_sampler, prepare_data
from likewise.train.module import MetricLearningModule
from likewise.train.progress import StderrProgressBar
from likewise.train.registry import build, loss_class, miner_class
from likewise.train.sampling import ResumableBatchSampler, ShuffledBatchSampler

#: trainer settings that may change between a run and its resumption
RESUMABLE_CHANGES = ("devices", "num_nodes", "progress_bar", "num_workers", "threads", "accelerator")


def build_loss(config: TrainConfig, num_classes: int) -> torch.nn.Module:
    """The configured loss (with its miner, wrapped in a cross-batch memory if configured)."""
    miner = None
    if config.miner is not None:
        miner = build(miner_class(config.miner.name), config.miner.kwargs, "miner")
    cls = loss_class(config.loss.name)
    loss_dim = config.model.projection_dim or config.model.embedding_dim  # what the loss sees
    managed: dict[str, Any] = {"num_classes": num_classes, "embedding_size": loss_dim}
    if miner is not None:
        managed["miner"] = miner
    from likewise.train.registry import accepts

    if miner is not None and not accepts(cls, "miner"):
        raise ValueError(f"miner: {config.loss.name} takes no miner")
    loss = build(cls, config.loss.kwargs, "loss", **managed)
    if config.memory is not None:
        from likewise.memory import CrossBatchMemory

        loss = CrossBatchMemory(loss, loss_dim, config.memory.size)
    return loss


def build_embedding_model(config: TrainConfig, input_shape: tuple[int, ...]) -> torch.nn.Module:
    from likewise.models import build_model

    m = config.model
    try:
        return build_model(
            m.trunk,
            input_shape,
            embedding_dim=m.embedding_dim,
            pooling=m.pooling,
            normalize=m.normalize,
            projection_dim=m.projection_dim,
            trunk_kwargs=m.trunk_kwargs,
            embed=m.embed,
        )
    except TypeError as exc:
        raise ValueError(f"model.trunk_kwargs: {exc}") from None


class _PositionedLoader(DataLoader):
    """A DataLoader whose position comes from the restored step count (see ``train_dataloader``).

    The ``state_dict`` / ``load_state_dict`` pair tells Lightning the loader resumes
    mid-epoch; the position itself is derived from ``trainer.global_step``.
    """

    def state_dict(self) -> dict[str, Any]:
        sampler = self.batch_sampler
        return {"epoch": getattr(sampler, "epoch", 0), "batches_per_epoch": len(self)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("batches_per_epoch", len(self)) != len(self):
            raise ValueError("the checkpoint was written with a different number of batches per epoch")


class _DataModule(pl.LightningDataModule):
    """Training batches from the sampler, positioned at the restored step on resume."""

    def __init__(self, config: TrainConfig, data: RunData, x: np.ndarray) -> None:
        super().__init__()
        self.config, self.data = config, data
        self.dataset = ArrayDataset(x, data.train_label_ids)
        self.batch_sampler: ResumableBatchSampler | None = None

    def _inner_sampler(self, rank: int, world: int) -> Any:
        s, seed = self.config.sampler, self.config.trainer.seed
        resolved = check_sampler(s, self.data, world)
        if s.kind == "random":
            return ShuffledBatchSampler(
                len(self.dataset), s.batch_size, seed=seed, rank=rank, world_size=world
            )
        from likewise.sampling import ClassBalancedBatchSampler

        try:
            return ClassBalancedBatchSampler(
                self.data.train_label_ids,
                resolved["classes_per_batch"],
                resolved["samples_per_class"],
                seed=seed,
                replacement=s.replacement,
                drop_last=True,
                rank=rank,
                world_size=world,
            )
        except ValueError as exc:
            raise ValueError(f"sampler: {exc}") from None

    def steps_per_epoch(self, world: int = 1) -> int:
        return len(self._inner_sampler(0, world))

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        inner = self._inner_sampler(trainer.global_rank, trainer.world_size)
        # the step count is read when the first batch is drawn: by then a resumed run has
        # restored it (Lightning may build the loader earlier, e.g. for a schedule's length)
        sampler = ResumableBatchSampler(inner, start_step=lambda: trainer.global_step)
        self.batch_sampler = sampler
        return _PositionedLoader(
            self.dataset,
            batch_sampler=sampler,
            num_workers=self.config.trainer.num_workers,
            generator=torch.Generator().manual_seed(self.config.trainer.seed),
            persistent_workers=False,
        )


def resolve_precision(precision: str, accelerator: str) -> str:
    """``auto``: bf16/16 mixed precision on CUDA, 32-bit elsewhere."""
    if precision == "auto":
        if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
            return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
        return "32-true"
    return {"32": "32-true", "64": "64-true"}.get(precision, precision)


def _uses_cuda(accelerator: str) -> bool:
    """SyncBatchNorm needs CUDA: on CPU each process keeps its own BatchNorm statistics."""
    return accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()


def check_accelerator(config: TrainConfig) -> None:
    """``ValueError`` naming ``trainer.accelerator`` / ``trainer.devices`` when the hardware is missing."""
    tc = config.trainer
    if tc.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"trainer.accelerator: {tc.accelerator} but no CUDA GPU is available here "
            "(torch.cuda.is_available() is False); use auto or cpu"
        )
    if tc.accelerator == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
        raise ValueError(
            "trainer.accelerator: mps but Apple's MPS backend is not available here; use auto or cpu"
        )
    if _uses_cuda(tc.accelerator) and tc.devices > torch.cuda.device_count():
        raise ValueError(
            f"trainer.devices: {tc.devices} but this machine has {torch.cuda.device_count()} CUDA GPU(s)"
        )


def _has_batchnorm(model: torch.nn.Module) -> bool:
    return any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())


def skipped_line(
    skipped: Sequence[tuple[str, str]], root: str | os.PathLike | None = None, shown: int = 3
) -> str:
    """One line: how many inputs were skipped, and the first few of them."""
    names = []
    for path, _ in skipped[:shown]:
        try:
            names.append(Path(path).relative_to(root).as_posix() if root else path)
        except ValueError:
            names.append(path)
    more = ", ..." if len(skipped) > shown else ""
    return (
        f"skipped {len(skipped)} unreadable input{'s' if len(skipped) != 1 else ''}: {', '.join(names)}{more}"
    )


def _comparable(config: Any, resumable: Sequence[str] = RESUMABLE_CHANGES) -> dict[str, Any]:
    """The config as a dict without the trainer settings a resumed run may change."""
    d = config.to_dict()
    for key in resumable:
        d["trainer"].pop(key, None)
    return d


def _prepare_out(
    config: Any, out: Path, resume: bool, resumable: Sequence[str] = RESUMABLE_CHANGES, command: str = "train"
) -> Path | None:
    """Check the output directory; the checkpoint to resume from (None: a fresh start).

    ``out`` must be new, empty, or a likewise run (nothing else is ever written over); on
    ``resume`` its ``config.yaml`` must be readable and equal ``config`` (a ``TrainConfig`` or
    ``PretrainConfig``) but for the ``resumable`` trainer settings.
    """
    check_output_dir(out, RUN_ENTRIES, "likewise run")
    ckpt = out / "checkpoints" / "last.ckpt"
    saved = out / "config.yaml"
    if not resume:
        if ckpt.exists():
            raise ValueError(
                f"{out} already holds a run; pass --resume to continue it or choose another --out"
            )
        return None
    if saved.exists():
        try:
            before = type(config).model_validate(yaml.safe_load(saved.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError, yaml.YAMLError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(
                f"{saved} is not a readable run config ({first}); cannot resume this run"
            ) from None
        if _comparable(before, resumable) != _comparable(config, resumable):
            raise ValueError(
                f"the config differs from the one of the run in {out}; resume needs the same config"
            )
    if not ckpt.exists():
        print(f"likewise {command}: no checkpoint in {out}, starting from the beginning", file=sys.stderr)
        return None
    return ckpt


def run_trainer(
    tc: Any,
    out: Path,
    *,
    epochs: int,
    callbacks: Sequence[pl.Callback],
    logger: Any,
    extra_callbacks: Sequence[pl.Callback] = (),
    devices: int | None = None,
    **settings: Any,
) -> pl.Trainer:
    """The Lightning ``Trainer`` every likewise run uses (train, pairs, pretrain).

    Shared: ``tc`` (the config's ``trainer`` section) gives accelerator, devices, nodes, progress
    bar (on stderr) and logging interval; checkpoints are written atomically to
    ``out/checkpoints/last.ckpt`` every ``tc.checkpoint_every_n_steps`` steps (``callbacks`` run
    before that one, ``extra_callbacks`` — the caller's — after it); no validation loop, no
    distributed sampler (likewise's samplers shard themselves). ``settings``: anything else
    (precision, strategy, sync_batchnorm).
    """
    from likewise.train.checkpoint_io import AtomicCheckpointIO

    return pl.Trainer(
        max_epochs=epochs,
        accelerator=tc.accelerator,
        devices=tc.devices if devices is None else devices,
        num_nodes=getattr(tc, "num_nodes", 1) if devices is None else 1,
        callbacks=[
            *callbacks,
            StepCheckpoint(out / "checkpoints" / "last.ckpt", tc.checkpoint_every_n_steps),
            *([StderrProgressBar()] if tc.progress_bar else []),
            *extra_callbacks,
        ],
        logger=logger,
        plugins=[AtomicCheckpointIO()],
        enable_checkpointing=False,
        enable_progress_bar=tc.progress_bar,
        enable_model_summary=False,
        log_every_n_steps=tc.log_every_n_steps,
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        **settings,
    )


def fit(
    config: TrainConfig,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    callbacks: Sequence[pl.Callback] = (),
) -> dict[str, Any]:
    """Train as configured, writing everything under ``out``; returns the final metrics.

    ``config.trainer.devices > 1`` runs DDP (this function is then entered by every
    process; only rank 0 writes the final outputs and gets a non-empty result).
    """
    out = Path(out)
    if config.data.pairs is not None or config.data.triplets is not None:
        from likewise.train.pairs import fit_pairs

        return fit_pairs(config, out, resume=resume, callbacks=callbacks)
    tc = config.trainer
    processes = tc.devices * tc.num_nodes
    if tc.threads:
        torch.set_num_threads(tc.threads)
    check_accelerator(config)
    ckpt = _prepare_out(config, out, resume)
    pl.seed_everything(tc.seed, workers=True, verbose=False)
    data = prepare_data(config.data, validation_fraction=config.eval.validation_fraction)
    if config.augment is not None and not data.train.is_image:
        raise ValueError("augment: needs image inputs [N, C, H, W]; the data are feature vectors")
    check_sampler(config.sampler, data, processes)
    x_test = (data.test.x - data.mean) / data.std
    model = build_embedding_model(config, data.input_shape)
    loss = build_loss(config, data.num_train_classes)
    module = MetricLearningModule(config, model, loss, data.mean, data.std)
    if ckpt is not None:
        check_checkpoint(ckpt, module)
    datamodule = _DataModule(config, data, data.train.x)

    notes: list[str] = []  # printed by rank 0 once the trainer knows the ranks
    if data.skipped:
        root = config.data.dataset if Path(config.data.dataset).is_dir() else None
        notes.append(f"{skipped_line(data.skipped, root)} (all listed in metrics.json)")
    if processes > 1 and not _uses_cuda(tc.accelerator) and _has_batchnorm(model):
        notes.append(
            f"BatchNorm statistics are per process on CPU (torch's SyncBatchNorm needs GPUs): "
            f"{processes} CPU processes equal one process on the global batch for the loss, "
            "not for the BatchNorm layers of the model"
        )
    if data.validation is None:
        notes.append(
            "eval.validation_fraction is 0: the best epoch is selected on the held-out classes, "
            "so their reported metrics are optimistic"
        )

    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    best_path = out / "checkpoints" / "best.safetensors"
    ec = config.eval
    if data.validation is not None:
        selection = ((data.validation.x - data.mean) / data.std, data.validation.y)
        curves = (x_test, data.test.y) if ec.heldout_curves else None
        split = "validation"
    else:
        selection, curves, split = (x_test, data.test.y), None, "heldout"
    evaluation = HeldOutEvaluation(
        *selection,
        every_n_epochs=ec.every_n_epochs,
        metric=ec.metric,
        distance=ec.distance,
        batch_size=ec.batch_size,
        best_path=best_path,
        split=split,
        curves=curves,
    )
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    loggers: list[Any] = [CSVLogger(out / "logs", name="csv")]
    try:
        loggers.append(TensorBoardLogger(out / "logs", name="tensorboard", default_hp_metric=False))
    except ModuleNotFoundError:
        notes.append(
            "tensorboard is not installed, so there is no logs/tensorboard (pip install tensorboard); "
            "the CSV logs are in logs/csv"
        )
    trainer = run_trainer(
        tc,
        out,
        epochs=config.optimizer.epochs,
        callbacks=[SamplerEpoch(), evaluation],
        logger=loggers,
        extra_callbacks=callbacks,
        strategy="ddp" if processes > 1 else "auto",
        precision=resolve_precision(tc.precision, tc.accelerator),
        sync_batchnorm=tc.sync_batchnorm and processes > 1 and _uses_cuda(tc.accelerator),
    )
    if trainer.is_global_zero:
        for note in notes:
            print(f"likewise train: {note}", file=sys.stderr)
        atomic_write_text(out / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt) if ckpt else None, weights_only=True)
    if not trainer.is_global_zero:
        return {}
    return finish(config, out, module.model, data, x_test, evaluation)


def finish(
    config: TrainConfig,
    out: Path,
    model: torch.nn.Module,
    data: RunData,
    x_test: np.ndarray,
    evaluation: HeldOutEvaluation,
) -> dict[str, Any]:
    """Load the best weights, evaluate them, export the model directory, write metrics.json."""
    from safetensors.torch import load_file

    from likewise.export import save_model
    from likewise.train.callbacks import embed_array

    model = model.cpu().float()
    best_path = out / "checkpoints" / "best.safetensors"
    if best_path.exists():
        model.load_state_dict(load_file(str(best_path)))
    device = torch.device("cpu")
    ec = config.eval
    final = evaluate(  # once, at the end: with full mAP
        model,
        x_test,
        data.test.y,
        distance=ec.distance,
        batch_size=ec.batch_size,
        device=device,
        include_all=True,
    )
    validation = None
    if data.validation is not None:
        x_val = (data.validation.x - data.mean) / data.std
        validation = evaluate(
            model,
            x_val,
            data.validation.y,
            distance=ec.distance,
            batch_size=ec.batch_size,
            device=device,
            include_all=True,
        )
    result: dict[str, Any] = {
        "heldout": final,  # the unseen classes, with the selected weights
        "validation": validation,  # the validation split (training classes), same weights
        "selected_on": evaluation.split,  # "validation", or "heldout" (optimistic) with fraction 0
        "selection_metric": ec.metric,
        "best_epoch": evaluation.best_epoch,
        "history": evaluation.history,
        "n_train": len(data.train),
        "n_validation": len(data.validation) if data.validation is not None else 0,
        "n_heldout": len(data.test),
        "train_classes": sorted({data.train.class_names[i] for i in np.unique(data.train.y)}),
        "heldout_classes": sorted({data.test.class_names[i] for i in np.unique(data.test.y)}),
        "skipped": [{"path": p, "reason": r} for p, r in data.skipped],
    }
    matcher = index = None
    if config.export.index or config.export.matcher:
        emb = embed_array(model, x_test, config.eval.batch_size, device)
        index, matcher, matching = build_search(emb, data.test.y, data.test.class_names, config)
        result["matching"] = matching
    save_model(
        out / "model",
        model,
        mean=data.mean,
        std=data.std,
        distance=config.eval.distance,
        class_names=data.train.class_names,
        train_config=config.to_dict(),
        metrics=final,
        index=index,
        matcher=matcher,
    )
    atomic_write_json(out / "metrics.json", _finite(result))
    return result


def _finite(obj: Any) -> Any:
    """NaN / inf floats as ``None`` (strict JSON)."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def build_search(
    emb: np.ndarray, y: np.ndarray, class_names: list[str], config: TrainConfig
) -> tuple[Any, Any, dict[str, Any]]:
    """An index of half the held-out samples (stratified) and, if configured, a matcher
    calibrated on the index itself (open-set decisions, leave-one-out) and evaluated on the
    other half.

    Open set: with three or more held-out classes, the last one is kept out of the index
    (an identity never enrolled), so the queries include unknowns and the matcher's
    false-accept rate is measured, not only its identification accuracy.
    """
    from likewise.data import stratified_split
    from likewise.index import Index

    metric = config.eval.distance
    gallery, queries = stratified_split(y, 0.5, seed=config.data.seed)
    classes = np.unique(y)
    unknown = classes[-1:] if len(classes) >= 3 else classes[:0]
    gallery = gallery[~np.isin(y[gallery], unknown)]
    names = np.asarray(class_names)[y]
    index = Index(emb.shape[1], metric=metric)
    index.add(emb[gallery], labels=names[gallery])
    info: dict[str, Any] = {
        "index_size": int(len(gallery)),
        "unknown_classes": [str(class_names[c]) for c in unknown],
    }
    if not config.export.matcher:
        return index, None, info
    from likewise.matching import Matcher

    # the gallery calibrates itself leave-one-out: each row's own index id is left out
    matcher = Matcher.calibrated(index, emb[gallery], names[gallery], target="f1", ids=index.ids)
    info["threshold"] = matcher.threshold
    info["calibration"] = matcher.calibration
    with warnings.catch_warnings():  # without a never-enrolled class, the summary says there is none
        warnings.filterwarnings("ignore", message="no (un)?known queries were given")
        scores = matcher.evaluate(emb[queries], names[queries])
    info["queries"] = {k: v if isinstance(v, int) else float(v) for k, v in scores.items()}
    return index, matcher, info


__all__ = [
    "build_embedding_model",
    "build_loss",
    "build_search",
    "check_accelerator",
    "finish",
    "fit",
    "resolve_precision",
    "skipped_line",
]
