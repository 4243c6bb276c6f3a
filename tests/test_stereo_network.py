"""The patch network (dense = patch-wise), its training loss, and verified model files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from likewise.stereo.network import PatchNet, standardize
from likewise.stereo.pretrained import load_patch_net, save_patch_net
from likewise.stereo.training import PairPool, TrainSettings, triplet_loss


def test_dense_features_equal_the_patch_network_on_each_window():
    torch.manual_seed(0)
    net = PatchNet(3, 8, 16).eval()
    image = standardize(np.random.default_rng(0).random((12, 15, 3)))
    dense = net.dense(image)
    assert dense.shape == (16, 12, 15)
    torch.testing.assert_close(dense.norm(dim=0), torch.ones(12, 15))
    padded = F.pad(image[None], (4, 4, 4, 4), mode="reflect")[0]
    for y, x in [(0, 0), (5, 7), (11, 14), (4, 4)]:
        patch = padded[:, y : y + 9, x : x + 9][None]
        torch.testing.assert_close(net(patch)[0], dense[:, y, x], atol=1e-5, rtol=0)


def test_standardize_gives_zero_mean_unit_variance_per_channel():
    img = np.random.default_rng(1).random((10, 11, 3)) * [1, 50, 200] + [0, 5, -3]
    x = standardize(img)
    torch.testing.assert_close(x.mean(dim=(1, 2)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(x.std(dim=(1, 2)), torch.ones(3), atol=1e-5, rtol=0)


def test_training_loss_is_the_triplet_hinge_over_all_negatives():
    g = torch.Generator().manual_seed(0)
    a, p, n = (F.normalize(torch.randn(6, 5, generator=g), dim=1) for _ in range(3))
    got = triplet_loss(TrainSettings(margin=0.2))(a, p, n)
    refs = torch.cat([p, n])
    terms = []
    for i in range(6):
        for j in range(12):
            if j != i:  # every reference except the anchor's own positive is a negative
                terms.append(max(0.0, float(a[i] @ refs[j] - a[i] @ p[i]) + 0.2))
    terms = [t for t in terms if t > 0]
    assert float(got) == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def test_pool_patches_are_the_views_at_the_true_match():
    from likewise.stereo.synthetic import synthetic_pair

    pair = synthetic_pair(np.random.default_rng(0), 48, 96, 24.0, integer=True, slant=False, noise=False)
    pool = PairPool([pair])
    rng = np.random.default_rng(1)
    pick = pool.index[rng.integers(len(pool.index), size=20)]
    y, x = np.divmod(pick, pool.w)
    match = x - pool.disp[pick]
    anchor = pool.patches(pool.left, y.astype(float), x.astype(float))
    positive = pool.patches(pool.right, y.astype(float), match)
    left, right = standardize(pair.left), standardize(pair.right)
    for k in range(20):
        torch.testing.assert_close(anchor[k], left[:, y[k] - 4 : y[k] + 5, x[k] - 4 : x[k] + 5])
        xr = int(match[k])
        torch.testing.assert_close(positive[k], right[:, y[k] - 4 : y[k] + 5, xr - 4 : xr + 5])


def test_saved_model_loads_verified_and_tampering_is_refused(tmp_path):
    torch.manual_seed(0)
    net = PatchNet(3, 8, 16)
    path = save_patch_net(net, tmp_path / "m.safetensors", {"steps": "1"})
    back = load_patch_net(path)
    for (k, v), (k2, v2) in zip(net.state_dict().items(), back.state_dict().items()):
        assert k == k2
        torch.testing.assert_close(v2, v.half().float())
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # flip bits inside the last weight
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        load_patch_net(bad)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a model")
    with pytest.raises(ValueError, match="not a readable safetensors file"):
        load_patch_net(junk)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"w": torch.zeros(2)}, str(other))
    with pytest.raises(ValueError, match="not a likewise stereo patch network"):
        load_patch_net(other)
    with pytest.raises(FileNotFoundError):
        load_patch_net(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="is a directory"):
        save_patch_net(net, tmp_path)


def test_shipped_model_is_small_and_loads():
    from likewise.stereo.pretrained import shipped_model_path

    path = shipped_model_path()
    assert path.stat().st_size < 300_000
    net = load_patch_net()
    assert (net.in_channels, net.hidden, net.features) == (3, 32, 64)
