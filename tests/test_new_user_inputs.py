"""What a new user tripped on (issue 11, sections 3-4): configs, CLI, matcher, index, image scales.

Each family ends in one clear line (CLI: stderr, exit 2, no traceback) or a correct, finite
result. The bad files are written by the tests themselves.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
import yaml
from tests.test_cli_train import TINY

from likewise import Index, Matcher
from likewise.cli import main
from likewise.export import load, save_model
from likewise.models import build_model


def _fails(capsys, argv, expected):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err, captured.err
    assert expected in captured.err, captured.err
    return captured.err


# ----------------------------------------------------------------------------- configs


@pytest.mark.parametrize(
    "text, key, line",
    [
        ("data:\n  dataset: digits\ndata:\n  dataset: mnist5k\n", "data", 1),
        ("optimizer:\n  lr: 0.1\n  epochs: 2\n  lr: 0.001\n", "lr", 2),
        ("loss: {name: ContrastiveLoss, name: TripletMarginLoss}\n", "name", 1),
    ],
)
def test_duplicate_yaml_keys_are_refused(tmp_path, capsys, text, key, line):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    _fails(
        capsys,
        ["train", str(cfg), "--out", str(tmp_path / "o")],
        f"duplicate key '{key}' (first on line {line})",
    )
    assert not (tmp_path / "o").exists()


def test_a_folder_as_config(tmp_path, capsys):
    _fails(
        capsys, ["train", str(tmp_path), "--out", str(tmp_path / "o")], "is a folder; expected a YAML config"
    )


def test_text_named_npy(tmp_path, capsys):
    fake = tmp_path / "x.npy"
    fake.write_text("0.1,0.2\n0.3,0.4\n")
    labels = tmp_path / "y.npy"
    np.save(labels, np.array([0, 1]))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "data": {"dataset": str(fake), "labels": str(labels)}}))
    err = _fails(capsys, ["train", str(cfg), "--out", str(tmp_path / "o")], "is not a .npy file")
    assert "allow_pickle" not in err
    model = save_model(
        tmp_path / "m", build_model("mlp", (2,), embedding_dim=2, trunk_kwargs={"hidden": [4]})
    )
    err = _fails(
        capsys, ["embed", str(model), str(fake), "--out", str(tmp_path / "e.npy")], "is not a .npy file"
    )
    assert "allow_pickle" not in err


def test_diverging_training_says_where_and_what_to_try(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "optimizer": {"lr": 1e30, "epochs": 2}}))
    err = _fails(
        capsys, ["train", str(cfg), "--out", str(tmp_path / "o")], "training diverged at epoch 0, step"
    )
    assert "optimizer.lr = 1e+30" in err and "lower optimizer.lr" in err


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One small training run with the progress bar on and --epochs overriding the config."""
    import contextlib
    import io

    root = tmp_path_factory.mktemp("run")
    cfg = root / "c.yaml"
    config = {
        **TINY,
        "optimizer": {"lr": 0.003, "epochs": 5},
        "trainer": {**TINY["trainer"], "progress_bar": True},
    }
    cfg.write_text(yaml.safe_dump(config))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["train", str(cfg), "--out", str(root / "o"), "--epochs", "1"])
    assert code == 0, err.getvalue()
    return root / "o", out.getvalue(), err.getvalue()


def test_epochs_override(run, tmp_path, capsys):
    out, _, _ = run
    assert yaml.safe_load((out / "config.yaml").read_text())["optimizer"]["epochs"] == 1
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    _fails(
        capsys, ["train", str(cfg), "--out", str(tmp_path / "o"), "--epochs", "0"], "--epochs must be >= 1"
    )


def test_progress_bar_is_on_stderr(run):
    _, stdout, stderr = run
    assert "Epoch 0" in stderr
    assert "Epoch" not in stdout and "\r" not in stdout and "it/s" not in stdout
    assert stdout.startswith("held-out classes")


def test_counts_stay_integers(run):
    out, _, _ = run
    text = (out / "metrics.json").read_text()
    metrics = json.loads(text)
    assert isinstance(metrics["heldout"]["n_queries"], int)
    assert isinstance(metrics["matching"]["queries"]["n_queries"], int)
    from likewise.report.html import format_value

    assert format_value(metrics["heldout"]["n_queries"]) == f"{metrics['heldout']['n_queries']:,}"


# ----------------------------------------------------------------------------- matcher


def _gallery(n_per=5, classes=4, d=6, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((classes, d)) * 4
    y = np.repeat(np.arange(classes), n_per)
    return (centres[y] + rng.standard_normal((len(y), d))).astype(np.float32), y


def test_matcher_calibration_needs_two_trials():
    x, y = _gallery()
    index = Index(6)
    index.add(x, labels=y)
    with pytest.raises(ValueError, match="needs at least 2 validation embeddings, got 1"):
        Matcher.calibrated(index, x[:1] + 0.01, y[:1])


def test_matcher_warns_on_an_infinite_threshold():
    x, y = _gallery()
    index = Index(6)
    index.add(x, labels=y)
    wrong = (y[:6] + 1) % 4  # every validation label disagrees with its nearest neighbour
    with pytest.warns(UserWarning, match="the calibrated threshold is inf"):
        matcher = Matcher.calibrated(index, x[:6] + 0.01, wrong)
    assert matcher.threshold == np.inf


def test_matcher_evaluate_says_when_far_cannot_be_measured():
    x, y = _gallery()
    index = Index(6)
    index.add(x, labels=y)
    matcher = Matcher(index, threshold=0.5)
    with pytest.warns(UserWarning, match="no unknown queries were given.*false_accept_rate"):
        result = matcher.evaluate(x, y)
    assert np.isnan(result["false_accept_rate"]) and result["n_unknown"] == 0
    with pytest.warns(UserWarning, match="no known queries were given"):
        matcher.evaluate(x, y + 10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        matcher.evaluate(x, np.where(y == 0, 10, y))  # both kinds: no warning


# ----------------------------------------------------------------------------- index values


def test_index_refuses_values_whose_scores_overflow_float32():
    x, _ = _gallery()
    for metric in ("euclidean", "dot"):
        index = Index(6, metric=metric)
        with pytest.raises(ValueError, match="overflow float32 above"):
            index.add(x * 1e30)
        index.add(x * 1e10)  # large but safe: finite scores
        scores, _ = index.search(x * 1e10, 3)
        assert np.isfinite(scores).all()


def test_cosine_index_on_huge_values_equals_small_ones():
    x, y = _gallery()
    big, small = Index(6), Index(6)
    big.add(x * 1e30, labels=y)
    small.add(x, labels=y)
    s_big, i_big = big.search(x * 1e30, 4)
    s_small, i_small = small.search(x, 4)
    np.testing.assert_array_equal(i_big, i_small)
    np.testing.assert_allclose(s_big, s_small, atol=1e-6)


# ----------------------------------------------------------------------------- uint8 images


def test_uint8_images_are_scaled_like_image_folders(tmp_path, capsys):
    model = build_model("convnet", (1, 8, 8), embedding_dim=4, trunk_kwargs={"widths": [4, 8]}).eval()
    path = save_model(tmp_path / "m", model, mean=np.full(1, 0.3), std=np.full(1, 0.2))
    pixels = np.random.default_rng(0).integers(0, 256, (5, 1, 8, 8)).astype(np.uint8)
    unit = pixels.astype(np.float32) / 255
    loaded = load(path)
    expected = model(torch.from_numpy((unit - 0.3) / 0.2)).detach().numpy()
    np.testing.assert_allclose(loaded.embed(pixels), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loaded.embed(torch.from_numpy(pixels)), expected, rtol=1e-5, atol=1e-6)
    np.save(tmp_path / "u8.npy", pixels)
    assert main(["embed", str(path), str(tmp_path / "u8.npy"), "--out", str(tmp_path / "e.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "e.npy"), expected, rtol=1e-5, atol=1e-6)


def test_uint8_training_images_are_scaled(tmp_path):
    from likewise.data.arrays import load_array_dataset

    pixels = np.random.default_rng(0).integers(0, 256, (6, 1, 4, 4)).astype(np.uint8)
    np.save(tmp_path / "x.npy", pixels)
    np.save(tmp_path / "y.npy", np.arange(6) % 2)
    data = load_array_dataset(tmp_path / "x.npy", tmp_path / "y.npy")
    np.testing.assert_allclose(data.x, pixels / 255.0, rtol=1e-6)
    features = np.random.default_rng(0).integers(0, 256, (6, 3)).astype(np.uint8)  # features: as they are
    np.save(tmp_path / "f.npy", features)
    np.testing.assert_array_equal(load_array_dataset(tmp_path / "f.npy", tmp_path / "y.npy").x, features)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_embedding_on_a_missing_device_is_a_clear_error(tmp_path):
    path = save_model(tmp_path / "m", build_model("mlp", (3,), embedding_dim=2, trunk_kwargs={"hidden": [4]}))
    model = load(path)
    with pytest.raises(ValueError, match="device='cuda' requested but CUDA is not available"):
        model.embed(np.zeros((2, 3), np.float32), device="cuda")
    with pytest.raises(ValueError, match="device='gpu0' is not a torch device"):
        model.embed(np.zeros((2, 3), np.float32), device="gpu0")


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "is empty; a config names at least data.dataset"),
        ("# only a comment\n", "is empty"),
        ("- 1\n- 2\n", "expected a mapping of sections, got list"),
        ("data: {dataset: digits}\noptimizer: {lr: .nan}\n", "optimizer.lr: input should be a finite number"),
        ("data: {dataset: digits}\noptimizer: {lr: .inf}\n", "optimizer.lr: input should be a finite number"),
    ],
)
def test_empty_or_non_finite_configs(tmp_path, capsys, text, message):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    _fails(capsys, ["train", str(cfg), "--out", str(tmp_path / "o")], message)
    assert not (tmp_path / "o").exists()


def test_text_named_npz(tmp_path, capsys):
    (tmp_path / "e.npz").write_text("1,2\n3,4\n")
    np.save(tmp_path / "l.npy", np.array([0, 1]))
    err = _fails(
        capsys,
        ["evaluate", "--embeddings", str(tmp_path / "e.npz"), "--labels", str(tmp_path / "l.npy")],
        "is not a .npz file (not a zip archive",
    )
    assert "pickle" not in err


def test_selection_on_full_map_and_the_evaluate_table_keep_map(tmp_path, capsys):
    """The default retrieval path leaves full mAP out; the trainer and `likewise evaluate` ask for it."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**TINY, "eval": {"metric": "map"}}))
    assert main(["train", str(cfg), "--out", str(tmp_path / "o")]) == 0
    metrics = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert 0 < metrics["heldout"]["map"] <= 1 and metrics["selection_metric"] == "map"
    rng = np.random.default_rng(0)
    np.save(tmp_path / "e.npy", rng.standard_normal((40, 4)).astype(np.float32))
    np.save(tmp_path / "l.npy", np.arange(40) % 4)
    capsys.readouterr()
    assert (
        main(["evaluate", "--embeddings", str(tmp_path / "e.npy"), "--labels", str(tmp_path / "l.npy")]) == 0
    )
    assert "\n  map " in capsys.readouterr().out
