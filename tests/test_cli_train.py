"""The train / embed / demo commands: outputs, and bad input as one stderr line with exit status 2."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from likewise.cli import main

TINY = {
    "data": {"dataset": "digits", "split": "class_disjoint", "train_classes": [0, 1, 2, 3, 4]},
    "model": {"trunk": "mlp", "embedding_dim": 8, "trunk_kwargs": {"hidden": [32]}},
    "loss": {"name": "ContrastiveLoss"},
    "sampler": {"classes_per_batch": 5, "samples_per_class": 8},
    "optimizer": {"lr": 0.003, "epochs": 1},
    "trainer": {"progress_bar": False, "threads": 1, "checkpoint_every_n_steps": 10},
}


def _write(path, data):
    path.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data, encoding="utf-8")
    return path


def _fails(capsys, argv, expected):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert expected in err, err


def test_missing_config(capsys, tmp_path):
    _fails(capsys, ["train", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")], "nope.yaml")


def test_malformed_config(capsys, tmp_path):
    cfg = _write(tmp_path / "bad.yaml", "loss: {name: ContrastiveLoss\n  optimizer: [1,\n")
    _fails(capsys, ["train", str(cfg), "--out", str(tmp_path / "o")], "malformed YAML")


def test_unknown_loss_name(capsys, tmp_path):
    cfg = _write(tmp_path / "c.yaml", {**TINY, "loss": {"name": "TriplettLoss"}})
    _fails(
        capsys, ["train", str(cfg), "--out", str(tmp_path / "o")], "loss.name: unknown loss 'TriplettLoss'"
    )


def test_bad_value_names_its_path(capsys, tmp_path):
    cfg = _write(tmp_path / "c.yaml", {**TINY, "optimizer": {"lr": -1}})
    _fails(capsys, ["train", str(cfg), "--out", str(tmp_path / "o")], "optimizer.lr: must be > 0")


def test_nonexistent_data_path(capsys, tmp_path):
    cfg = _write(tmp_path / "c.yaml", {**TINY, "data": {"dataset": str(tmp_path / "no_such_folder")}})
    _fails(capsys, ["train", str(cfg), "--out", str(tmp_path / "o")], "no_such_folder")
    assert not (tmp_path / "o" / "checkpoints").exists()


def test_embed_bad_model_dir(capsys, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 64), np.float32))
    _fails(
        capsys,
        ["embed", str(tmp_path / "none"), str(tmp_path / "x.npy"), "--out", str(tmp_path / "e.npy")],
        "none",
    )


@pytest.mark.slow
def test_train_then_embed_and_rerun_rules(capsys, tmp_path):
    cfg = _write(tmp_path / "c.yaml", TINY)
    out = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "map_at_r" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["heldout_classes"] == ["5", "6", "7", "8", "9"]
    assert 0 < metrics["heldout"]["map_at_r"] <= 1
    assert (out / "config.yaml").exists() and (out / "checkpoints" / "last.ckpt").exists()
    assert list((out / "logs" / "csv").glob("version_*/metrics.csv"))
    assert list((out / "logs" / "tensorboard").glob("version_*/events.*"))
    assert (out / "model" / "matcher" / "matcher.json").exists()

    from sklearn.datasets import load_digits

    from likewise.export import load

    x = (load_digits().images / 16.0).astype(np.float32)[:20, None]
    np.save(tmp_path / "x.npy", x)
    assert main(["embed", str(out / "model"), str(tmp_path / "x.npy"), "--out", str(tmp_path / "e.npy")]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "e.npy"), load(out / "model").embed(x))
    capsys.readouterr()
    _fails(
        capsys,
        ["embed", str(out / "model"), str(tmp_path / "x.npy"), "--out", str(tmp_path / "e.txt")],
        ".npy",
    )
    np.save(tmp_path / "wrong.npy", np.zeros((3, 5), np.float32))
    _fails(
        capsys,
        ["embed", str(out / "model"), str(tmp_path / "wrong.npy"), "--out", str(tmp_path / "e.npy")],
        "inputs must have shape",
    )

    # an existing run is not overwritten; --resume with another config is refused
    _fails(capsys, ["train", str(cfg), "--out", str(out)], "--resume")
    other = _write(tmp_path / "other.yaml", {**TINY, "optimizer": {"lr": 0.1, "epochs": 1}})
    _fails(capsys, ["train", str(other), "--out", str(out), "--resume"], "config differs")
    # resuming a finished run changes nothing
    before = (out / "metrics.json").read_text()
    assert main(["train", str(cfg), "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "metrics.json").read_text())["heldout"] == json.loads(before)["heldout"]


@pytest.mark.slow
def test_two_process_ddp_training_on_cpu(tmp_path):
    """`--devices 2` runs DDP with gloo (the launcher re-runs the command per rank); rank 0 writes."""
    import os
    import subprocess
    import sys

    cfg = _write(tmp_path / "c.yaml", {**TINY, "loss": {"name": "SupConLoss", "temperature": 0.2}})
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, "-m", "likewise", "train", str(cfg), "--out", str(out), "--devices", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("map_at_r") == 1  # only rank 0 reports
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 < metrics["heldout"]["map_at_r"] <= 1
    ckpt = __import__("torch").load(out / "checkpoints" / "last.ckpt", weights_only=True)
    # each rank takes half of every global batch: the step count is that of one process
    from likewise.data import class_disjoint_split, load_data
    from likewise.sampling import ClassBalancedBatchSampler

    y = load_data("digits").y
    train, _ = class_disjoint_split(y, [0, 1, 2, 3, 4])
    assert ckpt["global_step"] == len(ClassBalancedBatchSampler(y[train], 5, 8))
