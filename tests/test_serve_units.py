"""Parts of `likewise serve` without HTTP: micro-batching, the open-set decision, the Milvus URI."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from likewise.serve.batching import Busy, MicroBatcher


def test_concurrent_jobs_run_in_batches_of_at_most_max_batch_rows():
    calls = []

    def fn(jobs):
        calls.append([len(j) for j in jobs])
        return [j * 2 for j in jobs]

    async def main():
        batcher = MicroBatcher(fn, max_batch=5, max_wait_s=0.05, max_queue=100)
        jobs = [np.full(n, i, np.float32) for i, n in enumerate([1, 2, 1, 3, 1, 1, 7, 2])]
        results = await asyncio.gather(*(batcher.submit(j, len(j)) for j in jobs))
        await batcher.close()
        return jobs, results, batcher

    jobs, results, batcher = asyncio.run(main())
    for job, result in zip(jobs, results):  # each job gets its own result back
        np.testing.assert_array_equal(result, job * 2)
    assert sorted(n for call in calls for n in call) == sorted(len(j) for j in jobs)
    # a job larger than max_batch runs alone; the others share calls of at most 5 rows
    assert all(sum(c) <= 5 or len(c) == 1 for c in calls)
    assert len(calls) < len(jobs) and batcher.batches == len(calls) and batcher.jobs == len(jobs)


def test_a_full_queue_answers_busy_and_the_batcher_recovers():
    release, started = threading.Event(), threading.Event()

    def fn(jobs):
        started.set()
        release.wait(30)
        return list(jobs)

    async def main():
        batcher = MicroBatcher(fn, max_batch=1, max_wait_s=0.0, max_queue=2)
        running = asyncio.ensure_future(batcher.submit("first"))
        for _ in range(3000):  # until the worker took the first job and blocks in fn (bounded)
            if started.is_set():
                break
            await asyncio.sleep(0.01)
        waiting = [asyncio.ensure_future(batcher.submit(x)) for x in ("second", "third")]
        await asyncio.sleep(0.01)
        with pytest.raises(Busy, match="the server is busy") as info:
            await batcher.submit("fourth")
        assert info.value.retry_after == 1 and batcher.depth == 2
        release.set()
        done = [await running, *[await w for w in waiting], await batcher.submit("fifth")]
        await batcher.close()
        return done

    assert asyncio.run(main()) == ["first", "second", "third", "fifth"]


def test_an_error_in_a_batch_reaches_its_jobs_and_not_later_ones():
    def fn(jobs):
        if "bad" in jobs:
            raise RuntimeError("model failed")
        return list(jobs)

    async def main():
        batcher = MicroBatcher(fn, max_batch=8, max_wait_s=0.02, max_queue=8)
        first = await asyncio.gather(batcher.submit("ok"), batcher.submit("bad"), return_exceptions=True)
        second = await batcher.submit("fine")
        await batcher.close()
        return first, second

    first, second = asyncio.run(main())
    assert all(isinstance(r, RuntimeError) for r in first) and second == "fine"


def test_decide_agrees_with_matcher_match_with_votes_and_ties():
    from likewise.index import Index
    from likewise.matching import Matcher
    from likewise.serve.service import decide
    from likewise.serve.stores import Hit

    rng = np.random.default_rng(0)
    emb = rng.standard_normal((60, 6)).astype(np.float32)
    labels = rng.choice(["p", "q", "r"], 60)
    index = Index(6)
    index.add(emb, labels=labels)
    queries = rng.standard_normal((200, 6)).astype(np.float32)
    for k, threshold in [(1, 0.5), (5, 0.3), (7, -0.2), (4, 0.9)]:
        matcher = Matcher(index, threshold, k=k)
        scores, ids, labs = index.search_labels(queries, k)
        for row_s, row_i, row_l, expected in zip(scores, ids, labs, matcher.match(queries)):
            hits = [Hit(int(i), str(lab), float(s), None) for s, i, lab in zip(row_s, row_i, row_l)]
            got = decide(hits, threshold)
            assert (got["label"], got["id"], got["score"]) == (expected.label, expected.id, expected.score)
            assert got["answer"] == expected.answer


def test_milvus_uri():
    from likewise.serve.stores.milvus import parse_uri

    assert parse_uri("milvus:/tmp/g.db") == ("/tmp/g.db", "likewise")
    assert parse_uri("milvus:g.db?collection=faces_2") == ("g.db", "faces_2")
    assert parse_uri("milvus://10.0.0.5:19530") == ("http://10.0.0.5:19530", "likewise")
    with pytest.raises(ValueError, match="a Milvus Lite store is milvus:PATH.db"):
        parse_uri("milvus:/tmp/g.sqlite")
    with pytest.raises(ValueError, match="expected milvus://HOST:PORT"):
        parse_uri("milvus://host")
    with pytest.raises(ValueError, match="collection names are letters"):
        parse_uri("milvus:g.db?collection=x;drop")


def test_index_vectors_are_the_stored_vectors():
    from likewise.index import Index

    rng = np.random.default_rng(1)
    x = rng.standard_normal((50, 4)).astype(np.float32)
    for kind, params in [("flat", {}), ("hnsw", {}), ("ivf", {"nlist": 2})]:
        for metric in ("cosine", "euclidean"):
            index = Index(4, metric=metric, kind=kind, **params)
            ids = index.add(x, ids=np.arange(50) * 7 + 3)
            index.remove(ids[[4, 9]])
            stored = x / np.linalg.norm(x, axis=1, keepdims=True) if metric == "cosine" else x
            keep = np.setdiff1d(np.arange(50), [4, 9])
            np.testing.assert_allclose(index.vectors(), stored[keep], rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose(
                index.vectors([ids[10], ids[0]]), stored[[10, 0]], rtol=1e-6, atol=1e-6
            )
            with pytest.raises(ValueError, match=r"ids not in the index: \[31\]"):
                index.vectors([ids[4]])


def test_service_says_what_is_missing(tmp_path):
    """A model without a matcher: /match has no threshold, no 'far'; an empty gallery cannot be searched."""
    import torch

    from _server import DIM
    from likewise.export import save_model
    from likewise.models import build_model
    from likewise.serve.service import NotAvailable, Service

    torch.manual_seed(0)
    model = build_model("mlp", (5,), embedding_dim=DIM, trunk_kwargs={"hidden": [6]})
    save_model(tmp_path / "m", model)
    service = Service(tmp_path / "m", tmp_path / "store")
    q = np.eye(DIM, dtype=np.float32)[:1]

    async def main():
        with pytest.raises(NotAvailable, match="the gallery is empty: add items with POST /items first"):
            await service.search(q, 3)
        with pytest.raises(NotAvailable, match="the model has no calibrated matcher"):
            await service.match(q, None)
        with pytest.raises(NotAvailable, match="the model has no calibration data"):
            await service.match(q, 0.1)
        assert service.verify(q[0], q[0]) == {"score": pytest.approx(1.0), "same": None, "threshold": None}
        await service.close()

    asyncio.run(main())
    assert len(service.store) == 0
