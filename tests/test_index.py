import json

import numpy as np
import pytest
import torch

from likewise.index import Index


def _data(n=600, d=16, seed=0, n_classes=6):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((n_classes, d)) * 3
    y = rng.integers(0, n_classes, n)
    x = (centers[y] + rng.standard_normal((n, d))).astype(np.float32)
    return x, y


def _brute_force(x, q, metric, k):
    """Naive reference: full similarity matrix and a sort, in float64."""
    x, q = x.astype(np.float64), q.astype(np.float64)
    if metric == "cosine":
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
        s = q @ x.T
    elif metric == "dot":
        s = q @ x.T
    else:
        s = -np.sqrt(((q[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, order, 1), order


@pytest.mark.parametrize("metric", ["cosine", "dot", "euclidean"])
def test_flat_equals_brute_force(metric):
    x, _ = _data()
    q = _data(50, seed=1)[0]
    index = Index(16, metric=metric, kind="flat")
    index.add(x)
    scores, ids = index.search(q, 10)
    ref_scores, ref_ids = _brute_force(x, q, metric, 10)
    assert scores.shape == ids.shape == (50, 10)
    assert scores.dtype == np.float32 and ids.dtype == np.int64
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-4, atol=1e-3)


def test_torch_input_and_custom_ids():
    x, _ = _data(100)
    ids = np.arange(100) * 7 + 1000
    index = Index(16, metric="euclidean")
    out = index.add(torch.from_numpy(x).double(), ids=torch.from_numpy(ids))
    np.testing.assert_array_equal(out, ids)
    _, found = index.search(torch.from_numpy(x[:5]), 1)
    np.testing.assert_array_equal(found[:, 0], ids[:5])
    # default ids continue after the largest id used
    more = index.add(x[:3])
    np.testing.assert_array_equal(more, [1000 + 99 * 7 + 1 + i for i in range(3)])
    assert len(index) == 103


@pytest.mark.parametrize("kind", ["hnsw", "ivf"])
def test_approximate_kinds_have_high_recall(kind):
    x, _ = _data(3000, d=32, n_classes=20)
    q = x[:200] + 0.1 * np.random.default_rng(3).standard_normal((200, 32)).astype(np.float32)
    index = Index(32, kind=kind)
    index.add(x)
    _, ids = index.search(q, 10)
    _, ref = _brute_force(x, q, "cosine", 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, ref)])
    assert recall >= 0.9


def test_ivf_probing_every_list_is_exact_and_train_rules():
    x, _ = _data(800)
    index = Index(16, metric="euclidean", kind="ivf", nlist=8, nprobe=8)
    assert not index.is_trained
    index.train(x)
    assert index.is_trained and len(index) == 0
    with pytest.raises(ValueError, match="already trained"):
        index.train(x)
    index.add(x)
    _, ids = index.search(x[:40], 5)
    np.testing.assert_array_equal(ids, _brute_force(x, x[:40], "euclidean", 5)[1])
    with pytest.raises(ValueError, match=r"nlist=50 needs at least 50 training vectors, got 20"):
        Index(16, kind="ivf", nlist=50).add(x[:20])
    auto = Index(16, kind="ivf")
    auto.add(x[:20])  # automatic nlist shrinks to fit tiny data
    assert auto.params["nlist"] == 1 and len(auto) == 20


def test_labels_int_and_str():
    x, y = _data(200)
    index = Index(16)
    ids = index.add(x, labels=y)
    scores, found, labels = index.search_labels(x[:10], 4)
    np.testing.assert_array_equal(labels, y[found])  # ids are positions here
    np.testing.assert_array_equal(index.labels_for(ids[[5, 0]]), y[[5, 0]])
    with pytest.raises(ValueError, match=r"ids not in the index: \[99999\]"):
        index.labels_for([99999])
    with pytest.raises(ValueError, match="pass labels="):
        index.add(x[:2])
    with pytest.raises(TypeError, match="labels are strings but the index holds integers"):
        index.add(x[:2], labels=["a", "b"])
    with pytest.raises(ValueError, match="labels has 3 entries but there are 2 vectors"):
        index.add(x[:2], labels=[1, 2, 3])

    names = np.array(["cat", "dog", "owl"])[y % 3]
    named = Index(16, kind="hnsw")
    named.add(x, labels=names)
    _, found, labels = named.search_labels(x[:5], 3)
    np.testing.assert_array_equal(labels, names[found])
    unlabelled = Index(16)
    unlabelled.add(x)
    with pytest.raises(ValueError, match="this index has no labels"):
        unlabelled.search_labels(x[:1], 1)
    with pytest.raises(ValueError, match="cannot take labelled ones"):
        unlabelled.add(x[:1], labels=[0])


def test_fewer_stored_than_k_pads_with_minus_one():
    x, y = _data(3)
    index = Index(16)
    index.add(x, labels=y)
    scores, ids, labels = index.search_labels(x[:2], 5)
    assert (ids[:, 3:] == -1).all() and np.isneginf(scores[:, 3:]).all()
    assert (labels[:, 3:] == -1).all()
    assert set(ids[0, :3]) == {0, 1, 2}


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
@pytest.mark.parametrize("n_removed", [10, 300])  # hnsw: tombstones only, then a rebuild
def test_remove_matches_brute_force_on_the_rest(kind, n_removed):
    x, y = _data(600)
    params = {"ivf": {"nlist": 4, "nprobe": 4}, "hnsw": {"ef_search": 600}}.get(kind, {})
    index = Index(16, kind=kind, **params)
    index.add(x, labels=y)
    gone = np.random.default_rng(1).choice(600, n_removed, replace=False)
    assert index.remove(gone) == n_removed
    assert len(index) == 600 - n_removed
    keep = np.setdiff1d(np.arange(600), gone)
    scores, ids, labels = index.search_labels(x[:30], 8)
    _, ref = _brute_force(x[keep], x[:30], "cosine", 8)
    np.testing.assert_array_equal(ids, keep[ref])
    np.testing.assert_array_equal(labels, y[ids])
    with pytest.raises(ValueError, match="ids not in the index"):
        index.remove(gone[:1])
    # a removed id may be used again
    index.add(x[gone[:1]] * 2, ids=gone[:1], labels=[7])
    _, ids = index.search(x[gone[:1]], 1)
    assert ids[0, 0] == gone[0] and index.labels_for(ids)[0, 0] == 7


@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_save_load_round_trip(tmp_path, kind):
    x, y = _data(400)
    names = np.array(["a", "b", "c", "d", "e", "f"])[y]
    index = Index(16, metric="dot", kind=kind)
    index.add(x, ids=np.arange(400) + 10, labels=names)
    index.remove([10, 11, 12])  # hnsw keeps tombstones through save/load
    before = index.search_labels(x[:20], 6)
    index.save(tmp_path / "ix")
    assert sorted(p.name for p in (tmp_path / "ix").iterdir()) == ["index.faiss", "index.json"]
    loaded = Index.load(tmp_path / "ix")
    after = loaded.search_labels(x[:20], 6)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    assert (loaded.dim, loaded.metric, loaded.kind, len(loaded)) == (16, "dot", kind, 397)
    assert loaded.params == index.params
    assert loaded.add(x[:1], labels=["z"])[0] == 410  # the id counter survives


def test_save_empty_untrained_ivf(tmp_path):
    Index(4, kind="ivf").save(tmp_path / "e")
    loaded = Index.load(tmp_path / "e")
    assert len(loaded) == 0 and not loaded.is_trained
    with pytest.raises(ValueError, match="cannot search an empty index"):
        loaded.search(np.zeros((1, 4)), 1)


def test_failed_save_keeps_the_old_directory(tmp_path, monkeypatch):
    import faiss

    x, _ = _data(50)
    index = Index(16)
    index.add(x)
    index.save(tmp_path / "ix")
    old = (tmp_path / "ix" / "index.json").read_text()
    index.add(x[:5])

    def broken(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr(faiss, "write_index", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        index.save(tmp_path / "ix")
    assert (tmp_path / "ix" / "index.json").read_text() == old
    assert [p.name for p in tmp_path.iterdir()] == ["ix"]  # no temporary left behind


def test_load_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        Index.load(tmp_path / "missing")
    (tmp_path / "plain").mkdir()
    with pytest.raises(ValueError, match="is not a likewise index"):
        Index.load(tmp_path / "plain")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="is not a likewise index"):
        Index.load(tmp_path / "file.txt")
    (tmp_path / "plain" / "index.json").write_text("{not json")
    with pytest.raises(ValueError, match="index.json is unreadable"):
        Index.load(tmp_path / "plain")
    (tmp_path / "plain" / "index.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="is not a likewise index"):
        Index.load(tmp_path / "plain")

    x, _ = _data(20)
    index = Index(16)
    index.add(x)
    index.save(tmp_path / "ix")
    meta = json.loads((tmp_path / "ix" / "index.json").read_text())
    meta["ids"] = meta["ids"][:-1]
    (tmp_path / "ix" / "index.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="index.json was changed after it was written"):
        Index.load(tmp_path / "ix")
    index.save(tmp_path / "ix")
    (tmp_path / "ix" / "index.faiss").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="index.faiss has 7 bytes; .*index.json says"):
        Index.load(tmp_path / "ix")


def test_bad_input_errors():
    x, _ = _data(20)
    index = Index(16)
    with pytest.raises(ValueError, match="cannot search an empty index"):
        index.search(x[:1], 1)
    index.add(x)
    with pytest.raises(ValueError, match="queries have 8 dimensions but the index has 16"):
        index.search(x[:, :8], 1)
    with pytest.raises(ValueError, match="embeddings have 15 dimensions but the index has 16"):
        index.add(x[:, :15])
    bad = x[:2].copy()
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="embeddings contains NaN or infinite values"):
        index.add(bad)
    bad[1, 3] = np.inf
    with pytest.raises(ValueError, match="queries contains NaN or infinite values"):
        index.search(bad, 1)
    for k in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="k must be a positive integer"):
            index.search(x[:1], k)
    with pytest.raises(ValueError, match="must be a 2-D array"):
        index.search(x[0], 1)
    with pytest.raises(TypeError, match="must be real numbers"):
        index.add(np.array([["a"] * 16]))
    with pytest.raises(ValueError, match=r"ids already in the index: \[3\]"):
        index.add(x[:2], ids=[3, 100])
    with pytest.raises(ValueError, match=r"duplicate ids in this batch: \[100\]"):
        index.add(x[:2], ids=[100, 100])
    with pytest.raises(ValueError, match="ids must be non-negative"):
        index.add(x[:1], ids=[-1])
    assert len(index) == 20  # failed adds changed nothing
    with pytest.raises(ValueError, match="unknown metric 'l1'"):
        Index(16, metric="l1")
    with pytest.raises(ValueError, match="unknown kind 'lsh'"):
        Index(16, kind="lsh")
    with pytest.raises(ValueError, match="unknown parameters for kind='flat': 'M'"):
        Index(16, M=8)
    with pytest.raises(ValueError, match="M must be a positive integer"):
        Index(16, kind="hnsw", M=0)
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        Index(0)
    with pytest.raises(ValueError, match="unknown search-time parameters for kind='hnsw': 'M'"):
        Index(16, kind="hnsw").set_params(M=4)


def test_search_after_faiss_torch_utils_import():
    """pytorch-metric-learning imports faiss.contrib.torch_utils, which replaces ``Index.search``."""
    import subprocess
    import sys

    code = """
import faiss.contrib.torch_utils  # noqa: F401
import numpy as np
from likewise.index import Index
x = np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32)
index = Index(8, metric="euclidean", kind="hnsw")
index.add(x)
index.remove([0])
_, ids = index.search(x[:3], 2)
assert 0 not in ids[0] and ids[1, 0] == 1 and ids[2, 0] == 2, ids
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
