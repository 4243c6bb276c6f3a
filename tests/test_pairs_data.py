"""Pairs / triplets files, the pair relation of a batch, transitive closure, the pair batch sampler."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from likewise.data.pairs import PairRelation, read_pairs, read_triplets, similar_groups, triplets_as_pairs
from likewise.pair_sampling import PairBatchSampler


def _csv(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_read_pairs_by_row_index_and_by_path(tmp_path):
    f = _csv(tmp_path / "p.csv", "a,b,similar\n0,1,1\n2, 3 ,0\n\n4,0,true\n")
    a, b, s = read_pairs(f, 5)
    assert a.tolist() == [0, 2, 4] and b.tolist() == [1, 3, 0] and s.tolist() == [True, False, True]
    g = _csv(tmp_path / "q.csv", "similar,b,a\n1,cat/x.png,dog/y.png\n")
    a, b, s = read_pairs(g, 2, names=["cat/x.png", "dog/y.png"])
    assert (a.tolist(), b.tolist(), s.tolist()) == ([1], [0], [True])
    t = _csv(tmp_path / "t.csv", "a,p,n\n0,1,2\n3,4,0\n")
    trip = read_triplets(t, 5)
    assert [x.tolist() for x in trip] == [[0, 3], [1, 4], [2, 0]]
    a, b, s = triplets_as_pairs(*trip)
    assert (a.tolist(), b.tolist(), s.tolist()) == ([0, 3, 0, 3], [1, 4, 2, 0], [True, True, False, False])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a,b,similar\n0,1,1\n0,7,0\n", r"p.csv: row 2: b=7 is out of range \[0, 4\]"),
        ("a,b,similar\n0,1,1\n-1,2,0\n", r"p.csv: row 2: a=-1 is out of range \[0, 4\]"),
        ("a,b,similar\n3,3,1\n", r"p.csv: row 1: a pair of an item with itself \(3\)"),
        ("a,b,similar\n0,1,1\n1,2,2\n", r"p.csv: row 2: similar='2' must be 0 or 1"),
        ("a,b,similar\n0,1,\n", r"p.csv: row 1: similar='' must be 0 or 1"),
        ("a,b,similar\n0,x,1\n", r"p.csv: row 1: b='x' is not a row index"),
        ("", r"p.csv: empty file \(expected a header a,b,similar\)"),
        ("a,b,similar\n", r"p.csv: empty file \(a header but no rows\)"),
        ("a,b\n0,1\n", r"p.csv: missing column similar \(header a,b; expected a,b,similar\)"),
        ("x,y,z\n0,1,1\n", r"p.csv: missing columns a, b, similar"),
    ],
)
def test_bad_pairs_files_are_one_line_errors_naming_file_and_row(tmp_path, text, message):
    f = _csv(tmp_path / "p.csv", text)
    with pytest.raises(ValueError, match=message) as info:
        read_pairs(f, 5)
    assert "\n" not in str(info.value)


def test_bad_triplets_and_paths(tmp_path):
    with pytest.raises(ValueError, match=r"t.csv: row 1: a, p and n must be three different items"):
        read_triplets(_csv(tmp_path / "t.csv", "a,p,n\n0,1,0\n"), 3)
    with pytest.raises(ValueError, match=r"q.csv: row 1: a='z.png' is not an image of the folder"):
        read_pairs(_csv(tmp_path / "q.csv", "a,b,similar\nz.png,x.png,1\n"), 1, names=["x.png"])
    with pytest.raises(FileNotFoundError):
        read_pairs(tmp_path / "missing.csv", 3)


def test_a_pair_listed_both_ways_is_refused_with_its_row():
    a, b, s = np.array([0, 2, 1]), np.array([1, 3, 0]), np.array([True, False, False])
    with pytest.raises(ValueError, match="pairs.csv: row 3: items 1 and 0 are listed as dissimilar but also"):
        PairRelation.from_pairs(4, a, b, s, source="pairs.csv")


def _loop_relation(n, a, b, s, closure):
    """Known similar / dissimilar item pairs, by a plain loop (union-find for the closure)."""
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            i = parent[i]
        return i

    if closure:
        for i, j, sim in zip(a, b, s):
            if sim:
                parent[find(i)] = find(j)
    sim_set, dis_set = set(), set()
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            listed = [(x, y, z) for x, y, z in zip(a, b, s) if {x, y} == {i, j}]
            if closure:
                if find(i) == find(j):
                    sim_set.add((i, j))
                elif any(not z and {find(x), find(y)} == {find(i), find(j)} for x, y, z in zip(a, b, s)):
                    dis_set.add((i, j))
            else:
                if any(z for *_, z in listed):
                    sim_set.add((i, j))
                if any(not z for *_, z in listed):
                    dis_set.add((i, j))
    return sim_set, dis_set


@pytest.mark.parametrize("closure", [False, True])
def test_batch_tuple_lists_the_known_pairs_of_the_batch(closure):
    rng = np.random.default_rng(0)
    n = 14
    a, b = rng.integers(0, n, 30), rng.integers(0, n, 30)
    keep = a != b
    a, b = a[keep], b[keep]
    s = rng.random(len(a)) < 0.3
    if closure:  # keep dissimilar pairs consistent with the closure
        groups = similar_groups(n, a[s], b[s])
        s = s | (groups[a] == groups[b])
    else:
        key = np.minimum(a, b) * n + np.maximum(a, b)
        s = np.array([s[key == k].any() for k in key])  # a pair listed both ways -> similar
    rel = PairRelation.from_pairs(n, a, b, s, closure=closure)
    ids = torch.tensor([3, 0, 7, 11, 5, 2, 9, 13])
    a1, p, a2, neg = rel.batch_tuple(ids)
    sim_set, dis_set = _loop_relation(n, a.tolist(), b.tolist(), s.tolist(), closure)
    items = ids.tolist()
    expect_sim = {(u, v) for u in range(8) for v in range(8) if (items[u], items[v]) in sim_set}
    expect_dis = {(u, v) for u in range(8) for v in range(8) if (items[u], items[v]) in dis_set}
    assert set(zip(a1.tolist(), p.tolist())) == expect_sim
    assert set(zip(a2.tolist(), neg.tolist())) == expect_dis
    assert len(a1) == len(expect_sim) and len(a2) == len(expect_dis)


def test_closure_joins_connected_similar_items_and_propagates_dissimilarity():
    # 0~1, 1~2 (so 0~2 by closure); 2 !~ 3 (so 0 !~ 3 and 1 !~ 3)
    a, b, s = np.array([0, 1, 2]), np.array([1, 2, 3]), np.array([True, True, False])
    plain = PairRelation.from_pairs(5, a, b, s)
    closed = PairRelation.from_pairs(5, a, b, s, closure=True)
    ids = torch.arange(5)
    a1, p, a2, n = plain.batch_tuple(ids)
    assert (0, 2) not in set(zip(a1.tolist(), p.tolist()))
    assert (0, 3) not in set(zip(a2.tolist(), n.tolist()))
    a1, p, a2, n = closed.batch_tuple(ids)
    assert (0, 2) in set(zip(a1.tolist(), p.tolist()))
    assert {(0, 3), (3, 1)} <= set(zip(a2.tolist(), n.tolist()))
    assert all(4 not in pair for pair in zip(a1.tolist(), p.tolist()))  # item 4: unknown to all
    with pytest.raises(ValueError, match="row 3: items 0 and 2 are listed as dissimilar but connected"):
        PairRelation.from_pairs(
            4, np.array([0, 1, 0]), np.array([1, 2, 2]), np.array([True, True, False]), closure=True
        )


def test_pair_sampler_draws_whole_pairs_and_known_negatives():
    rng = np.random.default_rng(1)
    n = 200
    a, b = rng.integers(0, n, 400), rng.integers(0, n, 400)
    keep = a != b
    a, b = a[keep], b[keep]
    s = (a + b) % 2 == 0  # one answer per unordered pair, about half similar
    sampler = PairBatchSampler(n, a, b, s, 32, seed=3)
    sampler.set_epoch(2)
    batches = list(sampler)
    assert len(batches) == len(sampler) == int(s.sum()) // 8
    rel = PairRelation.from_pairs(n, a, b, s)
    seen = set()
    for batch in batches:
        assert len(batch) == 32 and len(set(batch)) == 32
        a1, p, a2, neg = rel.batch_tuple(torch.tensor(batch))
        assert len(a1) >= 2 * 8  # the 8 whole similar pairs, both orders
        anchors = set(a1.tolist())
        with_neg = set(a2.tolist())
        assert len(anchors & with_neg) >= 0.75 * len(anchors)  # anchors see known negatives
        seen |= {(batch[i], batch[j]) for i, j in zip(a1.tolist(), p.tolist())}
    similar_pairs = {(int(x), int(y)) for x, y in zip(a[s], b[s])}
    assert len(similar_pairs & seen) >= 0.9 * len(batches) * 8  # each drawn pair is whole
    again = PairBatchSampler(n, a, b, s, 32, seed=3)
    again.set_epoch(2)
    assert list(again) == batches  # a function of (seed, epoch)
    trip = (np.array([0, 1, 2, 3]), np.array([4, 5, 6, 7]), np.array([8, 9, 10, 11]))
    ts = PairBatchSampler(12, *triplets_as_pairs(*trip), 6, triplets=trip)
    for batch in ts:
        assert len(batch) == 6
        k = [t for t in range(4) if trip[0][t] in batch]
        assert all(trip[1][t] in batch and trip[2][t] in batch for t in k)
