"""`likewise demo` end to end: outputs, a self-contained report, a loadable model, reruns.

The demo's own recipe takes minutes on two cores, so the test runs the demo command on a
tiny budget: the same code path with a small ConvNet on scikit-learn's 8x8 digits and
one epoch (``DEMO_CONFIG`` replaced, nothing else).
"""

from __future__ import annotations

import copy
import json
import re

import numpy as np
import pytest
import yaml

from likewise.cli import main
from likewise.commands import demo
from likewise.train.config import validate_config

TINY = copy.deepcopy(demo.DEMO_CONFIG)
TINY["data"]["dataset"] = "digits"
TINY["model"]["trunk_kwargs"] = {"widths": [8, 16]}
TINY["sampler"]["batch_size"] = 64
TINY["optimizer"]["epochs"] = 1
TINY["eval"]["every_n_epochs"] = 1
TINY["trainer"].update({"threads": 1, "checkpoint_every_n_steps": 5})


@pytest.fixture
def tiny_demo(monkeypatch):
    monkeypatch.setattr(demo, "DEMO_CONFIG", TINY)


def _demo(out, *extra):
    return main(["demo", "--out", str(out), "--no-progress", *extra])


@pytest.mark.slow
def test_demo_end_to_end_then_rerun_replaces_it(tiny_demo, tmp_path, capsys):
    out = tmp_path / "demo"
    assert _demo(out) == 0
    printed = capsys.readouterr().out
    assert "targets:" in printed and "report:" in printed

    metrics = json.loads((out / "metrics.json").read_text())
    for key in (
        "heldout",
        "validation",
        "selected_on",
        "selection_metric",
        "best_epoch",
        "history",
        "n_train",
        "n_validation",
        "n_heldout",
        "train_classes",
        "heldout_classes",
        "matching",
        "skipped",
    ):
        assert key in metrics, key
    assert metrics["selected_on"] == "validation" and metrics["selection_metric"] == "map_at_r"
    assert metrics["train_classes"] == ["0", "1", "2", "3", "4"]
    assert metrics["heldout_classes"] == ["5", "6", "7", "8", "9"]
    assert 0 < metrics["heldout"]["map_at_r"] <= 1 and 0 < metrics["validation"]["map_at_r"] <= 1
    assert metrics["skipped"] == []

    html = (out / "report.html").read_text(encoding="utf-8")
    assert "<img" in html
    sources = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', html)
    assert sources and all(s.startswith(("data:", "#")) for s in sources), sources
    assert "<script src" not in html and "<link" not in html

    from likewise.data import load_data
    from likewise.export import load

    model = load(out / "model")
    x = load_data("digits").x[:7]
    emb = model.embed(x)
    assert emb.shape == (7, model.embedding_dim) and np.all(np.isfinite(emb))
    assert model.matcher is not None

    # a second demo with the same --out replaces the first (no "--resume" needed)
    marker = out / "checkpoints" / "from_the_first_run"
    marker.write_text("x")
    assert _demo(out) == 0
    assert not marker.exists()
    assert json.loads((out / "metrics.json").read_text())["heldout"] == metrics["heldout"]  # same seed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # no temporary directory left


def test_demo_never_deletes_files_it_did_not_write(tiny_demo, tmp_path, capsys):
    out = tmp_path / "demo"
    (out / "checkpoints").mkdir(parents=True)
    (out / "metrics.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    assert _demo(out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "notes.txt" in err and "Traceback" not in err
    assert (out / "notes.txt").read_text() == "mine"
    # a `likewise train` run of another recipe is not the demo's to replace
    (out / "notes.txt").unlink()
    (out / "config.yaml").write_text(
        yaml.safe_dump(validate_config({"loss": {"name": "ContrastiveLoss"}}).to_dict())
    )
    assert _demo(out) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a demo run" in err
    assert sorted(p.name for p in out.iterdir()) == ["checkpoints", "config.yaml", "metrics.json"]


def test_demo_config_is_the_recipe_with_the_epochs_override():
    config = demo.demo_config(epochs=1, progress_bar=False)
    assert config.optimizer.epochs == 1 and config.eval.validation_fraction == 0.1
    with pytest.raises(ValueError, match="--epochs"):
        demo.demo_config(epochs=0)
