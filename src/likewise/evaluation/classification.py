"""Downstream classification on frozen embeddings: k-nearest neighbours and a linear probe.

kNN (streamed in blocks of test queries, exact): each test embedding takes the
``k`` most similar training embeddings and votes for their labels with weight

* 1 (``weighted=False``; majority vote),
* ``1 / distance`` (``weighted=True``; scikit-learn's ``weights="distance"``: if some
  neighbours are at distance 0 only they vote), where the distance is ``1 - cos``
  for cosine and ``|x - y|`` (``|x - y|^2``) for the Euclidean metrics, or
* ``exp(similarity / temperature)`` (``temperature=T``; the weighted kNN monitor of
  Wu et al. 2018, "Unsupervised Feature Learning via Non-Parametric Instance
  Discrimination", used by DINO with T = 0.07).

The class with the largest total weight wins; ties go to the smallest label (as
in scikit-learn). Neighbours tied at the k-th similarity are chosen by
``torch.topk`` (arbitrary among equals).

Linear probe: multinomial logistic regression (scikit-learn) on the frozen,
standardised embeddings — the SimCLR / MoCo evaluation protocol, reduced to its
convex core.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from likewise.evaluation._blocks import BlockScorer
from likewise.evaluation._inputs import (
    check_metric_name,
    embeddings_tensor,
    range_exponent,
    resolve_device,
    scale_by_power_of_two,
)
from likewise.inputs import labels_array


def knn_predict(
    train_emb: Any,
    train_labels: Any,
    test_emb: Any,
    *,
    k: int = 20,
    weighted: bool = False,
    temperature: float | None = None,
    metric: str = "cosine",
    batch_size: int | None = None,
    device: torch.device | str | None = None,
) -> np.ndarray:
    """Predicted labels ``[n_test]`` (values of ``train_labels``) by a k-nearest-neighbour vote."""
    dev = resolve_device(device, train_emb, test_emb)
    check_metric_name(metric)
    xtr = embeddings_tensor(train_emb, "train_emb", dev)
    ytr = labels_array(train_labels, "train_labels", xtr.shape[0])
    xte = embeddings_tensor(test_emb, "test_emb", dev)
    if xte.shape[1] != xtr.shape[1]:
        raise ValueError(f"test_emb have {xte.shape[1]} dimensions but train_emb have {xtr.shape[1]}")
    if xte.dtype != xtr.dtype:
        xtr, xte = xtr.double(), xte.double()
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise TypeError(f"k must be a positive integer, got {k!r}")
    if k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if k > xtr.shape[0]:
        raise ValueError(f"k={k} is larger than the number of training embeddings ({xtr.shape[0]})")
    if not isinstance(weighted, bool | np.bool_):
        raise TypeError(f"weighted must be True or False, got {weighted!r}")
    if temperature is not None and (
        isinstance(temperature, bool) or not isinstance(temperature, int | float | np.integer | np.floating)
    ):
        raise TypeError(f"temperature must be a positive number or None, got {temperature!r}")
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer)
    ):
        raise TypeError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    xtr, xte = _in_range(xtr, xte, keep_scale=temperature is not None and metric != "cosine")
    if weighted and temperature is not None:
        raise ValueError("pass weighted=True (inverse distance) or temperature (exp weights), not both")
    if weighted and metric == "dot":
        raise ValueError("weighted=True needs a distance; metric='dot' has none (use temperature=...)")
    if temperature is not None and not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature!r}")
    classes, codes = np.unique(ytr, return_inverse=True)
    codes_t = torch.from_numpy(codes.reshape(-1)).to(dev)
    n_cls = classes.size
    scorer = BlockScorer(xtr, metric, rank_only=False)
    if batch_size is None:
        batch_size = max(1, (256 << 20) // (16 * xtr.shape[0]))
    preds = []
    for a in range(0, xte.shape[0], batch_size):
        s = scorer(scorer.prepare_queries(xte[a : a + batch_size]))
        top_s, top_i = torch.topk(s, int(k), dim=1)
        if temperature is not None:
            w = torch.exp((top_s - top_s[:, :1]) / temperature)  # shift: same argmax, no overflow
        elif weighted:
            d = (1.0 - top_s) if metric == "cosine" else -top_s
            d = d.clamp_min(0)
            zero = d == 0
            w = torch.where(zero.any(1, keepdim=True), zero.to(d.dtype), 1.0 / d.clamp_min(1e-300))
        else:
            w = torch.ones_like(top_s)
        votes = torch.zeros(s.shape[0], n_cls, dtype=torch.float64, device=dev)
        votes.scatter_add_(1, codes_t[top_i], w.to(torch.float64))
        preds.append(votes.argmax(1).cpu().numpy())
    return classes[np.concatenate(preds)]


def _in_range(xtr: torch.Tensor, xte: torch.Tensor, keep_scale: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings whose similarities neither overflow nor underflow: rescaled exactly by a power
    of two (neighbours and inverse-distance votes unchanged), or, where the similarity values
    themselves matter (``keep_scale``: exp weights), computed in float64."""
    e = range_exponent(xtr, xte)
    if e == 0:
        return xtr, xte
    if keep_scale:
        xtr, xte = xtr.double(), xte.double()
        if range_exponent(xtr, xte) != 0:
            raise ValueError(
                "embeddings are too large or too small for temperature weights (their similarities "
                "overflow even in float64); rescale them, or use weighted=False"
            )
        return xtr, xte
    return scale_by_power_of_two(xtr, e), scale_by_power_of_two(xte, e)


def knn_accuracy(
    train_emb: Any,
    train_labels: Any,
    test_emb: Any,
    test_labels: Any,
    *,
    k: int = 20,
    weighted: bool = False,
    temperature: float | None = None,
    metric: str = "cosine",
    batch_size: int | None = None,
    device: torch.device | str | None = None,
) -> float:
    """Fraction of test embeddings whose kNN prediction (:func:`knn_predict`) equals their label."""
    pred = knn_predict(
        train_emb,
        train_labels,
        test_emb,
        k=k,
        weighted=weighted,
        temperature=temperature,
        metric=metric,
        batch_size=batch_size,
        device=device,
    )
    yte = labels_array(test_labels, "test_labels", pred.shape[0])
    return float(np.mean(pred == yte))


def linear_probe(
    train_emb: Any,
    train_labels: Any,
    test_emb: Any,
    test_labels: Any,
    *,
    C: float = 1.0,
    max_iter: int = 1000,
    standardize: bool = True,
    seed: int = 0,
) -> dict[str, float]:
    """Logistic regression on frozen embeddings -> ``{"accuracy", "train_accuracy"}``.

    ``C`` is the inverse L2 regularisation strength (scikit-learn's
    ``LogisticRegression``); with ``standardize`` features are centred and scaled on
    the training set first.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    tr = embeddings_tensor(train_emb, "train_emb", "cpu").double()
    te = embeddings_tensor(test_emb, "test_emb", "cpu").double()
    if te.shape[1] == tr.shape[1]:  # huge or tiny values: rescale exactly (standardised: no change)
        e = range_exponent(tr, te)
        tr, te = scale_by_power_of_two(tr, e), scale_by_power_of_two(te, e)
    xtr, xte = tr.numpy(), te.numpy()
    ytr = labels_array(train_labels, "train_labels", xtr.shape[0])
    yte = labels_array(test_labels, "test_labels", xte.shape[0])
    if xte.shape[1] != xtr.shape[1]:
        raise ValueError(f"test_emb have {xte.shape[1]} dimensions but train_emb have {xtr.shape[1]}")
    if np.unique(ytr).size < 2:
        raise ValueError("train_labels must contain at least two classes for a linear probe")
    if isinstance(C, bool) or not isinstance(C, int | float | np.integer | np.floating):
        raise TypeError(f"C must be a positive number, got {C!r}")
    if not C > 0:
        raise ValueError(f"C must be positive, got {C!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int | np.integer):
        raise TypeError(f"max_iter must be a positive integer, got {max_iter!r}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
    steps = [StandardScaler()] if standardize else []
    model = make_pipeline(*steps, LogisticRegression(C=C, max_iter=max_iter, random_state=seed))
    model.fit(xtr, ytr)
    return {
        "accuracy": float(np.mean(model.predict(xte) == yte)),
        "train_accuracy": float(np.mean(model.predict(xtr) == ytr)),
    }
