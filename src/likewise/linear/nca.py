"""NCA: Neighbourhood Components Analysis (Goldberger, Roweis, Hinton & Salakhutdinov 2004).

With ``z = L x`` every point picks a neighbour stochastically,
``p_ij = exp(-||z_i - z_j||^2) / sum_{k != i} exp(-||z_i - z_k||^2)`` (``p_ii = 0``); NCA maximises
the expected number of correctly classified points

    f(L) = sum_i p_i,   p_i = sum_{j : y_j = y_i} p_ij.

Gradient (derived for the vectorised form): with ``D_ij = ||z_i - z_j||^2`` and ``m_ij = [y_i = y_j]``,
``d(-f)/dD_ij = p_ij (m_ij - p_i)``, and ``d/dZ`` of ``sum W_ij D_ij`` is ``2 Lap(W) Z``. L-BFGS on ``L``
(``[d, D]``, scipy's L-BFGS-B with scikit-learn's stopping rule) from a whitened discriminant start
(``init="auto"``); ``X`` ``[N, D]``; the ``[N, N]`` work runs in torch on ``device``, in row blocks.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

from likewise.linear.base import MahalanobisTransformer, resolve_device
from likewise.linear.init import initial_components
from likewise.linear.lbfgs import minimize_on_L, work_dtype


def class_blocks(counts: list[int], budget: int = 1 << 19) -> list[tuple[int, int, list[tuple[int, ...]]]]:
    """Row blocks of an ``[N, N]`` matrix over class-sorted points (``counts``: points per class).

    Each block ``(s, e, parts)`` has about ``budget / N`` rows (the size of
    :func:`~likewise.linear.lbfgs.row_blocks`; whole small classes grouped, a large class split);
    ``parts`` lists ``(r0, r1, c0, c1)``: rows ``r0:r1`` of the block share their class
    with columns ``c0:c1``. So the same-class entries are a few rectangles, and no mask is needed.
    """
    N = sum(counts)
    step = max(1, budget // max(N, 1))
    blocks: list[tuple[int, int, list[tuple[int, ...]]]] = []
    s, parts, c0 = 0, [], 0
    for n in counts:
        c1 = c0 + n
        r0 = c0
        while r0 < c1:
            r1 = min(c1, r0 + step - (r0 - s))  # fill the current block up to step rows
            parts.append((r0, r1, c0, c1))
            r0 = r1
            if r1 - s >= step:
                blocks.append((s, r1, parts))
                s, parts = r1, []
        c0 = c1
    if parts:
        blocks.append((s, N, parts))
    return blocks


def nca_objective(
    Z: torch.Tensor, y: torch.Tensor, blocks: list | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(-sum_i p_i, d/dZ)`` for embedded points ``Z`` ``[N, d]`` and labels ``y`` ``[N]``.

    Runs in ``Z``'s dtype, over blocks of rows of the class-sorted points (:func:`class_blocks`:
    memory ``O(block N)``). Per block: one GEMM for the logits (the softmax of ``-||z_i - z_j||^2``
    over ``j`` is taken on ``2 z_i.z_j - ||z_j||^2``, ``||z_i||^2`` being constant along the row, so
    the distances are never formed), the softmax, ``W = P (m - p_i)`` as one scaling pass plus the
    same-class rectangles, and two GEMMs for the gradient ``2 (diag(W^T 1) - W - W^T) Z`` (the rows
    of ``W`` sum to 0).

    ``blocks``: :func:`class_blocks` of the class-sorted ``y``, when the caller has them (``y`` must
    then be sorted; :class:`NCA` computes them once per fit); else found here.
    """
    order = None
    if blocks is None:
        if len(y) > 1 and not bool((y[1:] >= y[:-1]).all()):
            order = torch.argsort(y, stable=True)
            Z, y = Z[order], y[order]
        blocks = class_blocks(torch.unique_consecutive(y, return_counts=True)[1].tolist())
    sq = (Z * Z).sum(1)
    WZ, WtZ, deg = torch.empty_like(Z), torch.zeros_like(Z), torch.zeros_like(sq)
    f = torch.zeros((), dtype=torch.float64, device=Z.device)
    for s, e, parts in blocks:
        P = torch.addmm(sq[None, :], Z[s:e], Z.T, beta=-1.0, alpha=2.0)
        P[:, s:e].fill_diagonal_(-float("inf"))
        P = torch.softmax(P, dim=1)  # p_ij, p_ii = 0
        same = [P[r0 - s : r1 - s, c0:c1].clone() for r0, r1, c0, c1 in parts]
        p = torch.cat([b.sum(1) for b in same])  # p_i
        W = P.mul_(-p[:, None])  # W_ij = p_ij (m_ij - p_i) = d(-f)/dD_ij ...
        for (r0, r1, c0, c1), b in zip(parts, same):
            W[r0 - s : r1 - s, c0:c1] += b  # ... + p_ij on the same-class entries
        f -= p.sum(dtype=torch.float64)
        torch.mm(W, Z, out=WZ[s:e])
        WtZ.addmm_(W.T, Z[s:e])
        deg += W.sum(0)
    G = torch.addcmul(-WZ, deg[:, None], Z).sub_(WtZ).mul_(2.0)
    if order is not None:
        G = torch.empty_like(G).index_copy_(0, order, G)
    return f, G


class NCA(MahalanobisTransformer):
    """Goldberger et al. (2004) neighbourhood components analysis, L-BFGS on ``L``.

    Parameters
    ----------
    n_components : output dimension ``d`` (``None``: ``D``).
    init : ``"auto"`` (default) is ``"lda"``, the whitened discriminant start
        (:func:`~likewise.linear.init.lda_components`: within-class spread made isotropic, Fisher's
        directions first). NCA's softmax saturates when one feature's noise dominates the distances,
        and L-BFGS then crawls from the identity; whitened, it starts near a good metric (digits:
        the identity's accuracy in 7 iterations instead of 10). scikit-learn's ``"auto"`` uses LDA
        only for ``d < n_classes``. Also ``"identity"``, ``"pca"``, ``"random"`` (these three on the
        internally rescaled data ``X / 2^e``, centred entries of at most 2 in absolute value:
        :func:`~likewise.linear.base.scale_exponent`) or an array ``[d, D]`` (in input units).
    max_iter : L-BFGS iterations (at most).
    tol : stop when an iteration decreases ``f`` by less than ``tol * |f|`` (or every gradient entry
        is below ``tol``): scikit-learn's ``NeighborhoodComponentsAnalysis`` rule and default, 1e-5.
    dtype : ``"float32"`` (default) or ``"float64"``: precision of the ``[N, N]`` work. float32 halves
        the memory traffic of the passes that dominate the time; the data are centred first, so the
        softmax logits lose no more than float32's relative precision (``L`` and the optimiser stay
        float64). Use ``"float64"`` for a very large spread of distances relative to their gaps.
    device : torch device for the ``[N, N]`` work (``None``: CPU); e.g. ``"cuda"``.
    random_state : seed for ``init="random"``.
    """

    def __init__(
        self,
        n_components: int | None = None,
        init="auto",
        max_iter: int = 100,
        tol: float = 1e-5,
        dtype: str = "float32",
        device=None,
        random_state=None,
    ):
        self.n_components = n_components
        self.init = init
        self.max_iter = max_iter
        self.tol = tol
        self.dtype = dtype
        self.device = device
        self.random_state = random_state

    def _fit(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        if not isinstance(self.max_iter, numbers.Integral) or self.max_iter < 1:
            raise ValueError(f"max_iter must be a positive int, got {self.max_iter!r}")
        dev, dt = resolve_device(self.device), work_dtype(self.dtype)
        L0 = initial_components(self.init, X, self._check_n_components(X.shape[1]), self.random_state, y)
        if not isinstance(self.init, str):  # an array is in input units; X here is scaled (base class)
            L0 = self._in_fit_units(L0)
        order = np.argsort(y, kind="stable")  # class-sorted: same-class entries form rectangles
        Xt = torch.tensor((X - X.mean(0))[order], dtype=dt, device=dev)  # distances do not see the mean
        blocks = class_blocks(np.bincount(y).tolist())  # y is fixed: its class blocks are found once
        yt = torch.as_tensor(y[order], device=dev)
        L, self.objective_, self.n_iter_ = minimize_on_L(
            lambda Z: nca_objective(Z, yt, blocks), Xt, L0, self.max_iter, self.tol
        )
        return L
