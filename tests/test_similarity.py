"""Pairwise similarity / distance and label relation masks against plain loops."""

from __future__ import annotations

import math

import pytest
import torch
from pytorch_metric_learning import distances as pml_distances

from likewise.losses import CircleLoss, ContrastiveLoss, MultiSimilarityLoss, SupConLoss
from likewise.similarity import (
    METRICS,
    check_metric,
    is_similarity,
    pairwise_distance,
    pairwise_similarity,
    relation_masks,
)

# ---------------------------------------------------------------- references (one pair at a time)


def ref_value(u: list[float], v: list[float], metric: str) -> tuple[float, float]:
    """(similarity, distance) of two vectors, in plain Python."""
    dot = sum(a * b for a, b in zip(u, v))
    if metric == "cosine":
        nu, nv = math.sqrt(sum(a * a for a in u)), math.sqrt(sum(b * b for b in v))
        cos = 0.0 if nu == 0 or nv == 0 else dot / (nu * nv)
        return cos, 1.0 - cos
    if metric == "dot":
        return dot, -dot
    sq = sum((a - b) ** 2 for a, b in zip(u, v))
    d = math.sqrt(sq) if metric == "euclidean" else sq
    return -d, d


def ref_matrices(x: torch.Tensor, y: torch.Tensor, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    sims, dists = [], []
    for u in x.tolist():
        pairs = [ref_value(u, v, metric) for v in y.tolist()]
        sims.append([s for s, _ in pairs])
        dists.append([d for _, d in pairs])
    return torch.tensor(sims, dtype=torch.float64), torch.tensor(dists, dtype=torch.float64)


def ref_masks(labels, ref_labels=None, self_index=None, multi=False):
    """pos / neg bool matrices built one pair at a time; self-pairs excluded."""
    q = labels.tolist()
    r = q if ref_labels is None else ref_labels.tolist()
    if ref_labels is None and self_index is None:
        self_index = list(range(len(q)))
    pos, neg = [], []
    for i, a in enumerate(q):
        prow, nrow = [], []
        for j, b in enumerate(r):
            if self_index is not None and int(self_index[i]) == j:
                prow.append(False)
                nrow.append(False)
                continue
            related = any(s and t for s, t in zip(a, b)) if multi else a == b
            prow.append(related)
            nrow.append(not related)
        pos.append(prow)
        neg.append(nrow)
    return torch.tensor(pos, dtype=torch.bool), torch.tensor(neg, dtype=torch.bool)


# ---------------------------------------------------------------- similarity / distance


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("with_y", [False, True])
def test_pairwise_matches_loops(metric, with_y):
    x = torch.randn(7, 5, dtype=torch.float64)
    y = torch.randn(4, 5, dtype=torch.float64) if with_y else None
    sim, dist = ref_matrices(x, x if y is None else y, metric)
    # the GEMM form |x|^2 + |y|^2 - 2<x, y> cancels near d = 0 (e.g. the diagonal), and the
    # square root magnifies that ~1e-15 to ~1e-8: a looser absolute tolerance for euclidean
    atol = 1e-7 if metric == "euclidean" else 1e-10
    torch.testing.assert_close(pairwise_similarity(x, y, metric), sim, rtol=1e-10, atol=atol)
    torch.testing.assert_close(pairwise_distance(x, y, metric), dist, rtol=1e-10, atol=atol)
    assert is_similarity(metric) == (metric in ("cosine", "dot"))


def test_default_metrics():
    x, y = torch.randn(3, 4, dtype=torch.float64), torch.randn(5, 4, dtype=torch.float64)
    torch.testing.assert_close(pairwise_similarity(x, y), ref_matrices(x, y, "cosine")[0])
    torch.testing.assert_close(pairwise_distance(x, y), ref_matrices(x, y, "euclidean")[1])


@pytest.mark.parametrize("metric", METRICS)
def test_zero_vectors(metric):
    x = torch.randn(4, 3, dtype=torch.float64)
    x[1] = 0.0
    y = torch.randn(5, 3, dtype=torch.float64)
    y[2] = 0.0
    sim, dist = ref_matrices(x, y, metric)
    got_s, got_d = pairwise_similarity(x, y, metric), pairwise_distance(x, y, metric)
    torch.testing.assert_close(got_s, sim, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(got_d, dist, rtol=1e-10, atol=1e-10)
    if metric in ("cosine", "dot"):  # a zero vector is orthogonal to everything: 0 similarity
        assert (got_s[1] == 0).all() and (got_s[:, 2] == 0).all()
    if metric == "cosine":
        assert (got_d[1] == 1).all() and (got_d[:, 2] == 1).all()


@pytest.mark.parametrize("metric", METRICS)
def test_gradients_match_loops_and_stay_finite_at_zero_distance(metric):
    x = torch.randn(5, 3, dtype=torch.float64)
    y = torch.randn(4, 3, dtype=torch.float64)
    w = torch.randn(5, 4, dtype=torch.float64)

    def loop(a, b):  # autograd through one pair at a time
        total = torch.zeros((), dtype=torch.float64)
        for i in range(a.shape[0]):
            for j in range(b.shape[0]):
                u, v = a[i], b[j]
                if metric == "cosine":
                    d = 1 - (u * v).sum() / (u.norm() * v.norm())
                elif metric == "dot":
                    d = -(u * v).sum()
                elif metric == "euclidean":
                    d = ((u - v) ** 2).sum().sqrt()
                else:
                    d = ((u - v) ** 2).sum()
                total = total + w[i, j] * d
        return total

    a1, b1 = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    a2, b2 = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    ours = torch.autograd.grad((w * pairwise_distance(a1, b1, metric)).sum(), [a1, b1])
    theirs = torch.autograd.grad(loop(a2, b2), [a2, b2])
    for g, h in zip(ours, theirs):
        torch.testing.assert_close(g, h, rtol=1e-7, atol=1e-9)
    # identical rows: distance 0, whose sqrt has no derivative; we give 0, never NaN
    dup = torch.cat([x[:2], x[:1]]).requires_grad_(True)
    (grad,) = torch.autograd.grad(pairwise_distance(dup, metric=metric).sum(), dup)
    assert torch.isfinite(grad).all()


# ---------------------------------------------------------------- relation masks


def test_class_ids_exclude_the_diagonal():
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    pos, neg = relation_masks(labels)
    exp_pos, exp_neg = ref_masks(labels)
    assert torch.equal(pos, exp_pos) and torch.equal(neg, exp_neg)
    assert not pos.diagonal().any() and not neg.diagonal().any()


def test_class_ids_with_ref_labels_keep_every_pair():
    labels = torch.tensor([0, 1, 3, 2])
    refs = torch.tensor([1, 1, 0, 4, 2, 3, 0])
    pos, neg = relation_masks(labels, refs)
    exp_pos, exp_neg = ref_masks(labels, refs, self_index=[-1] * 4)
    assert torch.equal(pos, exp_pos) and torch.equal(neg, exp_neg)
    assert torch.equal(pos | neg, torch.ones(4, 7, dtype=torch.bool))


def test_self_index_with_ref_labels():
    labels = torch.tensor([0, 1, 0])
    refs = torch.tensor([5, 0, 1, 0, 1])  # query i sits at column i + 1, except query 2: none
    self_index = torch.tensor([1, 2, -1])
    pos, neg = relation_masks(labels, refs, self_index=self_index)
    exp_pos, exp_neg = ref_masks(labels, refs, self_index=self_index.tolist())
    assert torch.equal(pos, exp_pos) and torch.equal(neg, exp_neg)
    assert not pos[0, 1] and not neg[0, 1] and pos[2, 1]


def test_self_index_on_the_same_set_overrides_the_diagonal():
    labels = torch.tensor([0, 0, 1, 1])
    pos, _ = relation_masks(labels, self_index=torch.tensor([-1, -1, -1, -1]))
    assert pos.diagonal().all()  # nothing excluded when told so


@pytest.mark.parametrize("dtype", [torch.long, torch.bool, torch.float32])
@pytest.mark.parametrize("with_refs", [False, True])
def test_multi_label_shares_a_label(dtype, with_refs):
    g = torch.Generator().manual_seed(0)
    labels = (torch.rand(9, 4, generator=g) > 0.6).to(dtype)
    labels[3] = 0  # a row with no label at all: related to nothing
    refs = (torch.rand(6, 4, generator=g) > 0.6).to(dtype) if with_refs else None
    pos, neg = relation_masks(labels, refs)
    exp_pos, exp_neg = ref_masks(labels, refs, self_index=[-1] * 9 if with_refs else None, multi=True)
    assert torch.equal(pos, exp_pos) and torch.equal(neg, exp_neg)
    assert not pos[3].any()


@pytest.mark.parametrize("dtype", [torch.bool, torch.long, torch.float64])
def test_relevance_matrix(dtype):
    rel = torch.tensor([[0, 1, 1, 0], [1, 0, 0, 0], [0, 0, 1, 1]]).to(dtype)
    pos, neg = relation_masks(None, relevance=rel)
    expected = torch.tensor([[0, 1, 1, 0], [1, 0, 0, 0], [0, 0, 1, 1]]) == 1
    assert torch.equal(pos, expected) and torch.equal(neg, ~expected)
    pos, neg = relation_masks(None, relevance=rel, self_index=torch.tensor([0, -1, 2]))
    assert not pos[2, 2] and not neg[0, 0] and neg[1, 1]


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("obj", "name"),
    [
        (pml_distances.CosineSimilarity(), "'cosine'"),
        (pml_distances.DotProductSimilarity(), "'dot'"),
        (pml_distances.LpDistance(), "'euclidean'"),
        (pml_distances.LpDistance(power=2), "'squared_euclidean'"),
    ],
)
def test_pml_distance_objects_name_the_string(obj, name):
    message = f"is a pytorch-metric-learning object; likewise takes distance={name}"
    with pytest.raises(ValueError, match=message):
        check_metric(obj)


def test_pml_distance_errors_through_losses():
    message = (
        r"distance=CosineSimilarity\(\) is a pytorch-metric-learning object; "
        "likewise takes distance='cosine'"
    )
    with pytest.raises(ValueError, match=message):
        ContrastiveLoss(distance=pml_distances.CosineSimilarity())
    with pytest.raises(ValueError, match=r"distance=LpDistance\(p=2, power=1\) .* distance='euclidean'"):
        MultiSimilarityLoss(distance=pml_distances.LpDistance())


@pytest.mark.parametrize("obj", [pml_distances.LpDistance(p=1), pml_distances.SNRDistance()])
def test_pml_distance_without_equivalent(obj):
    with pytest.raises(ValueError, match="pytorch-metric-learning object with no likewise equivalent"):
        check_metric(obj)


def test_unknown_and_non_string_metrics():
    with pytest.raises(ValueError, match="unknown metric 'l1'; expected one of cosine, dot"):
        check_metric("l1")
    for bad in (None, 2, torch.nn.Identity()):
        with pytest.raises(TypeError, match="a metric must be a string, one of 'cosine'"):
            check_metric(bad)
    with pytest.raises(TypeError, match="a metric must be a string"):
        pairwise_similarity(torch.randn(2, 3), metric=None)
    with pytest.raises(ValueError, match="unknown metric 'l1'"):
        pairwise_distance(torch.randn(2, 3), metric="l1")


@pytest.mark.parametrize("bad", [-1, 2, float("nan"), 0.5])
def test_multi_label_values_must_be_zero_or_one(bad):
    labels = torch.tensor([[1, 0, 1], [0, 1, 0], [1, 1, 0]], dtype=torch.float64)
    labels[1, 2] = bad
    with pytest.raises(ValueError, match=r"multi-label labels \[B, C\] must be 0/1 \(or bool\); got values"):
        relation_masks(labels)
    with pytest.raises(ValueError, match=r"multi-label ref_labels \[N, C\] must be 0/1"):
        relation_masks(torch.eye(3), labels)
    # the scan can be skipped by callers that validated already
    relation_masks(labels.nan_to_num(), validate=False)


def test_minus_one_labels_named_in_the_error():
    labels = torch.tensor([[1, -1, 0], [0, 1, -1]])
    with pytest.raises(ValueError, match=r"got values \[-1\]"):
        relation_masks(labels)


def test_relevance_values_must_be_bool_or_zero_one():
    rel = torch.tensor([[0.0, 0.5], [1.0, 0.0]])
    message = r"relevance must be a bool or 0/1 matrix \[B, N\]; got values \[0.5\]"
    with pytest.raises(ValueError, match=message):
        relation_masks(None, relevance=rel)
    with pytest.raises(ValueError, match=r"relevance must be a \[B, N\] matrix, got shape \(4,\)"):
        relation_masks(None, relevance=torch.ones(4, dtype=torch.bool))


def test_other_relation_errors():
    with pytest.raises(ValueError, match="labels are required"):
        relation_masks(None)
    with pytest.raises(ValueError, match="multi-label labels have 3 columns but ref_labels have 2"):
        relation_masks(torch.ones(2, 3), torch.ones(4, 2))
    with pytest.raises(ValueError, match="both be class ids"):
        relation_masks(torch.tensor([0, 1]), torch.ones(4, 2))


# ---------------------------------------------------------------- the same checks through a loss


@pytest.mark.parametrize("make", [SupConLoss, CircleLoss, ContrastiveLoss])
def test_losses_refuse_bad_multi_label_and_relevance(make):
    x = torch.randn(4, 3)
    loss = make()
    labels = torch.tensor([[1, 0], [1, -1], [0, 1], [0, 1]])
    message = r"multi-label labels \[B, C\] must be 0/1 \(or bool\).*got values \[-1\]"
    with pytest.raises(ValueError, match=message):
        loss(x, labels)
    refs = torch.tensor([[1, 0], [2, 0], [0, 1]])
    with pytest.raises(ValueError, match=r"multi-label ref_labels \[N, C\] must be 0/1.*got values \[2\]"):
        loss(x, labels.clamp_min(0), ref_emb=torch.randn(3, 3), ref_labels=refs)
    rel = torch.eye(4)
    rel[0, 1] = 0.3
    with pytest.raises(ValueError, match=r"relevance must be a bool or 0/1 matrix \(4, 4\); got values"):
        loss(x, relevance=rel)


@pytest.mark.parametrize("make", [SupConLoss, CircleLoss, ContrastiveLoss])
def test_losses_read_float_zero_one_like_bool(make):
    x = torch.randn(6, 3, dtype=torch.float64)
    labels = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1], [1, 0, 0]])
    torch.testing.assert_close(make()(x, labels.double()), make()(x, labels.bool()))
    rel = (labels @ labels.T > 0) & ~torch.eye(6, dtype=torch.bool)
    torch.testing.assert_close(make()(x, relevance=rel.double()), make()(x, relevance=rel))
    torch.testing.assert_close(make()(x, relevance=rel), make()(x, labels))


def test_pml_distance_errors_name_the_callers_keyword():
    x = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"metric=CosineSimilarity\(\) .* likewise takes metric='cosine'"):
        pairwise_distance(x, metric=pml_distances.CosineSimilarity())
    with pytest.raises(ValueError, match=r"metric=LpDistance\(p=2, power=2\) .* metric='squared_euclidean'"):
        pairwise_similarity(x, metric=pml_distances.LpDistance(power=2))
    from likewise.evaluation import retrieval_metrics

    with pytest.raises(ValueError, match=r"metric=DotProductSimilarity\(\) .* likewise takes metric='dot'"):
        retrieval_metrics(x, torch.tensor([0, 0, 1, 1]), metric=pml_distances.DotProductSimilarity())
    with pytest.raises(TypeError, match="metric must be a string, got int"):
        retrieval_metrics(x, torch.tensor([0, 0, 1, 1]), metric=3)
