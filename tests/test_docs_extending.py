"""docs/extending.md's example is real: its module, registered, passes the contract and trap tests,
its test passes, and configs find it by name."""

from __future__ import annotations

import importlib
import math
import re
import sys
from pathlib import Path

import pytest
import torch

import test_losses_contract as contract
import test_no_host_sync as trap
from likewise.losses import LOSSES
from likewise.train.registry import loss_class

DOC = Path(__file__).resolve().parents[1] / "docs" / "extending.md"


def blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)


@pytest.fixture
def registered(tmp_path, monkeypatch):
    """The doc's module written as ``binomial_deviance.py``, imported, and added to LOSSES."""
    (tmp_path / "binomial_deviance.py").write_text(blocks()[0])
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "binomial_deviance", raising=False)
    module = importlib.import_module("binomial_deviance")
    monkeypatch.setitem(LOSSES, "BinomialDevianceLoss", module.BinomialDevianceLoss)
    yield module
    sys.modules.pop("binomial_deviance", None)


def test_the_example_module_is_about_thirty_lines():
    code = [line for line in blocks()[0].splitlines() if line.strip()]
    assert len(code) <= 35


def test_the_docs_test_passes(registered):
    namespace = {
        "math": math,
        "torch": torch,
        "pytest": pytest,
        "BinomialDevianceLoss": registered.BinomialDevianceLoss,
    }
    exec(blocks()[2], namespace)  # noqa: S102 - the test shown in the doc
    torch.manual_seed(0)
    namespace["test_binomial_deviance_equals_a_loop_over_pairs"]()


def test_configs_find_the_registered_loss(registered):
    assert loss_class("BinomialDevianceLoss") is registered.BinomialDevianceLoss


@pytest.mark.parametrize("variant", contract.VARIANTS)
def test_the_example_keeps_the_contract(registered, variant):
    name = "BinomialDevianceLoss"
    contract.test_fast_equals_plain_in_value_and_gradients(name, variant)
    if variant != "miner":
        contract.test_plain_path_passes_gradcheck(name, variant)


def test_the_example_keeps_the_rest_of_the_contract(registered):
    name = "BinomialDevianceLoss"
    contract.test_autocast_gives_the_float32_loss(name)
    for fast in (True, False):
        contract.test_a_pickled_loss_gives_the_same_value(name, fast)
        contract.test_bad_input_raises_the_exact_error(name, fast)
    contract.test_fast_must_be_a_bool(registered.BinomialDevianceLoss)
    trap.test_a_loss_step_does_not_synchronise(name)
