"""Nothing a user had is lost, and what is loaded is verified (issue 11, sections 1 and 2).

Every writer of a directory (Index.save, Matcher.save, save_model, `likewise index build`,
`likewise train`, `likewise evaluate`) and of a file (`likewise embed`, `index search --out`)
is pointed at things it did not write; each must refuse and leave them byte for byte as
they were. Loaders are handed edited, truncated and hostile files.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
import yaml
from tests.test_cli_train import TINY
from tests.test_cli_train import _fails as _cli_fails

from likewise import Index, Matcher
from likewise.artifacts import check_output_file, check_replaceable, kind_of, remove_stale_temporaries
from likewise.cli import main
from likewise.export import load, save_model
from likewise.models import build_model


def _tree(path):
    """Every file under ``path`` with its bytes (what must survive unchanged)."""
    if path.is_file():
        return {".": path.read_bytes()}
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _photos(tmp_path):
    folder = tmp_path / "photos"
    (folder / "2019").mkdir(parents=True)
    (folder / "cat.jpg").write_bytes(b"\xff\xd8\xff not really a cat")
    (folder / "2019" / "dog.png").write_bytes(b"\x89PNG\r\n\x1a\n a dog")
    return folder


def _index(n=30, d=8, labels=True):
    rng = np.random.default_rng(0)
    index = Index(d)
    index.add(rng.standard_normal((n, d)).astype(np.float32), labels=np.arange(n) % 3 if labels else None)
    return index


def _model():
    return build_model("mlp", (8,), embedding_dim=4, trunk_kwargs={"hidden": [16]})


def _writers():
    """(name, kind, write(path, overwrite)) for every library writer of a directory artifact."""
    index = _index()
    matcher = Matcher(index, threshold=0.5)
    model = _model()
    return [
        ("index", "index", lambda p, o=False: index.save(p, overwrite=o)),
        ("matcher", "matcher", lambda p, o=False: matcher.save(p, overwrite=o)),
        ("model", "model", lambda p, o=False: save_model(p, model, overwrite=o)),
    ]


WRITERS = [w[0] for w in _writers()]


def _writer(name):
    return next(w for w in _writers() if w[0] == name)


# ----------------------------------------------------------------------------- section 1: writers


@pytest.mark.parametrize("name", WRITERS)
def test_writers_refuse_a_folder_of_user_files(tmp_path, name):
    _, kind, write = _writer(name)
    folder = _photos(tmp_path)
    before = _tree(folder)
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match=f"photos is a folder that is not a likewise {kind}"):
            write(folder, overwrite)
    assert _tree(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]  # no temporary left


@pytest.mark.parametrize("name", WRITERS)
def test_writers_refuse_an_existing_file(tmp_path, name):
    _, kind, write = _writer(name)
    for content in (b"\x93NUMPY some array", b"plain text", b""):
        target = tmp_path / "existing.npy"
        target.write_bytes(content)
        for overwrite in (False, True):
            with pytest.raises(FileExistsError, match=f"is an existing file, not a likewise {kind}"):
                write(target, overwrite)
        assert target.read_bytes() == content


@pytest.mark.parametrize("name", WRITERS)
def test_writers_refuse_a_symlink(tmp_path, name):
    _, _, write = _writer(name)
    real = _photos(tmp_path)
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(FileExistsError, match="symbolic link"):
        write(link, True)
    assert link.is_symlink() and _tree(real)


@pytest.mark.parametrize("name", WRITERS)
def test_writers_take_an_empty_folder_and_replace_their_own_kind(tmp_path, name):
    _, kind, write = _writer(name)
    target = tmp_path / "out"
    target.mkdir()
    write(target)
    assert kind_of(target) == kind
    first = _tree(target)
    write(target)  # its own kind: replaced
    assert kind_of(target) == kind and set(_tree(target)) == set(first)


def test_other_likewise_artifacts_need_overwrite(tmp_path):
    index_dir = _index().save(tmp_path / "a")
    with pytest.raises(FileExistsError, match="holds a likewise index, not a model; pass overwrite=True"):
        save_model(index_dir, _model())
    assert kind_of(index_dir) == "index"
    save_model(index_dir, _model(), overwrite=True)
    assert kind_of(index_dir) == "model"


def test_an_artifact_holding_a_user_file_is_foreign(tmp_path):
    """A user's file put inside an index directory makes it not an index any more: never replaced."""
    target = _index().save(tmp_path / "ix")
    (target / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a likewise index"):
        _index().save(target, overwrite=True)
    assert (target / "notes.txt").read_text() == "mine"


def test_output_files_replace_only_their_own_format(tmp_path):
    npy = tmp_path / "e.npy"
    np.save(npy, np.zeros(3))
    check_output_file(npy, "npy")  # an earlier array: may be replaced
    npy.write_text("a text file named .npy")
    with pytest.raises(FileExistsError, match="exists and is not a npy file"):
        check_output_file(npy, "npy")
    with pytest.raises(FileExistsError, match="is a folder"):
        check_output_file(_photos(tmp_path), "npy")
    with pytest.raises(ValueError, match="unknown artifact kind 'photos'"):
        check_replaceable(tmp_path / "x", "photos")


def test_cli_writers_refuse_what_they_did_not_write(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "e.npy", rng.standard_normal((20, 8)).astype(np.float32))
    np.save(tmp_path / "l.npy", np.arange(20) % 4)
    emb = ["--embeddings", str(tmp_path / "e.npy")]
    folder = _photos(tmp_path)
    existing = tmp_path / "existing.npy"
    np.save(existing, np.arange(5))
    before = (_tree(folder), existing.read_bytes())
    for out in (folder, existing):
        for force in ([], ["--force"]):
            _cli_fails(capsys, ["index", "build", *emb, "--out", str(out), *force], "likewise never replaces")
    _cli_fails(
        capsys,
        ["evaluate", *emb, "--labels", str(tmp_path / "l.npy"), "--out", str(folder)],
        "holds files that are not likewise evaluate outputs",
    )
    # embed over a file of another format, and index search over a folder
    model_dir = save_model(tmp_path / "m", _model())
    (tmp_path / "notes.npy").write_text("my notes")
    _cli_fails(
        capsys,
        ["embed", str(model_dir), str(tmp_path / "e.npy"), "--out", str(tmp_path / "notes.npy")],
        "is not a npy file",
    )
    assert (tmp_path / "notes.npy").read_text() == "my notes"
    assert main(["index", "build", *emb, "--out", str(tmp_path / "ix")]) == 0
    capsys.readouterr()
    _cli_fails(
        capsys,
        ["index", "search", str(tmp_path / "ix"), "--queries", str(tmp_path / "e.npy"), "--out", str(folder)],
        "is a folder",
    )
    # a model directory is another likewise artifact: --force replaces it
    _cli_fails(capsys, ["index", "build", *emb, "--out", str(model_dir)], "holds a likewise model")
    assert main(["index", "build", *emb, "--out", str(model_dir), "--force"]) == 0
    capsys.readouterr()
    assert kind_of(model_dir) == "index"
    assert (_tree(folder), existing.read_bytes()) == before


def test_train_refuses_a_folder_of_user_files(tmp_path, capsys):
    folder = _photos(tmp_path)
    before = _tree(folder)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    for extra in ([], ["--resume"]):
        _cli_fails(capsys, ["train", str(cfg), "--out", str(folder), *extra], "not likewise run outputs")
    assert _tree(folder) == before


# ----------------------------------------------------------------------------- stale temporaries

_KILLED_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from likewise import Index
    import likewise.index as li

    index = Index(8)
    index.add(np.ones((4, 8), np.float32))
    def write_then_die(directory):
        (directory / "index.faiss").write_bytes(b"x" * 100_000)
        os.kill(os.getpid(), signal.SIGKILL)
    index._write_into = write_then_die
    index.save(sys.argv[1])
    """
)


def test_a_killed_writer_leaves_a_temporary_that_the_next_write_removes(tmp_path):
    target = tmp_path / "ix"
    done = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(target)], capture_output=True)
    assert done.returncode == -signal.SIGKILL
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(".ix.lw-") and left[0].endswith(".tmp")
    # a live writer's temporary is kept; a dead one's goes with the next write
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".ix.lw-{sleeper.pid}-abc.tmp"
        live.mkdir()
        unrelated = tmp_path / ".other.lw-1-abc.tmp"
        unrelated.mkdir()
        _index().save(target)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["ix", live.name, unrelated.name])
    finally:
        sleeper.kill()
        sleeper.wait()
    assert remove_stale_temporaries(target) == [live]


def test_handled_errors_leave_no_temporary(tmp_path, monkeypatch):
    import faiss

    def broken(*args):
        raise OSError("disk full")

    monkeypatch.setattr(faiss, "write_index", broken)
    for writer in (lambda p: _index().save(p), lambda p: Matcher(_index(), 0.5).save(p)):
        with pytest.raises(OSError, match="disk full"):
            writer(tmp_path / "x")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- section 2: Index.load


def _rewrite(meta_path, change, digest=True):
    """Edit index.json; with ``digest``, as a careful editor would (its digest recomputed)."""
    from likewise.index import _CONTENT_KEYS

    meta = json.loads(meta_path.read_text())
    change(meta)
    if digest:
        content = {k: meta.get(k) for k in _CONTENT_KEYS}
        text = json.dumps(content, sort_keys=True, separators=(",", ":"))
        meta["digest"] = hashlib.sha256(text.encode()).hexdigest()
    meta_path.write_text(json.dumps(meta))


def _saved(tmp_path, kind="flat", **params):
    rng = np.random.default_rng(1)
    index = Index(8, kind=kind, **params)
    index.add(rng.standard_normal((60, 8)).astype(np.float32), labels=np.arange(60) % 5)
    path = index.save(tmp_path / f"ix-{kind}")
    return path, path / "index.json"


EDITS = {
    "kind": (lambda m: m.update(kind="hnsw"), "is not a hnsw index"),
    "metric": (lambda m: m.update(metric="euclidean"), "was built for another metric"),
    "dim": (lambda m: m.update(dim=9), "has dimension 8, index.json says 9"),
    "ids reordered": (lambda m: m.update(ids=m["ids"][::-1]), "other ids than index.json lists"),
    "ids all equal": (lambda m: m.update(ids=[0] * len(m["ids"])), "ids are not unique"),
    "ids shifted": (lambda m: m.update(ids=[i + 1000 for i in m["ids"]]), "other ids than index.json lists"),
    "one id dropped": (lambda m: m.update(ids=m["ids"][1:], labels=m["labels"][1:]), "holds 60 vectors but"),
    "labels short": (lambda m: m.update(labels=m["labels"][1:]), "labels and ids differ in length"),
    "negative id": (lambda m: m.update(ids=[-5] + m["ids"][1:]), "ids must be non-negative"),
    "file outside": (
        lambda m: m.update(files={"../../etc/passwd": m["files"]["index.faiss"]}),
        "is not a file name inside",
    ),
    "absolute file": (
        lambda m: m.update(files={"/etc/passwd": {"size": 1, "sha256": "0"}}),
        "not a file name",
    ),
}


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_index_load_refuses_edited_manifests(tmp_path, edit):
    change, message = EDITS[edit]
    path, meta = _saved(tmp_path)
    _rewrite(meta, change, digest=False)
    with pytest.raises(ValueError, match="index.json was changed after it was written"):
        Index.load(path)
    path, meta = _saved(tmp_path)
    _rewrite(meta, change, digest=True)
    with pytest.raises(ValueError, match=message):
        Index.load(path)


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_index_load_checks_hnsw_and_ivf_structure(tmp_path, kind):
    path, meta = _saved(tmp_path, kind, **({"nlist": 4} if kind == "ivf" else {}))
    assert len(Index.load(path)) == 60
    _rewrite(meta, lambda m: m.update(kind="flat", params={}))
    with pytest.raises(ValueError, match="is not a flat index"):
        Index.load(path)
    path, meta = _saved(tmp_path, kind, **({"nlist": 4} if kind == "ivf" else {}))
    _rewrite(meta, lambda m: m.update(ids=[i + 1 for i in m["ids"]]))
    with pytest.raises(ValueError, match="other ids"):
        Index.load(path)


def test_index_load_refuses_damaged_or_swapped_faiss_files(tmp_path):
    path, _ = _saved(tmp_path)
    faiss_file = path / "index.faiss"
    data = faiss_file.read_bytes()
    faiss_file.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"index.faiss has \d+ bytes; .*index.json says"):
        Index.load(path)
    flipped = bytearray(data)
    flipped[-5] ^= 0xFF
    faiss_file.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="does not match the SHA-256"):
        Index.load(path)
    faiss_file.unlink()
    faiss_file.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="missing or not a regular file"):
        Index.load(path)


# ----------------------------------------------------------------------------- section 2: models


@pytest.fixture
def model_dir(tmp_path):
    return save_model(tmp_path / "m", _model(), mean=np.zeros(8), std=np.ones(8))


@pytest.mark.parametrize("key", ["model", "preprocessing", "embedding_dim", "distance", "normalize"])
def test_model_json_missing_keys_are_named(model_dir, key):
    meta = json.loads((model_dir / "model.json").read_text())
    del meta[key]
    (model_dir / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=rf"model.json: missing key '{key}'"):
        load(model_dir)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m["model"].pop("trunk"), "missing key 'model.trunk'"),
        (lambda m: m["preprocessing"].update(std=[0.0] * 8), "std must be positive"),
        (lambda m: m["preprocessing"].update(std=[1.0] * 7), "std has 7 values"),
        (lambda m: m["preprocessing"].update(mean=None), "mean must be numbers|mean has"),
        (lambda m: m["model"].update(embedding_dim=-3), "embedding_dim"),
        (lambda m: m["model"].update(trunk="resnet999"), "unknown trunk 'resnet999'"),
        (lambda m: m["model"].update(input_shape="8"), "input_shape"),
    ],
)
def test_model_json_bad_values(model_dir, change, message):
    meta = json.loads((model_dir / "model.json").read_text())
    change(meta)
    (model_dir / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=message):
        load(model_dir)


def _replace_weights(model_dir, change):
    from safetensors.torch import load_file, save_file

    state = load_file(str(model_dir / "model.safetensors"))
    change(state)
    save_file(state, str(model_dir / "model.safetensors"))
    meta = json.loads((model_dir / "model.json").read_text())
    meta.pop("files")  # as an older model.json would be: the weights are still checked
    (model_dir / "model.json").write_text(json.dumps(meta))


def test_model_weights_checked(model_dir, capsys):
    data = (model_dir / "model.safetensors").read_bytes()
    (model_dir / "model.safetensors").write_bytes(data[:-8] + b"\0" * 8)
    with pytest.raises(ValueError, match="does not match the SHA-256"):
        load(model_dir)
    (model_dir / "model.safetensors").write_bytes(data)
    load(model_dir)

    def nan(state):
        name = next(k for k, v in state.items() if v.is_floating_point())
        state[name][0] = float("nan")

    _replace_weights(model_dir, nan)
    with pytest.raises(ValueError, match="holds NaN or infinite values"):
        load(model_dir)
    np.save(model_dir.parent / "x.npy", np.zeros((3, 8), np.float32))
    _cli_fails(
        capsys,
        ["embed", str(model_dir), str(model_dir.parent / "x.npy"), "--out", str(model_dir.parent / "e.npy")],
        "holds NaN or infinite values",
    )
    assert not (model_dir.parent / "e.npy").exists()


def test_save_model_refuses_non_finite_weights(tmp_path):
    model = _model()
    with torch.no_grad():
        next(model.parameters())[0] = float("inf")
    with pytest.raises(ValueError, match="NaN or infinite"):
        save_model(tmp_path / "m", model)
    assert not (tmp_path / "m").exists()


# ----------------------------------------------------------------------------- section 2: resume


class _Hostile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    cfg = root / "c.yaml"
    cfg.write_text(yaml.safe_dump(TINY))
    assert main(["train", str(cfg), "--out", str(root / "out")]) == 0
    return cfg, root / "out"


@pytest.mark.parametrize("damage", ["truncated", "random", "hostile pickle", "a list", "other shapes"])
def test_resume_from_a_bad_checkpoint_is_one_line(finished_run, damage, capsys, tmp_path):
    cfg, out = finished_run
    ckpt = out / "checkpoints" / "last.ckpt"
    original = ckpt.read_bytes()
    marker = tmp_path / "pwned"
    try:
        if damage == "truncated":
            ckpt.write_bytes(original[: len(original) // 3])
        elif damage == "random":
            ckpt.write_bytes(np.random.default_rng(0).bytes(5000))
        elif damage == "hostile pickle":
            ckpt.write_bytes(pickle.dumps({"state_dict": _Hostile(marker)}))
        elif damage == "a list":
            torch.save([1, 2, 3], ckpt)
        else:
            state = torch.load(ckpt, weights_only=True)
            name = next(iter(state["state_dict"]))
            state["state_dict"][name] = torch.zeros(3, 3, 3)
            torch.save(state, ckpt)
        capsys.readouterr()
        _cli_fails(capsys, ["train", str(cfg), "--out", str(out), "--resume"], str(ckpt))
        assert not marker.exists()  # nothing was unpickled
    finally:
        ckpt.write_bytes(original)
