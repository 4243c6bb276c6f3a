"""A training run supervised by a pairs (or triplets) file instead of class labels.

``data.pairs: FILE`` (``a,b,similar``) or ``data.triplets: FILE`` (``a,p,n``) over the rows of
``data.dataset`` (a features file, needing no labels file; an image folder, whose pairs name
images by their path relative to the folder; or a bundled set, whose labels are not used).
Batches hold whole pairs / triplets (:class:`likewise.pair_sampling.PairBatchSampler`);
each batch's known pairs reach the loss as pytorch-metric-learning's ``indices_tuple``,
every other pair of the batch is unknown. ``eval.pairs: FILE``: held-out pairs, scored by
the cosine (``eval.distance``) of their embeddings at every evaluation and at the end:
``roc_auc``, ``average_precision``, ``eer``, ``tar_at_far_1e-03`` in ``metrics.json``
(``heldout_pairs``; ``raw_features_pairs``: the same pairs scored on the standardised
inputs, the baseline to beat), their curves in ``report.html``.

There is no model selection (the held-out pairs are not used to pick an epoch): the
exported model has the last epoch's weights. One process (``trainer.devices: 1``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import yaml

from likewise.data import BUNDLED, load_bundled, load_images
from likewise.data.pairs import PairRelation, read_pairs, read_triplets, triplets_as_pairs
from likewise.io import atomic_write_json, atomic_write_text
from likewise.train.callbacks import embed_array
from likewise.train.config import TrainConfig
from likewise.train.data import input_statistics

#: the verification figures reported for held-out pairs
PAIR_METRICS = ("roc_auc", "average_precision", "eer", "tar_at_far_1e-03")


def load_items(config: TrainConfig) -> tuple[np.ndarray, list[str] | None]:
    """The inputs of ``data.dataset`` without labels, and the image paths (image folders)."""
    from likewise.io import load_array, split_key

    dc = config.data
    text = str(dc.dataset)
    if text in BUNDLED:
        return load_bundled(text).x, None
    path, key = split_key(text)
    if Path(path).is_dir():
        x, files, _ = load_images(path, image_size=dc.image_size, grayscale=dc.grayscale)
        return x, files
    if not Path(path).exists():
        raise FileNotFoundError(2, "No such file or directory", path)
    x = np.load(path, allow_pickle=False) if Path(path).suffix.lower() == ".npy" else load_array(path, key)
    if x.ndim not in (2, 4):
        raise ValueError(f"data.dataset: {text}: features must be 2-D [N, F] (or 4-D images), got {x.ndim}-D")
    x = np.asarray(x, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"data.dataset: {text} contains NaN or inf")
    return x, None


def pair_scores(emb: np.ndarray, a: np.ndarray, b: np.ndarray, distance: str) -> np.ndarray:
    """Similarity of the pairs ``(a[k], b[k])`` of ``emb [N, D]`` (larger = more similar)."""
    u, v = emb[a].astype(np.float64), emb[b].astype(np.float64)
    if distance == "cosine":
        u = u / np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
        v = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    if distance in ("cosine", "dot"):
        return (u * v).sum(1)
    d2 = ((u - v) ** 2).sum(1)
    return -(d2 if distance == "squared_euclidean" else np.sqrt(d2))


def verification(scores: np.ndarray, similar: np.ndarray) -> dict[str, float]:
    """The reported verification figures of held-out pair scores."""
    from likewise.evaluation import verification_metrics

    m = verification_metrics(scores, similar, far_targets=(1e-3,))
    return {k: float(m[k]) for k in PAIR_METRICS}


class PairEvaluation(pl.Callback):
    """Verification of the held-out pairs every ``every_n_epochs`` (history only, no selection)."""

    def __init__(
        self, x: np.ndarray, pairs: tuple[np.ndarray, np.ndarray, np.ndarray] | None, config: TrainConfig
    ):
        self.x, self.pairs, self.config = x, pairs, config
        self.history: list[dict[str, Any]] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        ec = self.config.eval
        epoch = trainer.current_epoch + 1
        if self.pairs is None or epoch % ec.every_n_epochs:
            return
        a, b, s = self.pairs
        emb = embed_array(module.model, self.x, ec.batch_size, module.device)
        m = verification(pair_scores(emb, a, b, ec.distance), s)
        self.history.append({"epoch": epoch, **m})
        for k, v in m.items():
            module.log(f"heldout_pairs/{k}", v, on_epoch=True)


def _read_supervision(config: TrainConfig, n: int, names: list[str] | None) -> dict[str, Any]:
    dc = config.data
    if dc.triplets is not None:
        trip = read_triplets(dc.triplets, n, names)
        a, b, s = triplets_as_pairs(*trip)
        source = dc.triplets
    else:
        assert dc.pairs is not None
        trip = None
        a, b, s = read_pairs(dc.pairs, n, names)
        source = dc.pairs
    relation = PairRelation.from_pairs(n, a, b, s, closure=dc.pairs_closure, source=str(source))
    return {"a": a, "b": b, "similar": s, "triplets": trip, "relation": relation}


def fit_pairs(
    config: TrainConfig, out: Path, *, resume: bool = False, callbacks: Sequence[pl.Callback] = ()
) -> dict[str, Any]:
    """Train from a pairs / triplets file, write the model, ``metrics.json`` and ``report.html``."""
    from likewise.train.module import MetricLearningModule
    from likewise.train.run import (
        _DataModule,
        _prepare_out,
        build_embedding_model,
        build_loss,
        check_accelerator,
        resolve_precision,
        run_trainer,
    )

    tc = config.trainer
    if tc.devices * tc.num_nodes > 1:
        raise ValueError("data.pairs: training from pairs runs in one process (trainer.devices: 1)")
    if config.memory is not None or config.augment is not None:
        raise ValueError("data.pairs: memory and augment are not available with pairs supervision")
    if tc.threads:
        torch.set_num_threads(tc.threads)
    check_accelerator(config)
    loss = build_loss(config, 2)
    if not getattr(loss, "accepts_indices_tuple", False):
        raise ValueError(f"loss.name: {config.loss.name} cannot learn from pairs (it needs class labels)")
    x, names = load_items(config)
    n = len(x)
    sup = _read_supervision(config, n, names)
    held = None
    if config.eval.pairs is not None:
        held = read_pairs(config.eval.pairs, n, names)
        if held[2].all() or not held[2].any():
            raise ValueError(f"eval.pairs: {config.eval.pairs} needs similar and dissimilar pairs")
    from likewise.pair_sampling import PairBatchSampler

    try:
        inner = PairBatchSampler(
            n,
            sup["a"],
            sup["b"],
            sup["similar"],
            config.sampler.batch_size,
            triplets=sup["triplets"],
            seed=tc.seed,
        )
    except ValueError as exc:
        raise ValueError(str(exc)) from None
    ckpt = _prepare_out(config, out, resume)
    from likewise.train.checkpoint_io import check_checkpoint

    pl.seed_everything(tc.seed, workers=True, verbose=False)
    used = np.unique(np.concatenate([sup["a"], sup["b"]]))
    mean, std = input_statistics(x[used], config.data.standardize)
    xs = (x - mean) / std
    model = build_embedding_model(config, tuple(x.shape[1:]))
    module = MetricLearningModule(config, model, loss, mean, std)
    module.relation = sup["relation"]
    if ckpt is not None:
        check_checkpoint(ckpt, module)

    class _PairData(_DataModule):
        def __init__(self) -> None:
            pl.LightningDataModule.__init__(self)
            from likewise.data import ArrayDataset

            self.config = config
            self.dataset = ArrayDataset(x, np.arange(n))
            self.batch_sampler = None

        def _inner_sampler(self, rank: int, world: int) -> Any:
            return inner

    evaluation = PairEvaluation(xs, held, config)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    from lightning.pytorch.loggers import CSVLogger

    from likewise.train.callbacks import SamplerEpoch

    trainer = run_trainer(
        tc,
        out,
        epochs=config.optimizer.epochs,
        callbacks=[SamplerEpoch(), evaluation],
        logger=[CSVLogger(out / "logs", name="csv")],
        extra_callbacks=callbacks,
        devices=1,
        precision=resolve_precision(tc.precision, tc.accelerator),
    )
    atomic_write_text(out / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
    trainer.fit(module, datamodule=_PairData(), ckpt_path=str(ckpt) if ckpt else None, weights_only=True)
    return finish_pairs(config, out, module.model, xs, mean, std, sup, held, evaluation.history)


def finish_pairs(
    config: TrainConfig,
    out: Path,
    model: torch.nn.Module,
    xs: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    sup: dict[str, Any],
    held: tuple[np.ndarray, np.ndarray, np.ndarray] | None,
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    """Evaluate the held-out pairs, export the model, write metrics.json and report.html."""
    from likewise.export import save_model
    from likewise.report import write_report

    model = model.cpu().float()
    ec = config.eval
    result: dict[str, Any] = {
        "supervision": "triplets" if config.data.triplets is not None else "pairs",
        "n_items": len(xs),
        "n_train_pairs": int(len(sup["a"])),
        "n_train_similar": int(sup["similar"].sum()),
        "closure": config.data.pairs_closure,
        "history": history,
    }
    scores = None
    if held is not None:
        a, b, s = held
        emb = embed_array(model, xs, ec.batch_size, torch.device("cpu"))
        scores = pair_scores(emb, a, b, ec.distance)
        flat = xs.reshape(len(xs), -1)
        result["heldout_pairs"] = verification(scores, s)
        result["raw_features_pairs"] = verification(pair_scores(flat, a, b, ec.distance), s)
        result["n_heldout_pairs"] = int(len(a))
    save_model(
        out / "model",
        model,
        mean=mean,
        std=std,
        distance=ec.distance,
        train_config=config.to_dict(),
        metrics=result.get("heldout_pairs"),
    )
    atomic_write_json(out / "metrics.json", result)
    shown = {k: result[k] for k in ("heldout_pairs", "raw_features_pairs") if k in result}
    options: dict[str, Any] = {"title": "likewise train: held-out pairs"}
    if scores is not None:
        options.update(scores=scores, is_same=held[2])
    write_report(out / "report.html", shown or {"n_train_pairs": result["n_train_pairs"]}, **options)
    if held is None:
        print("likewise train: no eval.pairs, so no held-out verification", file=sys.stderr)
    return result


__all__ = ["PAIR_METRICS", "fit_pairs", "load_items", "pair_scores", "verification"]
