"""Running independent pieces of work on the cores without torch's intra-op threads.

The stereo steps are long sequences of small tensor operations (an SGM step touches one
image row). On a busy machine torch's intra-op threads spend more time waiting for each
other than working; here each piece runs single-threaded and the pieces (the two images'
features, blocks of the cost volume, groups of SGM paths) run side by side in Python
threads (torch releases the GIL inside its operations).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

T = TypeVar("T")


@contextlib.contextmanager
def pieces() -> Iterator[int]:
    """Within: one intra-op thread per operation; yields how many pieces to run at once
    (torch's thread count on entry, i.e. the cores torch was allowed to use)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield max(1, threads)
    finally:
        torch.set_num_threads(threads)


def run_all(tasks: Sequence[Callable[[], T]], workers: int) -> list[T]:
    """Results of ``tasks`` (in order), ``workers`` of them at a time."""
    if workers <= 1 or len(tasks) <= 1:
        return [task() for task in tasks]
    with ThreadPoolExecutor(max_workers=min(workers, len(tasks))) as pool:
        futures = [pool.submit(task) for task in tasks]
        return [f.result() for f in futures]


__all__ = ["pieces", "run_all"]
