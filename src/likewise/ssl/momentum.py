"""The momentum (exponential moving average) teacher shared by MoCo, BYOL and DINO.

Each optimiser step the teacher's parameters follow the student's::

    theta_t <- m * theta_t + (1 - m) * theta_s

with ``m`` rising from ``base`` to ``final`` on a cosine schedule over training (Grill
et al. 2020, BYOL): ``m(k) = final - (final - base) * (cos(pi k / K) + 1) / 2`` at step
``k`` of ``K``. MoCo keeps it constant (``base = final = 0.999``). Buffers (batch-norm
statistics) are copied. The teacher is an ordinary sub-module, so it is saved in every
checkpoint and a resumed run continues exactly; the schedule is a function of the step.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def cosine_schedule(step: int, total_steps: int, start: float, end: float) -> float:
    """``end - (end - start) * (cos(pi * step / total) + 1) / 2``; ``start`` at step 0, ``end`` at the end."""
    if total_steps <= 0:
        return float(end)
    t = min(max(step, 0), total_steps) / total_steps
    return float(end - (end - start) * (math.cos(math.pi * t) + 1) / 2)


def momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen deep copy of ``module`` (no gradients): the teacher's initial state."""
    teacher = copy.deepcopy(module)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


class MomentumUpdater:
    """EMA of a student into a teacher with a cosine momentum schedule (module docstring)."""

    def __init__(self, base: float = 0.996, final: float = 1.0) -> None:
        if not (0 <= base <= 1 and 0 <= final <= 1):
            raise ValueError(f"momentum must be in [0, 1], got base={base!r}, final={final!r}")
        self.base, self.final = float(base), float(final)

    def momentum(self, step: int, total_steps: int) -> float:
        return cosine_schedule(step, total_steps, self.base, self.final)

    @torch.no_grad()
    def update(self, student: nn.Module, teacher: nn.Module, step: int, total_steps: int) -> float:
        """Move ``teacher`` towards ``student``; returns the momentum used."""
        m = self.momentum(step, total_steps)
        p_t, p_s = list(teacher.parameters()), list(student.parameters())
        if len(p_t) != len(p_s):
            raise ValueError(f"teacher has {len(p_t)} parameters, student {len(p_s)}: not a copy")
        if p_t:  # theta_t + (1 - m) (theta_s - theta_t), one fused call over all parameters
            torch._foreach_lerp_(p_t, p_s, 1 - m)
        b_t, b_s = list(teacher.buffers()), list(student.buffers())
        if len(b_t) != len(b_s):
            raise ValueError(f"teacher has {len(b_t)} buffers, student {len(b_s)}: not a copy")
        if b_t:
            torch._foreach_copy_(b_t, b_s)
        return m


__all__ = ["MomentumUpdater", "cosine_schedule", "momentum_copy"]
