import json
import subprocess
import sys

import numpy as np
import pytest

from likewise.cli import main


def _data(n_per=12, n_classes=5, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_classes, d))
    y = np.repeat(np.arange(n_classes), n_per)
    return (centers[y] + 0.7 * rng.standard_normal((y.size, d))).astype(np.float32), y


def _naive_retrieval(q, qy, r, ry, loo):
    """P@1 and recall@k by a full cosine similarity matrix and argsort."""
    qn = q / np.linalg.norm(q, axis=1, keepdims=True)
    rn = r / np.linalg.norm(r, axis=1, keepdims=True)
    s = qn.astype(np.float64) @ rn.T.astype(np.float64)
    if loo:
        np.fill_diagonal(s, -np.inf)
    order = np.argsort(-s, axis=1, kind="stable")
    hits = ry[order] == qy[:, None]
    return {"precision_at_1": hits[:, 0].mean(), "recall_at_5": hits[:, :5].any(1).mean()}


def _write(tmp_path, **arrays):
    for name, a in arrays.items():
        np.save(tmp_path / f"{name}.npy", a)


def _fail(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert main(argv + ["--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("likewise evaluate: error: "), err
    assert message in err, err
    assert not out.exists()


def test_evaluate_subprocess_writes_metrics_and_report(tmp_path):
    x, y = _data()
    _write(tmp_path, e=x, l=y)
    out = tmp_path / "res"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "likewise",
            "evaluate",
            "--embeddings",
            str(tmp_path / "e.npy"),
            "--labels",
            str(tmp_path / "l.npy"),
            "--out",
            str(out),
            "--max-points",
            "60",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "precision_at_1" in proc.stdout and "roc_auc" in proc.stdout
    metrics = json.loads((out / "metrics.json").read_text())
    naive = _naive_retrieval(x, y, x, y, loo=True)
    for key, value in naive.items():
        assert metrics["retrieval"][key] == pytest.approx(value)
    assert f"{naive['precision_at_1']:.4f}" in proc.stdout
    v = metrics["verification"]
    assert v["n_pairs"] == 60 * 59 // 2 and v["pair_sampling"] == "all"
    assert v["n_positive"] == 5 * 12 * 11 // 2
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4 and "<th>map_at_r</th>" in html


def test_evaluate_refs_npz_key_csv_and_images(tmp_path, capsys):
    x, y = _data(n_per=10, seed=1)
    r, ry = _data(n_per=10, seed=2)
    np.savez(tmp_path / "q.npz", emb=x, lab=y)
    np.savetxt(tmp_path / "r.csv", r, delimiter=",", header="a,b,c,d,e,f,g,h", comments="")
    np.savetxt(tmp_path / "ry.csv", ry, fmt="%d")
    images = np.random.default_rng(0).random((50, 1, 6, 6))
    _write(tmp_path, im=images)
    out = tmp_path / "o"
    argv = [
        "evaluate",
        "--embeddings",
        f"{tmp_path}/q.npz:emb",
        "--labels",
        f"{tmp_path}/q.npz:lab",
        "--ref-embeddings",
        f"{tmp_path}/r.csv",
        "--ref-labels",
        f"{tmp_path}/ry.csv",
        "--images",
        f"{tmp_path}/im.npy",
        "--max-pairs",
        "1000",
        "--out",
        str(out),
        "--max-points",
        "50",
    ]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    naive = _naive_retrieval(x, y, r.astype(np.float32), ry, loo=False)
    for key, value in naive.items():
        assert metrics["retrieval"][key] == pytest.approx(value, abs=1e-6)
    assert (
        metrics["verification"]["n_pairs"] == 1000 and metrics["verification"]["pair_sampling"] == "uniform"
    )
    assert (out / "report.html").read_text().count("data:image/png;base64,") == 5


def test_evaluate_bad_input(tmp_path, capsys):
    x, y = _data(n_per=4)
    bad = x.copy()
    bad[3, 1] = np.nan
    _write(
        tmp_path,
        e=x,
        l=y,
        nan=bad,
        short=y[:-1],
        r7=x[:, :7],
        distinct=np.arange(len(y)),
        other=np.arange(len(y)) + 100,
        one=np.zeros(len(y), dtype=int),
        i2=np.zeros((5, 4, 4)),
        e1=x[:, 0],
    )
    e, l = str(tmp_path / "e.npy"), str(tmp_path / "l.npy")
    cases = [
        (["--embeddings", str(tmp_path / "missing.npy"), "--labels", l], "no such file"),
        (["--embeddings", str(tmp_path / "nan.npy"), "--labels", l], "contains NaN or infinite values"),
        (
            ["--embeddings", e, "--labels", str(tmp_path / "short.npy")],
            "has 19 entries but --embeddings has 20",
        ),
        (["--embeddings", str(tmp_path / "e1.npy"), "--labels", l], "must be a 2-D array"),
        (
            [
                "--embeddings",
                e,
                "--labels",
                l,
                "--ref-embeddings",
                str(tmp_path / "r7.npy"),
                "--ref-labels",
                l,
            ],
            "--ref-embeddings have 7 dimensions but --embeddings have 8",
        ),
        (
            ["--embeddings", e, "--labels", l, "--ref-embeddings", e],
            "pass both --ref-embeddings and --ref-labels",
        ),
        (["--embeddings", e, "--labels", str(tmp_path / "distinct.npy")], "no two embeddings share a label"),
        (["--embeddings", e, "--labels", str(tmp_path / "one.npy")], "every embedding has the same label"),
        (
            [
                "--embeddings",
                e,
                "--labels",
                l,
                "--ref-embeddings",
                e,
                "--ref-labels",
                str(tmp_path / "other.npy"),
            ],
            "no query label occurs among the ref labels",
        ),
        (
            ["--embeddings", e, "--labels", l, "--images", str(tmp_path / "i2.npy")],
            "images has 5 entries but there are 20 embeddings",
        ),
        (["--embeddings", f"{tmp_path}/e.npy:x", "--labels", l], "no such file"),
    ]
    np.savez(tmp_path / "two.npz", a=x, b=x)
    cases.append((["--embeddings", f"{tmp_path}/two.npz", "--labels", l], "say which one"))
    for args, message in cases:
        _fail(tmp_path, capsys, ["evaluate", *args], message)


def test_evaluate_out_is_a_file(tmp_path, capsys):
    x, y = _data(n_per=3)
    _write(tmp_path, e=x, l=y)
    (tmp_path / "taken").write_text("keep me")
    argv = ["evaluate", "--embeddings", str(tmp_path / "e.npy"), "--labels", str(tmp_path / "l.npy")]
    assert main(argv + ["--out", str(tmp_path / "taken")]) == 2
    assert "is an existing file, not a folder" in capsys.readouterr().err
    assert (tmp_path / "taken").read_text() == "keep me"


def _strict_json(text):
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


def test_evaluate_string_label_csv_and_strict_json(tmp_path, capsys):
    """Class names in a one-column CSV (with or without a header) act as the integer labels do;
    metrics.json is strict JSON even when a threshold is infinite (written as null)."""
    x, y = _data(n_per=10, n_classes=4, seed=3)
    x[1] = x[10]  # the most similar pair is a different-label one: no threshold keeps FAR <= 1e-3
    names = np.array(["cat", "dog", "bird, small", "fish"])[y]
    _write(tmp_path, e=x, l=y)
    (tmp_path / "with_header.csv").write_text("label\n" + "\n".join(f'"{n}"' for n in names) + "\n")
    (tmp_path / "bare.csv").write_text("\n".join(f'"{n}"' for n in names) + "\n")
    results = {}
    for name in ("l.npy", "with_header.csv", "bare.csv"):
        out = tmp_path / name.replace(".", "_")
        argv = ["evaluate", "--embeddings", str(tmp_path / "e.npy"), "--labels", str(tmp_path / name)]
        assert main([*argv, "--out", str(out), "--no-report"]) == 0, capsys.readouterr().err
        text = (out / "metrics.json").read_text()
        assert "Infinity" not in text and "NaN" not in text
        results[name] = _strict_json(text)
    naive = _naive_retrieval(x, y, x, y, loo=True)
    for name, metrics in results.items():
        for key, value in naive.items():
            assert metrics["retrieval"][key] == pytest.approx(value), (name, key)
        v = metrics["verification"]
        assert v["threshold_at_far_1e-03"] is None and v["tar_at_far_1e-03"] == 0
        assert v["n_positive"] == 4 * 10 * 9 // 2
    strip = ("settings",)
    base = {k: v for k, v in results["l.npy"].items() if k not in strip}
    for name in ("with_header.csv", "bare.csv"):
        assert {k: v for k, v in results[name].items() if k not in strip} == base


def test_evaluate_label_csv_errors(tmp_path, capsys):
    x, y = _data(n_per=4)
    _write(tmp_path, e=x)
    (tmp_path / "short.csv").write_text("label\n" + "\n".join(["a", "b"] * 9) + "\n")
    (tmp_path / "header_only.csv").write_text("label\n")
    (tmp_path / "two_cols.csv").write_text("a,b\nc,d\n")
    e = str(tmp_path / "e.npy")
    cases = [
        ("short.csv", "has 18 entries but --embeddings has 20"),
        ("header_only.csv", "has a header line but no labels"),
        ("two_cols.csv", "is not a numeric table (or a one-column file of labels)"),
    ]
    for name, message in cases:
        _fail(tmp_path, capsys, ["evaluate", "--embeddings", e, "--labels", str(tmp_path / name)], message)
