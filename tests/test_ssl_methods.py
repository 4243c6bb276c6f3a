"""SSL methods: their losses against plain formulas, the momentum teacher, queues, schedules, state."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from likewise import ssl
from likewise.ssl.momentum import MomentumUpdater, cosine_schedule, momentum_copy

SMALL = {
    "simclr": {"hidden_dim": 16, "out_dim": 6},
    "moco": {"hidden_dim": 16, "out_dim": 6, "queue_size": 20},
    "byol": {"hidden_dim": 16, "out_dim": 6},
    "simsiam": {"hidden_dim": 16, "out_dim": 6, "predictor_dim": 4},
    "swav": {"hidden_dim": 16, "out_dim": 6, "n_prototypes": 5, "queue_size": 16},
    "dino": {"hidden_dim": 16, "bottleneck_dim": 4, "out_dim": 9},
    "barlow_twins": {"hidden_dim": 16, "out_dim": 6},
    "vicreg": {"hidden_dim": 16, "out_dim": 6},
    "naive": {"hidden_dim": 16, "out_dim": 6},
}


def _encoder() -> nn.Module:
    return nn.Sequential(nn.Linear(5, 12), nn.ReLU(), nn.Linear(12, 8))


def _build(name: str, **extra) -> ssl.SSLMethod:
    torch.manual_seed(0)
    return ssl.METHODS[name](_encoder(), 8, **{**SMALL[name], **extra}).double()


def _views(b=10, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, 5, generator=g, dtype=torch.float64)
    return x + 0.2 * torch.randn(b, 5, generator=g, dtype=torch.float64), x + 0.2 * torch.randn(
        b, 5, generator=g, dtype=torch.float64
    )


def test_every_method_is_registered_and_trains_its_encoder():
    assert set(ssl.METHODS) == set(SMALL)
    for name in ssl.METHODS:
        method = _build(name)
        value = method(*_views())
        assert value.dim() == 0 and torch.isfinite(value), name
        value.backward()
        grads = [p.grad for p in method.encoder.parameters()]
        assert all(g is not None and g.abs().sum() > 0 for g in grads), name
        assert method.project(_views()[0]).shape[0] == 10


def test_simclr_is_ntxent_over_both_views_written_plainly():
    method = _build("simclr", temperature=0.3)
    x_a, x_b = _views()
    z = F.normalize(torch.cat([method.project(x_a), method.project(x_b)]), dim=1).detach().numpy()
    n = z.shape[0]
    s = z @ z.T / 0.3
    terms = []
    for i in range(n):
        p = (i + n // 2) % n
        others = [j for j in range(n) if j != i]
        terms.append(-(s[i, p] - math.log(sum(math.exp(s[i, j]) for j in others))))
    assert method(x_a, x_b).item() == pytest.approx(np.mean(terms), rel=1e-10)


def test_moco_v2_contrasts_with_the_keys_and_the_queue_and_enqueues_the_keys():
    method = _build("moco", temperature=0.2)
    x_a, x_b = _views()
    method(x_a, x_b)  # fills 20 of the queue's 20 rows with the keys of both views
    assert len(method.queue) == 20
    x_a, x_b = _views(seed=2)
    with torch.no_grad():
        q_a, q_b = (F.normalize(method.project(x), dim=1) for x in (x_a, x_b))
        k_a, k_b = (
            F.normalize(method.teacher_projector(method.teacher_encoder(x)), dim=1) for x in (x_a, x_b)
        )
        queue = F.normalize(method.queue.embeddings, dim=1)

    def info_nce(q, k):
        terms = []
        for i in range(len(q)):
            logits = torch.cat([k, queue]) @ q[i] / 0.2
            terms.append(-(logits[i] - torch.logsumexp(logits, 0)))
        return torch.stack(terms).mean()

    want = 0.5 * (info_nce(q_a, k_b) + info_nce(q_b, k_a))
    assert method(x_a, x_b).item() == pytest.approx(want.item(), rel=1e-10)
    keys_b = method.teacher_projector(method.teacher_encoder(x_b))
    assert torch.allclose(method.queue.embeddings[-10:], keys_b)


def test_moco_without_queue_is_symmetric_with_a_predictor():
    method = _build("moco", queue_size=0)
    assert method.queue is None and method.predictor is not None
    assert torch.isfinite(method(*_views()))


def test_cosine_schedule_and_momentum_update_follow_their_formulas():
    assert cosine_schedule(0, 100, 0.996, 1.0) == pytest.approx(0.996)
    assert cosine_schedule(50, 100, 0.996, 1.0) == pytest.approx(0.998)
    assert cosine_schedule(100, 100, 0.996, 1.0) == pytest.approx(1.0)
    assert cosine_schedule(25, 100, 0.0, 1.0) == pytest.approx((1 - math.cos(math.pi / 4)) / 2)
    student = nn.Linear(3, 2).double()
    teacher = momentum_copy(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    before = [p.clone() for p in teacher.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    m = MomentumUpdater(0.9, 1.0).update(student, teacher, 30, 100)
    assert m == pytest.approx(1.0 - 0.1 * (math.cos(math.pi * 0.3) + 1) / 2)
    for t, b, s in zip(teacher.parameters(), before, student.parameters()):
        torch.testing.assert_close(t, m * b + (1 - m) * s)
    with pytest.raises(ValueError, match="momentum must be in"):
        MomentumUpdater(1.5)
    with pytest.raises(ValueError, match="teacher has 2 parameters, student 4: not a copy"):
        MomentumUpdater().update(nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2)), teacher, 0, 10)
    # batch-norm statistics (float running mean/var and the integer batch count) are copied
    bn_s, bn_t = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    bn_s(torch.randn(5, 3))
    MomentumUpdater().update(bn_s, bn_t, 0, 10)
    for b_t, b_s in zip(bn_t.buffers(), bn_s.buffers()):
        assert torch.equal(b_t, b_s)
    assert int(bn_t.num_batches_tracked) == 1


@pytest.mark.parametrize("name", ["moco", "byol", "dino"])
def test_momentum_teachers_move_by_the_schedule(name):
    method = _build(name)
    teacher = [p.clone() for p in method.teacher_encoder.parameters()]
    with torch.no_grad():
        for p in method.encoder.parameters():
            p.add_(0.5)
    method.update(0, 10)
    m = method.momentum.momentum(0, 10)
    for t, b, s in zip(method.teacher_encoder.parameters(), teacher, method.encoder.parameters()):
        torch.testing.assert_close(t, m * b + (1 - m) * s)


def test_dino_teacher_temperature_warms_up_and_is_saved():
    method = _build("dino", warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_fraction=0.5)
    assert method.teacher_temperature(0, 100) == pytest.approx(0.04)
    assert method.teacher_temperature(25, 100) == pytest.approx(0.055)
    assert method.teacher_temperature(80, 100) == pytest.approx(0.07)
    method.update(25, 100)
    state = method.state_dict()
    assert state["teacher_temp"].item() == pytest.approx(0.055)
    assert "criterion.center" in state
    method(*_views())
    assert method.criterion.center.abs().sum() > 0
    crops = _views(seed=5)
    assert torch.isfinite(method(*_views(), crops[0], crops[1]))  # multi-crop: 2 global + 2 local


def test_swav_freezes_prototypes_then_uses_a_full_queue():
    method = _build("swav", freeze_prototypes_steps=2)
    method(*_views()).backward()
    assert method.prototypes.weight.grad.abs().sum() == 0
    assert method.encoder[0].weight.grad.abs().sum() > 0
    method.update(2, 10)
    method.zero_grad()
    method(*_views(seed=3)).backward()
    assert method.prototypes.weight.grad.abs().sum() > 0
    assert all(len(q) == 16 for q in method.queues)  # two batches of 10: full, the queue now joins Sinkhorn


@pytest.mark.parametrize("name", sorted(SMALL))
def test_state_dict_round_trip_continues_exactly(name):
    method = _build(name)
    opt = torch.optim.SGD([p for p in method.parameters() if p.requires_grad], lr=0.1)
    for step in range(2):
        opt.zero_grad()
        method(*_views(seed=step)).backward()
        opt.step()
        method.update(step + 1, 10)
    clone = _build(name)
    clone.load_state_dict(method.state_dict())
    x = _views(seed=9)
    torch.manual_seed(0)
    a = method(*x)
    torch.manual_seed(0)
    b = clone(*x)
    assert torch.equal(a, b), name


def test_bad_input():
    method = _build("simclr")
    x_a, x_b = _views()
    with pytest.raises(ValueError, match="expected two views"):
        method(x_a)
    with pytest.raises(ValueError, match="the two views must have one shape"):
        method(x_a, x_b[:5])
    with pytest.raises(TypeError, match="view 1 must be a torch.Tensor"):
        method(x_a, x_b.numpy())
    with pytest.raises(ValueError, match="a batch needs at least 2 inputs"):
        method(x_a[:1], x_b[:1])
    with pytest.raises(ValueError, match="encoder_dim must be a positive integer"):
        ssl.SimCLR(_encoder(), 0)
    with pytest.raises(TypeError, match="encoder must be an nn.Module"):
        ssl.BYOL(lambda x: x, 8)


def test_dino_freezes_its_last_layer_for_the_first_steps_only():
    method = _build("dino", freeze_last_layer_steps=2)
    free = _build("dino")  # same seed: same weights
    x_a, x_b = _views()
    frozen_value = method(x_a, x_b)
    assert frozen_value.item() == pytest.approx(free(x_a, x_b).item(), rel=1e-12)  # same value
    frozen_value.backward()
    assert method.projector.last.weight.grad.abs().sum() == 0
    assert method.projector.mlp[0].weight.grad.abs().sum() > 0
    assert method.encoder[0].weight.grad.abs().sum() > 0
    method.update(2, 10)
    assert method.state_dict()["steps_done"].item() == 2
    method.zero_grad()
    method(*_views(seed=3)).backward()
    assert method.projector.last.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="freeze_last_layer_steps must be >= 0"):
        _build("dino", freeze_last_layer_steps=-1)
    with pytest.raises(TypeError, match="freeze_last_layer_steps must be an int"):
        _build("dino", freeze_last_layer_steps=1.5)
