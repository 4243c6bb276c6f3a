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


def test_sampler_that_does_not_fit_the_data_fails_before_writing(capsys, tmp_path):
    """mnist5k's default split trains on 5 classes: 8 classes per batch cannot work."""
    cfg = _write(tmp_path / "c.yaml", {"sampler": {"classes_per_batch": 8}})
    _fails(
        capsys,
        ["train", str(cfg), "--out", str(tmp_path / "o")],
        "sampler.classes_per_batch: 8 but the training data hold 5 classes",
    )
    assert not (tmp_path / "o").exists()


def test_data_errors_name_their_config_key(capsys, tmp_path):
    cfg = _write(tmp_path / "c.yaml", {**TINY, "data": {"dataset": "digits", "train_classes": [11]}})
    _fails(capsys, ["train", str(cfg), "--out", str(tmp_path / "o")], "data.train_classes: [11] do not occur")
    assert not (tmp_path / "o").exists()


def test_missing_gpu_is_a_config_error(capsys, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = _write(tmp_path / "c.yaml", {**TINY, "trainer": {"accelerator": "gpu"}})
    _fails(
        capsys, ["train", str(cfg), "--out", str(tmp_path / "o")], "trainer.accelerator: gpu but no CUDA GPU"
    )
    assert not (tmp_path / "o").exists()


def test_lightning_misconfiguration_is_one_line(capsys, tmp_path, monkeypatch):
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    import likewise.commands.train as train_command

    def misconfigured(args):
        raise MisconfigurationException("`Trainer(strategy='ddp')` is not compatible\nwith this setting")

    monkeypatch.setattr(train_command, "run", misconfigured)
    _fails(capsys, ["train", str(tmp_path / "c.yaml")], "is not compatible")

    def bug(args):
        raise RuntimeError("a bug, not bad input")

    monkeypatch.setattr(train_command, "run", bug)
    with pytest.raises(RuntimeError):  # other errors are not hidden
        main(["train", str(tmp_path / "c.yaml")])


def _image_folder(root, classes=4, per_class=10):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class_{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(40 + 50 * c, 20, (8, 8)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"class_{c}" / f"{i:02d}.png")
    return root


@pytest.mark.slow
def test_image_folder_run_reports_skipped_files_and_embed_takes_a_plain_folder(capsys, tmp_path, monkeypatch):
    import lightning.pytorch.loggers as loggers

    def no_tensorboard(*args, **kwargs):
        raise ModuleNotFoundError("No module named 'tensorboard'")

    monkeypatch.setattr(loggers, "TensorBoardLogger", no_tensorboard)
    images = _image_folder(tmp_path / "images")
    (images / "class_1" / "broken.png").write_bytes(b"not a png")
    (images / "class_3" / "zz_cut.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    config = {
        **TINY,
        "data": {"dataset": str(images), "grayscale": True, "train_classes": [0, 1], "seed": 0},
        "sampler": {"samples_per_class": 4},
        "eval": {"validation_fraction": 0.2},
    }
    cfg = _write(tmp_path / "c.yaml", config)
    out = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "skipped 2 unreadable inputs: class_1/broken.png, class_3/zz_cut.png" in err
    assert err.count("skipped 2") == 1
    assert "tensorboard is not installed" in err
    assert not (out / "logs" / "tensorboard").exists()
    metrics = json.loads((out / "metrics.json").read_text())
    assert [s["path"] for s in metrics["skipped"]] == [
        str(images / "class_1" / "broken.png"),
        str(images / "class_3" / "zz_cut.png"),
    ]
    assert metrics["selected_on"] == "validation" and metrics["n_validation"] == 4
    assert metrics["n_train"] == 16 and metrics["n_heldout"] == 20

    # embed: a plain folder of images (no class sub-folders), with an unreadable one
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in ("b.png", "a.png"):
        (plain / name).write_bytes((images / "class_2" / "00.png").read_bytes())
    (plain / "c.png").write_bytes(b"junk")
    emb_path = tmp_path / "E.npy"
    assert main(["embed", str(out / "model"), str(plain), "--out", str(emb_path)]) == 0
    captured = capsys.readouterr()
    assert "skipped 1 unreadable image: c.png" in captured.err
    assert (tmp_path / "E.files.txt").read_text() == "a.png\nb.png\n"
    emb = np.load(emb_path)
    assert emb.shape[0] == 2
    np.testing.assert_allclose(emb[0], emb[1])  # the same image twice
    # a class-structured folder embeds too, every image under it, in path order
    assert main(["embed", str(out / "model"), str(images), "--out", str(emb_path)]) == 0
    files = (tmp_path / "E.files.txt").read_text().splitlines()
    assert len(files) == len(np.load(emb_path)) == 40 and files[0] == "class_0/00.png"


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
    from likewise.sampling import ClassBalancedBatchSampler
    from likewise.train.config import validate_config
    from likewise.train.data import prepare_data

    config = validate_config(TINY)
    run = prepare_data(config.data, validation_fraction=config.eval.validation_fraction)
    assert ckpt["global_step"] == len(ClassBalancedBatchSampler(run.train_label_ids, 5, 8))
    # on CPU BatchNorm is per process (no SyncBatchNorm): the trainer says so at the start
    assert done.stderr.count("BatchNorm statistics are per process on CPU") == 1
