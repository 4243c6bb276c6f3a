"""One self-supervised pre-training run, from a validated config to a model directory.

Output directory::

    config.yaml              the resolved config
    checkpoints/last.ckpt    Lightning checkpoint (atomic): weights, optimiser, the method's
                             teacher / queue / centre, RNG states, monitor history, epoch times
    logs/csv/, logs/tensorboard/   the loss and the monitor's values per epoch
    metrics.json             knn_accuracy (cosine, k = 10, the training split as gallery, on the
                             encoder's output), linear_probe_accuracy, effective_rank,
                             projection_knn_accuracy, raw_knn_accuracy (the inputs themselves),
                             seconds_per_epoch, the monitor history
    model/                   the encoder, exported (``likewise.load`` / ``likewise embed``)
    report.html              the monitor's curves, the metrics and a map of the test embeddings

Exact resume: batches are a function of ``(seed, epoch)``, the sampler restarts at the
restored step, and everything else that moves is in the checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader

from likewise.io import atomic_write_json, atomic_write_text
from likewise.train.pretrain_config import PretrainConfig
from likewise.train.pretrain_data import PretrainData, prepare_pretrain_data

#: trainer settings that may change between a run and its resumption
RESUMABLE = ("devices", "num_nodes", "progress_bar", "threads", "accelerator")


def resolve_trunk(config: PretrainConfig, input_shape: tuple[int, ...]) -> str:
    """``encoder.trunk``, with ``auto`` = conv1d for signals ``(L,)``, convnet for images, else mlp."""
    trunk = config.encoder.trunk
    if trunk != "auto":
        return trunk
    return "convnet" if len(input_shape) == 3 else "conv1d" if len(input_shape) in (1, 2) else "mlp"


def build_encoder(config: PretrainConfig, input_shape: tuple[int, ...]) -> nn.Module:
    """The encoder: a :func:`likewise.models.build_model` model embedding with its pooled features."""
    from likewise.models import build_model

    try:
        return build_model(
            resolve_trunk(config, input_shape),
            input_shape,
            embedding_dim=1,  # the head is unused: the model embeds with its features
            normalize=False,
            embed="features",
            trunk_kwargs=config.encoder.trunk_kwargs,
        )
    except TypeError as exc:
        raise ValueError(f"encoder.trunk_kwargs: {exc}") from None


def build_views_module(config: PretrainConfig, input_shape: tuple[int, ...]) -> nn.Module:
    from likewise.ssl.views import MultiCrop, build_views

    preset = config.views.preset
    if preset == "auto":
        if len(input_shape) == 3:
            preset = "grey" if input_shape[0] == 1 else "rgb"
        else:
            preset = "signal"
    try:
        aug = build_views(preset, input_shape)
    except ValueError as exc:
        raise ValueError(f"views.preset: {exc}") from None
    return MultiCrop(aug, config.views.local_crops) if config.views.local_crops else aug


def build_method(config: PretrainConfig, encoder: nn.Module) -> Any:
    from likewise.ssl import METHODS
    from likewise.train.registry import build

    width = int(encoder.config["output_dim"])
    return build(
        METHODS[config.method.name], config.method.kwargs, "method", encoder=encoder, encoder_dim=width
    )


class _DataModule(pl.LightningDataModule):
    """Shuffled batches of raw training inputs, positioned at the restored step on resume."""

    def __init__(self, config: PretrainConfig, x: np.ndarray) -> None:
        super().__init__()
        from likewise.data import ArrayDataset

        self.config = config
        self.dataset = ArrayDataset(x, np.zeros(len(x), dtype=np.int64))
        self.batch_sampler: Any = None

    def train_dataloader(self) -> DataLoader:
        from likewise.train.run import _PositionedLoader
        from likewise.train.sampling import ResumableBatchSampler, ShuffledBatchSampler

        trainer = self.trainer
        inner = ShuffledBatchSampler(
            len(self.dataset),
            self.config.optimizer.batch_size,
            seed=self.config.trainer.seed,
            rank=trainer.global_rank,
            world_size=trainer.world_size,
        )
        self.batch_sampler = ResumableBatchSampler(inner, start_step=lambda: trainer.global_step)
        # an own generator: a loader iterator otherwise draws its base seed from the global one,
        # shifting the augmentation stream differently in a resumed run
        generator = torch.Generator().manual_seed(self.config.trainer.seed)
        return _PositionedLoader(
            self.dataset, batch_sampler=self.batch_sampler, num_workers=0, generator=generator
        )


def fit_pretrain(
    config: PretrainConfig,
    out: str | os.PathLike,
    *,
    resume: bool = False,
    callbacks: Sequence[pl.Callback] = (),
) -> dict[str, Any]:
    """Pre-train as configured, writing everything under ``out``; returns the metrics (rank 0)."""
    from likewise.train.callbacks import SamplerEpoch
    from likewise.train.checkpoint_io import check_checkpoint
    from likewise.train.monitor import CollapseMonitor, EpochTimer
    from likewise.train.run import _prepare_out, check_accelerator, resolve_precision, run_trainer
    from likewise.train.ssl_module import MethodUpdate, PretrainModule

    out = Path(out)
    tc = config.trainer
    if tc.threads:
        torch.set_num_threads(tc.threads)
    check_accelerator(config)  # type: ignore[arg-type] - reads trainer.accelerator / devices only
    ckpt = _prepare_out(config, out, resume, RESUMABLE, command="pretrain")
    pl.seed_everything(tc.seed, workers=True, verbose=False)
    data = prepare_pretrain_data(config.data)
    world = tc.devices * tc.num_nodes
    bs = config.optimizer.batch_size
    if bs > len(data.x_train) or bs % world:
        raise ValueError(
            f"optimizer.batch_size: {bs} must be at most the {len(data.x_train)} training inputs "
            f"and divisible by the {world} process(es)"
        )
    encoder = build_encoder(config, data.input_shape)
    method = build_method(config, encoder)
    if len(data.input_shape) == 3:
        # image weights in channels-last layout: the same convolutions, about 1.5x faster on a CPU
        # (NCHW batch norm backward alone took a third of a ConvNet step); undone before export
        method.to(memory_format=torch.channels_last)
    views = build_views_module(config, data.input_shape)
    module = PretrainModule(config, method, views, data.mean, data.std)
    if ckpt is not None:
        check_checkpoint(ckpt, module)

    rng = np.random.default_rng(config.data.seed)
    monitor_rows = rng.permutation(len(data.x_test))[: config.monitor.samples]
    gallery_rows = rng.permutation(len(data.x_train))[: config.monitor.gallery]
    standard = (data.x_test[monitor_rows] - data.mean) / data.std
    gallery = None
    if data.labelled:
        gallery = ((data.x_train[gallery_rows] - data.mean) / data.std, data.y_train[gallery_rows])
    monitor = CollapseMonitor(
        standard.astype(np.float32),
        data.y_test[monitor_rows] if data.labelled else None,
        gallery,
        views=getattr(views, "augmentation", views),  # one view per call (no multi-crop)
        mean=data.mean,
        std=data.std,
        every_n_epochs=config.monitor.every_n_epochs,
        k=config.monitor.k,
        collapse_std_ratio=config.monitor.collapse_std_ratio,
        seed=tc.seed,
    )
    timer = EpochTimer()
    from lightning.pytorch.loggers import CSVLogger

    loggers: list[Any] = [CSVLogger(out / "logs", name="csv")]
    try:
        from lightning.pytorch.loggers import TensorBoardLogger

        loggers.append(TensorBoardLogger(out / "logs", name="tensorboard", default_hp_metric=False))
    except ModuleNotFoundError:
        pass
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    trainer = run_trainer(
        tc,
        out,
        epochs=config.optimizer.epochs,
        callbacks=[
            timer,  # first: its epoch end comes before the monitor's
            MethodUpdate(),  # before the checkpoint: a checkpoint holds its step's update
            SamplerEpoch(),
            monitor,
        ],
        logger=loggers,
        extra_callbacks=callbacks,
        strategy="ddp" if world > 1 else "auto",
        precision=resolve_precision("auto", tc.accelerator),
    )
    if trainer.is_global_zero:
        atomic_write_text(out / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
    datamodule = _DataModule(config, data.x_train)
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt) if ckpt else None, weights_only=True)
    if not trainer.is_global_zero:
        return {}
    method = method.cpu().float().to(memory_format=torch.contiguous_format)
    return finish_pretrain(config, out, method, data, monitor, timer)


def _features(fn: Any, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    with torch.no_grad():
        parts = [fn(torch.as_tensor(x[i : i + batch_size])).float() for i in range(0, len(x), batch_size)]
    return torch.cat(parts).numpy()


def evaluate_representation(
    method: nn.Module, data: PretrainData, *, k: int = 10, seed: int = 0
) -> dict[str, Any]:
    """kNN / linear probe / effective rank of the encoder's output (and kNN of the projection)."""
    from threadpoolctl import threadpool_limits

    from likewise.evaluation import effective_rank
    from likewise.evaluation.classification import knn_accuracy, linear_probe
    from likewise.train.monitor import encode_and_project, geometry

    method.eval()
    x_tr = ((data.x_train - data.mean) / data.std).astype(np.float32)
    x_te = ((data.x_test - data.mean) / data.std).astype(np.float32)
    with torch.no_grad():
        f_tr, p_tr = (t.numpy() for t in encode_and_project(method, x_tr))
        f_te, p_te = (t.numpy() for t in encode_and_project(method, x_te))
    result: dict[str, Any] = {
        "effective_rank": effective_rank(f_te),
        "projection_effective_rank": effective_rank(p_te),
        "std_ratio": geometry(torch.as_tensor(f_te).double())["std_ratio"],
        "projection_std_ratio": geometry(torch.as_tensor(p_te).double())["std_ratio"],
        "representation_dim": int(f_te.shape[1]),
        "projection_dim": int(p_te.shape[1]),
    }
    if data.labelled:
        kk = min(k, len(f_tr))
        result["knn_accuracy"] = knn_accuracy(f_tr, data.y_train, f_te, data.y_test, k=kk, metric="cosine")
        result["projection_knn_accuracy"] = knn_accuracy(p_tr, data.y_train, p_te, data.y_test, k=kk)
        flat_tr, flat_te = x_tr.reshape(len(x_tr), -1), x_te.reshape(len(x_te), -1)
        result["raw_knn_accuracy"] = knn_accuracy(flat_tr, data.y_train, flat_te, data.y_test, k=kk)
        if len(np.unique(data.y_train)) > 1:
            with threadpool_limits(limits=1):  # multi-threaded BLAS here slows later torch work
                probe = linear_probe(f_tr, data.y_train, f_te, data.y_test, seed=seed)
            result["linear_probe_accuracy"] = probe["accuracy"]
    return result


def finish_pretrain(
    config: PretrainConfig, out: Path, method: nn.Module, data: PretrainData, monitor: Any, timer: Any
) -> dict[str, Any]:
    """Evaluate the final encoder, export it, write metrics.json and report.html."""
    from likewise.export import save_model

    result = evaluate_representation(method, data, k=config.monitor.k, seed=config.trainer.seed)
    seconds = [timer.seconds[e] for e in sorted(timer.seconds)]
    result.update(
        {
            "method": config.method.name,
            "data": config.data.dataset,
            "epochs": config.optimizer.epochs,
            "seconds_per_epoch": float(np.median(seconds)) if seconds else None,
            "train_seconds": float(np.sum(seconds)) if seconds else None,
            "n_train": int(len(data.x_train)),
            "n_test": int(len(data.x_test)),
            "collapsed": monitor.collapsed_at_end(),  # at the end; it may have recovered from a warning
            "collapse_warning_epoch": monitor.warned_epoch,
            "history": monitor.history,
        }
    )
    save_model(
        out / "model",
        method.encoder,
        mean=data.mean,
        std=data.std,
        distance="cosine",
        train_config=config.to_dict(),
        metrics={k: v for k, v in result.items() if isinstance(v, float | int)},
    )
    from likewise.train.run import _finite

    atomic_write_json(out / "metrics.json", _finite(result))
    write_pretrain_report(out / "report.html", result, method, data)
    return result


def write_pretrain_report(path: Path, result: dict[str, Any], method: nn.Module, data: PretrainData) -> None:
    """``report.html``: the metrics, the monitor's curves, a map of the test embeddings."""
    from likewise.report._figure import new_figure
    from likewise.report.embedding_map import plot_embedding_map
    from likewise.report.html import _img, render_report

    scalars = {k: v for k, v in result.items() if isinstance(v, float | int) and not isinstance(v, bool)}
    text = render_report(
        scalars,
        title=f"likewise pretrain: {result['method']} on {result['data']}",
        subtitle="metrics of the final encoder on the test split; curves of the collapse monitor",
    )
    figures = []
    history = result["history"]
    names = [
        ("std_ratio", "std x sqrt(d) of normalised outputs"),
        ("effective_rank", "effective rank (RankMe)"),
        ("alignment", "alignment of two views"),
        ("uniformity", "uniformity"),
        ("knn_accuracy", "kNN accuracy (validation sample)"),
    ]
    names = [(k, t) for k, t in names if history and k in history[0]]
    if names:
        fig = new_figure(3.2 * len(names), 2.8)
        epochs = [h["epoch"] for h in history]
        for i, (key, title) in enumerate(names):
            ax = fig.add_subplot(1, len(names), i + 1)
            ax.plot(epochs, [h[key] for h in history], label="encoder")
            if f"projection_{key}" in history[0]:
                ax.plot(epochs, [h[f"projection_{key}"] for h in history], label="projection")
                ax.legend(fontsize=7)
            ax.set_title(title, fontsize=8)
            ax.set_xlabel("epoch")
        figures.append(
            _img(
                fig,
                "The collapse monitor per epoch. A collapsed representation has std ratio near 0 and "
                "effective rank near 1 (the loss reads the projection); a useful one keeps both up while "
                "alignment falls and kNN accuracy rises.",
            )
        )
    if data.labelled:
        x_te = ((data.x_test - data.mean) / data.std).astype(np.float32)[:1000]
        emb = _features(method.encoder, x_te)
        fig = plot_embedding_map(emb, data.y_test[:1000], method="pca", max_points=1000)
        figures.append(
            _img(
                fig,
                "The test embeddings (encoder output), first two principal components; colours are labels.",
            )
        )
    if figures:
        text = text.replace("\n</body>", "\n<h2>Monitor</h2>\n" + "\n".join(figures) + "\n</body>", 1)
    atomic_write_text(path, text)


__all__ = ["build_encoder", "build_method", "evaluate_representation", "fit_pretrain", "resolve_trunk"]
