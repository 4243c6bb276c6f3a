"""``likewise pretrain``: outputs, the exported encoder, configs, bad input, exact resume after SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import yaml

from likewise.cli import main


def _signals(path, n=240, seed=0):
    g = np.random.default_rng(seed)
    t = np.linspace(0, 1, 40)
    x = np.sin(2 * np.pi * (g.integers(1, 4, n)[:, None] * t + g.random((n, 1)))) + 0.1 * g.normal(
        size=(n, 40)
    )
    np.save(path, x.astype(np.float32))
    return path


def test_method_on_mnist1d_writes_metrics_model_and_report(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(
            [
                "pretrain",
                "--method",
                "simclr",
                "--data",
                "mnist1d",
                "--epochs",
                "1",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "knn_accuracy" in printed and "simclr on mnist1d, 1 epochs" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    for key in (
        "knn_accuracy",
        "linear_probe_accuracy",
        "effective_rank",
        "projection_knn_accuracy",
        "raw_knn_accuracy",
        "seconds_per_epoch",
    ):
        assert isinstance(metrics[key], float), key
    assert metrics["n_train"] == 4000 and metrics["n_test"] == 1000 and metrics["representation_dim"] == 125
    assert len(metrics["history"]) == 1 and "projection_std_ratio" in metrics["history"][0]
    assert 1 <= metrics["effective_rank"] <= 125
    report = (out / "report.html").read_text()
    assert "<h2>Monitor</h2>" in report and "knn_accuracy" in report

    # the exported encoder, without the training code, reproduces the reported kNN accuracy
    import likewise
    from likewise.evaluation.classification import knn_accuracy
    from likewise.train.pretrain_config import PretrainDataConfig
    from likewise.train.pretrain_data import prepare_pretrain_data

    data = prepare_pretrain_data(PretrainDataConfig(dataset="mnist1d", standardize=False))
    model = likewise.load(out / "model")
    tr, te = model.embed(data.x_train), model.embed(data.x_test)
    assert tr.shape == (4000, 125)
    assert knn_accuracy(tr, data.y_train, te, data.y_test, k=10) == pytest.approx(metrics["knn_accuracy"])
    np.save(tmp_path / "x.npy", data.x_test[:7])
    assert main(["embed", str(out / "model"), str(tmp_path / "x.npy"), "--out", str(tmp_path / "e.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), te[:7], rtol=1e-5, atol=1e-6)


def test_config_file_with_unlabelled_array(tmp_path):
    config = {
        "data": {"dataset": str(_signals(tmp_path / "s.npy"))},
        "method": {"name": "vicreg", "hidden_dim": 32, "out_dim": 8},
        "optimizer": {"epochs": 2, "batch_size": 64},
        "trainer": {"progress_bar": False},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["pretrain", str(path), "--out", str(tmp_path / "out")]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert "knn_accuracy" not in metrics and metrics["effective_rank"] > 1  # no labels: geometry only
    assert metrics["n_train"] == 192 and len(metrics["history"]) == 2
    saved = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert saved["method"] == {"name": "vicreg", "hidden_dim": 32, "out_dim": 8}


@pytest.mark.parametrize(
    ("args", "config", "message"),
    [
        (["--method", "simclr"], None, "give --method NAME and --data DATA"),
        (["--method", "simclr", "--data", "mnist1d", "--epochs", "0"], None, "--epochs must be >= 1"),
        ([], {"optimizer": {"lrr": 1}}, "optimizer.lrr: unknown key"),
        ([], {"method": {"name": "simclr", "temp": 1}}, "method.temp: unknown parameter of SimCLR"),
        ([], {"method": {"name": "nope"}}, "method.name: unknown method 'nope'"),
        ([], {"method": {"name": "simclr", "encoder_dim": 3}}, "method.encoder_dim: set by the run"),
        ([], {"data": {"dataset": "missing.npy"}}, "no such file: missing.npy"),
        (
            [],
            {"data": {"dataset": "SIGNALS"}, "optimizer": {"batch_size": 1000}},
            "optimizer.batch_size: 1000 must be",
        ),
        (
            [],
            {"method": {"name": "swav", "sinkhorn_iterations": 0}},
            "method.sinkhorn_iterations: must be a positive integer",
        ),
    ],
)
def test_bad_input_is_one_line_and_status_2(tmp_path, capsys, monkeypatch, args, config, message):
    argv = ["pretrain", *args, "--out", str(tmp_path / "o"), "--no-progress"]
    if config is not None:
        if config.get("data", {}).get("dataset") == "SIGNALS":
            config["data"]["dataset"] = str(_signals(tmp_path / "s.npy"))
        path = tmp_path / "c.yaml"
        path.write_text(yaml.safe_dump({"optimizer": {"epochs": 1}, **config}))
        argv.insert(1, str(path))
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_unknown_method_and_both_sources_are_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["pretrain", "--method", "nope", "--data", "mnist1d"])
    assert exc.value.code == 2
    (tmp_path / "c.yaml").write_text("{}")
    assert main(["pretrain", str(tmp_path / "c.yaml"), "--method", "simclr"]) == 2
    assert "not both" in capsys.readouterr().err


KILLER = textwrap.dedent(
    """
    import os, signal, sys
    import lightning.pytorch as pl
    from likewise.train.pretrain import fit_pretrain
    from likewise.train.pretrain_config import load_pretrain_config

    class KillAt(pl.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == int(sys.argv[3]):
                os.kill(os.getpid(), signal.SIGKILL)

    fit_pretrain(load_pretrain_config(sys.argv[1]), sys.argv[2], callbacks=[KillAt()])
    """
)


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


@pytest.mark.slow
@pytest.mark.parametrize("method", ["moco", "dino"])
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path, method):
    """Weights, optimiser, momentum teacher, queue / centre, RNG (views) and the monitor all resume."""
    kwargs = {
        "moco": {"queue_size": 64, "hidden_dim": 16, "out_dim": 8},
        "dino": {"hidden_dim": 16, "bottleneck_dim": 8, "out_dim": 32},
    }
    config = {
        "data": {"dataset": str(_signals(tmp_path / "s.npy", n=200))},
        "encoder": {"trunk": "conv1d", "trunk_kwargs": {"channels": 8}},
        "method": {"name": method, **kwargs[method]},
        "views": {"local_crops": 2 if method == "dino" else 0},
        "optimizer": {"epochs": 3, "batch_size": 16},  # 10 steps per epoch
        "monitor": {"samples": 40, "gallery": 40},
        "trainer": {"checkpoint_every_n_steps": 4, "progress_bar": False, "threads": 1, "seed": 3},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    cli = [sys.executable, "-m", "likewise", "pretrain", str(path)]
    done = subprocess.run(
        [*cli, "--out", str(tmp_path / "a")], capture_output=True, text=True, env=_env(), timeout=600
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (tmp_path / "k.py").write_text(KILLER)
    kill_step = 17  # in the second epoch; the last checkpoint (step 16) is older
    killed = subprocess.run(
        [sys.executable, str(tmp_path / "k.py"), str(path), str(tmp_path / "b"), str(kill_step)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not (tmp_path / "b" / "metrics.json").exists()
    saved = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 16
    resumed = subprocess.run(
        [*cli, "--out", str(tmp_path / "b"), "--resume"],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert a["history"] == b["history"] and len(a["history"]) == 3
    assert a["effective_rank"] == b["effective_rank"]
    assert (tmp_path / "a" / "model" / "model.safetensors").read_bytes() == (
        tmp_path / "b" / "model" / "model.safetensors"
    ).read_bytes()
    last_a = torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    last_b = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    state = {"moco": ("queue._emb", "teacher_encoder"), "dino": ("criterion.center", "teacher_encoder")}[
        method
    ]
    for part in state:
        assert any(part in k for k in last_a), part
    for k in last_a:
        assert torch.equal(last_a[k], last_b[k]), k
