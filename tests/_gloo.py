"""Spawning a 2-process gloo group in a test and collecting what each rank saved."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch
import torch.multiprocessing as mp


def spawn_and_collect(worker: Callable[..., None], args: tuple, world: int, out_dir: str) -> list[Any]:
    """``mp.spawn(worker, args)``; each rank saves ``out_dir/rank{r}.pt``; returns them in rank order.

    torch 2.13's gloo sometimes aborts a process while it tears down ("terminate called without an
    active exception"), after its work is saved: such a spawn counts when every rank's file is
    there. Otherwise it is tried once more (with a fresh rendezvous file, ``out_dir/rendezvous``).
    """
    files = [os.path.join(out_dir, f"rank{r}.pt") for r in range(world)]
    for attempt in range(2):
        for path in [*files, os.path.join(out_dir, "rendezvous")]:
            if os.path.exists(path):
                os.unlink(path)
        try:
            mp.spawn(worker, args=args, nprocs=world, join=True)
        except mp.ProcessExitedException:
            if not all(os.path.exists(f) for f in files):
                if attempt == 0:
                    continue
                raise
        return [torch.load(f, weights_only=False) for f in files]
    raise AssertionError("unreachable")
