"""DINO: a student matches the centred, sharpened output of a momentum teacher.

Formula (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision
Transformers"). For teacher outputs ``t_v`` and student outputs ``s_u`` ``[B, K]`` of
views ``v``, ``u``, with the centre ``c [K]``::

    P_t = softmax((t_v - c) / tau_t),   log P_s = log_softmax(s_u / tau_s)
    L = mean over pairs (v, u), v != u, of  -1/B sum_i sum_k P_t[i,k] log P_s[i,k]

``tau_s = 0.1``; ``tau_t`` is small (sharpening; the method warms it up linearly from
0.04 to 0.07). Centring prevents one dimension from dominating, sharpening prevents the
uniform output: together they avoid collapse. After each training call the centre moves
to the batch mean of the teacher outputs, ``c <- m c + (1 - m) mean_i t_i`` with
``m = 0.9``; the batch sum and count are all-reduced across processes, so every rank
keeps the centre of the global batch. ``center`` is a buffer (saved in checkpoints).

``loss(s, t)`` with two tensors: one student view against one teacher view of another
augmentation. ``loss([s_1, ..., s_V], [t_1, t_2])``: DINO's multi-crop pairing, the
first ``len(t)`` student views being the teacher's views (same-view pairs skipped).

Shapes: each view ``[B, K]``; returns a scalar.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
from torch import Tensor

from likewise.distributed import is_distributed
from likewise.losses.two_view import TwoViewLoss, check_view


def _views(x: Tensor | Sequence[Tensor], name: str) -> list[Tensor]:
    views = [x] if isinstance(x, Tensor) else list(x)
    if not views:
        raise ValueError(f"{name} needs at least one view")
    return [check_view(v, f"{name}[{i}]") for i, v in enumerate(views)]


def dino_loss(
    student: Tensor | Sequence[Tensor],
    teacher: Tensor | Sequence[Tensor],
    center: Tensor,
    teacher_temp: float = 0.04,
    student_temp: float = 0.1,
) -> Tensor:
    """DINO cross-entropy (module docstring), with the given ``center [K]`` (no update)."""
    s_views, t_views = _views(student, "student"), _views(teacher, "teacher")
    shape = s_views[0].shape
    if any(v.shape != shape for v in s_views + t_views):
        raise ValueError("every student and teacher view must have one shape [B, K]")
    pairs = isinstance(student, Tensor) and isinstance(teacher, Tensor)
    terms = []
    for v, t in enumerate(t_views):
        p_t = torch.softmax((t - center) / teacher_temp, dim=1)
        for u, s in enumerate(s_views):
            if not pairs and u == v:
                continue
            terms.append(-(p_t * torch.log_softmax(s / student_temp, dim=1)).sum(1).mean())
    if not terms:
        raise ValueError("DINO needs a student view that is not the teacher's own view")
    return torch.stack(terms).mean()


class DINOLoss(TwoViewLoss):
    """DINO (Caron et al. 2021) with its centre buffer; ``loss(student, teacher)``, module docstring.

    ``teacher_temp`` is an attribute the method's warm-up schedule sets.
    """

    def __init__(
        self,
        out_dim: int,
        teacher_temp: float = 0.04,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        *,
        fast: bool = True,
    ) -> None:
        super().__init__(fast=fast)
        if isinstance(out_dim, bool) or not isinstance(out_dim, int) or out_dim < 1:
            raise ValueError(f"out_dim must be a positive integer, got {out_dim!r}")
        if not teacher_temp > 0 or not student_temp > 0 or not 0 <= center_momentum <= 1:
            raise ValueError("need teacher_temp > 0, student_temp > 0 and 0 <= center_momentum <= 1")
        self.out_dim = out_dim
        self.teacher_temp, self.student_temp = float(teacher_temp), float(student_temp)
        self.center_momentum = float(center_momentum)
        self.register_buffer("center", torch.zeros(out_dim))

    def forward(
        self, z_a: Tensor | Sequence[Tensor], z_b: Tensor | Sequence[Tensor], *, update_center: bool = True
    ) -> Tensor:
        t_views = _views(z_b, "teacher")
        if t_views[0].shape[1] != self.out_dim:
            raise ValueError(f"outputs have {t_views[0].shape[1]} dimensions, out_dim={self.out_dim}")
        center = self.center.to(t_views[0].dtype)
        value = dino_loss(z_a, z_b, center, self.teacher_temp, self.student_temp)
        if update_center and self.training:
            self.update_center(t_views)
        return value

    @torch.no_grad()
    def update_center(self, teacher: Sequence[Tensor]) -> None:
        """``c <- m c + (1 - m) * mean of the teacher outputs`` (over all ranks)."""
        stacked = torch.cat([t.detach() for t in teacher])
        total = stacked.sum(0).to(self.center.dtype)
        count = torch.tensor(float(stacked.shape[0]), dtype=total.dtype, device=total.device)
        if is_distributed():
            dist.all_reduce(total)
            dist.all_reduce(count)
        m = self.center_momentum
        self.center.mul_(m).add_(total / count, alpha=1 - m)


__all__ = ["DINOLoss", "dino_loss"]
