"""``likewise train`` from a pairs / triplets file over a labels-free features file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
from sklearn.datasets import load_digits
from sklearn.metrics import average_precision_score, roc_auc_score

from likewise.cli import main


def _cos(x, a, b):
    x = x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
    return (x[a] * x[b]).sum(1)


def _pairs_from_labels(y, items, k, rng):
    """``k`` pairs of ``items``: even rows a same-class pair, odd rows a random pair."""
    by = {c: items[y[items] == c] for c in np.unique(y[items])}
    rows = []
    for i in range(k):
        if i % 2 == 0:
            c = rng.choice(list(by))
            a, b = rng.choice(by[c], 2, replace=False)
        else:
            a, b = rng.choice(items, 2, replace=False)
        rows.append((int(a), int(b), int(y[a] == y[b])))
    return np.array(rows)


def _write_csv(path, header, rows):
    path.write_text(header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def digits_pairs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("pairs")
    d = load_digits()
    x, y = d.data.astype(np.float32), d.target
    np.save(tmp / "features.npy", x)  # no labels file anywhere
    rng = np.random.default_rng(0)
    train = _pairs_from_labels(y, np.arange(1200), 3000, rng)
    held = _pairs_from_labels(y, np.arange(1200, len(y)), 1500, rng)
    _write_csv(tmp / "train.csv", "a,b,similar", train)
    _write_csv(tmp / "heldout.csv", "a,b,similar", held)
    return tmp, x, train, held


def _config(tmp, **data):
    cfg = {
        "data": {"dataset": str(tmp / "features.npy"), **data},
        "eval": {"pairs": str(tmp / "heldout.csv")},
        "model": {"trunk": "mlp", "embedding_dim": 16, "trunk_kwargs": {"hidden": [64]}},
        "loss": {"name": "ContrastiveLoss"},
        "sampler": {"batch_size": 64},
        "optimizer": {"lr": 0.003, "epochs": 3},
        "trainer": {"progress_bar": False, "threads": 1},
    }
    return cfg


def _write(path, cfg):
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def test_train_from_pairs_beats_raw_cosine_on_heldout_pairs(capsys, digits_pairs, tmp_path):
    tmp, x, train, held = digits_pairs
    cfg = _write(tmp_path / "c.yaml", _config(tmp, pairs=str(tmp / "train.csv")))
    out = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "held-out pairs: roc_auc" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    m = metrics["heldout_pairs"]
    assert set(m) == {"roc_auc", "average_precision", "eer", "tar_at_far_1e-03"}
    a, b, s = held[:, 0], held[:, 1], held[:, 2]

    # the exported model's embeddings give the reported figures (sklearn as the reference)
    from likewise.export import load

    emb = load(out / "model").embed(x)
    scores = _cos(emb, a, b)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(s, scores), abs=1e-6)
    assert m["average_precision"] == pytest.approx(average_precision_score(s, scores), abs=1e-6)

    # raw-feature cosine, as given and standardised by the training pairs' items
    used = np.unique(train[:, :2])
    z = (x - x[used].mean(0)) / np.where(x[used].std(0) > 1e-6, x[used].std(0), 1.0)
    raw = roc_auc_score(s, _cos(x, a, b))
    raw_std = roc_auc_score(s, _cos(z, a, b))
    assert metrics["raw_features_pairs"]["roc_auc"] == pytest.approx(raw_std, abs=1e-6)
    assert m["roc_auc"] > max(raw, raw_std) + 0.03, (m["roc_auc"], raw, raw_std)
    assert len(metrics["history"]) == 3 and metrics["n_train_pairs"] == 3000
    report = (out / "report.html").read_text()
    assert report.count("<img") >= 3 and "ROC" in report  # histogram, ROC, PR of the held-out pairs
    assert (out / "checkpoints" / "last.ckpt").exists()


def test_train_from_triplets_and_with_closure(capsys, digits_pairs, tmp_path):
    tmp, *_ = digits_pairs
    y = load_digits().target
    rng = np.random.default_rng(1)
    rows = []
    for _ in range(600):
        a = int(rng.integers(1200))
        p = int(rng.choice(np.flatnonzero((y[:1200] == y[a]) & (np.arange(1200) != a))))
        n = int(rng.choice(np.flatnonzero(y[:1200] != y[a])))
        rows.append((a, p, n))
    _write_csv(tmp_path / "t.csv", "a,p,n", rows)
    cfg = _config(tmp, triplets=str(tmp_path / "t.csv"))
    cfg["loss"] = {"name": "TripletMarginLoss", "margin": 0.2}
    cfg["optimizer"]["epochs"] = 1
    out = tmp_path / "run"
    assert main(["train", str(_write(tmp_path / "c.yaml", cfg)), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["supervision"] == "triplets" and metrics["n_train_pairs"] == 1200
    assert 0.5 < metrics["heldout_pairs"]["roc_auc"] <= 1
    cfg["data"] = {"dataset": cfg["data"]["dataset"], "pairs": str(tmp / "train.csv"), "pairs_closure": True}
    out2 = tmp_path / "run2"
    assert main(["train", str(_write(tmp_path / "c2.yaml", cfg)), "--out", str(out2)]) == 0
    assert json.loads((out2 / "metrics.json").read_text())["closure"] is True


def _fails(capsys, argv, expected):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert expected in err, err


def test_bad_pairs_files_and_configs_fail_in_one_line(capsys, digits_pairs, tmp_path):
    tmp, *_ = digits_pairs
    cases = [
        ("a,b,similar\n0,1,1\n5,9999,0\n", "bad.csv: row 2: b=9999 is out of range [0, 1796]"),
        ("a,b,similar\n4,4,1\n", "bad.csv: row 1: a pair of an item with itself (4)"),
        ("a,b,similar\n0,1,yes\n", "bad.csv: row 1: similar='yes' must be 0 or 1"),
        ("", "bad.csv: empty file"),
        ("a,similar\n0,1\n", "bad.csv: missing column b"),
    ]
    for text, message in cases:
        (tmp_path / "bad.csv").write_text(text, encoding="utf-8")
        cfg = _write(tmp_path / "c.yaml", _config(tmp, pairs=str(tmp_path / "bad.csv")))
        _fails(capsys, ["train", str(cfg), "--out", str(tmp_path / "o")], message)
        assert not (tmp_path / "o").exists()
    cfg = _config(tmp, pairs=str(tmp / "train.csv"))
    cfg["loss"] = {"name": "ProxyAnchorLoss"}
    _fails(capsys, ["train", str(_write(tmp_path / "c.yaml", cfg))], "cannot learn from pairs")
    cfg = _config(tmp, pairs=str(tmp / "train.csv"), triplets=str(tmp / "train.csv"))
    _fails(capsys, ["train", str(_write(tmp_path / "c.yaml", cfg))], "data.triplets: give data.pairs or")


def test_pairs_of_an_image_folder_name_images_by_relative_path(capsys, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(2)
    root = tmp_path / "shots"
    names = []
    for k in range(16):
        sub = root / ("day1" if k % 2 else "day2")  # folders are not classes
        sub.mkdir(parents=True, exist_ok=True)
        img = np.zeros((8, 8), np.uint8)
        img[: 4 + (k % 4), :] = 200  # four kinds of image, by the height of the bright band
        img = np.clip(img + rng.integers(0, 40, (8, 8)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(sub / f"{k:02d}.png")
        names.append(f"{sub.name}/{k:02d}.png")
    pairs = [(i, j) for i in range(16) for j in range(i + 1, 16)]
    train = [(names[i], names[j], int(i % 4 == j % 4)) for i, j in pairs if j < 12]  # images 0-11
    held = [(names[i], names[j], int(i % 4 == j % 4)) for i, j in pairs if i >= 8]  # 8-15
    _write_csv(tmp_path / "p.csv", "a,b,similar", train)
    _write_csv(tmp_path / "h.csv", "a,b,similar", held)
    cfg = {
        "data": {"dataset": str(root), "grayscale": True, "pairs": str(tmp_path / "p.csv")},
        "eval": {"pairs": str(tmp_path / "h.csv")},
        "model": {"trunk": "mlp", "embedding_dim": 8, "trunk_kwargs": {"hidden": [16]}},
        "loss": {"name": "MultiSimilarityLoss"},
        "sampler": {"batch_size": 8},
        "optimizer": {"epochs": 1},
        "trainer": {"progress_bar": False, "threads": 1},
    }
    out = tmp_path / "run"
    assert main(["train", str(_write(tmp_path / "c.yaml", cfg)), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_items"] == 16 and metrics["n_train_pairs"] == len(train)
    assert 0 <= metrics["heldout_pairs"]["roc_auc"] <= 1
    capsys.readouterr()
    _write_csv(tmp_path / "bad.csv", "a,b,similar", [(names[0], "day3/00.png", 1)])
    cfg["data"]["pairs"] = str(tmp_path / "bad.csv")
    _fails(
        capsys,
        ["train", str(_write(tmp_path / "c.yaml", cfg)), "--out", str(tmp_path / "o")],
        "bad.csv: row 1: b='day3/00.png' is not an image of the folder",
    )
