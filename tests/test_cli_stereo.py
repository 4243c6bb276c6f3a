"""``likewise stereo``: the command on a synthetic pair, the shipped model's accuracy, bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from likewise.cli import main
from likewise.stereo.metrics import bad_pixel_rate
from likewise.stereo.synthetic import synthetic_pair


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A held-out synthetic pair (seed never used in training) saved as PNG files."""
    root = tmp_path_factory.mktemp("pair")
    p = synthetic_pair(np.random.default_rng(12345), 96, 160, 32.0)
    for name, img in (("left", p.left), ("right", p.right)):
        Image.fromarray((img * 255).round().astype(np.uint8)).save(root / f"{name}.png")
    return root, p


def test_command_writes_a_float32_map_that_fits_the_ground_truth(pair, capsys):
    root, p = pair
    out, png = root / "d.npy", root / "d.png"
    code = main(
        [
            "stereo",
            str(root / "left.png"),
            str(root / "right.png"),
            "--out",
            str(out),
            "--max-disparity",
            "48",
            "--png",
            str(png),
        ]
    )
    assert code == 0, capsys.readouterr().err
    disp = np.load(out)
    assert disp.dtype == np.float32 and disp.shape == (96, 160)
    assert bad_pixel_rate(disp, p.disparity, 2.0) < 0.15
    with Image.open(png) as img:
        assert img.size == (160, 96) and img.mode == "RGB"


def test_python_call_equals_the_command(pair, tmp_path):
    from likewise.stereo import compute_disparity, read_image
    from likewise.stereo.match import MatchSettings

    root, _ = pair
    out = tmp_path / "d.npy"
    assert (
        main(
            [
                "stereo",
                str(root / "left.png"),
                str(root / "right.png"),
                "--out",
                str(out),
                "--max-disparity",
                "40",
            ]
        )
        == 0
    )
    direct = compute_disparity(
        read_image(root / "left.png"),
        read_image(root / "right.png"),
        settings=MatchSettings(max_disparity=40),
    )
    np.testing.assert_array_equal(np.load(out), direct)


def _run(args):
    return subprocess.run(
        [sys.executable, "-m", "likewise", "stereo", *args], capture_output=True, text=True, timeout=300
    )


def test_bad_input_is_one_line_exit_2_and_nothing_is_destroyed(pair, tmp_path, capsys):
    root, _ = pair
    left, right = str(root / "left.png"), str(root / "right.png")
    small = tmp_path / "small.png"
    Image.fromarray(np.zeros((50, 60, 3), np.uint8)).save(small)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    keep = tmp_path / "keep.npy"
    np.save(keep, np.arange(3))  # an earlier output: the checks below come first, and it stays
    kept = keep.read_bytes()
    precious = tmp_path / "precious.npy"
    precious.write_bytes(b"precious")  # not an array: never replaced
    folder = tmp_path / "folder.npy"
    folder.mkdir()
    (folder / "inside.txt").write_text("mine")
    cases = [
        ([left, str(small), "--out", str(keep)], "differ in size"),
        ([left, right, "--out", str(keep), "--max-disparity", "0"], "max_disparity must be >= 1"),
        ([left, str(text), "--out", str(keep)], "is not a readable image"),
        ([left, right, "--out", str(folder)], "is a directory"),
        ([left, right, "--out", str(tmp_path / "d.txt")], "must end with .npy"),
        ([left, str(tmp_path / "missing.png"), "--out", str(keep)], "no such file"),
        ([left, right, left, "--out", str(keep)], "expected LEFT RIGHT"),
        ([left, right, "--out", str(keep), "--model", str(text)], "not a readable safetensors"),
        ([left, right, "--out", str(keep), "--png", left], "must differ from the input images"),
        ([left, right, "--out", str(precious)], "is not a npy file"),
        ([left, right, "--out", str(keep), "--png", str(text)], "is not a png file"),
    ]
    for args, message in cases:
        assert main(["stereo", *args]) == 2, args
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, lines)
    # and as a user sees it: a separate process, one line, status 2, no traceback
    proc = _run(cases[0][0])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"likewise stereo: error: {proc.stderr.split('error: ')[1].strip()}"
    ]
    assert cases[0][1] in proc.stderr
    assert keep.read_bytes() == kept and precious.read_bytes() == b"precious"
    assert (folder / "inside.txt").read_text() == "mine"
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["folder.npy", "keep.npy", "notes.png", "precious.npy", "small.png"]


def test_train_writes_a_loadable_model(tmp_path):
    from likewise.stereo.pretrained import load_patch_net

    out = tmp_path / "m.safetensors"
    assert main(["stereo", "train", "--out", str(out), "--steps", "3", "--pairs", "2"]) == 0
    net = load_patch_net(out)
    assert (net.in_channels, net.hidden, net.features) == (3, 32, 64)
    hard = tmp_path / "hard.safetensors"
    assert (
        main(["stereo", "train", "--out", str(hard), "--steps", "2", "--pairs", "2", "--hard-negatives"]) == 0
    )
    assert load_patch_net(hard).hidden == 32
    assert main(["stereo", "train", "--out", str(tmp_path), "--steps", "1"]) == 2
