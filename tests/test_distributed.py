"""Two gloo processes on CPU give the loss and gradients of one process on the whole batch."""

from __future__ import annotations

import importlib
import tempfile

import pytest
import torch
import torch.distributed as dist
from tests._gloo import spawn_and_collect
from torch import nn

from likewise.distributed import distributed_loss, gather_batch, gather_labels, gather_with_grad
from likewise.losses.base import Batch, MetricLoss

WORLD = 2
STEPS = 2


class PerQuerySoftmaxLoss(MetricLoss):
    """A small supervised-contrastive loss defined here: one term per query, averaged."""

    def compute(self, batch: Batch) -> torch.Tensor:
        pos, neg = batch.masks()
        s = batch.embeddings @ batch.ref_emb.T / 0.5
        valid = pos | neg
        s = s.masked_fill(~valid, float("-inf"))
        log_all = torch.logsumexp(s, dim=1)
        log_pos = torch.logsumexp(s.masked_fill(~pos, float("-inf")), dim=1)
        has = pos.any(1)
        return (log_all - log_pos)[has].mean()


def _make(spec: tuple[str, str, dict]) -> nn.Module:
    module, name, kwargs = spec
    if module == "test":
        return PerQuerySoftmaxLoss()
    kwargs = dict(kwargs)
    if "miner" in kwargs:
        mod, cls = kwargs.pop("miner")
        kwargs["miner"] = getattr(importlib.import_module(mod), cls)()
    if "loss" in kwargs:
        kwargs["loss"] = _make(kwargs["loss"])
    return getattr(importlib.import_module(module), name)(**kwargs)


# (case id, loss spec, modes to check)
CASES = [
    ("per_query_softmax", ("test", "PerQuerySoftmaxLoss", {}), ("global", "local")),
    # NT-Xent averages over positive *pairs*: "local" is exact only with equal positive counts per rank
    ("ntxent", ("likewise.losses", "NTXentLoss", {"temperature": 0.2}), ("global",)),
    ("supcon", ("likewise.losses", "SupConLoss", {"temperature": 0.2}), ("global", "local")),
    (
        "triplet_batch_hard",
        (
            "likewise.losses",
            "TripletMarginLoss",
            {"margin": 0.2, "miner": ("likewise.mining", "BatchHardMiner")},
        ),
        ("global", "local"),
    ),
    ("multi_similarity", ("likewise.losses", "MultiSimilarityLoss", {}), ("global", "local")),
    (
        "cross_batch_memory",
        (
            "likewise.memory",
            "CrossBatchMemory",
            {"loss": ("likewise.losses", "ContrastiveLoss", {}), "embedding_size": 4, "memory_size": 12},
        ),
        ("global",),
    ),
]


def test_every_case_is_checked():
    """No case may drop out silently (a wrong module path is an import error here, not a skip)."""
    assert [c[0] for c in CASES] == [
        "per_query_softmax",
        "ntxent",
        "supcon",
        "triplet_batch_hard",
        "multi_similarity",
        "cross_batch_memory",
    ]
    for case_id, spec, _ in CASES:
        loss = _make(spec)
        assert isinstance(loss, nn.Module), case_id
    triplet = _make(dict((c[0], c[1]) for c in CASES)["triplet_batch_hard"])
    assert type(triplet).__name__ == "TripletMarginLoss"
    assert type(triplet.miner).__name__ == "BatchHardMiner"


def _model() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 4)).double()


def _data(sizes: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    n = sum(sizes)
    x = torch.randn(STEPS, n, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (STEPS, n), generator=g)
    return x, y


def _embed(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(model(x), dim=1)


def _run_steps(model, loss_fn, xs, ys, call):
    """STEPS of SGD; returns [(loss value, [param grads])] and the final parameters."""
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    out = []
    for step in range(STEPS):
        opt.zero_grad()
        value = call(loss_fn, _embed(model, xs[step]), ys[step])
        value.backward()
        out.append((value.detach().clone(), [p.grad.detach().clone() for p in model.parameters()]))
        opt.step()
    return out, [p.detach().clone() for p in model.parameters()]


def _single(spec, sizes):
    x, y = _data(sizes)
    return _run_steps(_model(), _make(spec).double(), x, y, lambda loss, e, lab: loss(e, lab))


def _run_job(rank: int, cases, sizes) -> dict:
    x, y = _data(sizes)
    start = sum(sizes[:rank])
    rows = slice(start, start + sizes[rank])
    results = {}
    for case_id, spec, modes in cases:
        for mode in modes:
            model = nn.parallel.DistributedDataParallel(_model())
            loss_fn = _make(spec).double()

            def call(loss, e, lab, mode=mode):
                value = distributed_loss(loss, e, lab, mode=mode)
                if mode == "local":  # the rank's share; their mean is the global loss
                    shown = value.detach().clone()
                    dist.all_reduce(shown)
                    return value + (shown / WORLD - value.detach())
                return value

            steps, final = _run_steps(model, loss_fn, x[:, rows], y[:, rows], call)
            results[(case_id, mode)] = (steps, final)
    # the gather helpers on their own
    e = torch.full((sizes[rank], 2), float(rank), dtype=torch.float64, requires_grad=True)
    g = gather_with_grad(e)
    (g * torch.arange(1.0, g.shape[0] + 1, dtype=torch.float64)[:, None]).sum().backward()
    lab = gather_labels(torch.full((sizes[rank],), rank))
    _, _, own = gather_batch(e.detach(), torch.zeros(sizes[rank], dtype=torch.long))
    results["helpers"] = (g.detach(), e.grad.clone(), lab, own)
    return results


def _worker(rank: int, jobs, out_dir: str) -> None:
    # a file rendezvous in the test's own folder: no TCP port to race for with other tests
    dist.init_process_group("gloo", init_method=f"file://{out_dir}/rendezvous", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        results = [_run_job(rank, cases, sizes) for sizes, cases in jobs]
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


EQUAL = (6, 6)
UNEQUAL = (7, 4)


def _unequal_cases():
    """Unequal shards: the "global" mode (exact for any loss) on two of the losses."""
    return [(c[0], c[1], ("global",)) for c in CASES if c[0] in ("per_query_softmax", "supcon")]


@pytest.fixture(scope="module")
def spawned() -> list[dict[int, dict]]:
    """One spawn of 2 gloo processes running the equal- and the unequal-shard jobs."""
    jobs = [(EQUAL, CASES), (UNEQUAL, _unequal_cases())]
    with tempfile.TemporaryDirectory() as tmp:
        per_rank = spawn_and_collect(_worker, (jobs, tmp), WORLD, tmp)
    return [{r: per_rank[r][j] for r in range(WORLD)} for j in range(len(jobs))]


def _assert_same(single, distributed, label):
    (s_steps, s_final), (d_steps, d_final) = single, distributed
    for step, ((sv, sg), (dv, dg)) in enumerate(zip(s_steps, d_steps)):
        assert torch.allclose(sv, dv, atol=1e-6, rtol=0), f"{label} step {step}: loss {dv} != {sv}"
        for i, (a, b) in enumerate(zip(sg, dg)):
            assert torch.allclose(a, b, atol=1e-6, rtol=0), f"{label} step {step}: grad of param {i} differs"
    for a, b in zip(s_final, d_final):
        assert torch.allclose(a, b, atol=1e-6, rtol=0), f"{label}: final parameters differ"


def _check_all(sizes, out, cases):
    for case_id, spec, modes in cases:
        single = _single(spec, sizes)
        assert single[0][0][0].abs() > 0, f"{case_id}: the loss is zero, the check would be vacuous"
        for mode in modes:
            for rank in range(WORLD):
                _assert_same(single, out[rank][(case_id, mode)], f"{case_id}/{mode}/rank {rank}")


@pytest.mark.slow
def test_two_processes_match_one_process_on_the_concatenated_batch(spawned):
    _check_all(EQUAL, spawned[0], CASES)


@pytest.mark.slow
def test_unequal_shards_still_match(spawned):
    _check_all(UNEQUAL, spawned[1], _unequal_cases())


@pytest.mark.slow
def test_gather_helpers_concatenate_in_rank_order_and_route_gradients(spawned):
    sizes, out = UNEQUAL, spawned[1]
    n = sum(sizes)
    expected = torch.cat([torch.full((s, 2), float(r), dtype=torch.float64) for r, s in enumerate(sizes)])
    weights = torch.arange(1.0, n + 1, dtype=torch.float64)
    for rank in range(WORLD):
        g, grad, lab, own = out[rank]["helpers"]
        assert torch.equal(g, expected)
        start = sum(sizes[:rank])
        # each rank's loss sum(w_i * g_i) has gradient w_i for row i; summed over 2 ranks
        want = (WORLD * weights[start : start + sizes[rank]])[:, None].expand(-1, 2)
        assert torch.equal(grad, want)
        assert torch.equal(lab, torch.cat([torch.full((s,), r) for r, s in enumerate(sizes)]))
        assert torch.equal(own, torch.arange(start, start + sizes[rank]))


def test_single_process_is_the_identity():
    x = torch.randn(5, 3, requires_grad=True)
    assert gather_with_grad(x) is x
    y = torch.arange(5)
    assert gather_labels(y) is y
    loss = PerQuerySoftmaxLoss()
    labels = torch.tensor([0, 0, 1, 1, 2])
    assert torch.equal(distributed_loss(loss, x, labels), loss(x, labels))


def test_bad_input():
    with pytest.raises(ValueError, match="mode"):
        distributed_loss(PerQuerySoftmaxLoss(), torch.randn(4, 3), torch.zeros(4, dtype=torch.long), mode="x")
    with pytest.raises(TypeError):
        gather_with_grad([1.0, 2.0])
    with pytest.raises(ValueError, match="labels"):
        gather_batch(torch.randn(4, 3), torch.zeros(3, dtype=torch.long))


def test_class_balanced_sampler_shards_concatenate_to_the_single_process_batches():
    import numpy as np

    from likewise.sampling import ClassBalancedBatchSampler
    from likewise.train.sampling import ResumableBatchSampler

    labels = np.repeat(np.arange(7), 9)
    for epoch in (0, 1):
        whole = ClassBalancedBatchSampler(labels, 4, 3, seed=5)
        ranks = [
            ResumableBatchSampler(ClassBalancedBatchSampler(labels, 4, 3, seed=5, rank=r, world_size=WORLD))
            for r in range(WORLD)
        ]
        whole.set_epoch(epoch)
        for r in ranks:
            r.set_epoch(epoch)
        batches = [list(r) for r in ranks]
        assert len(batches[0]) == len(batches[1]) == len(whole) > 0
        for step, global_batch in enumerate(whole):
            shards = [b[step] for b in batches]
            assert shards[0] + shards[1] == global_batch
            assert not set(shards[0]) & set(shards[1])
