"""The patch network's triplet training on Lightning: the same steps as a plain loop, a
model that learns and loads, and inference that never imports Lightning."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import torch

from likewise.stereo.network import PatchNet
from likewise.stereo.synthetic import synthetic_pair
from likewise.stereo.training import PairPool, TrainSettings, train_patch_net, triplet_loss

SMALL = dict(pairs=3, refresh_every=10, refresh_count=2, height=48, width=96, max_disparity=24.0)


def plain_loop(settings: TrainSettings) -> PatchNet:
    """The recipe written out as a plain PyTorch loop (no Lightning)."""
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)

    def render():
        return synthetic_pair(rng, settings.height, settings.width, settings.max_disparity)

    pool = PairPool([render() for _ in range(settings.pairs)])
    net = PatchNet(3, settings.hidden, settings.features)
    opt = torch.optim.Adam(net.parameters(), lr=settings.lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=settings.lr, total_steps=settings.steps, pct_start=0.05
    )
    loss_fn = triplet_loss(settings)
    slot = 0
    for step in range(1, settings.steps + 1):
        a, p, n = pool.triplets(rng, settings.batch_size)
        fa, fp, fn = net(torch.cat([a, p, n])).split(settings.batch_size)
        opt.zero_grad()
        loss_fn(fa, fp, fn).backward()
        opt.step()
        sched.step()
        if step % settings.refresh_every == 0 and step < settings.steps:
            for _ in range(settings.refresh_count):
                pool.replace(slot, render())
                slot = (slot + 1) % settings.pairs
            pool.refresh()
    return net.eval()


def test_lightning_training_takes_the_same_steps_as_a_plain_loop():
    settings = TrainSettings(steps=25, batch_size=32, seed=3, **SMALL)  # two pool refreshes
    net, summary = train_patch_net(settings, progress_bar=False)
    assert "lightning.pytorch" in sys.modules  # the run went through pl.Trainer
    assert summary["steps"] == 25 and np.isfinite(summary["final_loss"])
    expected = plain_loop(settings)
    assert not net.training
    for (name, got), want in zip(net.state_dict().items(), expected.state_dict().values()):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5, msg=name)


def test_training_lowers_the_held_out_hinge_and_the_model_loads(tmp_path):
    """Mean hinge ``max(0, s(a, n) - s(a, p) + 0.2)`` over every held-out triplet (cosine ``s``)."""
    from likewise.stereo.pretrained import load_patch_net, save_patch_net

    settings = TrainSettings(steps=60, batch_size=64, lr=5e-3, seed=0, **SMALL)
    held_out = PairPool([synthetic_pair(np.random.default_rng(99 + i), 48, 96, 24.0) for i in range(2)])
    a, p, n = held_out.triplets(np.random.default_rng(7), 512)

    def hinge(model: PatchNet) -> float:
        with torch.no_grad():
            fa, fp, fn = model(torch.cat([a, p, n])).split(512)
        return float(((fa * fn).sum(1) - (fa * fp).sum(1) + 0.2).clamp(min=0).mean())

    torch.manual_seed(0)
    before = hinge(PatchNet(3, settings.hidden, settings.features).eval())  # the run's initial weights
    net, _ = train_patch_net(settings, progress_bar=False)
    after = hinge(net)
    assert after < 0.8 * before, (before, after)
    path = tmp_path / "net.safetensors"
    save_patch_net(net, path, {"steps": "60"})
    loaded = load_patch_net(path)
    assert abs(hinge(loaded) - after) < 0.1 * (before - after)  # float16 on disk: the trained net


def test_matching_never_imports_lightning(tmp_path):
    from PIL import Image

    pair = synthetic_pair(np.random.default_rng(5), 40, 72, 16.0)
    for name, img in (("left", pair.left), ("right", pair.right)):
        Image.fromarray((img * 255).round().astype(np.uint8)).save(tmp_path / f"{name}.png")
    code = (
        "import sys\n"
        "from likewise.cli import main\n"
        "import likewise.stereo.training\n"  # the settings and the sampling need no Lightning either
        f"assert main(['stereo', {str(tmp_path / 'left.png')!r}, {str(tmp_path / 'right.png')!r}, "
        f"'--out', {str(tmp_path / 'd.npy')!r}, '--max-disparity', '24']) == 0\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('lightning', 'pytorch_lightning')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    assert np.load(tmp_path / "d.npy").shape == (40, 72)
