"""LMNN: Large Margin Nearest Neighbour (Weinberger & Saul 2009).

Each point ``i`` has ``k`` target neighbours ``j ~> i`` (its nearest same-class points in the input
space). With ``z = L x`` and ``D_ij = ||z_i - z_j||^2``, LMNN pulls targets in and pushes impostors
``l`` (``y_l != y_i``) out of the margin:

    f(L) = (1 - mu) sum_{i, j ~> i} D_ij + mu sum_{i, j ~> i} sum_{l : y_l != y_i} [1 + D_ij - D_il]_+.

Gradient (vectorised): ``f`` is ``sum W_ij D_ij`` for the weights ``W`` of the active terms
(``+(1 - mu) + mu * #active l`` on each target pair, ``-mu * #active j`` on each impostor pair), so
``df/dZ = 2 Lap(W) Z``, computed on the sparse list of target and candidate-impostor pairs.
L-BFGS on ``L`` (``[d, D]``); ``X`` ``[N, D]``; torch on ``device``.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch

from likewise.linear.base import MahalanobisTransformer, resolve_device
from likewise.linear.init import initial_components
from likewise.linear.lbfgs import minimize_on_L, sq_distances


def target_neighbors(X: torch.Tensor, y: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(idx, valid)``, both ``[N, k]``: the ``k`` nearest same-class points of each point (a class
    with fewer than ``k + 1`` points gives fewer valid targets; a singleton none)."""
    D = sq_distances(X)
    D.fill_diagonal_(float("inf"))
    D = torch.where(y[:, None] == y[None, :], D, torch.full_like(D, float("inf")))
    k = min(k, X.shape[0] - 1)
    val, idx = D.topk(k, dim=1, largest=False)
    return idx, torch.isfinite(val)


def _pair_grad(r: torch.Tensor, c: torch.Tensor, w: torch.Tensor, Z: torch.Tensor) -> torch.Tensor:
    """Gradient w.r.t. ``Z`` of ``sum_p w_p ||z_{r_p} - z_{c_p}||^2`` for a sparse pair list."""
    diff = (Z[r] - Z[c]) * (2.0 * w)[:, None]
    G = torch.zeros_like(Z)
    G.index_add_(0, r, diff)
    G.index_add_(0, c, -diff)
    return G


def lmnn_objective(
    Z: torch.Tensor,
    y: torch.Tensor,
    targets: torch.Tensor,
    valid: torch.Tensor,
    mu: float,
    margin: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(f, df/dZ)`` for ``Z`` ``[N, d]``, labels ``y`` ``[N]``, ``targets``/``valid`` ``[N, k]``.

    Only candidate impostors ``D_il < margin + max_j D_ij`` can be active; they are gathered once
    (one pass over the ``[N, N]`` distances), the hinge terms are evaluated on that sparse list.
    """
    D = sq_distances(Z)
    vt = valid.to(Z.dtype)
    t = D.gather(1, targets)  # [N, k]
    thr = margin + torch.where(valid, t, torch.full_like(t, -float("inf"))).amax(1)
    ii, ll = torch.nonzero((D < thr[:, None]) & (y[:, None] != y[None, :]), as_tuple=True)
    H = (margin + t[ii] - D[ii, ll][:, None]).clamp_min(0.0) * vt[ii]  # [n_candidates, k]
    active = (H > 0).to(Z.dtype)
    loss = (1.0 - mu) * (t * vt).sum() + mu * H.sum()
    pull = (1.0 - mu) * vt
    pull.index_add_(0, ii, mu * active)
    N, k = targets.shape
    rows = torch.arange(N, device=Z.device).repeat_interleave(k)
    grad = _pair_grad(rows, targets.reshape(-1), pull.reshape(-1), Z)
    grad += _pair_grad(ii, ll, -mu * active.sum(1), Z)
    return loss, grad


class LMNN(MahalanobisTransformer):
    """Weinberger & Saul (2009) large-margin nearest neighbour metric learning, L-BFGS on ``L``.

    Parameters
    ----------
    n_neighbors : target neighbours per point ``k``.
    mu : weight of the push (impostor) term, ``1 - mu`` of the pull term.
    n_components : output dimension ``d`` (``None``: ``D``).
    init : ``"auto"``, ``"identity"``, ``"pca"``, ``"random"`` or an array ``[d, D]``.
    max_iter, tol : L-BFGS iterations and gradient tolerance.
    device : torch device for the ``[N, N]`` work (``None``: CPU).
    random_state : seed for ``init="random"``.
    """

    def __init__(
        self,
        n_neighbors: int = 3,
        mu: float = 0.5,
        n_components: int | None = None,
        init="auto",
        max_iter: int = 100,
        tol: float = 1e-5,
        device=None,
        random_state=None,
    ):
        self.n_neighbors = n_neighbors
        self.mu = mu
        self.n_components = n_components
        self.init = init
        self.max_iter = max_iter
        self.tol = tol
        self.device = device
        self.random_state = random_state

    def _fit(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        if not isinstance(self.max_iter, numbers.Integral) or self.max_iter < 1:
            raise ValueError(f"max_iter must be a positive int, got {self.max_iter!r}")
        if not isinstance(self.n_neighbors, numbers.Integral) or self.n_neighbors < 1:
            raise ValueError(f"n_neighbors must be a positive int, got {self.n_neighbors!r}")
        if not isinstance(self.mu, numbers.Real) or not 0.0 <= self.mu <= 1.0:
            raise ValueError(f"mu must be in [0, 1], got {self.mu!r}")
        dev = resolve_device(self.device)
        L0 = initial_components(self.init, X, self._check_n_components(X.shape[1]), self.random_state)
        Xt = torch.tensor(X, dtype=torch.float64, device=dev)
        yt = torch.as_tensor(y, device=dev)
        targets, valid = target_neighbors(Xt @ torch.as_tensor(L0, device=dev).T, yt, int(self.n_neighbors))
        mu = float(self.mu)
        L, self.objective_, self.n_iter_ = minimize_on_L(
            lambda Z: lmnn_objective(Z, yt, targets, valid, mu), Xt, L0, self.max_iter, self.tol
        )
        return L
