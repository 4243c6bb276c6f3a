"""Similarity of a block of queries against all references, for streamed evaluation.

The references are prepared once (normalised for cosine, squared norms kept for
the Euclidean metrics); each call then costs one GEMM ``[b, D] x [D, N]``.

For ranking only (``rank_only=True``) the Euclidean similarity of query ``x`` to
reference ``y`` is ``2 <x, y> - |y|^2``: it differs from ``-|x - y|^2`` by the
per-query constant ``|x|^2``, so every query's ranking is unchanged and one
``[b, N]`` addition is saved. Otherwise the similarity is ``-|x - y|`` (or
``-|x - y|^2``), as in :func:`likewise.similarity.pairwise_similarity`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


class BlockScorer:
    """``scorer(queries_block) -> [b, N]`` similarities (larger = more similar)."""

    def __init__(self, refs: Tensor, metric: str, rank_only: bool = True) -> None:
        self.metric = metric
        self.rank_only = rank_only
        if metric == "cosine":
            refs = F.normalize(refs, dim=1)
        self.refs_t = refs.T.contiguous()
        self.ref_sq = refs.pow(2).sum(1) if metric in ("euclidean", "squared_euclidean") else None

    def prepare_queries(self, queries: Tensor) -> Tensor:
        return F.normalize(queries, dim=1) if self.metric == "cosine" else queries

    def __call__(self, q: Tensor, out: Tensor | None = None, cols: slice = slice(None)) -> Tensor:
        """``q`` already passed through :meth:`prepare_queries`; ``out``: optional ``[b, N]`` buffer;
        ``cols``: a range of references (a tile ``[b, len(cols)]`` of the block)."""
        refs_t = self.refs_t[:, cols]
        if self.ref_sq is None:
            return torch.mm(q, refs_t, out=out)
        s = torch.addmm(self.ref_sq[cols].unsqueeze(0), q, refs_t, beta=-1.0, alpha=2.0, out=out)
        if self.rank_only:
            return s
        d2 = (q.pow(2).sum(1, keepdim=True) - s).clamp_min_(0)
        return -(d2.sqrt_() if self.metric == "euclidean" else d2)
