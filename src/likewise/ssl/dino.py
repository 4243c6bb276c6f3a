"""DINO (Caron et al. 2021): self-distillation with a centred, sharpened momentum teacher.

Student: encoder -> head (3-layer MLP ``encoder_dim -> 2048 -> 2048 -> 256`` with GELU,
L2 normalisation, then a weight-normalised bias-free layer to ``out_dim`` = 65,536 in
the paper); teacher: an exponential moving average of both (``m = 0.996 -> 1``, cosine).
:class:`likewise.losses.DINOLoss`: cross-entropy from the teacher's centred, sharpened
softmax to the student's (student temperature 0.1; teacher temperature warmed up
linearly from 0.04 to 0.07 over the first ``warmup_fraction`` of training, the paper's
30 of 100 epochs); the centre is a running mean of teacher outputs, all-reduced across
processes.

``freeze_last_layer_steps``: the last layer gets no update during the first steps (the
paper freezes it for the first epoch); default 0.

Small inputs (``likewise pretrain --data mnist1d``, ``SMALL_HEADS["dino"]``): the class
defaults stay the paper's; MNIST-1D uses a ``125 -> 125 -> 16`` head with batch norm in its
hidden layers, 1,024 prototypes, momentum 0.99 and a constant teacher temperature of 0.04 (no
warm-up to 0.07). Batch norm made DINO stable across seeds there: in benchmarks/_ssl_common.train
encoder kNN 63.9 / 64.7 / 64.8% (seeds 0 / 1 / 2) with it, 56.1 / 63.3% (seeds 0 / 1) without;
a constant teacher temperature of 0.06 without it gave 46.0 / 61.9 / 50.0%. Earlier findings,
without batch norm: through
``likewise pretrain`` the warm-up to 0.07 let the projection collapse to a constant output
(student loss at ln 1,024; encoder kNN 51.6%, 53.3% with seed 1); at 0.04 kNN was 65.8%
(linear probe 71.8%), a start at 0.02 collapsed (38.1%). With the warm-up, in
benchmarks/_ssl_common.train (Adam lr 0.01, batch 100, 200 epochs, encoder kNN; seed noise
is large, 41-63% for one recipe), the number of prototypes mattered most: 256 prototypes
48.5%, 1,024 60.2 / 62.5% (seeds 0 / 1), 2,048 50.7%, 4,096 54.3% (seed 0). Worse on seed 0
with 1,024: momentum 0.996 (47.0%) or 0.98 (46.4%), final teacher temperature 0.04 (58.3%)
or 0.1 (56.9%), a 64-d bottleneck (38.0%), a learnt last-layer norm (52.4%), frozen random
prototypes (20.4%), lr 0.003 (53.2 / 54.6%), the last layer frozen for the first epoch (60.6
/ 41.4%); four local crops (scale 0.3-0.6, resized) gave 42.0% with 256 prototypes at four
times the cost.

``dino(x_a, x_b, *local_crops)``: the teacher sees the two global views, the student
every view (multi-crop: local crops are extra student views, paired with both global
views).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from likewise.losses import DINOLoss
from likewise.ssl.base import SSLMethod, check_two_views, encode_views
from likewise.ssl.heads import NormalizedLinear, mlp
from likewise.ssl.momentum import MomentumUpdater, momentum_copy


class DINOHead(nn.Module):
    """``mlp -> L2 normalise -> weight-normalised linear`` (the norm of each output row fixed to 1).

    The MLP starts from DINO's initialisation (truncated normal, std 0.02, zero biases): with
    PyTorch's default one, MNIST-1D kNN after 40 epochs was 15.5% instead of 36.9%.
    """

    def __init__(
        self, in_dim: int, hidden_dim: int, bottleneck_dim: int, out_dim: int, *, batch_norm: bool = False
    ) -> None:
        super().__init__()
        self.mlp = mlp(
            [in_dim, hidden_dim, hidden_dim, bottleneck_dim], batch_norm=batch_norm, activation=nn.GELU
        )
        for layer in self.mlp.modules():  # the paper's initialisation: truncated normal, std 0.02, zero bias
            if isinstance(layer, nn.Linear):
                nn.init.trunc_normal_(layer.weight, std=0.02)
                if layer.bias is not None:
                    nn.init.zeros_(layer.bias)
        self.last = NormalizedLinear(bottleneck_dim, out_dim)

    def forward(self, x: Tensor, frozen: Tensor | None = None) -> Tensor:
        """``frozen``: a 0-d 0/1 tensor; at 1 the last layer gets no gradient (graph kept, no host sync)."""
        if frozen is None:
            return self.last(self.mlp(x))
        w = F.normalize(self.last.weight, dim=1)
        w = frozen * w.detach() + (1 - frozen) * w
        return F.normalize(self.mlp(x), dim=1) @ w.T


class DINO(SSLMethod):
    def __init__(
        self,
        encoder: nn.Module,
        encoder_dim: int,
        *,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        out_dim: int = 65536,
        student_temp: float = 0.1,
        warmup_teacher_temp: float = 0.04,
        teacher_temp: float = 0.07,
        warmup_fraction: float = 0.3,
        center_momentum: float = 0.9,
        momentum: float = 0.996,
        final_momentum: float = 1.0,
        freeze_last_layer_steps: int = 0,
        batch_norm: bool = False,
    ) -> None:
        super().__init__(encoder, encoder_dim)
        if isinstance(freeze_last_layer_steps, bool) or not isinstance(freeze_last_layer_steps, int):
            raise TypeError(f"freeze_last_layer_steps must be an int, got {freeze_last_layer_steps!r}")
        if freeze_last_layer_steps < 0:
            raise ValueError(f"freeze_last_layer_steps must be >= 0, got {freeze_last_layer_steps!r}")
        if not 0 <= warmup_fraction <= 1:
            raise ValueError(f"warmup_fraction must be in [0, 1], got {warmup_fraction!r}")
        self.projector = DINOHead(encoder_dim, hidden_dim, bottleneck_dim, out_dim, batch_norm=batch_norm)
        self.teacher_encoder = momentum_copy(encoder)
        self.teacher_projector = momentum_copy(self.projector)
        self.criterion = DINOLoss(out_dim, warmup_teacher_temp, student_temp, center_momentum)
        self.momentum = MomentumUpdater(momentum, final_momentum)
        self.warmup_teacher_temp, self.final_teacher_temp = float(warmup_teacher_temp), float(teacher_temp)
        self.warmup_fraction = float(warmup_fraction)
        self.register_buffer("teacher_temp", torch.tensor(float(warmup_teacher_temp)))
        self.freeze_last_layer_steps = freeze_last_layer_steps
        self.register_buffer("steps_done", torch.zeros((), dtype=torch.long))

    @torch.no_grad()
    def _teacher(self, *views: Tensor) -> list[Tensor]:
        return [self.teacher_projector(f) for f in encode_views(self.teacher_encoder, views)]

    def forward(self, *views: Tensor) -> Tensor:
        check_two_views(views, most=len(views) if len(views) > 2 else 2)
        frozen = (self.steps_done < self.freeze_last_layer_steps).to(views[0].dtype)
        # the encoder once per view size (global views, local crops) where it may: encode_views
        features = encode_views(self.encoder, views[:2]) + encode_views(self.encoder, views[2:])
        student = [self.projector(f, frozen) for f in features]
        teacher = self._teacher(*views[:2])
        self.criterion.teacher_temp = self.teacher_temp  # a buffer: the warm-up survives a resume
        return self.criterion(student, teacher)

    def teacher_temperature(self, step: int, total_steps: int) -> float:
        """Linear warm-up from ``warmup_teacher_temp`` to ``teacher_temp``, then constant."""
        warm = self.warmup_fraction * total_steps
        if warm <= 0 or step >= warm:
            return self.final_teacher_temp
        return self.warmup_teacher_temp + (self.final_teacher_temp - self.warmup_teacher_temp) * step / warm

    def update(self, step: int, total_steps: int) -> None:
        self.momentum.update(self.encoder, self.teacher_encoder, step, total_steps)
        self.momentum.update(self.projector, self.teacher_projector, step, total_steps)
        self.teacher_temp.fill_(self.teacher_temperature(step, total_steps))
        self.steps_done.fill_(step)


__all__ = ["DINO", "DINOHead"]
