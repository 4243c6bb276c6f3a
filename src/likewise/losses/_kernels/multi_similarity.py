"""Multi-similarity on index lists of the positives, in one GEMM-sized pass.

:func:`likewise.losses.multi_similarity.multi_similarity_loss` is the specification (plain
autograd on masks). With class ids the row kernel
:func:`~likewise.losses._kernels.row_softmax.multi_similarity_kernel` computes the same loss
and its gradient in one ``[B, N]`` buffer, no masks (:func:`~.row_softmax.gemm_loss`:
backward is two GEMMs). :func:`eligible` says when.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from likewise.losses._kernels.positives import batch_pairs, index_lists_eligible
from likewise.losses._kernels.row_softmax import gemm_loss, multi_similarity_kernel
from likewise.losses.base import Batch, prepare
from likewise.normalize import l2_normalize


def eligible(batch: Batch, miner: Any, chunk_size: int | None) -> bool:
    """:func:`multi_similarity_gemm` applies: no row chunks asked for (the kernel holds the whole
    ``[B, N]`` buffer), the positives as index lists (class ids, CPU)."""
    chunked = chunk_size is not None and chunk_size < batch.embeddings.shape[0]
    return not chunked and index_lists_eligible(batch, miner)


def multi_similarity_gemm(
    batch: Batch, metric: str, normalize_embeddings: bool, alpha: float, beta: float, base: float
) -> tuple[Tensor, dict[str, Any]]:
    """The loss and its statistics (tensors, read lazily) for ``metric`` ``"cosine"`` or ``"dot"``."""
    x = prepare(batch.embeddings, metric, normalize_embeddings)
    y = x if batch.same_set else prepare(batch.ref_emb, metric, normalize_embeddings)
    if metric == "cosine":  # the kernel takes the similarity as one product x y^T
        x = l2_normalize(x, dim=1)
        y = x if batch.same_set else l2_normalize(y, dim=1)
    return gemm_loss(x, y, multi_similarity_kernel(alpha, beta, base), *batch_pairs(batch))


__all__ = ["eligible", "multi_similarity_gemm"]
