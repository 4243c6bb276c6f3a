import json
import subprocess
import sys

import numpy as np
import pytest

from likewise.cli import main


def _data(n=120, d=8, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)).astype(np.float32), rng.integers(0, 4, n)


def test_build_and_search_equal_brute_force(tmp_path):
    x, y = _data()
    q = _data(7, seed=1)[0]
    ids = np.arange(120) * 3 + 5
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "ids.npy", ids)
    np.save(tmp_path / "q.npy", q)
    ix = tmp_path / "ix"
    build = [
        sys.executable,
        "-m",
        "likewise",
        "index",
        "build",
        "--embeddings",
        str(tmp_path / "x.npy"),
        "--labels",
        str(tmp_path / "y.npy"),
        "--ids",
        str(tmp_path / "ids.npy"),
        "--out",
        str(ix),
        "--metric",
        "euclidean",
    ]
    proc = subprocess.run(build, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    search = [
        sys.executable,
        "-m",
        "likewise",
        "index",
        "search",
        str(ix),
        "--queries",
        str(tmp_path / "q.npy"),
        "-k",
        "4",
    ]
    proc = subprocess.run(search, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    dist = np.sqrt(((q[:, None].astype(np.float64) - x[None]) ** 2).sum(-1))
    order = np.argsort(dist, axis=1)[:, :4]
    assert [r["query"] for r in rows] == list(range(7))
    for r, o, dd in zip(rows, order, dist):
        assert r["ids"] == ids[o].tolist()
        assert r["labels"] == y[o].tolist()
        np.testing.assert_allclose(r["scores"], -dd[o], atol=1e-4)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_kinds_and_results_file(tmp_path, capsys, kind):
    x, _ = _data(300)
    np.save(tmp_path / "x.npy", x)
    assert (
        main(
            [
                "index",
                "build",
                "--embeddings",
                str(tmp_path / "x.npy"),
                "--out",
                str(tmp_path / "ix"),
                "--kind",
                kind,
            ]
        )
        == 0
    )
    out = tmp_path / "res.jsonl"
    assert (
        main(
            [
                "index",
                "search",
                str(tmp_path / "ix"),
                "--queries",
                str(tmp_path / "x.npy"),
                "-k",
                "1",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 300 and "labels" not in rows[0]
    # every stored vector finds itself
    assert np.mean([r["ids"][0] == i for i, r in enumerate(rows)]) >= 0.99


def test_fewer_vectors_than_k(tmp_path, capsys):
    x, _ = _data(3)
    np.save(tmp_path / "x.npy", x)
    assert (
        main(["index", "build", "--embeddings", str(tmp_path / "x.npy"), "--out", str(tmp_path / "ix")]) == 0
    )
    capsys.readouterr()
    assert (
        main(["index", "search", str(tmp_path / "ix"), "--queries", str(tmp_path / "x.npy"), "-k", "10"]) == 0
    )
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [sorted(r["ids"]) for r in rows] == [[0, 1, 2]] * 3


def _fail(capsys, argv, message, must_not_exist):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("likewise index: error: "), err
    assert message in err, err
    assert not must_not_exist.exists()


def test_bad_input(tmp_path, capsys):
    x, y = _data(20)
    bad = x.copy()
    bad[0, 0] = np.inf
    for name, a in dict(x=x, y=y, short=y[:5], nan=bad, q5=x[:, :5], dup=np.zeros(20, dtype=int)).items():
        np.save(tmp_path / f"{name}.npy", a)
    out = tmp_path / "ix"
    build = ["index", "build", "--out", str(out), "--embeddings"]
    _fail(capsys, build + [str(tmp_path / "missing.npy")], "no such file", out)
    _fail(capsys, build + [str(tmp_path / "nan.npy")], "contains NaN or infinite values", out)
    _fail(
        capsys,
        build + [str(tmp_path / "x.npy"), "--labels", str(tmp_path / "short.npy")],
        "has 5 entries but --embeddings has 20 rows",
        out,
    )
    _fail(capsys, build + [str(tmp_path / "x.npy"), "--ids", str(tmp_path / "dup.npy")], "duplicate ids", out)
    _fail(
        capsys,
        build + [str(tmp_path / "x.npy"), "--kind", "ivf", "--nlist", "50"],
        "needs at least 50 training vectors, got 20",
        out,
    )
    _fail(capsys, build + [str(tmp_path / "x.npy"), "--M", "8"], "unknown parameters for kind='flat'", out)

    assert main(build + [str(tmp_path / "x.npy")]) == 0
    capsys.readouterr()
    res = tmp_path / "res.jsonl"
    search = ["index", "search", str(out), "--out", str(res), "--queries"]
    _fail(capsys, search + [str(tmp_path / "q5.npy")], "have 5 dimensions but the index has 8", res)
    _fail(capsys, search + [str(tmp_path / "nan.npy")], "contains NaN or infinite values", res)
    _fail(capsys, search + [str(tmp_path / "x.npy"), "-k", "0"], "-k must be a positive integer", res)
    _fail(
        capsys,
        ["index", "search", str(tmp_path), "--out", str(res), "--queries", str(tmp_path / "x.npy")],
        "is not a likewise index",
        res,
    )
    _fail(
        capsys,
        ["index", "search", str(tmp_path / "nowhere"), "--queries", str(tmp_path / "x.npy")],
        "no such file",
        res,
    )


@pytest.mark.parametrize("header", ["label\n", ""])
def test_build_with_class_name_csv_labels(tmp_path, capsys, header):
    """A one-column CSV of class names (with or without a header line) labels the vectors."""
    x, y = _data(30, seed=2)
    names = np.array(["ant", "bee", "cat", "dog"])[y]
    np.save(tmp_path / "x.npy", x)
    (tmp_path / "names.csv").write_text(header + "\n".join(names) + "\n")
    ix = tmp_path / "ix"
    argv = [
        "index",
        "build",
        "--embeddings",
        str(tmp_path / "x.npy"),
        "--labels",
        str(tmp_path / "names.csv"),
    ]
    assert main([*argv, "--out", str(ix)]) == 0
    capsys.readouterr()
    assert main(["index", "search", str(ix), "--queries", str(tmp_path / "x.npy"), "-k", "3"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    order = np.argsort(-(xn @ xn.T), axis=1)[:, :3]
    for r, o in zip(rows, order):
        assert r["ids"] == o.tolist() and r["labels"] == names[o].tolist()
