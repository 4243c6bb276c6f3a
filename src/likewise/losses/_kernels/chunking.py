"""Row-blocked evaluation of a loss with recomputation in backward.

Softmax-family losses reduce each row of ``S = sim(queries, refs)`` ``[B, N]`` to a
few numbers (a log-sum-exp, a count). With ``chunk_size=c`` the queries are
processed ``c`` at a time under activation checkpointing: forward keeps only the
per-row outputs, backward recomputes one ``[c, N]`` block at a time. So at most
``c x N`` similarities (and their intermediates) are alive at once, forward or
backward, and the result equals the unchunked computation (same operations on
the same rows).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from likewise.losses.base import Batch


def check_chunk_size(chunk_size: int | None) -> int | None:
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")
    return chunk_size


def map_row_blocks(fn: Callable[[Batch], Tensor], batch: Batch, chunk_size: int | None) -> Tensor:
    """Apply ``fn`` (a :class:`Batch` of some query rows -> ``[rows, ...]``) block-wise.

    Returns ``fn`` of the whole batch, concatenated over row blocks along dim 0.
    Without ``chunk_size`` (or when it covers the batch) ``fn`` runs once, normally.
    """
    b = batch.embeddings.shape[0]
    if chunk_size is None or chunk_size >= b:
        return fn(batch)
    outputs = []
    for start in range(0, b, chunk_size):
        rows = batch.row_slice(start, min(b, start + chunk_size))

        def block(queries: Tensor, refs: Tensor, rows: Batch = rows) -> Tensor:
            return fn(replace(rows, embeddings=queries, ref_emb=refs))

        if torch.is_grad_enabled() and (rows.embeddings.requires_grad or rows.ref_emb.requires_grad):
            outputs.append(checkpoint(block, rows.embeddings, rows.ref_emb, use_reentrant=False))
        else:
            outputs.append(block(rows.embeddings, rows.ref_emb))
    return torch.cat(outputs, dim=0)
