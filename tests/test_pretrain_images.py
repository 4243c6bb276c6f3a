"""Pre-training on images: channels-last training, an export that reproduces the metrics, and the
monitor's / evaluation's shared encoder pass."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from likewise.cli import main
from likewise.ssl import SimCLR
from likewise.train.monitor import encode_and_project


class _Projecting(SimCLR):
    """A method that overrides ``project``: its own output must be used, not ``projector(encoder)``."""

    def project(self, x):
        return super().project(x) * 2 + 1


def test_encode_and_project_equals_separate_calls():
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(12, 6), nn.ReLU())
    x = np.random.default_rng(0).normal(size=(7, 3, 4)).astype(np.float32)
    for cls in (SimCLR, _Projecting):
        method = cls(encoder, 6, hidden_dim=5, out_dim=3)
        method.eval()
        with torch.no_grad():
            f, p = encode_and_project(method, x, batch_size=3)  # three batches
            xt = torch.as_tensor(x)
            torch.testing.assert_close(f, method.encoder(xt))
            torch.testing.assert_close(p, method.project(xt))
    assert not torch.allclose(p, SimCLR.project(method, xt))  # the override was called


def test_digits_run_trains_channels_last_and_its_export_reproduces_the_knn(tmp_path):
    import likewise
    from likewise.evaluation.classification import knn_accuracy
    from likewise.train.pretrain_config import PretrainDataConfig
    from likewise.train.pretrain_data import prepare_pretrain_data

    out = tmp_path / "run"
    argv = ["pretrain", "--method", "simclr", "--data", "digits", "--epochs", "1", "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    model = likewise.load(out / "model")
    data = prepare_pretrain_data(PretrainDataConfig(dataset="digits"))
    tr, te = model.embed(data.x_train), model.embed(data.x_test)
    got = knn_accuracy(tr, data.y_train, te, data.y_test, k=10, metric="cosine")
    assert got == pytest.approx(metrics["knn_accuracy"])
    # the checkpoint holds the channels-last weights; they equal the exported ones
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    convs = [k for k, v in state.items() if k.startswith("method.encoder.") and v.dim() == 4]
    conv = [k for k in convs if state[k].shape[1] > 1][0]
    assert state[conv].is_contiguous(memory_format=torch.channels_last)
    exported = dict(model.model.named_parameters())[conv.removeprefix("method.encoder.")]
    torch.testing.assert_close(exported, state[conv].float())
