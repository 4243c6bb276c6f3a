"""Two gloo processes train every gathered/all-reduced SSL method exactly like one process.

Each rank holds half of the batch; the mean of the ranks' losses and DistributedDataParallel's
average of the gradients must equal the loss and gradients of one process on the whole
batch, step after step (momentum teachers, queues and centres included). An encoder and heads
without batch norm (batch-norm statistics are per process on CPU). A gather that does not
sum gradients across ranks is off by a factor 1 / world_size and fails here.
"""

from __future__ import annotations

import tempfile

import pytest
import torch
import torch.distributed as dist
from tests._gloo import spawn_and_collect
from torch import nn

from likewise import ssl

WORLD = 2
STEPS = 3
B = 8  # global batch
CASES = {
    "simclr": (ssl.SimCLR, {"hidden_dim": 12, "out_dim": 5, "temperature": 0.3}),
    "barlow_twins": (ssl.BarlowTwins, {"hidden_dim": 12, "out_dim": 5, "lambda_": 0.2}),
    "vicreg": (ssl.VICReg, {"hidden_dim": 12, "out_dim": 5}),
    "swav": (ssl.SwAV, {"hidden_dim": 12, "out_dim": 5, "n_prototypes": 6, "queue_size": 8}),
    "moco": (ssl.MoCo, {"hidden_dim": 12, "out_dim": 5, "queue_size": 12, "momentum": 0.9}),
    "dino": (ssl.DINO, {"hidden_dim": 12, "bottleneck_dim": 4, "out_dim": 7, "momentum": 0.9}),
}


def _method(name: str) -> nn.Module:
    torch.manual_seed(3)
    cls, kwargs = CASES[name]
    encoder = nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 8))
    return cls(encoder, 8, batch_norm=False, **kwargs).double()


def _data() -> torch.Tensor:
    g = torch.Generator().manual_seed(4)
    x = torch.randn(STEPS, B, 6, generator=g, dtype=torch.float64)
    noise = 0.3 * torch.randn(2, STEPS, B, 6, generator=g, dtype=torch.float64)
    return torch.stack([x + noise[0], x + noise[1]])  # [2 views, steps, B, 6]


def _run(method: nn.Module, trained: nn.Module, views: torch.Tensor, world: int) -> list:
    opt = torch.optim.SGD([p for p in trained.parameters() if p.requires_grad], lr=0.3)
    out = []
    for step in range(STEPS):
        opt.zero_grad()
        value = method(views[0, step], views[1, step])
        value.backward()
        shown = value.detach().clone()
        if world > 1:
            dist.all_reduce(shown)
        grads = [p.grad.detach().clone() for p in trained.parameters() if p.requires_grad]
        out.append((shown / world, grads))
        opt.step()
        trained.update(step + 1, STEPS)
    state = {k: v.detach().clone() for k, v in trained.state_dict().items()}
    return [out, state]


def _worker(rank: int, out_dir: str) -> None:
    # a file rendezvous in the test's own folder: no TCP port to race for with other tests
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        views = _data()[:, :, rank * (B // WORLD) : (rank + 1) * (B // WORLD)]
        results = {}
        for name in CASES:
            method = _method(name)
            ddp = nn.parallel.DistributedDataParallel(method)
            results[name] = _run(ddp, method, views, WORLD)
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def spawned() -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        return spawn_and_collect(_worker, (tmp,), WORLD, tmp)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(CASES))
def test_two_processes_equal_one_process_on_the_whole_batch(spawned, name):
    method = _method(name)
    single_steps, single_state = _run(method, method, _data(), 1)
    assert single_steps[0][0].abs() > 0
    for rank in range(WORLD):
        steps, state = spawned[rank][name]
        for step, ((sv, sg), (dv, dg)) in enumerate(zip(single_steps, steps)):
            assert torch.allclose(sv, dv, atol=1e-9, rtol=1e-9), (
                f"{name} rank {rank} step {step}: loss {dv} != {sv}"
            )
            assert len(sg) == len(dg)
            for i, (a, b) in enumerate(zip(sg, dg)):
                assert a.abs().sum() > 0 or name == "swav", (
                    f"{name}: gradient {i} is zero, the check is vacuous"
                )
                assert torch.allclose(a, b, atol=1e-7, rtol=1e-7), f"{name} rank {rank} step {step}: grad {i}"
        for key, value in single_state.items():
            assert torch.allclose(value.double(), state[key].double(), atol=1e-9), (
                f"{name} rank {rank}: {key}"
            )
