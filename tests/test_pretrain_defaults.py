"""The defaults of ``likewise pretrain --method NAME --data DATA``."""

from __future__ import annotations

import pytest

from likewise.ssl import METHODS
from likewise.train.pretrain_config import default_config, validate_pretrain_config


@pytest.mark.parametrize("method", sorted(METHODS))
def test_mnist5k_budget_is_forty_epochs_but_barlow_twins_sixty(method):
    config = default_config(method, "mnist5k")
    assert config["optimizer"]["epochs"] == (60 if method == "barlow_twins" else 40)
    assert default_config(method, "mnist5k", epochs=3)["optimizer"]["epochs"] == 3  # --epochs wins
    validate_pretrain_config(config)  # every default is a valid config


def test_mnist1d_dino_head_has_batch_norm():
    method = default_config("dino", "mnist1d")["method"]
    assert method["batch_norm"] is True and method["teacher_temp"] == 0.04 and method["out_dim"] == 1024
