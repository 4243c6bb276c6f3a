"""Exact retrieval metrics, streamed over blocks of queries.

Each query ranks every reference by similarity (larger first). A reference is
*relevant* to a query when it has the same label. From the 1-based ranks
``r_1 < ... < r_R`` of a query's ``R`` relevant references we report (see
:func:`likewise.evaluation.ranking.metrics_from_ranks`): ``precision_at_1``,
``r_precision``, ``map_at_r`` (Musgrave, Belongie & Lim 2020, "A Metric Learning
Reality Check"), ``map`` (average precision over the full ranking), ``mrr`` and
``recall_at_K`` (at least one relevant reference in the top K). Each is the mean
over queries (or, with ``per_class=True``, the mean over classes of the per-class
means).

Leave-one-out. Without ``ref_embeddings`` the references are the queries
themselves and a query never retrieves itself (excluded by index, so an exact
duplicate of the query still counts as an ordinary reference).

Ties. The ranking orders references by similarity, descending, and equal
similarities by reference index, ascending; i.e. the rank of reference ``p`` is
``1 + #{m : s_m > s_p} + #{m < p : s_m == s_p}`` — the order of a stable sort.
It is deterministic and independent of the block size (backend="torch").

Queries with no relevant reference (their label occurs nowhere else among the
references) have no defined rank metrics: they are skipped, and counted in the
result as ``n_queries_without_relevant`` (``n_queries`` counts those evaluated).
If no query has a relevant reference a ``ValueError`` is raised.

Which metrics need what. ``precision_at_1``, ``r_precision``, ``map_at_r`` and
``recall_at_K`` depend only on the first ``K = max(R, max k)`` ranks of a query
(``R`` = its number of relevant references); ``mrr`` on the rank of its first
relevant reference; ``map`` on the ranks of all of them (the full ranking).
The default ``include`` is the first group: the metric-learning standard
(Musgrave et al.) at the cost of a top-``K`` search. ``mrr`` (``include=("mrr",
...)`` or ``"all"``) adds, for the queries whose first relevant reference lies
beyond their top ``K`` (8.5% of them at 100,000 Gaussian-blob points), a count over
their whole row; ``map`` switches to the full ranking.

Top-K algorithm (backend="torch", ``map`` not included; exact, the same
values as the full ranking). For a block of queries: ``S = sim(Q_b, refs)``
(one GEMM, the same scores as below); each query's top ``K`` is found without
sorting its row (see :mod:`likewise.evaluation._top`: a threshold from a prefix
sample of the row, one comparison per entry, and an exact ordering of the few
entries above it, ~``3 K`` per row, whose positions are their exact ranks);
``mrr`` of a query whose best relevant reference lies below its threshold is
counted on its row (one comparison per entry). Time ``O(b N D)`` for the GEMM
plus a few ``O(b N)`` passes; memory ``O(b N)`` bytes within ``memory_budget``.
Small operations run on one thread (see ``_inputs.one_thread``).

On CPU with float32 embeddings (and FAISS importable) the candidates come from
FAISS instead (:class:`_FaissTopRanks`): its exact flat search returns each
query's ``K' = K + 2 + 16`` best references by FAISS's float32 scores ``f``,
which differ from the torch scores by at most ``eps = 4 (D + 4) 2^-24 |q| max|r|``
(Euclidean: ``(|q| + max|r|)^2``). A row whose last returned score and ``K``-th
best non-self score satisfy ``f_last + eps < f_K - eps`` is certified: every
reference not returned scores strictly below ``K`` returned ones in torch's
arithmetic too, so the torch top ``K`` is among the candidates, ties included.
Where a relevant candidate is within ``2 eps`` of another candidate the row's
candidates are re-scored with torch (batched dot products of the prepared query
and references, the formula of ``BlockScorer``) and ordered as above; elsewhere
FAISS's order is already the torch order of every pair that moves a relevant rank.
Rows not certified go through the torch path; the ``mrr`` of a certified query
with no relevant reference in its top ``K`` is counted on its torch row, in
cache-sized tiles (see :meth:`_FaissTopRanks._first_ranks`). The
re-scored values equal the GEMM's up to last-bit rounding (as the GEMM's own
values do between block sizes), so two references within one rounding of each
other may order differently than in the full ranking.

Full ranking (backend="torch", ``include`` has ``map``): the column indices of
each query's relevant references come from the labels grouped once (no
``[b, N]`` relevance mask); the ranks of those references are then counted
without sorting the row (see :mod:`likewise.evaluation._ranks`: a monotone
bucketing of the scores, one histogram, and exact comparisons only for the few
references that share a bucket with a relevant one). Time ``O(b N D)`` for the
GEMM plus ``O(b N)`` (about ten passes), memory ``O(b N)``; the block size comes
from ``memory_budget`` (bytes of working memory, default 128 MiB) so the full
``Q x N`` matrix never exists: 200,000 x 200,000 runs in the budget plus the
embeddings.

Huge or tiny values. Embeddings whose squared norms would overflow (or vanish)
in their dtype are first scaled by a power of two (exact), which changes no
ranking.

backend="faiss" (optional, lazy import): exact flat search of the top
``K = max(max R, max k)`` neighbours (FAISS's own tie order), from which
``precision_at_1``, ``r_precision``, ``map_at_r`` and ``recall_at_k`` follow
exactly; ``mrr`` counts a query whose first relevant item lies beyond ``K`` as 0
(MRR@K) and ``map`` is NaN (it needs the full ranking).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from likewise.evaluation._blocks import BlockScorer
from likewise.evaluation._inputs import (
    check_metric_name,
    embeddings_tensor,
    encode_labels,
    one_thread,
    range_exponent,
    resolve_device,
    scale_by_power_of_two,
)
from likewise.evaluation._ranks import relevant_ranks, workspace
from likewise.evaluation._top import (
    OVERSAMPLE,
    candidates,
    first_relevant_rank,
    sample_size,
    tight_rank,
    top_relevant_ranks,
)
from likewise.evaluation.ranking import RANK_METRICS, metrics_from_ranks
from likewise.inputs import labels_array

#: bytes of working memory per similarity entry of a block: S (4), a float copy (4),
#: int32 buckets (4), candidate flags (1), plus per-row tables (about N/8 buckets x 5 x 8)
_BYTES_PER_ENTRY = 20


def retrieval_metrics(
    embeddings: Any,
    labels: Any,
    ref_embeddings: Any = None,
    ref_labels: Any = None,
    *,
    metric: str = "cosine",
    k: int | Sequence[int] | None = None,
    include: str | Sequence[str] | None = None,
    per_class: bool = False,
    bootstrap: int = 0,
    ci: float = 0.95,
    seed: int = 0,
    batch_size: int | None = None,
    memory_budget: int = 128 << 20,
    backend: Literal["torch", "faiss"] = "torch",
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Retrieval metrics of queries against references (leave-one-out when refs are None).

    Args:
        embeddings: queries ``[Q, D]`` (NumPy array or tensor, any device).
        labels: ``[Q]`` class ids (ints or strings).
        ref_embeddings, ref_labels: references ``[N, D]`` and ``[N]``; both or neither.
        metric: ``"cosine"`` | ``"dot"`` | ``"euclidean"`` | ``"squared_euclidean"``.
        k: the K of ``recall_at_K`` (one int or several; at most the number of references a
            query can retrieve). Default: those of 1, 5, 10 within that number.
        include: the metrics to compute, from ``precision_at_1``, ``r_precision``, ``map_at_r``,
            ``mrr``, ``recall_at_k`` (all the ``recall_at_K``) and ``map``, or ``"all"``. Default:
            all but ``map`` and ``mrr``, which need ranks beyond each query's top ``K`` (``map``
            every relevant reference's, ``mrr`` the first relevant one's, which for some queries
            lies far down the ranking); each is computed exactly when included (module doc).
        per_class: average per class first, then over classes (macro average).
        bootstrap: number of bootstrap resamples of the queries; when > 0 each metric
            ``m`` also gets ``m_ci_low`` / ``m_ci_high``, the percentile interval of
            level ``ci``.
        seed: seed of the bootstrap.
        batch_size: queries per batch; default from ``memory_budget``.
        memory_budget: bytes of working memory for the ``[b, N]`` similarity blocks (default
            128 MiB; the default path keeps up to a quarter more for the candidates).
        backend: ``"torch"`` (exact) or ``"faiss"`` (FAISS top-K search, see module doc).
        device: where to compute (default: the embeddings' device, CPU for NumPy).

    Returns:
        dict of floats: the included metrics (``recall_at_K`` for each K), ``n_queries``,
        ``n_queries_without_relevant``.
    """
    dev = resolve_device(device, embeddings, ref_embeddings)
    check_metric_name(metric)
    ks = DEFAULT_KS if k is None else _check_ks(k)
    names = _check_include(include)
    _check_options(per_class, bootstrap, ci, seed, batch_size, memory_budget, backend)
    q = embeddings_tensor(embeddings, "embeddings", dev)
    q_labels = labels_array(labels, "labels", q.shape[0])
    if (ref_embeddings is None) != (ref_labels is None):
        raise ValueError("pass both ref_embeddings and ref_labels, or neither (leave-one-out)")
    loo = ref_embeddings is None
    if loo:
        refs, (q_codes,) = q, encode_labels(q_labels)
        r_codes = q_codes
    else:
        refs = embeddings_tensor(ref_embeddings, "ref_embeddings", dev)
        if refs.shape[1] != q.shape[1]:
            raise ValueError(
                f"ref_embeddings have {refs.shape[1]} dimensions but embeddings have {q.shape[1]}"
            )
        if refs.dtype != q.dtype:
            refs, q = refs.to(torch.float64), q.to(torch.float64)
        r_codes = labels_array(ref_labels, "ref_labels", refs.shape[0])
        q_codes, r_codes = encode_labels(q_labels, r_codes)
    n_avail = refs.shape[0] - (1 if loo else 0)
    if k is None:
        ks = tuple(v for v in ks if v <= n_avail) or (1,)
    if ks[-1] > n_avail:
        raise ValueError(
            f"k={ks[-1]} is larger than the number of references a query can retrieve ({n_avail}"
            + (", leave-one-out" if loo else "")
            + ")"
        )
    e = range_exponent(q, refs)  # huge or tiny values: rescale exactly (rankings unchanged)
    q = scale_by_power_of_two(q, e)
    refs = q if loo else scale_by_power_of_two(refs, e)

    n_classes = int(max(q_codes.max(), r_codes.max())) + 1
    ref_counts = np.bincount(r_codes, minlength=n_classes)
    n_rel = ref_counts[q_codes] - (1 if loo else 0)
    evaluated = np.flatnonzero(n_rel > 0)
    if evaluated.size == 0:
        raise ValueError(
            "no query has a relevant reference (a reference with the same label"
            + (", other than itself" if loo else "")
            + "): retrieval metrics are undefined"
        )
    max_rel = int(n_rel[evaluated].max())
    ranks_fn: _TorchRanks | _TopRanks | _FaissTopRanks | _FaissRanks
    if backend == "faiss":
        ranks_fn = _FaissRanks(q, refs, q_codes, r_codes, metric, loo, max_rel, ks[-1])
    elif "map" in names:
        ranks_fn = _TorchRanks(q, refs, q_codes, r_codes, ref_counts, metric, loo, dev)
    else:
        cut = np.minimum(np.maximum(n_rel, ks[-1]), n_avail)
        top_cls = _FaissTopRanks if _FaissTopRanks.usable(q, refs) else _TopRanks
        ranks_fn = top_cls(
            q, refs, q_codes, r_codes, ref_counts, cut, metric, loo, dev, "mrr" in names, memory_budget
        )
    if batch_size is None:
        batch_size = ranks_fn.default_batch(memory_budget, max_rel)
    per_query = _per_query_metrics(ranks_fn, evaluated, n_rel, ks, batch_size)
    if backend == "faiss" and "map" in names:
        per_query["map"] = np.full(evaluated.size, np.nan)
    wanted = [n for n in RANK_METRICS if n in names]
    if "recall_at_k" in names:
        wanted += [f"recall_at_{v}" for v in ks]
    groups = q_codes[evaluated] if per_class else None
    result = RetrievalResult(_summarise({n: per_query[n] for n in wanted}, groups, bootstrap, ci, seed))
    result["n_queries"] = int(evaluated.size)
    result["n_queries_without_relevant"] = int(q.shape[0] - evaluated.size)
    return result


class RetrievalResult(dict):
    """The metrics (a plain ``dict``); asking for one that was not included says how to get it."""

    def __missing__(self, key: Any) -> Any:
        base = key.split("_ci_")[0] if isinstance(key, str) else key
        if base in ("mrr", "map"):
            raise KeyError(
                f"{key!r} was not computed: retrieval_metrics(..., include=(..., {base!r})) or "
                "include='all' (the default leaves out the metrics that need ranks beyond each "
                "query's top K)"
            )
        raise KeyError(key)


#: the default ``k`` (cut-offs beyond the references a query can retrieve are left out)
DEFAULT_KS: tuple[int, ...] = (1, 5, 10)
#: names ``include`` accepts (``recall_at_k`` stands for every ``recall_at_K``)
INCLUDE_NAMES: tuple[str, ...] = ("precision_at_1", "r_precision", "map_at_r", "mrr", "recall_at_k", "map")
#: the default: everything that the top ``K`` ranks (plus one exact rank for MRR) determine
DEFAULT_INCLUDE: tuple[str, ...] = ("precision_at_1", "r_precision", "map_at_r", "recall_at_k")


def _check_ks(k: int | Sequence[int]) -> tuple[int, ...]:
    def bad_type() -> TypeError:
        return TypeError(f"k must be a positive integer or a sequence of positive integers, got {k!r}")

    if isinstance(k, str | bytes) or isinstance(k, bool):
        raise bad_type()
    if isinstance(k, int | np.integer):
        ks: tuple[Any, ...] = (k,)
    else:
        try:
            ks = tuple(k)
        except TypeError:
            raise bad_type() from None
    if not ks:
        raise ValueError("k must name at least one cut-off")
    for v in ks:
        if isinstance(v, bool) or not isinstance(v, int | np.integer):
            raise bad_type()
        if v < 1:
            raise ValueError(f"k must be positive integers, got {k!r}")
    return tuple(sorted({int(v) for v in ks}))


def _check_include(include: str | Sequence[str] | None) -> tuple[str, ...]:
    if include is None:
        return DEFAULT_INCLUDE
    if isinstance(include, str):
        if include == "all":
            return INCLUDE_NAMES
        include = (include,)
    try:
        names = tuple(include)
    except TypeError:
        raise TypeError(f"include must be metric names or 'all', got {include!r}") from None
    if not names:
        raise ValueError("include must name at least one metric")
    for n in names:
        if not isinstance(n, str):
            raise TypeError(f"include must be metric names (strings), got {n!r}")
        if n not in INCLUDE_NAMES:
            hint = " (the recall cut-offs are given by k)" if n.startswith("recall_at_") else ""
            raise ValueError(f"unknown metric {n!r} in include{hint}; choose from {', '.join(INCLUDE_NAMES)}")
    return names


def _is_int(v: Any) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def _check_options(
    per_class: bool,
    bootstrap: int,
    ci: float,
    seed: int,
    batch_size: int | None,
    memory_budget: int,
    backend: str,
) -> None:
    if not isinstance(per_class, bool | np.bool_):
        raise TypeError(f"per_class must be True or False, got {per_class!r}")
    if not _is_int(bootstrap):
        raise TypeError(f"bootstrap must be a non-negative integer, got {bootstrap!r}")
    if bootstrap < 0:
        raise ValueError(f"bootstrap must be a non-negative integer, got {bootstrap!r}")
    if isinstance(ci, bool) or not isinstance(ci, int | float | np.integer | np.floating):
        raise TypeError(f"ci must be a number in (0, 1), got {ci!r}")
    if not 0.0 < ci < 1.0:
        raise ValueError(f"ci must be in (0, 1), got {ci!r}")
    if seed is not None and not _is_int(seed):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    if batch_size is not None and not _is_int(batch_size):
        raise TypeError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
    if not _is_int(memory_budget):
        raise TypeError(f"memory_budget must be a positive integer (bytes), got {memory_budget!r}")
    if memory_budget < 1:
        raise ValueError(f"memory_budget must be a positive number of bytes, got {memory_budget!r}")
    if backend not in ("torch", "faiss"):
        raise ValueError(f"backend must be 'torch' or 'faiss', got {backend!r}")


def _per_query_metrics(
    ranks_fn: Any, evaluated: np.ndarray, n_rel: np.ndarray, ks: tuple[int, ...], batch_size: int
) -> dict[str, np.ndarray]:
    chunks: dict[str, list[np.ndarray]] = {}
    for start in range(0, evaluated.size, batch_size):
        rows = evaluated[start : start + batch_size]
        ranks = ranks_fn(rows)
        r = torch.from_numpy(n_rel[rows]).to(ranks.device)
        with one_thread():  # [b, R] operations: small
            for name, v in metrics_from_ranks(ranks, r, ks).items():
                chunks.setdefault(name, []).append(v.cpu().numpy())
    return {name: np.concatenate(v) for name, v in chunks.items()}


class _TorchRanks:
    """Exact ranks of the relevant references of a block of queries (see module doc)."""

    def __init__(
        self,
        q: Tensor,
        refs: Tensor,
        q_codes: np.ndarray,
        r_codes: np.ndarray,
        ref_counts: np.ndarray,
        metric: str,
        loo: bool,
        device: torch.device,
    ) -> None:
        self.scorer = BlockScorer(refs, metric, rank_only=True)
        self.q = q
        self.loo = loo
        self.device = device
        self.q_codes = torch.from_numpy(q_codes).to(device)
        r = torch.from_numpy(r_codes).to(device)
        self.members = torch.argsort(r, stable=True)  # reference indices grouped by class
        counts = torch.from_numpy(ref_counts).to(device)
        self.counts = counts
        self.offsets = torch.cumsum(counts, 0) - counts
        self.n_refs = refs.shape[0]
        self.work: dict[str, Tensor] | None = None
        self.s_buf: Tensor | None = None
        self.qp: Tensor | None = None

    def default_batch(self, memory_budget: int, max_rel: int) -> int:
        return max(1, memory_budget // (_BYTES_PER_ENTRY * self.n_refs + 48 * (max_rel + 1)))

    def relevant(self, rows_t: Tensor) -> tuple[Tensor, Tensor]:
        """``[b, M]`` ascending columns of each row's relevant references, and which are real."""
        codes = self.q_codes[rows_t]
        cnt = self.counts[codes]
        m = int(cnt.max())
        j = torch.arange(m, device=self.device).unsqueeze(0)
        valid = j < cnt.unsqueeze(1)
        pos = (self.offsets[codes].unsqueeze(1) + j).clamp_max(self.n_refs - 1)
        rel_idx = self.members[pos]
        if self.loo:
            valid &= rel_idx != rows_t.unsqueeze(1)
        return rel_idx, valid

    def scores(self, rows_t: Tensor) -> Tensor:
        """``[b, N]`` similarities of the rows' queries (the query itself ``-inf`` when leave-one-out)."""
        b = rows_t.numel()
        if self.qp is None:  # the queries, normalised for cosine (once)
            self.qp = self.scorer.prepare_queries(self.q)
        S = self.scorer(self.qp[rows_t], out=self.s_buf[:b])
        if self.loo:
            S.view(-1).index_fill_(
                0, torch.arange(b, device=self.device) * self.n_refs + rows_t, float("-inf")
            )
        return S

    def __call__(self, rows: np.ndarray) -> Tensor:
        rows_t = torch.from_numpy(rows).to(self.device)
        b, n = rows.size, self.n_refs
        if self.work is None or self.work["x"].shape[0] < b:
            self.work = workspace(b, n, self.q.dtype, self.device)
            self.s_buf = torch.empty(b, n, dtype=self.q.dtype, device=self.device)
        S = self.scores(rows_t)
        rel_idx, valid = self.relevant(rows_t)
        return relevant_ranks(S, rel_idx, valid, self.work)


class _TopRanks(_TorchRanks):
    """Exact ranks of the relevant references within each query's top ``K`` (see module doc).

    A call takes a batch of queries: their similarities are computed ``rows_per_block`` at a
    time (the ``[b, N]`` working memory), each block keeps only its candidates, and the
    candidates of the whole batch are ordered together (few large operations).
    """

    def __init__(
        self,
        q: Tensor,
        refs: Tensor,
        q_codes: np.ndarray,
        r_codes: np.ndarray,
        ref_counts: np.ndarray,
        cut: np.ndarray,
        metric: str,
        loo: bool,
        device: torch.device,
        need_first: bool,
        memory_budget: int,
    ) -> None:
        super().__init__(q, refs, q_codes, r_codes, ref_counts, metric, loo, device)
        self.need_first = need_first
        self.r_codes = torch.from_numpy(r_codes).to(device)
        self.n_s = sample_size(self.n_refs, int(cut.max()))
        self.cut = cut
        self.tight = tight_rank(cut, self.n_refs, self.n_s)
        # the [b, N] block (scores + mask) gets the memory budget: few, large passes
        self.rows_per_block = max(1, memory_budget // (2 * (self.q.element_size() + 1) * self.n_refs))
        self.mask_buf: Tensor | None = None
        self.top_work: dict[str, Tensor] = {}

    def default_batch(self, memory_budget: int, max_rel: int) -> int:
        # the batch's candidates (about OVERSAMPLE * K per row, padded to the fullest row, with
        # their keys, columns and sort output) get a quarter of the budget
        per_row = 128 * (OVERSAMPLE + 1) * int(self.cut.max()) + 24 * (max_rel + 1)
        return max(self.rows_per_block, memory_budget // (4 * per_row))

    def __call__(self, rows: np.ndarray) -> Tensor:
        dev = self.device
        rows_t = torch.from_numpy(rows).to(dev)
        step = min(self.rows_per_block, rows.size)
        n = self.n_refs
        if self.s_buf is None or self.s_buf.shape[0] < step:
            self.s_buf = torch.empty(step, n, dtype=self.q.dtype, device=dev)
            self.mask_buf = torch.empty(step * n + 8, dtype=torch.bool, device=dev)
        k_safe = torch.from_numpy(self.cut[rows]).to(dev)
        k_tight = torch.from_numpy(self.tight[rows]).to(dev)
        parts = []
        first = torch.full((rows.size,), float("inf"), dtype=torch.float64, device=dev)
        for a in range(0, rows.size, step):
            block = rows_t[a : a + step]
            S = self.scores(block)
            r, c, s, t = candidates(S, k_safe[a : a + step], k_tight[a : a + step], self.n_s, self.mask_buf)
            parts.append((r, a, c, s))
            if self.need_first:
                # MRR: a query whose best relevant reference scores below its threshold has no
                # relevant candidate; its first relevant rank is counted here, on the whole row
                with one_thread():
                    rel_idx, valid = self.relevant(block)
                    best = torch.where(valid, S.gather(1, rel_idx), float("-inf")).amax(1)
                    below = torch.nonzero(best < t).squeeze(1)
                    if below.numel():
                        first[a + below] = first_relevant_rank(S[below], rel_idx[below], valid[below])
        with one_thread():
            row = torch.cat([r + a for r, a, _, _ in parts])
            col = torch.cat([c for _, _, c, _ in parts])
            score = torch.cat([s for _, _, _, s in parts])
        codes = self.q_codes[rows_t]
        ranks, found = top_relevant_ranks(
            row,
            col,
            score,
            rows.size,
            None if self.need_first else int(k_safe.max()),
            codes,
            self.r_codes,
            int(self.counts[codes].max()),
            rows_t if self.loo else None,
            self.top_work,
        )
        if self.need_first:
            # rows without a relevant candidate; the others have their first relevant rank
            # among the candidates, all of which are ranked exactly
            ranks[:, 0] = torch.where(found, ranks[:, 0], first)
        return ranks


#: extra candidates per query beyond ``K + 2`` taken from the FAISS search (near-ties at the
#: ``K``-th score: fewer rows fall back to the torch path)
_FAISS_MARGIN = 16
#: query rows whose candidates are re-scored together
_RESCORE_ROWS = 256
#: MRR beyond the top K: the whole-row GEMM runs in tiles of at most this many scores (4 MB
#: in float32, cache-resident for the two counting passes) and at most ``_TILE_ROWS`` rows
_TILE_ENTRIES = 1 << 20
_TILE_ROWS = 2048


class _FaissTopRanks(_TopRanks):
    """The default top-``K`` path on CPU float32: FAISS finds the candidates, torch orders them.

    For a block of queries FAISS's exact flat search returns each query's ``K' = K + 2 +
    margin`` best references by its own float32 scores ``f``, which differ from the torch
    scores ``s`` by at most ``eps`` (a bound on the rounding of a length-``D`` dot product,
    see :meth:`_eps`). A row is *certified* when ``f_last + eps < f_K - eps`` (``f_K``: the
    ``K``-th best non-self FAISS score, ``f_last``: the last returned one, an upper bound on
    every reference not returned): then every reference outside the candidates has a torch
    score strictly below ``K`` candidates', so the row's torch top ``K`` lies among the
    candidates, ties included. Two candidates whose FAISS scores are more than ``2 eps``
    apart are in the same order in torch's arithmetic, so a row in which no relevant
    candidate has a neighbour within ``2 eps`` (in FAISS's sorted order) is ranked in FAISS's
    order, which is then the torch order for every relevant rank; the other rows' candidates
    are re-scored with torch (a batched product of the prepared query and references, the
    same formula as :class:`BlockScorer`) and ordered as the torch path orders them (score
    descending, equal scores by reference index). Rows not certified are computed by the
    torch path (:class:`_TopRanks`); rows needing MRR without a relevant reference in their
    top ``K`` are counted by :meth:`_first_ranks`.
    """

    @staticmethod
    def usable(q: Tensor, refs: Tensor) -> bool:
        if q.device.type != "cpu" or q.dtype != torch.float32 or refs.dtype != torch.float32:
            return False
        try:
            import faiss  # noqa: F401
        except ImportError:  # pragma: no cover - faiss is a dependency
            return False
        return True

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        import faiss

        self.qp = self.scorer.prepare_queries(self.q).contiguous()
        r = self.scorer.refs_t.T.contiguous()  # prepared references (normalised for cosine)
        self.r = r
        self.l2 = self.scorer.ref_sq is not None
        dim = r.shape[1]
        self.index = faiss.IndexFlatL2(dim) if self.l2 else faiss.IndexFlatIP(dim)
        self.index.add(r.numpy())
        self.r_norm_max = float(r.norm(dim=1).max())
        self.k_all = int(self.cut.max())

    def default_batch(self, memory_budget: int, max_rel: int) -> int:
        # FAISS tiles its own GEMM (4096 queries x 1024 references) and keeps ``K'`` (id, score)
        # pairs per query; smaller query blocks make it about twice as slow. Per row: ids,
        # scores, FAISS and torch scores in float64, the candidates' keys (~64 bytes each).
        kp = min(self.k_all + 2 + _FAISS_MARGIN, self.n_refs)
        per_row = 64 * kp + 24 * (max_rel + 1)
        return int(min(_FAISS_BLOCK, max(1, memory_budget // (2 * per_row))))

    def _eps(self, qb: Tensor) -> Tensor:
        """``[b]`` bound on |FAISS score - torch score|: ``4 (D + 4) 2^-24`` times the scale of
        the terms summed (``|q| max|r|``; Euclidean: ``(|q| + max|r|)^2``), plus an absolute term."""
        qn = qb.norm(dim=1).to(torch.float64)
        scale = (qn + self.r_norm_max) ** 2 if self.l2 else qn * self.r_norm_max
        return 4.0 * (qb.shape[1] + 4) * 2.0**-24 * scale + 1e-30

    def _rescore(self, qb: Tensor, cand: Tensor) -> Tensor:
        """``[b, C]`` torch scores of the references ``cand [b, C]`` for the prepared queries ``qb``
        (batched dot products, the formula of :class:`BlockScorer`), a few MB at a time."""
        out = torch.empty(cand.shape, dtype=qb.dtype)
        for a in range(0, cand.shape[0], _RESCORE_ROWS):
            c = cand[a : a + _RESCORE_ROWS]
            r_c = self.r.index_select(0, c.reshape(-1)).view(*c.shape, -1)  # 3x faster than r[c]
            s_a = torch.bmm(r_c, qb[a : a + _RESCORE_ROWS].unsqueeze(2)).squeeze(2)
            out[a : a + _RESCORE_ROWS] = 2.0 * s_a - self.scorer.ref_sq[c] if self.l2 else s_a
        return out

    def _first_ranks(self, rows_t: Tensor) -> Tensor:
        """Exact rank of the first relevant reference of each row (rows whose top ``K`` holds none).

        ``s*``, the best relevant score, is re-scored as the candidates are (:meth:`_rescore`;
        ``p*`` its column, the lowest among equals). The row's GEMM then runs in tiles of
        ``_TILE_ENTRIES`` scores that stay in cache, each counted twice: ``above = #{s > s* +
        eps}`` and ``band = #{s >= s* - eps}`` (``eps`` of :meth:`_eps` bounds the difference
        of any two float32 evaluations of one score). The GEMM score of ``p*`` lies in the band;
        when nothing else does, every other reference is strictly above or below ``p*`` in the
        GEMM's arithmetic too and the rank is ``1 + above``, as on the whole row. Rows with a
        second reference in the band (near-ties) are counted on their whole row
        (:func:`first_relevant_rank`, ties by column).
        """
        b = rows_t.numel()
        qb = self.qp[rows_t]  # prepared in __init__
        with one_thread():
            rel_idx, valid = self.relevant(rows_t)
        rel_s = torch.where(valid, self._rescore(qb, rel_idx), float("-inf"))
        eps = self._eps(qb)
        best = rel_s.amax(1).to(torch.float64)
        hi = (best + eps).to(qb.dtype).nextafter(torch.tensor(float("inf"), dtype=qb.dtype)).unsqueeze(1)
        lo = (best - eps).to(qb.dtype).nextafter(torch.tensor(float("-inf"), dtype=qb.dtype)).unsqueeze(1)
        above = torch.zeros(b, dtype=torch.int32)
        band = torch.zeros(b, dtype=torch.int32)
        n = self.n_refs
        rows = min(b, _TILE_ROWS)
        width = max(64, _TILE_ENTRIES // rows)
        tile = torch.empty(rows * width, dtype=qb.dtype)
        for a in range(0, b, rows):
            q_a, r_a = qb[a : a + rows], rows_t[a : a + rows]
            h_a, l_a = hi[a : a + rows], lo[a : a + rows]
            for c in range(0, n, width):
                w = min(width, n - c)
                S = self.scorer(q_a, out=tile[: q_a.shape[0] * w].view(q_a.shape[0], w), cols=slice(c, c + w))
                if self.loo:  # the query itself is not a reference
                    own = torch.nonzero((r_a >= c) & (r_a < c + w)).squeeze(1)
                    if own.numel():
                        S[own, r_a[own] - c] = float("-inf")
                above[a : a + rows] += torch.ge(S, h_a).sum(1, dtype=torch.int32)
                band[a : a + rows] += torch.ge(S, l_a).sum(1, dtype=torch.int32)
        rank = (above + 1).to(torch.float64)
        near = torch.nonzero(band - above != 1).squeeze(1)
        if near.numel():
            step = min(self.rows_per_block, near.numel())
            if self.s_buf is None or self.s_buf.shape[0] < step:
                self.s_buf = torch.empty(step, n, dtype=self.q.dtype)
            for a in range(0, near.numel(), step):
                sel = near[a : a + step]
                S = self.scores(rows_t[sel])
                with one_thread():
                    r_idx, ok = self.relevant(rows_t[sel])
                rank[sel] = first_relevant_rank(S, r_idx, ok)
        return rank

    def __call__(self, rows: np.ndarray) -> Tensor:
        rows_t = torch.from_numpy(rows)
        b, n = rows.size, self.n_refs
        k = int(self.cut[rows].max())
        kp = min(k + 2 + _FAISS_MARGIN, n)
        qb = self.qp[rows_t]
        dist, ids = self.index.search(qb.numpy(), kp)
        idx = torch.from_numpy(ids)
        with one_thread():
            f = torch.from_numpy(dist).to(torch.float64)
            if self.l2:  # squared distances, ascending -> the torch score up to |q|^2
                f = qb.to(torch.float64).pow(2).sum(1, keepdim=True) - f
            valid = idx >= 0
            if self.loo:
                valid &= idx != rows_t.unsqueeze(1)
            eps = self._eps(qb)
            if kp >= n:
                certified = torch.ones(b, dtype=torch.bool)
            else:
                f_k = torch.where(valid, f, float("-inf")).topk(k, dim=1).values[:, k - 1]
                certified = f[:, -1] + eps < f_k - eps
            cand = idx.clamp_min(0)
            # FAISS's order (``f`` descending) is the torch order of every pair more than
            # ``2 eps`` apart; the relevant ranks only need the pairs with a relevant candidate,
            # so only rows where such a pair is closer (a near-tie) are re-scored with torch
            close = (f[:, :-1] - f[:, 1:]) <= 2.0 * eps.unsqueeze(1)  # f is sorted: neighbours
            near = torch.zeros_like(valid)
            near[:, :-1] |= close
            near[:, 1:] |= close
            relevant = valid & (self.r_codes[cand] == self.q_codes[rows_t].unsqueeze(1))
            rescore = torch.nonzero((relevant & near).any(1) & certified).squeeze(1)
            # float32 keys in FAISS's order: its inner products, or minus its squared distances
            score = torch.from_numpy(dist).neg_() if self.l2 else torch.from_numpy(dist)
        if rescore.numel():
            score[rescore] = self._rescore(qb[rescore], cand[rescore])
        with one_thread():
            keep = valid & certified.unsqueeze(1)
            row, pos = torch.nonzero(keep, as_tuple=True)
            col, s = idx[row, pos], score[row, pos]
        codes = self.q_codes[rows_t]
        width = int(self.counts[codes].max())
        if row.numel():
            ranks, found = top_relevant_ranks(
                row, col, s, b, k, codes, self.r_codes, width, rows_t if self.loo else None, self.top_work
            )
        else:
            ranks = torch.full((b, width), float("inf"), dtype=torch.float64)
            found = torch.zeros(b, dtype=torch.bool)
        if self.need_first:  # MRR beyond the top K: one exact count on the whole row
            far = torch.nonzero(certified & ~found).squeeze(1)
            if far.numel():
                ranks[far, 0] = self._first_ranks(rows_t[far])
        redo_idx = torch.nonzero(~certified).squeeze(1)
        if redo_idx.numel():
            sub = super().__call__(rows[redo_idx.numpy()])
            ranks[redo_idx] = float("inf")
            ranks[redo_idx, : sub.shape[1]] = sub
        return ranks


#: queries per FAISS search call (FAISS's own BLAS query block)
_FAISS_BLOCK = 4096


class _FaissRanks:
    """Ranks of relevant references within an exact FAISS top-K search (inf beyond K)."""

    def __init__(
        self,
        q: Tensor,
        refs: Tensor,
        q_codes: np.ndarray,
        r_codes: np.ndarray,
        metric: str,
        loo: bool,
        max_rel: int,
        max_k: int,
    ) -> None:
        try:
            import faiss
        except ImportError as exc:  # pragma: no cover - faiss is a dependency
            raise ImportError("backend='faiss' needs the faiss package (pip install faiss-cpu)") from exc
        self.metric = metric
        self.loo = loo
        n = refs.shape[0]
        self.k = min(max(max_rel, max_k), n - (1 if loo else 0))
        self.q = self._prepare(q)
        r = self.q if loo else self._prepare(refs)
        index = (
            faiss.IndexFlatL2(r.shape[1])
            if metric in ("euclidean", "squared_euclidean")
            else faiss.IndexFlatIP(r.shape[1])
        )
        index.add(r)
        self.index = index
        self.n_refs = n
        self.q_codes = q_codes
        self.r_codes = r_codes

    def default_batch(self, memory_budget: int, max_rel: int) -> int:
        # FAISS holds only the top K per query (ids, scores, ranks: ~48 bytes each) and
        # tiles its own GEMM; small query blocks make it several times slower
        return int(min(_FAISS_BLOCK, max(1, memory_budget // (48 * (self.k + 1)))))

    def _prepare(self, x: Tensor) -> np.ndarray:
        a = x.detach().cpu().to(torch.float32).numpy()
        if self.metric == "cosine":
            norm = np.linalg.norm(a, axis=1, keepdims=True)
            a = a / np.where(norm > 0, norm, 1.0)
        return np.ascontiguousarray(a, dtype=np.float32)

    def __call__(self, rows: np.ndarray) -> Tensor:
        extra = 1 if self.loo else 0
        _, idx = self.index.search(self.q[rows], self.k + extra)
        if self.loo:
            is_self = idx == rows[:, None]
            # drop the query itself, or the last neighbour when the query is not among them
            drop = np.where(is_self.any(1), is_self.argmax(1), self.k)
            keep = np.ones_like(idx, dtype=bool)
            keep[np.arange(len(rows)), drop] = False
            idx = idx[keep].reshape(len(rows), self.k)
        hit = (idx >= 0) & (self.r_codes[np.clip(idx, 0, None)] == self.q_codes[rows][:, None])
        ranks = np.where(hit, np.arange(1, self.k + 1)[None, :], np.inf)
        return torch.sort(torch.from_numpy(ranks), dim=1).values


def _summarise(
    per_query: dict[str, np.ndarray], groups: np.ndarray | None, bootstrap: int, ci: float, seed: int
) -> dict[str, float]:
    names = list(per_query)
    values = np.stack([per_query[n] for n in names], axis=1)  # [n, m]

    def mean(idx: np.ndarray | None) -> np.ndarray:
        v = values if idx is None else values[idx]
        if groups is None:
            return v.mean(0)
        g = groups if idx is None else groups[idx]
        _, inv, cnt = np.unique(g, return_inverse=True, return_counts=True)
        sums = np.zeros((cnt.size, v.shape[1]))
        np.add.at(sums, inv, v)
        return (sums / cnt[:, None]).mean(0)

    point = mean(None)
    result = {n: float(x) for n, x in zip(names, point)}
    if bootstrap:
        rng = np.random.default_rng(seed)
        n = values.shape[0]
        samples = np.stack([mean(rng.integers(0, n, n)) for _ in range(bootstrap)])
        lo, hi = np.percentile(samples, [50 * (1 - ci), 50 * (1 + ci)], axis=0)
        for i, name in enumerate(names):
            result[f"{name}_ci_low"] = float(lo[i])
            result[f"{name}_ci_high"] = float(hi[i])
    return result
