"""The trainer's exported index and matcher: an open-set evaluation with one class never enrolled."""

from __future__ import annotations

import numpy as np

from likewise.data import stratified_split
from likewise.train.config import validate_config
from likewise.train.run import build_search


def test_last_heldout_class_is_never_enrolled_and_its_false_accepts_are_counted():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 30)
    centres = rng.normal(size=(4, 8)) * 3
    # the unknown class leans towards a known one (a mix of directions): some, not all, falsely accepted
    # (weights 0.85 / sqrt(1 - 0.85^2): 6 of its 15 queries are accepted; at 0.5 none were)
    centres[3] = 0.85 * centres[0] + (1 - 0.85**2) ** 0.5 * centres[3]
    emb = (centres[y] + rng.normal(size=(120, 8))).astype(np.float32)
    names = ["a", "b", "c", "d"]
    index, matcher, info = build_search(emb, y, names, validate_config({}))
    assert info["unknown_classes"] == ["d"]
    assert set(index.labels.tolist()) == {"a", "b", "c"}
    q = info["queries"]
    gallery, queries = stratified_split(y, 0.5, seed=0)  # the halves build_search uses
    gallery = gallery[y[gallery] != 3]
    assert len(index) == info["index_size"] == len(gallery) == 45
    assert q["n_unknown"] == np.sum(y[queries] == 3) == 15 and q["n_queries"] == 60
    # naive: a query is accepted when its best cosine similarity to the gallery reaches the threshold
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    best = (unit[queries] @ unit[gallery].T).max(1)
    accepted_unknown = np.sum((best >= info["threshold"]) & (y[queries] == 3))
    assert 0 < accepted_unknown < 15
    assert q["false_accept_rate"] == accepted_unknown / 15
