"""The lecture notes' experiment: maximising two views' similarity alone collapses, the methods do not.

Same data (512 MNIST-1D signals, the MNIST-1D view recipe), encoder architecture, seed,
optimiser and budget for every method; the collapse monitor then measures the projection
and the representation of held-out signals.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from likewise import ssl
from likewise.models import build_model
from likewise.ssl.views import SignalAugment
from likewise.train.monitor import CollapseMonitor

STEPS = 60


@pytest.fixture(scope="module")
def signals() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = 800
    d = make_dataset(args)
    return d["x"][:512].astype(np.float32), d["x_test"][:150].astype(np.float32), d["y_test"][:150]


def _train(name: str, x: np.ndarray) -> ssl.SSLMethod:
    torch.manual_seed(0)
    encoder = build_model("conv1d", (40,), embedding_dim=1, normalize=False, embed="features")
    kwargs = {"hidden_dim": 64, "out_dim": 16}
    if name == "swav":
        kwargs["n_prototypes"] = 16
    method = ssl.METHODS[name](encoder, 125, **kwargs)
    opt = torch.optim.Adam([p for p in method.parameters() if p.requires_grad], lr=3e-3)
    aug = SignalAugment()
    data = torch.as_tensor(x)
    g = torch.Generator().manual_seed(1)
    for step in range(STEPS):
        batch = data[torch.randperm(len(data), generator=g)[:128]]
        loss = method(aug(batch), aug(batch))
        opt.zero_grad()
        loss.backward()
        opt.step()
        method.update(step + 1, STEPS)
    return method


def _monitor(x_val: np.ndarray) -> CollapseMonitor:
    return CollapseMonitor(
        x_val, None, None, views=SignalAugment(), mean=np.zeros(1, np.float32), std=np.ones(1, np.float32)
    )


def test_naive_collapses_and_the_monitor_says_so(signals):
    x, x_val, _ = signals
    monitor = _monitor(x_val)
    before = monitor.measure(_untrained(), torch.device("cpu"))
    after = monitor.measure(_train("naive", x), torch.device("cpu"))
    assert before["projection_std_ratio"] > 0.08 and not monitor.collapsed(before)
    assert after["projection_std_ratio"] < 0.01, after
    assert after["projection_effective_rank"] < 1.3, after
    assert after["alignment"] < before["alignment"]  # perfectly "invariant": everything is one point
    assert monitor.collapsed(after)


def _untrained() -> ssl.SSLMethod:
    torch.manual_seed(0)
    encoder = build_model("conv1d", (40,), embedding_dim=1, normalize=False, embed="features")
    return ssl.Naive(encoder, 125, hidden_dim=64, out_dim=16)


@pytest.mark.parametrize("name", ["simclr", "byol", "swav", "barlow_twins", "vicreg"])
def test_methods_do_not_collapse_on_the_same_budget(signals, name):
    x, x_val, _ = signals
    monitor = _monitor(x_val)
    values = monitor.measure(_train(name, x), torch.device("cpu"))
    assert not monitor.collapsed(values), values
    assert values["std_ratio"] > 0.15 and values["projection_std_ratio"] > 0.2, values
    assert values["effective_rank"] > 3 and values["projection_effective_rank"] > 3, values


def test_collapse_warning_is_raised_once_by_the_callback(signals):
    import warnings

    x, x_val, y_val = signals
    monitor = _monitor(x_val)
    collapsed = {"std_ratio": 0.01, "projection_std_ratio": 0.01, "effective_rank": 1.0}
    collapsed["projection_effective_rank"] = 1.0
    assert monitor.collapsed(collapsed)
    assert not monitor.collapsed(
        {
            **collapsed,
            "std_ratio": 0.9,
            "projection_std_ratio": 0.9,
            "effective_rank": 5.0,
            "projection_effective_rank": 5.0,
        }
    )

    class _Trainer:
        current_epoch, max_epochs = 0, 1

    class _Module:
        method = _train("naive", x)
        device = torch.device("cpu")

        def log_dict(self, *args, **kwargs):
            self.logged = args[0]

    module = _Module()
    with pytest.warns(UserWarning, match="the representation collapsed at epoch 0"):
        monitor.on_train_epoch_end(_Trainer(), module)
    assert "monitor/projection_std_ratio" in module.logged and monitor.history[0]["epoch"] == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        monitor.on_train_epoch_end(_Trainer(), module)  # warned once only
    assert monitor.warned_epoch == 0 and monitor.collapsed_at_end()
    # a run that recovers: metrics.json's "collapsed" reads the last epoch, the warning stays on record
    monitor.history.append({"epoch": 1, **{k: 1.0 for k in monitor.history[0] if k != "epoch"}})
    monitor.history[-1].update(effective_rank=5.0, projection_effective_rank=5.0)
    assert not monitor.collapsed_at_end() and monitor.warned_epoch == 0
    restored = type(monitor).__new__(type(monitor))
    restored.load_state_dict(monitor.state_dict())
    assert restored.warned_epoch == 0 and len(restored.history) == 2
