"""Micro-batching: the jobs of concurrent requests run as one call, behind a bounded queue.

A request :meth:`MicroBatcher.submit` s a job (an array of rows) and awaits its
result. One worker task takes the waiting jobs — as many as fit in ``max_batch``
rows (a larger job runs alone) — after waiting at most ``max_wait_s`` for more to
arrive once the first is there, and runs ``fn(jobs)`` in its own thread (model and
index calls release the GIL, so the event loop keeps serving). ``fn`` returns one
result per job.

The queue holds at most ``max_queue`` jobs: one more raises :class:`Busy`, which
the app answers with ``503 Service Unavailable`` and ``Retry-After``, instead of
queueing without bound (text-embeddings-inference issue #811: a panic on overflow).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class Busy(Exception):
    """The queue is full; retry after :attr:`retry_after` seconds."""

    def __init__(self, retry_after: int = 1) -> None:
        super().__init__(f"the server is busy (queue full); retry after {retry_after} s")
        self.retry_after = retry_after


class MicroBatcher:
    """Runs ``fn(list_of_jobs) -> list_of_results`` on batches of concurrently submitted jobs.

    Args:
        fn: called in a worker thread with the jobs of one batch (in arrival order).
        max_batch: most rows per call (the sum of ``rows`` of the jobs).
        max_wait_s: how long the first job of a batch waits for others.
        max_queue: most jobs waiting; beyond, :meth:`submit` raises :class:`Busy`.
        name: thread name (for debugging).
    """

    def __init__(
        self,
        fn: Callable[[Sequence[Any]], Sequence[Any]],
        *,
        max_batch: int = 64,
        max_wait_s: float = 0.002,
        max_queue: int = 256,
        name: str = "batch",
    ) -> None:
        if max_batch < 1 or max_queue < 1 or max_wait_s < 0:
            raise ValueError("max_batch and max_queue must be >= 1 and max_wait_s >= 0")
        self.fn, self.max_batch, self.max_wait_s, self.max_queue = fn, max_batch, max_wait_s, max_queue
        self._queue: deque[tuple[Any, int, asyncio.Future, float]] = deque()
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"likewise-{name}")
        self.batches = 0  # calls of fn so far
        self.jobs = 0  # jobs run so far

    @property
    def depth(self) -> int:
        """Jobs waiting now."""
        return len(self._queue)

    async def submit(self, job: Any, rows: int = 1) -> Any:
        """Queue ``job`` (``rows`` rows) and wait for its result; :class:`Busy` if the queue is full."""
        if len(self._queue) >= self.max_queue:
            raise Busy()
        loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = loop.create_task(self._work())
        future = loop.create_future()
        self._queue.append((job, rows, future, time.monotonic()))
        self._wake.set()
        return await future

    def _take(self) -> list[tuple[Any, int, asyncio.Future, float]]:
        batch, rows = [self._queue.popleft()], 0
        rows = batch[0][1]
        while self._queue and rows + self._queue[0][1] <= self.max_batch:
            item = self._queue.popleft()
            batch.append(item)
            rows += item[1]
        return batch

    def _waiting_rows(self) -> int:
        return sum(item[1] for item in self._queue)

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue:
                wait = self.max_wait_s - (time.monotonic() - self._queue[0][3])
                if wait > 0 and self._waiting_rows() < self.max_batch:
                    await asyncio.sleep(wait)  # bounded: a batch is sent after max_wait_s at most
                batch = [item for item in self._take() if not item[2].done()]  # drop cancelled jobs
                if not batch:
                    continue
                try:
                    results = await loop.run_in_executor(self._executor, self.fn, [b[0] for b in batch])
                except Exception as exc:  # every job of the batch gets the error
                    for _, _, future, _ in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                self.batches += 1
                self.jobs += len(batch)
                for (_, _, future, _), result in zip(batch, results):
                    if not future.done():
                        future.set_result(result)

    async def close(self) -> None:
        """Stop the worker (waiting jobs get :class:`Busy`) and its thread."""
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while self._queue:
            future = self._queue.popleft()[2]
            if not future.done():
                future.set_exception(Busy())
        self._executor.shutdown(wait=True)
