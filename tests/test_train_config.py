"""The YAML training config: validation errors name their path; loss/miner arguments are checked."""

from __future__ import annotations

import pytest

from likewise.train.config import load_config, validate_config


def _error(data) -> str:
    with pytest.raises(ValueError) as info:
        validate_config(data)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_defaults_and_loss_arguments_are_kept():
    config = validate_config(
        {"loss": {"name": "ContrastiveLoss", "neg_margin": 0.7}, "optimizer": {"lr": 0.01}}
    )
    assert config.loss.name == "ContrastiveLoss"
    assert config.loss.kwargs == {"neg_margin": 0.7}
    assert config.optimizer.lr == 0.01
    assert config.eval.metric == "map_at_r"
    assert config.to_dict()["loss"] == {"name": "ContrastiveLoss", "neg_margin": 0.7}
    # selection on a validation split of the training classes by default; P from the data
    assert config.eval.validation_fraction == 0.1 and config.eval.heldout_curves is True
    assert config.sampler.classes_per_batch is None
    assert validate_config({"eval": {"validation_fraction": 0}}).eval.validation_fraction == 0


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"optimzer": {}}, "optimzer: unknown key"),
        ({"optimizer": {"lr": 0}}, "optimizer.lr: must be > 0"),
        ({"optimizer": {"epochs": -1}}, "optimizer.epochs: must be > 0"),
        ({"sampler": {"classes_per_batch": 0}}, "sampler.classes_per_batch: must be > 0"),
        ({"data": {"splitt": "x"}}, "data.splitt: unknown key"),
        ({"data": {"split": "random"}}, "data.split: must be one of"),
        ({"model": {"trunk": "vgg99"}}, "model.trunk: must be one of"),
        ({"trainer": {"precision": 17}}, "trainer.precision: must be one of"),
        ({"eval": {"metric": "accuracy"}}, "eval.metric: must be one of"),
        ({"eval": {"validation_fraction": 1}}, "eval.validation_fraction: must be < 1"),
        ({"eval": {"validation_fraction": -0.1}}, "eval.validation_fraction: must be >= 0"),
        ({"loss": {"name": "NoSuchLoss"}}, "loss.name: unknown loss 'NoSuchLoss'"),
        (
            {"loss": {"name": "ContrastiveLoss", "marginn": 1}},
            "loss.marginn: unknown parameter of ContrastiveLoss",
        ),
        ({"loss": {"name": "NTXentLoss", "temperature": 0}}, "loss.temperature: must be"),
        ({"loss": {"name": "TripletMarginLoss", "margin": "wide"}}, "loss.margin:"),
        ({"miner": {"name": "NoSuchMiner"}}, "miner.name: unknown miner"),
        ({"miner": {"name": "BatchHardMiner", "k": 3}}, "miner.k: unknown parameter of BatchHardMiner"),
        ({"memory": {}}, "memory.size: required"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_errors_name_their_path(data, expected):
    assert expected in _error(data)


def test_load_config_reports_malformed_yaml_and_missing_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("loss: {name: ContrastiveLoss\noptimizer: [", encoding="utf-8")
    with pytest.raises(ValueError, match="malformed YAML"):
        load_config(bad)
    with pytest.raises(FileNotFoundError):
        load_config(tmp_path / "missing.yaml")
    good = tmp_path / "good.yaml"
    good.write_text("loss:\n  name: SupConLoss\n  temperature: 0.1\n", encoding="utf-8")
    assert load_config(good).loss.kwargs == {"temperature": 0.1}


def test_example_configs_are_valid():
    from pathlib import Path

    configs = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
    assert configs, "configs/ holds example configs"
    for path in configs:
        load_config(path)


def test_demo_recipe_matches_configs_demo_yaml():
    from pathlib import Path

    from likewise.commands.demo import DEMO_CONFIG

    path = Path(__file__).parent.parent / "configs" / "demo.yaml"
    assert load_config(path).to_dict() == validate_config(DEMO_CONFIG).to_dict()
