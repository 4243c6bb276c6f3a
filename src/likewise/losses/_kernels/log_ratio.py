"""Log-ratio loss with its gradient written into one ``[B, N]`` buffer.

The plain formula is :func:`likewise.losses.log_ratio.log_ratio_loss`; this kernel gives the
same values and gradients. The excluded pairs (self pairs) come as index lists, not a mask;
the embedding distances from :func:`~likewise.losses._kernels.euclidean.distance_matrix` (a
backward of two GEMMs).
"""

from __future__ import annotations

import torch
from torch import Tensor

from likewise.losses._kernels.fused import needs_grad, with_gradient
from likewise.normalize import saturate_


def eligible(embeddings: Tensor, ref_self_index: Tensor | None) -> bool:
    """The self pairs of ``ref_self_index`` are an index list whose length depends on its values
    (``nonzero``): on a GPU that waits for the device, so there the plain (mask) path runs."""
    return ref_self_index is None or embeddings.device.type == "cpu"


def log_ratio_kernel(
    emb_dist: Tensor, label_log: Tensor, excluded: tuple[Tensor, Tensor], eps: float, work: torch.dtype
) -> tuple[Tensor, Tensor]:
    """The loss of ``emb_dist [B, N]`` (in the graph) against ``label_log = log(D_y + eps)``
    ``[B, N]`` (in ``work``, overwritten), leaving out the pairs ``excluded = (rows, cols)``
    (each at most once); and the number of triples it averages (a tensor).

    One buffer: ``u = log(D + eps) - label_log``, zeroed at the excluded pairs, centred per
    row (``dev``), and then the gradient ``dL/dD = 2 n_a dev_ai / ((D_ai + eps) P)``
    (``P`` = number of triples; the row mean's own derivative cancels since ``sum_i dev = 0``).
    No anchor with two candidates: every ``dev`` is 0, and so are the loss and its gradient.
    """
    b, n = emb_dist.shape
    want = needs_grad(emb_dist)
    with torch.no_grad():
        # candidates per anchor (index_add_, not bincount: on a GPU bincount reads its maximum)
        rows = excluded[0]
        count = torch.full((b,), float(n), dtype=work, device=rows.device).index_add_(
            0, rows, torch.full(rows.shape, -1.0, dtype=work, device=rows.device)
        )
        num_pairs = (count * (count - 1) / 2).sum()
        per_pair = 1 / num_pairs.clamp_min(1)
        shifted = emb_dist.detach().to(work) + eps
        dev = torch.log(shifted).sub_(label_log)
        dev[excluded] = 0
        dev.sub_((dev.sum(1) / count.clamp_min(1)).unsqueeze(1))
        dev[excluded] = 0
        pair_sums = count * torch.linalg.vector_norm(dev, dim=1).square()  # n sum_i dev_i^2, per anchor
        loss = (pair_sums.sum() * per_pair).to(emb_dist.dtype)
        grad = dev.div_(shifted).mul_((count * (2 * per_pair)).unsqueeze(1)) if want else None
        if grad is not None and work != emb_dist.dtype:
            grad = saturate_(grad, emb_dist.dtype).to(emb_dist.dtype)
    return with_gradient(emb_dist, loss, grad), num_pairs


__all__ = ["eligible", "log_ratio_kernel"]
