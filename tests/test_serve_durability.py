"""`likewise serve` durability: restarts, SIGKILL right after an acknowledged write, delete +
restart (real server processes, embedded store and Milvus Lite), and the embedded store's write
log (torn tails, compaction, SIGKILL at random moments while writing)."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from _server import DIM, SRC, Server, axis_vector, make_model


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_model(tmp_path_factory.mktemp("serve-model") / "model")


def labels_of(client, ids):
    """id -> (label, metadata) of the items with these ids, found by searching their vectors."""
    out = {}
    hits = client.post("/search", json={"embeddings": [axis_vector(5)], "k": 1000}).json()["results"][0]
    for h in hits:
        if h["id"] in ids:
            out[h["id"]] = (h["label"], h["metadata"])
    return out


@pytest.mark.parametrize("kind", ["embedded", "milvus"])
def test_writes_survive_clean_restart_sigkill_and_deletes(kind, model_dir, tmp_path):
    if kind == "milvus":
        store = f"milvus:{tmp_path / 'gallery.db'}"
    else:
        store = str(tmp_path / "store")
    first = Server(model_dir, store).start()
    try:
        with first.client() as c:
            assert c.get("/stats").json()["items"] == 40  # seeded with the model's gallery
            items = [
                {"label": "x", "embedding": axis_vector(5, 0.1, 1), "metadata": {"n": 1}},
                {"id": 900, "label": "y", "embedding": axis_vector(5, 0.1, 2)},
                {"label": "x", "embedding": axis_vector(5, 0.1, 3), "metadata": {"n": 3}},
            ]
            ids = c.post("/items", json={"items": items}).json()["ids"]
    finally:
        assert first.stop() in (0, -signal.SIGTERM)
    if kind == "embedded":  # a clean stop compacted the log into one snapshot
        assert len(list((tmp_path / "store").glob("snapshot-*"))) == 1
        segments = list((tmp_path / "store").glob("wal-*.log"))
        assert len(segments) == 1 and segments[0].stat().st_size == 0

    second = Server(model_dir, store).start()
    try:
        with second.client() as c:
            assert c.get("/stats").json()["items"] == 43
            expected = {ids[0]: ("x", {"n": 1}), 900: ("y", None), ids[2]: ("x", {"n": 3})}
            assert labels_of(c, set(ids)) == expected
            assert c.delete("/items/900").status_code == 200
            assert c.delete(f"/items/{ids[0]}").status_code == 200
            r = c.post("/items", json={"items": [{"label": "z", "embedding": axis_vector(5, 0.1, 4)}]})
            assert r.status_code == 200
            (late,) = r.json()["ids"]
            second.kill()  # SIGKILL right after the acknowledged write: no shutdown code runs
    finally:
        second.kill()
    if kind == "embedded":  # nothing was compacted: the restart below replays the log
        assert sum(p.stat().st_size for p in (tmp_path / "store").glob("wal-*.log")) > 0

    # the third server also has a one-request queue and a long batch wait, to see 503s
    third = Server(model_dir, store, "--max-queue", "1", "--max-wait-ms", "400").start()
    try:
        with third.client() as c:
            assert c.get("/stats").json()["items"] == 42
            assert labels_of(c, set(ids) | {late}) == {ids[2]: ("x", {"n": 3}), late: ("z", None)}
            assert c.delete("/items/900").status_code == 404
            assert c.post("/items", json={"items": [{"label": "w", "embedding": axis_vector(6)}]}).json()[
                "ids"
            ] == [max(late, 900) + 1]  # ids are never reused, deleted ones included
            statuses, retry = [], []

            def call():
                with third.client() as cc:
                    r = cc.post("/embed", json={"inputs": [{"vector": [0.5] * 64}]})
                    statuses.append(r.status_code)
                    retry.append(r.headers.get("retry-after"))

            threads = [threading.Thread(target=call) for _ in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert sorted(set(statuses)) == [200, 503], statuses
            assert all(r == "1" for s, r in zip(statuses, retry) if s == 503)
            assert c.post("/embed", json={"inputs": [{"vector": [0.5] * 64}]}).status_code == 200
    finally:
        assert third.stop() in (0, -signal.SIGTERM)


# ----------------------------------------------------------------------------- the write log


def test_torn_tail_is_cut_and_later_writes_survive(tmp_path):
    from likewise.serve.wal import WriteLog, encode, read_records

    path = tmp_path / "log"
    log, records = WriteLog.open(path)
    assert records == []
    for i in range(3):
        log.append({"seq": i + 1, "op": "x"})
    log.close()
    whole = path.stat().st_size
    frame = encode({"seq": 4, "op": "torn"})
    for torn in (frame[:5], frame[:-3], frame[:-1] + bytes([frame[-1] ^ 1]), b"\0" * 40):
        with open(path, "r+b") as fh:
            fh.truncate(whole)
            fh.seek(whole)
            fh.write(torn)
        assert [r["seq"] for r in read_records(path)[0]] == [1, 2, 3]
        log, records = WriteLog.open(path)
        assert [r["seq"] for r in records] == [1, 2, 3] and path.stat().st_size == whole
        log.close()
    log, _ = WriteLog.open(path)
    log.append({"seq": 4, "op": "after"})
    log.close()
    assert [r["op"] for r in read_records(path)[0]] == ["x", "x", "x", "after"]


def _store(path, **kw):
    from likewise.serve.stores.embedded import EmbeddedStore

    return EmbeddedStore(path, DIM, "cosine", **kw)


def _contents(store):
    pairs = zip(store.index.ids.tolist(), store.index.labels.tolist())
    return {i: (label, store.metadata.get(i)) for i, label in pairs}


def test_embedded_store_compacts_atomically_and_reloads_the_same(tmp_path):
    rng = np.random.default_rng(0)
    store = _store(tmp_path / "s", compact_every=4)
    expected = {}
    for step in range(15):
        v = rng.standard_normal((2, DIM)).astype(np.float32)
        ids = store.add(v, [f"l{step}", f"l{step}"], [{"step": step}, None], [None, None])
        expected.update({ids[0]: (f"l{step}", {"step": step}), ids[1]: (f"l{step}", None)})
        if step % 3 == 2:
            assert store.remove(ids[0]) is True
            del expected[ids[0]]
    assert store.remove(10**6) is False
    deadline = time.monotonic() + 30
    while store._compacting and time.monotonic() < deadline:  # background compaction
        time.sleep(0.01)
    assert _contents(store) == expected
    query = rng.standard_normal((3, DIM)).astype(np.float32)
    before = store.search(query, 5)
    # a crash during a compaction leaves a temporary directory and an older snapshot behind
    (tmp_path / "s" / ".snapshot-00000000000000000099.abc.tmp").mkdir()
    reopened = _store(tmp_path / "s")
    assert _contents(reopened) == expected and reopened.search(query, 5) == before
    assert not list((tmp_path / "s").glob(".snapshot-*"))
    reopened.close()
    assert len(list((tmp_path / "s").glob("snapshot-*"))) == 1
    again = _store(tmp_path / "s")
    assert _contents(again) == expected and again.replayed == 0


def test_store_refuses_a_directory_it_did_not_create_and_a_wrong_dimension(tmp_path):
    from likewise.serve.stores.embedded import EmbeddedStore

    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="is not empty and not a likewise store"):
        _store(other)
    assert (other / "notes.txt").read_text() == "keep me" and len(list(other.iterdir())) == 1
    _store(tmp_path / "s").close()
    with pytest.raises(ValueError, match="holds 8-dimensional cosine vectors; the model makes 4-dimensional"):
        EmbeddedStore(tmp_path / "s", 4, "cosine")


def test_cli_bad_store_is_one_line_and_exit_2(model_dir, tmp_path):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    cmd = [sys.executable, "-m", "likewise", "serve", str(model_dir), "--store", str(other), "--port", "1"]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"likewise serve: error: {other} is not empty and not a likewise store (no store.json); "
        "choose another"
    ]
    assert (other / "notes.txt").read_text() == "keep me"


WRITER = """
import sys, numpy as np
from likewise.serve.stores.embedded import EmbeddedStore
store = EmbeddedStore(sys.argv[1], 8, "cosine", compact_every=7)
rng = np.random.default_rng(int(sys.argv[2]))
for step in range(100000):
    ids = store.add(rng.standard_normal((3, 8)).astype(np.float32), ["k"] * 3, [{"s": step}] * 3, [None] * 3)
    if step % 4 == 3:
        store.remove(ids[1])
        print("del", ids[1], flush=True)
    print("add", *ids, flush=True)
"""


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sigkill_at_any_moment_loses_no_acknowledged_write(tmp_path, seed):
    """A writer acknowledges each write on stdout after it returns; SIGKILL it at a random moment
    (mid-append, mid-compaction, ...): the store loads and holds every acknowledged write."""
    path = tmp_path / "store"
    env = {"PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(seed)], stdout=subprocess.PIPE, env=env, text=True
    )
    acked: list[str] = []
    wanted = 30 + 25 * seed
    deadline = time.monotonic() + 120
    try:
        while len(acked) < wanted and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            acked.append(line)
        time.sleep(np.random.default_rng(seed).uniform(0, 0.05))
    finally:
        proc.kill()
        proc.wait(30)
    acked += proc.stdout.readlines()  # acknowledged before the kill
    assert len(acked) >= wanted
    added, deleted = set(), set()
    for line in acked:
        word, *ids = line.split()
        (added if word == "add" else deleted).update(int(i) for i in ids)
    store = _store(path)
    live = set(store.index.ids.tolist())
    assert added - deleted <= live  # every acknowledged add is there
    assert not (deleted & live)  # every acknowledged delete too
    assert len(live - added) <= 3  # at most the one write in flight, never acknowledged
