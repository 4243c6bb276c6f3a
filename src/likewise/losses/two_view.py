"""The convention of two-view (self-supervised) losses: ``loss(z_a, z_b) -> scalar``.

``z_a`` and ``z_b`` are ``[B, D]`` outputs for two augmented views of the same ``B``
inputs (row ``i`` of ``z_a`` and row ``i`` of ``z_b`` come from one input). There are
no labels: the pairing by row *is* the supervision. Which side carries a gradient
(a stop-gradient on a target, a momentum teacher) is the method's choice
(:mod:`likewise.ssl`), not the loss's: every loss here differentiates both inputs.

Losses that need the statistics of the whole batch (Barlow Twins, VICReg) take the
*global* batch: gather it first with :func:`likewise.distributed.gather_with_grad`.

Every two-view loss accepts ``fast=`` like the supervised losses; none has a fused
kernel, so it is a no-op and the plain autograd formula always runs. Input checks
look at shapes and dtypes only (no host synchronisation).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from likewise.losses.base import check_fast


def check_view(z: Any, name: str, *, min_rows: int = 1) -> Tensor:
    """``z`` must be a floating tensor ``[B, D]`` with ``B >= min_rows`` and ``D >= 1``."""
    if not isinstance(z, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(z).__name__}")
    if z.dim() != 2:
        raise ValueError(f"{name} must have shape [batch, dim], got {tuple(z.shape)}")
    if not z.is_floating_point():
        raise TypeError(f"{name} must be floating point, got dtype {z.dtype}")
    if z.shape[0] < min_rows or z.shape[1] < 1:
        raise ValueError(f"{name} needs at least {min_rows} row(s) and one column, got {tuple(z.shape)}")
    return z


def check_views(z_a: Any, z_b: Any, *, min_rows: int = 1) -> tuple[Tensor, Tensor]:
    """Both views valid, of one shape and dtype."""
    a = check_view(z_a, "z_a", min_rows=min_rows)
    b = check_view(z_b, "z_b", min_rows=min_rows)
    if a.shape != b.shape:
        raise ValueError(
            "z_a and z_b must have one shape (row i pairs with row i), got "
            f"{tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.dtype != b.dtype:
        raise TypeError(f"z_a and z_b must have one dtype, got {a.dtype} and {b.dtype}")
    return a, b


class TwoViewLoss(nn.Module):
    """Base of the ``loss(z_a, z_b)`` modules: stores ``fast`` (a no-op) and checks inputs.

    Subclasses implement :meth:`forward`; they call :func:`check_views` first.
    """

    #: False where the loss stops the gradient through some of its terms (SwAV's codes)
    exact_gradient: bool = True

    def __init__(self, *, fast: bool = True) -> None:
        super().__init__()
        self.fast = check_fast(fast)  # no fused kernel exists for two-view losses: always the plain path


__all__ = ["TwoViewLoss", "check_view", "check_views"]
