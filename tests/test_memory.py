"""MemoryQueue (FIFO, state_dict) and CrossBatchMemory (XBM) against PML and a plain loop."""

import math

import pytest
import torch
from pytorch_metric_learning import losses as pml_losses

from likewise.losses import (
    CircleLoss,
    ContrastiveLoss,
    LogRatioLoss,
    MultiSimilarityLoss,
    NTXentLoss,
    SupConLoss,
    TripletMarginLoss,
)
from likewise.memory import CrossBatchMemory, MemoryQueue

# ---------------------------------------------------------------- MemoryQueue


def test_queue_fifo_and_wrap_around():
    q = MemoryQueue(10, 3)
    assert len(q) == 0 and q.embeddings.shape == (0, 3) and q.labels.shape == (0,)
    seen_emb, seen_lab = [], []
    for step in range(5):  # 5 batches of 4 into a queue of 10: wraps twice
        e = torch.randn(4, 3)
        lab = torch.arange(4) + 10 * step
        q.enqueue(e, lab)
        seen_emb.append(e)
        seen_lab.append(lab)
        expected_e = torch.cat(seen_emb)[-10:]
        expected_l = torch.cat(seen_lab)[-10:]
        assert len(q) == min(10, 4 * (step + 1))
        torch.testing.assert_close(q.embeddings, expected_e)
        assert torch.equal(q.labels, expected_l)
    e, lab = q.latest(3)
    torch.testing.assert_close(e, torch.cat(seen_emb)[-3:])
    assert torch.equal(lab, torch.cat(seen_lab)[-3:])
    assert q.latest(0)[0].shape == (0, 3)
    assert q.latest(50)[0].shape == (10, 3)


def test_queue_batch_larger_than_size_keeps_the_newest():
    q = MemoryQueue(4, 2)
    e = torch.randn(7, 2)
    q.enqueue(e, torch.arange(7))
    torch.testing.assert_close(q.embeddings, e[-4:])
    assert torch.equal(q.labels, torch.arange(3, 7))


def test_queue_stores_detached_copies():
    q = MemoryQueue(5, 2)
    e = torch.randn(2, 2, requires_grad=True)
    q.enqueue(e, torch.tensor([0, 1]))
    assert not q.embeddings.requires_grad
    with torch.no_grad():
        e.add_(1.0)
    assert not torch.equal(q.embeddings, e.detach())


def test_queue_state_dict_resumes_exactly():
    q = MemoryQueue(6, 3)
    for _ in range(3):
        q.enqueue(torch.randn(4, 3, dtype=torch.float64), torch.randint(0, 5, (4,)))
    state = {k: v.clone() for k, v in q.state_dict().items()}
    assert set(state) == {"_emb", "_labels", "_ptr", "_count"}
    fresh = MemoryQueue(6, 3)  # float32 buffer: loading keeps the saved float64 exactly
    fresh.load_state_dict(state)
    assert len(fresh) == len(q) and fresh.embeddings.dtype == torch.float64
    assert torch.equal(fresh.embeddings, q.embeddings) and torch.equal(fresh.labels, q.labels)
    nxt = torch.randn(4, 3, dtype=torch.float64), torch.randint(0, 5, (4,))
    q.enqueue(*nxt)
    fresh.enqueue(*nxt)
    assert torch.equal(fresh.embeddings, q.embeddings) and torch.equal(fresh.labels, q.labels)


def test_queue_multilabel_and_reset():
    q = MemoryQueue(4, 2, label_dim=3)
    lab = torch.tensor([[1, 0, 1], [0, 1, 0]])
    q.enqueue(torch.randn(2, 2), lab)
    assert torch.equal(q.labels, lab)
    q.reset()
    assert len(q) == 0


def test_queue_errors():
    with pytest.raises(ValueError, match="size must be a positive integer"):
        MemoryQueue(0, 3)
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        MemoryQueue(3, 2.5)
    q = MemoryQueue(4, 3)
    with pytest.raises(ValueError, match=r"embeddings must have shape \[batch, 3\], got \(2, 4\)"):
        q.enqueue(torch.randn(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\) \(class ids\), got \(3,\)"):
        q.enqueue(torch.randn(2, 3), torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="labels must be integer class ids"):
        q.enqueue(torch.randn(2, 3), torch.tensor([0.0, 1.0]))
    with pytest.raises(TypeError, match="embeddings must be floating point"):
        q.enqueue(torch.ones(2, 3, dtype=torch.long), torch.tensor([0, 1]))


def test_queue_refuses_float_labels_instead_of_truncating_them():
    q = MemoryQueue(4, 3)
    with pytest.raises(TypeError, match="the memory queue stores integer class labels only"):
        q.enqueue(torch.randn(2, 3), torch.tensor([0.2, 1.7]))
    multi = MemoryQueue(4, 3, label_dim=2)
    with pytest.raises(ValueError, match=r"must be 0/1 \(or bool\).*LogRatioLoss.*got values \[0.25, 1.5\]"):
        multi.enqueue(torch.randn(2, 3), torch.tensor([[0.25, 1.0], [0.0, 1.5]]))
    with pytest.raises(ValueError, match=r"got values \[-1\]"):
        multi.enqueue(torch.randn(2, 3), torch.tensor([[1, -1], [0, 1]]))
    assert len(q) == 0 and len(multi) == 0
    multi.enqueue(torch.randn(2, 3), torch.tensor([[1.0, 0.0], [1.0, 1.0]]))  # 0/1 floats are exact
    assert torch.equal(multi.labels, torch.tensor([[1, 0], [1, 1]]))


def test_xbm_refuses_log_ratio_float_labels():
    x = torch.randn(3, 4)
    with pytest.raises(TypeError, match="LogRatioLoss takes, cannot be queued"):
        CrossBatchMemory(LogRatioLoss(), 4, memory_size=8)(x, torch.tensor([0.5, 1.5, 2.0]))
    xbm = CrossBatchMemory(LogRatioLoss(), 4, memory_size=8, label_dim=2)
    with pytest.raises(ValueError, match="LogRatioLoss takes, cannot be queued"):
        xbm(x, torch.randn(3, 2))
    assert len(xbm.queue) == 0


# ---------------------------------------------------------------- CrossBatchMemory vs PML


def _steps(n_steps, batch, dim, n_classes, gen):
    for _ in range(n_steps):
        yield (
            torch.randn(batch, dim, generator=gen, dtype=torch.float64),
            torch.randint(0, n_classes, (batch,), generator=gen),
        )


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (lambda: NTXentLoss(temperature=0.1), lambda: pml_losses.NTXentLoss(temperature=0.1)),
        (lambda: SupConLoss(), lambda: pml_losses.SupConLoss()),
        (lambda: ContrastiveLoss(), lambda: pml_losses.ContrastiveLoss()),
        (
            lambda: ContrastiveLoss(pos_margin=0.3, neg_margin=1.2),
            lambda: pml_losses.ContrastiveLoss(pos_margin=0.3, neg_margin=1.2),
        ),
        (lambda: TripletMarginLoss(), lambda: pml_losses.TripletMarginLoss()),
        (lambda: TripletMarginLoss(margin=0.5), lambda: pml_losses.TripletMarginLoss(margin=0.5)),
        (lambda: MultiSimilarityLoss(), lambda: pml_losses.MultiSimilarityLoss()),
        (lambda: CircleLoss(), lambda: pml_losses.CircleLoss()),
        (lambda: CircleLoss(m=0.25, gamma=32), lambda: pml_losses.CircleLoss(m=0.25, gamma=32)),
    ],
    ids=[
        "ntxent",
        "supcon",
        "contrastive",
        "contrastive_margins",
        "triplet",
        "triplet_margin",
        "multi_similarity",
        "circle",
        "circle_m_gamma",
    ],
)
def test_xbm_matches_pml_through_wrap_around(ours, theirs):
    memory_size, batch = 20, 6  # 20 is not a multiple of 6: the ring wraps mid-batch
    pml = pml_losses.CrossBatchMemory(theirs(), 5, memory_size=memory_size)
    detached = CrossBatchMemory(ours(), 5, memory_size, detach_batch_refs=True)
    default = CrossBatchMemory(ours(), 5, memory_size)
    informative = 0  # steps with a non-zero value and gradient: the comparison has teeth
    for x, y in _steps(7, batch, 5, 4, torch.Generator().manual_seed(1)):
        xa, xb, xc = (x.clone().requires_grad_(True) for _ in range(3))
        v_pml = pml(xa, y)
        v_det = detached(xb, y)
        v_def = default(xc, y)
        torch.testing.assert_close(v_det, v_pml, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(v_def, v_pml, rtol=1e-4, atol=1e-7)  # same value either way
        (g_pml,) = torch.autograd.grad(v_pml, xa)
        (g_det,) = torch.autograd.grad(v_det, xb)
        torch.testing.assert_close(g_det, g_pml, rtol=1e-4, atol=1e-7)
        informative += int(v_pml.item() != 0 and bool(g_pml.abs().sum() > 0))
        # PML's memory (current batch included) holds what our queue's newest entries hold
        filled = pml.embedding_memory if pml.has_been_filled else pml.embedding_memory[: pml.queue_idx]
        ours_e, _ = detached.queue.latest(memory_size)
        assert sorted(map(tuple, filled.tolist())) == sorted(map(tuple, ours_e.tolist()))
    assert informative >= 6
    assert len(detached.queue) == memory_size
    assert detached.stats["memory_fill"] == 1.0 and len(detached.stats) > 1  # + the loss's stats


# ---------------------------------------------------------------- CrossBatchMemory vs a plain loop


def _cos(a, b):
    return (a * b).sum() / (a.norm() * b.norm())


def naive_xbm_ntxent(x, y, mem_x, mem_y, t):
    """NT-Xent of each query against (the batch minus itself) + memory, with plain loops."""
    refs = [(x[j], int(y[j]), j) for j in range(len(x))] + [(e, int(c), -1) for e, c in zip(mem_x, mem_y)]
    terms = []
    for a in range(len(x)):
        others = [(e, c) for e, c, j in refs if j != a]
        negs = sum(
            (torch.exp(_cos(x[a], e) / t) for e, c in others if c != int(y[a])),
            torch.zeros((), dtype=x.dtype),
        )
        for e, c in others:
            if c == int(y[a]):
                num = torch.exp(_cos(x[a], e) / t)
                terms.append(-torch.log(num / (num + negs)))
    return sum(terms) / len(terms)


def test_xbm_default_gradient_matches_loop_with_batch_as_live_refs():
    gen = torch.Generator().manual_seed(2)
    xbm = CrossBatchMemory(NTXentLoss(temperature=0.5), 4, memory_size=11)
    history_x, history_y = [], []
    for x, y in _steps(4, 5, 4, 3, gen):
        past_x = torch.cat(history_x)[-(11 - 5) :] if history_x else x[:0]
        past_y = torch.cat(history_y)[-(11 - 5) :] if history_y else y[:0]
        x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        value = xbm(x1, y)
        expected = naive_xbm_ntxent(x2, y, past_x, past_y, 0.5)
        torch.testing.assert_close(value, expected)
        (g1,) = torch.autograd.grad(value, x1)
        (g2,) = torch.autograd.grad(expected, x2)
        torch.testing.assert_close(g1, g2)
        history_x.append(x)
        history_y.append(y)


def test_xbm_gradcheck():
    xbm = CrossBatchMemory(SupConLoss(temperature=0.5), 3, memory_size=9)
    xbm(torch.randn(4, 3, dtype=torch.float64), torch.tensor([0, 1, 0, 2]))
    y = torch.tensor([1, 0, 2, 2])
    x = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda e: xbm(e, y, enqueue=False), (x,))
    assert len(xbm.queue) == 4  # enqueue=False left the memory alone


def test_xbm_state_dict_resumes_exactly():
    gen = torch.Generator().manual_seed(3)
    steps = list(_steps(6, 4, 3, 3, gen))
    a = CrossBatchMemory(NTXentLoss(), 3, memory_size=10)
    for x, y in steps[:3]:
        a(x, y)
    b = CrossBatchMemory(NTXentLoss(), 3, memory_size=10)
    b.load_state_dict(a.state_dict())
    for x, y in steps[3:]:
        assert torch.equal(a(x, y), b(x, y))


def test_xbm_first_step_equals_plain_loss():
    x = torch.randn(8, 4, dtype=torch.float64)
    y = torch.tensor([0, 0, 1, 1, 2, 2, 3, 0])
    xbm = CrossBatchMemory(NTXentLoss(), 4, memory_size=32)
    torch.testing.assert_close(xbm(x, y), NTXentLoss()(x, y))


def test_xbm_singleton_batch_with_empty_memory_is_zero_and_backprops():
    x = torch.randn(3, 4, requires_grad=True)
    value = CrossBatchMemory(NTXentLoss(), 4, memory_size=8)(x, torch.arange(3))
    assert value.item() == 0.0
    value.backward()
    assert torch.equal(x.grad, torch.zeros_like(x))


def test_xbm_errors():
    with pytest.raises(TypeError, match="loss must be a likewise loss module"):
        CrossBatchMemory(lambda e, y: e.sum(), 4)
    with pytest.raises(ValueError, match="memory_size must be a positive integer"):
        CrossBatchMemory(NTXentLoss(), 4, memory_size=0)
    xbm = CrossBatchMemory(NTXentLoss(), 4, memory_size=5)
    with pytest.raises(ValueError, match="embeddings have dimension 3 but embedding_size=4"):
        xbm(torch.randn(2, 3), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="batch of 6 embeddings does not fit in memory_size=5"):
        xbm(torch.randn(6, 4), torch.zeros(6, dtype=torch.long))
    with pytest.raises(ValueError, match=r"labels must have shape \(2,\)"):
        xbm(torch.randn(2, 4), torch.tensor([0, 1, 1]))
    with pytest.raises(TypeError, match="pass a miner in the constructor"):
        xbm(
            torch.randn(2, 4), torch.tensor([0, 1]), (torch.tensor([0]), torch.tensor([1]), torch.tensor([0]))
        )
    x = torch.randn(2, 4)
    x[0, 0] = math.nan
    with pytest.raises(ValueError, match="embeddings contain NaN or inf"):
        xbm(x, torch.tensor([0, 1]))
    assert len(xbm.queue) == 0  # nothing was stored by the failed calls
