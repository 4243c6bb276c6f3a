"""Test helper: the largest tensor any operation produces, forward and backward.

Every tensor alive during a computation was produced by some operation (or passed in),
so bounding the largest output of every operation bounds the largest tensor alive at
any moment. ``TorchDispatchMode`` sees each ATen operation, including the backward ones
run by ``autograd.grad`` / ``.backward()`` inside the ``with`` block and the recomputed
forward of activation checkpointing.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class LargestTensors(TorchDispatchMode):
    """Records the largest floating-point output (``largest``) and the largest output of any
    dtype (``largest_any``), in elements, plus the op that made each."""

    def __init__(self):
        super().__init__()
        self.largest = 0
        self.largest_any = 0
        self.largest_op = None
        self.largest_any_op = None

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                if t.numel() > self.largest_any:
                    self.largest_any, self.largest_any_op = t.numel(), str(func)
                if t.is_floating_point() and t.numel() > self.largest:
                    self.largest, self.largest_op = t.numel(), str(func)
        return out
