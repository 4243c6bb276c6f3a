"""Atomic writes and array loading (likewise.io)."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from likewise.io import (
    atomic_directory,
    atomic_write_bytes,
    atomic_write_json,
    load_array,
    save_npy,
    split_key,
)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_written_files_and_directories_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        f = atomic_write_bytes(tmp_path / "a.bin", b"x")
        with atomic_directory(tmp_path / "d", "run") as tmp:
            (tmp / "config.yaml").write_text("y")
    finally:
        os.umask(old)
    assert _mode(f) == 0o644
    assert _mode(tmp_path / "d") == 0o755


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "m.json"
    atomic_write_json(target, {"a": 1})

    class Boom:
        pass

    with pytest.raises(TypeError, match="cannot write Boom as JSON"):
        atomic_write_json(target, {"a": Boom()})
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


def test_atomic_directory_replaces_only_on_success(tmp_path):
    target = tmp_path / "d"
    with atomic_directory(target, "run") as tmp:
        (tmp / "config.yaml").write_text("1")
    with pytest.raises(RuntimeError), atomic_directory(target, "run") as tmp:
        (tmp / "config.yaml").write_text("2")
        raise RuntimeError("interrupted")
    assert (target / "config.yaml").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    with atomic_directory(target, "run") as tmp:
        (tmp / "config.yaml").write_text("3")
        (tmp / "metrics.json").write_text("{}")
    assert sorted(p.name for p in target.iterdir()) == ["config.yaml", "metrics.json"]


def test_load_array_formats_and_errors(tmp_path):
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    save_npy(tmp_path / "x.npy", x)
    np.testing.assert_array_equal(load_array(tmp_path / "x.npy"), x)
    np.savez(tmp_path / "two.npz", a=x, b=x[:, 0])
    np.testing.assert_array_equal(load_array(*split_key(f"{tmp_path}/two.npz:b")), x[:, 0])
    with pytest.raises(ValueError, match="say which one"):
        load_array(tmp_path / "two.npz")
    (tmp_path / "t.csv").write_text("f0,f1\n1,2\n3,4\n")
    np.testing.assert_array_equal(load_array(tmp_path / "t.csv"), [[1.0, 2.0], [3.0, 4.0]])
    (tmp_path / "labels.csv").write_text("1\n2\n")
    assert load_array(tmp_path / "labels.csv").dtype == np.int64
    with pytest.raises(FileNotFoundError):
        load_array(tmp_path / "missing.npy")
    (tmp_path / "x.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="unsupported file type '.bin'"):
        load_array(tmp_path / "x.bin")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="holds pickled Python objects; likewise does not load pickles"):
        load_array(tmp_path / "obj.npy")
    np.save(tmp_path / "cube.npy", np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match=r"shape \(2, 2, 2\); expected 1-D or 2-D"):
        load_array(tmp_path / "cube.npy")


def _strict(text):
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))


def test_json_is_strict_with_non_finite_values_as_null(tmp_path):
    obj = {
        "inf": float("inf"),
        "neg": -np.inf,
        "nested": {"list": [1.5, float("nan"), (np.float32("inf"), np.int64(3))]},
        "np": np.float64("nan"),
        "arr": np.array([0.25, np.inf]),
        "flag": np.bool_(True),
        "path": tmp_path / "p",
        "fine": 2.5,
    }
    atomic_write_json(tmp_path / "m.json", obj)
    got = _strict((tmp_path / "m.json").read_text())
    assert got == {
        "inf": None,
        "neg": None,
        "nested": {"list": [1.5, None, [None, 3]]},
        "np": None,
        "arr": [0.25, None],
        "flag": True,
        "path": str(tmp_path / "p"),
        "fine": 2.5,
    }
    assert obj["inf"] == float("inf")  # the caller's object is not changed


def test_csv_of_class_names(tmp_path):
    names = ["cat", "dog", "cat", "bird"]
    cases = {
        "header.csv": "label\n" + "\n".join(names) + "\n",
        "Header.csv": "Class\n" + "\n".join(names) + "\n",
        "bare.csv": "\n".join(names) + "\n",
        "quoted.csv": '"cat"\n dog \n"cat"\n\n"bird"\n',
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        got = load_array(tmp_path / name)
        assert got.dtype.kind == "U" and got.tolist() == names, name
    # a first value that is a label, not a column name, is kept
    (tmp_path / "first.csv").write_text("label\nx\nlabel\n")
    assert load_array(tmp_path / "first.csv").tolist() == ["label", "x", "label"]
    (tmp_path / "comma.csv").write_text('"a, b"\nc\n')
    assert load_array(tmp_path / "comma.csv").tolist() == ["a, b", "c"]
    (tmp_path / "mixed.csv").write_text("7\ncat\n")
    assert load_array(tmp_path / "mixed.csv").tolist() == ["7", "cat"]
    # numeric files are unchanged: a header line over numbers is skipped
    (tmp_path / "numeric.csv").write_text("label\n3\n1\n")
    got = load_array(tmp_path / "numeric.csv")
    assert got.dtype == np.int64 and got.tolist() == [3, 1]
    (tmp_path / "header_only.csv").write_text("label\n")
    with pytest.raises(ValueError, match="has a header line but no labels"):
        load_array(tmp_path / "header_only.csv")
    (tmp_path / "empty_label.csv").write_text('cat\n""\n')
    with pytest.raises(ValueError, match="contains an empty label"):
        load_array(tmp_path / "empty_label.csv")
    (tmp_path / "table.csv").write_text("a,b\nc,d\n")
    with pytest.raises(ValueError, match="is not a numeric table"):
        load_array(tmp_path / "table.csv")
