"""The data of a run: the validation split, and the checks made before anything is written."""

from __future__ import annotations

import numpy as np
import pytest

from likewise.train.config import validate_config
from likewise.train.data import check_sampler, classes_per_batch, prepare_data


def _arrays(tmp_path, counts, names=None):
    """A features file and a labels file with ``counts[i]`` samples of class ``names[i]``."""
    names = names or [str(i) for i in range(len(counts))]
    labels = np.repeat(np.array(names), counts)
    x = np.random.default_rng(0).normal(size=(len(labels), 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "y.csv").write_text("label\n" + "\n".join(labels) + "\n")
    return {"dataset": str(tmp_path / "x.npy"), "labels": str(tmp_path / "y.csv")}


def _config(data, **sections):
    return validate_config({"data": data, **sections})


def test_validation_split_is_stratified_disjoint_and_seeded():
    config = validate_config({"data": {"dataset": "digits", "train_classes": [0, 1, 2, 3, 4]}})
    assert config.eval.validation_fraction == 0.1
    run = prepare_data(config.data, validation_fraction=0.1)
    whole = prepare_data(config.data)
    assert whole.validation is None
    # validation: ~10% of every training class, none of the held-out classes, not trained on
    assert set(run.validation.y) == {0, 1, 2, 3, 4}
    for c in range(5):
        n = np.sum(whole.train.y == c)
        assert np.sum(run.validation.y == c) == round(0.1 * n)
        assert np.sum(run.train.y == c) + np.sum(run.validation.y == c) == n
    rows = {x.tobytes() for x in run.validation.x}
    assert not rows & {x.tobytes() for x in run.train.x}
    assert len(run.train) + len(run.validation) == len(whole.train)
    # the held-out classes are untouched, and everything is a function of data.seed
    np.testing.assert_array_equal(run.test.x, whole.test.x)
    again = prepare_data(config.data, validation_fraction=0.1)
    np.testing.assert_array_equal(again.validation.x, run.validation.x)
    other = validate_config({"data": {"dataset": "digits", "train_classes": [0, 1, 2, 3, 4], "seed": 1}})
    assert not np.array_equal(
        prepare_data(other.data, validation_fraction=0.1).validation.x, run.validation.x
    )
    # the standardisation statistics come from the samples trained on
    np.testing.assert_allclose(run.mean.ravel(), [run.train.x.mean()], rtol=1e-5)


def test_data_errors_name_their_config_key(tmp_path):
    with pytest.raises(ValueError, match=r"^data\.train_classes: \[11\] do not occur in the labels$"):
        prepare_data(_config({"dataset": "digits", "train_classes": [11]}).data)
    with pytest.raises(ValueError, match=r"^data\.train_classes: cover every class"):
        prepare_data(_config({"dataset": "digits", "train_classes": list(range(10))}).data)
    with pytest.raises(ValueError, match=r"^data\.dataset: .*no class sub-folders"):
        prepare_data(_config({"dataset": str(tmp_path)}).data)
    # held-out classes with one sample each: no query could retrieve anything
    data = _arrays(tmp_path, [5, 5, 1, 1], ["a", "b", "c", "d"])
    with pytest.raises(ValueError, match=r"^data\.split: every held-out class \(c, d\) has a single sample"):
        prepare_data(_config({**data, "train_classes": [0, 1]}).data)
    # a validation split too small to hold a pair
    data = _arrays(tmp_path, [10, 10, 3, 3], ["a", "b", "c", "d"])
    config = _config({**data, "train_classes": [2, 3]})
    with pytest.raises(ValueError, match=r"^eval\.validation_fraction: 0\.1 leaves no validation class"):
        prepare_data(config.data, validation_fraction=0.1)
    assert prepare_data(config.data, validation_fraction=0.5).validation is not None


def test_default_config_fits_its_default_data():
    """The defaults (mnist5k, half of the classes) train: P follows the number of classes."""
    config = validate_config({})
    run = prepare_data(config.data, validation_fraction=config.eval.validation_fraction)
    assert len(run.train_class_names) == 5
    assert check_sampler(config.sampler, run) == {"classes_per_batch": 5, "samples_per_class": 4}
    assert check_sampler(config.sampler, run, world_size=2)["classes_per_batch"] == 5
    many = validate_config({"data": {"dataset": "digits", "train_fraction": 0.9}})
    assert classes_per_batch(many.sampler, 9) == 8


def test_sampler_errors_name_the_key_and_the_classes_by_name(tmp_path):
    data = _arrays(tmp_path, [6, 6, 2, 9, 9], ["cat", "dog", "emu", "fox", "gnu"])
    base = {**data, "train_classes": [0, 1, 2, 3]}  # ids of cat, dog, emu, fox; gnu is held out

    def check(sampler, world=1):
        config = _config(base, sampler=sampler, eval={"validation_fraction": 0})
        return check_sampler(config.sampler, prepare_data(config.data), world)

    with pytest.raises(
        ValueError,
        match=r"^sampler\.classes_per_batch: 8 but the training data hold 4 "
        r"classes \(cat, dog, emu, fox\)$",
    ):
        check({"classes_per_batch": 8})
    with pytest.raises(
        ValueError,
        match=r"^sampler\.samples_per_class: 4 but class 'emu' has 2 training "
        r"samples; lower it or set sampler\.replacement: true$",
    ):
        check({"classes_per_batch": 2, "samples_per_class": 4})
    assert (
        check({"classes_per_batch": 2, "samples_per_class": 4, "replacement": True})["classes_per_batch"] == 2
    )
    with pytest.raises(
        ValueError,
        match=r"^sampler\.classes_per_batch: a batch of 3 classes x 1 samples "
        r"cannot be split equally across 2 processes$",
    ):
        check({"classes_per_batch": 3, "samples_per_class": 1}, world=2)
    with pytest.raises(ValueError, match=r"^sampler\.batch_size: 64 is larger than the 23 training samples$"):
        check({"kind": "random", "batch_size": 64})
    with pytest.raises(ValueError, match=r"^sampler\.batch_size: 5 cannot be split equally across 2"):
        check({"kind": "random", "batch_size": 5}, world=2)
