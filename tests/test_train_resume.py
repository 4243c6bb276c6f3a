"""Exact resume: a run killed with SIGKILL mid-epoch and resumed ends exactly like an uninterrupted one.

The run uses every piece of state a resume must restore: weights, AdamW moments, a
one-cycle schedule, a cross-batch memory queue, the random augmentation stream, the
held-out evaluation history / best model, and the sampler's position in the epoch.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

CONFIG = {
    "data": {"dataset": "digits", "split": "class_disjoint", "train_classes": [0, 1, 2, 3, 4], "seed": 0},
    "model": {"trunk": "mlp", "embedding_dim": 8, "trunk_kwargs": {"hidden": [32]}},
    "loss": {"name": "MultiSimilarityLoss"},
    "miner": {"name": "MultiSimilarityMiner"},
    "memory": {"size": 160},
    "sampler": {"classes_per_batch": 5, "samples_per_class": 8},
    "augment": {"views": 2, "degrees": 10, "scale": 0.1, "translate": 0.1},
    "optimizer": {"name": "adamw", "lr": 0.003, "epochs": 3, "scheduler": "onecycle"},
    "trainer": {"checkpoint_every_n_steps": 4, "progress_bar": False, "threads": 1, "seed": 7},
    "export": {"index": False, "matcher": False},
}

KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import lightning.pytorch as pl
    from likewise.train import fit, load_config

    class KillAt(pl.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == int(sys.argv[3]):
                os.kill(os.getpid(), signal.SIGKILL)

    fit(load_config(sys.argv[1]), sys.argv[2], callbacks=[KillAt()])
    """
)


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def _train(config: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "likewise", "train", str(config), "--out", str(out), *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600)


def _steps_per_epoch() -> int:
    """Batches per epoch of the samples trained on (the validation split is not)."""
    from likewise.sampling import ClassBalancedBatchSampler
    from likewise.train.config import validate_config
    from likewise.train.data import prepare_data

    config = validate_config(CONFIG)
    run = prepare_data(config.data, validation_fraction=config.eval.validation_fraction)
    assert run.validation is not None and len(run.validation) > 0
    return len(ClassBalancedBatchSampler(run.train_label_ids, 5, 8))


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
    per_epoch = _steps_per_epoch()
    assert per_epoch > 9
    kill_step = per_epoch + 7  # in the second epoch, after its first evaluation
    kill_step += kill_step % 4 == 0  # not on a checkpoint step: the last checkpoint is older

    done = _train(config, tmp_path / "a")
    assert done.returncode == 0, done.stderr[-2000:]

    script = tmp_path / "killer.py"
    script.write_text(KILLER, encoding="utf-8")
    killed = subprocess.run(
        [sys.executable, str(script), str(config), str(tmp_path / "b"), str(kill_step)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (tmp_path / "b" / "metrics.json").exists()
    ckpt = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)
    saved_step = ckpt["global_step"]
    assert saved_step < kill_step and saved_step % per_epoch != 0, "the checkpoint must be mid-epoch"
    assert saved_step // per_epoch == 1

    resumed = _train(config, tmp_path / "b", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    a = yaml.safe_load((tmp_path / "a" / "metrics.json").read_text())
    b = yaml.safe_load((tmp_path / "b" / "metrics.json").read_text())
    assert a["selected_on"] == b["selected_on"] == "validation"
    assert a["heldout"] == b["heldout"] and a["validation"] == b["validation"]
    assert a["history"] == b["history"] and len(a["history"]) == 3
    assert all({"validation", "heldout"} <= set(h) for h in a["history"])
    assert a["best_epoch"] == b["best_epoch"]
    weights_a = (tmp_path / "a" / "model" / "model.safetensors").read_bytes()
    assert weights_a == (tmp_path / "b" / "model" / "model.safetensors").read_bytes()
    # the queue of the cross-batch memory is part of the state and ends identical
    last_a = torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    last_b = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    queue = [k for k in last_a if "queue" in k]
    assert queue
    for k in last_a:
        assert torch.equal(last_a[k], last_b[k]), k
    assert np.isfinite(a["heldout"]["map_at_r"])
