"""Model directories: save, load without the trainer, embed; bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from likewise.export import load, save_model
from likewise.models import build_model

MEAN = np.array([[[0.25]]], np.float32)
STD = np.array([[[0.5]]], np.float32)


@pytest.fixture
def model():
    torch.manual_seed(3)
    m = build_model("convnet", (1, 8, 8), embedding_dim=6, trunk_kwargs={"widths": [4, 8]})
    # make BatchNorm running statistics non-trivial, then freeze them
    m.train()
    with torch.no_grad():
        m(torch.randn(16, 1, 8, 8))
    return m.eval()


@pytest.fixture
def inputs():
    return np.random.default_rng(0).random((10, 1, 8, 8), dtype=np.float32)


def _expected(model, x):
    with torch.no_grad():
        return model(torch.from_numpy((x - MEAN) / STD)).numpy()


def test_round_trip_gives_the_same_embeddings(tmp_path, model, inputs):
    save_model(tmp_path / "m", model, mean=MEAN, std=STD, class_names=["a", "b"])
    loaded = load(tmp_path / "m")
    assert loaded.embedding_dim == 6 and loaded.input_shape == (1, 8, 8)
    assert loaded.class_names == ["a", "b"]
    out = loaded.embed(inputs)
    assert out.dtype == np.float32 and out.shape == (10, 6)
    np.testing.assert_array_equal(out, _expected(model, inputs))
    # torch input, flattened input and small batches give the same embeddings
    np.testing.assert_array_equal(loaded.embed(torch.from_numpy(inputs)), out)
    np.testing.assert_allclose(loaded.embed(inputs.reshape(10, 64), batch_size=3), out, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[key], value)


def test_index_and_matcher_are_saved_with_the_model(tmp_path, model, inputs):
    from likewise.index import Index
    from likewise.matching import Matcher

    emb = _expected(model, inputs)
    index = Index(6, metric="cosine")
    index.add(emb, labels=np.arange(10) % 3)
    save_model(tmp_path / "m", model, mean=MEAN, std=STD, matcher=Matcher(index, 0.25, k=1))
    loaded = load(tmp_path / "m")
    assert loaded.matcher.threshold == 0.25
    _, ids = loaded.index.search(loaded.embed(inputs), 1)
    np.testing.assert_array_equal(ids[:, 0], index.ids)
    save_model(tmp_path / "i", model, index=index)
    assert load(tmp_path / "i").index is not None and load(tmp_path / "i").matcher is None


def test_load_needs_no_training_code(tmp_path, model, inputs):
    save_model(tmp_path / "m", model, mean=MEAN, std=STD)
    np.save(tmp_path / "x.npy", inputs)
    script = (
        "import sys, numpy as np\n"
        "sys.modules['lightning'] = None; sys.modules['likewise.train'] = None\n"
        "import likewise.export\n"
        f"e = likewise.export.load({str(tmp_path / 'm')!r}).embed(np.load({str(tmp_path / 'x.npy')!r}))\n"
        f"np.save({str(tmp_path / 'e.npy')!r}, e)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    np.testing.assert_array_equal(np.load(tmp_path / "e.npy"), _expected(model, inputs))


def test_bad_input(tmp_path, model, inputs):
    save_model(tmp_path / "m", model)
    loaded = load(tmp_path / "m")
    with pytest.raises(ValueError, match=r"\[N, 1, 8, 8\]"):
        loaded.embed(np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(ValueError, match="NaN"):
        loaded.embed(np.full((1, 1, 8, 8), np.nan, np.float32))
    with pytest.raises(TypeError):
        loaded.embed([[1.0]])
    with pytest.raises(ValueError, match="batch_size"):
        loaded.embed(inputs, batch_size=0)
    with pytest.raises(FileNotFoundError):
        load(tmp_path / "missing")
    with pytest.raises(ValueError, match="not a likewise model"):
        load(tmp_path)
    (tmp_path / "m" / "model.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="JSON"):
        load(tmp_path / "m")
    with pytest.raises(FileExistsError, match="not a likewise model"):  # a damaged one is not replaced
        save_model(tmp_path / "m", model)
    save_model(tmp_path / "m2", model)
    meta = json.loads((tmp_path / "m2" / "model.json").read_text())
    meta["model"]["embedding_dim"] = 7
    (tmp_path / "m2" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="does not fit"):
        load(tmp_path / "m2")
    with pytest.raises(ValueError, match="build_model"):
        save_model(tmp_path / "u", build_model(torch.nn.Flatten(), embedding_dim=3, trunk_features=64))
    with pytest.raises(ValueError, match="std"):
        save_model(tmp_path / "s", model, std=np.zeros(1))


def test_feature_embedding_round_trip(tmp_path, inputs):
    """embed="features": the model directory embeds with the pooled trunk features."""
    torch.manual_seed(4)
    m = build_model(
        "convnet",
        (1, 8, 8),
        embedding_dim=6,
        pooling="max",
        trunk_kwargs={"widths": [4, 8]},
        embed="features",
    ).eval()
    save_model(tmp_path / "m", m, mean=MEAN, std=STD)
    loaded = load(tmp_path / "m")
    assert loaded.embedding_dim == 8
    out = loaded.embed(inputs)
    with torch.no_grad():
        pooled = m.features(torch.from_numpy((inputs - MEAN) / STD))
    want = (pooled / pooled.norm(dim=1, keepdim=True)).numpy()
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
