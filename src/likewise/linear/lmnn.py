"""LMNN: Large Margin Nearest Neighbour (Weinberger & Saul 2009).

Each point ``i`` has ``k`` target neighbours ``j ~> i`` (its nearest same-class points in the input
space). With ``z = L x`` and ``D_ij = ||z_i - z_j||^2``, LMNN pulls targets in and pushes impostors
``l`` (``y_l != y_i``) out of the margin:

    f(L) = (1 - mu) sum_{i, j ~> i} D_ij + mu sum_{i, j ~> i} sum_{l : y_l != y_i} [1 + D_ij - D_il]_+.

Gradient (vectorised): ``f`` is ``sum W_ij D_ij`` for the weights ``W`` of the active terms
(``+(1 - mu) + mu * #active l`` on each target pair, ``-mu * #active j`` on each impostor pair), so
``df/dZ = 2 Lap(W) Z``, computed on the sparse list of target and candidate-impostor pairs.

Solver: L-BFGS on ``L`` (``[d, D]``) over an *active set*, as Weinberger & Saul's own solver does.
A pair ``(i, l)`` can only be active while ``D_il < 1 + max_j D_ij``; one pass over the ``[N, N]``
distances (in blocks of rows, on ``device``) lists those pairs with some slack, and L-BFGS
(:func:`likewise.linear.lbfgs.lbfgs`) runs on that sparse list, where an evaluation costs
``O((N k + #pairs) d)`` instead of ``O(N^2 d)``. The list is rebuilt after iterations 1, 3, 7, 15,
then every 10, and whenever L-BFGS would stop: if a pair that can be active was missing, the run
goes on (curvature memory kept); if none was, the sparse objective *is* ``f`` at the solution.
Digits (1,257 x 64): about 9 rebuilds and 2,000-50,000 listed pairs against 1.6 million.
``X`` ``[N, D]``; torch on ``device``.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import torch

from likewise.linear.base import MahalanobisTransformer, resolve_device
from likewise.linear.init import initial_components
from likewise.linear.lbfgs import lbfgs, row_blocks, work_dtype


def target_neighbors(X: torch.Tensor, y: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(idx, valid)``, both ``[N, k]``: the ``k`` nearest same-class points of each point (a class
    with fewer than ``k + 1`` points gives fewer valid targets; a singleton none)."""
    N = X.shape[0]
    k = min(k, N - 1)
    sq = (X * X).sum(1)
    idx, ok = [], []
    for s, e in row_blocks(N):
        D = torch.addmm(sq[None, :], X[s:e], X.T, alpha=-2.0)  # ||x_j||^2 - 2 x_i.x_j: same order in j
        D[:, s:e].fill_diagonal_(float("inf"))
        D.masked_fill_(y[s:e, None] != y[None, :], float("inf"))
        val, i = D.topk(k, dim=1, largest=False)
        idx.append(i)
        ok.append(torch.isfinite(val))
    return torch.cat(idx), torch.cat(ok)


def _target_distances(Z: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``[N, k]`` squared distances to the target neighbours (0 where not valid)."""
    diff = Z[:, None, :] - Z[targets]
    return (diff * diff).sum(2) * valid.to(Z.dtype)


def candidate_impostors(
    Z: torch.Tensor,
    y: torch.Tensor,
    targets: torch.Tensor,
    valid: torch.Tensor,
    margin: float = 1.0,
    slack: float = 0.0,
    tight: bool = False,
):
    """``(i, l)``, ``[P]`` each: the differently labelled pairs with ``D_il < (1 + slack)(margin +
    max_j D_ij)`` (``slack = 0``: every pair that can be active at ``Z``, and no other). One pass over
    the ``[N, N]`` distances, in blocks of rows. ``tight=True`` adds a bool ``[P]``: which of the
    pairs meet the bound with ``slack = 0``."""
    N = Z.shape[0]
    sq = (Z * Z).sum(1)
    t = _target_distances(Z, targets, valid)
    t = margin + torch.where(valid, t, torch.full_like(t, -float("inf"))).amax(1)
    thr = (1.0 + slack) * t - sq  # compare ||z_l||^2 - 2 z_i.z_l with thr_i - ||z_i||^2
    ii, ll, ok = [], [], []
    for s, e in row_blocks(N):
        D = torch.addmm(sq[None, :], Z[s:e], Z.T, alpha=-2.0)
        i, l = torch.nonzero(D < thr[s:e, None], as_tuple=True)
        keep = (y.index_select(0, i + s) != y.index_select(0, l)).nonzero().squeeze(1)  # impostors only
        i, l = i.index_select(0, keep), l.index_select(0, keep)
        if tight:
            D = D.view(-1).index_select(0, i * N + l)
            ok.append(D < (t - sq)[s:e].index_select(0, i))
        ii.append(i + s)
        ll.append(l)
    ii, ll = torch.cat(ii), torch.cat(ll)
    return (ii, ll, torch.cat(ok)) if tight else (ii, ll)


class SparseLMNN:
    """``f`` and ``df/dZ`` on fixed pair lists: the ``N k`` target pairs and impostor pairs ``(i, l)``.

    Both lists are gathered into one list of ``P`` pairs; the ``[P, d]`` work buffers are kept between
    calls (allocating them anew each call costs more than the arithmetic at these sizes).
    """

    def __init__(self, targets: torch.Tensor, valid: torch.Tensor, impostors, mu: float, margin: float = 1.0):
        N, k = targets.shape
        self.N, self.k, self.mu, self.margin = N, k, float(mu), float(margin)
        self.valid = valid
        self.ii, self.ll = impostors
        rows = torch.arange(N, device=targets.device).repeat_interleave(k)
        self.r = torch.cat([rows, self.ii])
        self.c = torch.cat([targets.reshape(-1), self.ll])
        self.all_valid = bool(valid.all())
        self.pull = (1.0 - self.mu) * valid.to(torch.float64)  # pull weights before the impostors' share
        self.buf: tuple[torch.Tensor, torch.Tensor] | None = None

    def __call__(self, Z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        P, Nk, mu = len(self.r), self.N * self.k, self.mu
        if self.buf is None or self.buf[0].shape[1] != Z.shape[1] or self.buf[0].dtype != Z.dtype:
            self.buf = (Z.new_empty(P, Z.shape[1]), Z.new_empty(P, Z.shape[1]))
            self.pull = self.pull.to(Z.dtype)
            # incidence [N, P]: +1 at (r_p, p), -1 at (c_p, p); G = inc @ (w * (z_r - z_c)) is the
            # gradient scatter in one sparse product (two index_add_ calls cost about twice as much)
            cols = torch.arange(P, device=Z.device)
            idx = torch.stack([torch.cat([self.r, self.c]), torch.cat([cols, cols])])
            val = torch.cat([Z.new_ones(P), -Z.new_ones(P)])
            with warnings.catch_warnings():  # torch: "sparse CSR support is in beta state", etc.
                warnings.simplefilter("ignore", UserWarning)
                self.inc = torch.sparse_coo_tensor(idx, val, (self.N, P)).coalesce().to_sparse_csr()
        A, B = self.buf
        torch.index_select(Z, 0, self.r, out=A)
        torch.index_select(Z, 0, self.c, out=B)
        A.sub_(B)  # z_r - z_c
        d = torch.mul(A, A, out=B).sum(1)  # [P] squared distances
        t = d[:Nk].view(self.N, self.k)  # target distances [N, k]
        if not self.all_valid:
            t = t.masked_fill(~self.valid, 0.0)
        ti = torch.index_select(t if self.all_valid else t.masked_fill(~self.valid, -torch.inf), 0, self.ii)
        H = ti.add_(self.margin).sub_(d[Nk:, None]).clamp_min_(0.0)  # hinges [P_imp, k]
        loss = (1.0 - mu) * t.sum(dtype=torch.float64) + mu * H.sum(dtype=torch.float64)
        active = (H > 0).to(Z.dtype).mul_(mu)
        pull = self.pull.clone().index_add_(0, self.ii, active)  # (an alpha != 1 is a slow path)
        w = torch.cat([pull.view(-1), active.sum(1).neg_()])  # weight of each pair's D
        A.mul_(2.0 * w[:, None])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return loss, self.inc @ A


def lmnn_objective(
    Z: torch.Tensor,
    y: torch.Tensor,
    targets: torch.Tensor,
    valid: torch.Tensor,
    mu: float,
    margin: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(f, df/dZ)`` for ``Z`` ``[N, d]``, labels ``y`` ``[N]``, ``targets``/``valid`` ``[N, k]``.

    The hinge terms run over every pair that can be active (:func:`candidate_impostors`, one pass
    over the ``[N, N]`` distances), so the value is exact.
    """
    impostors = candidate_impostors(Z, y, targets, valid, margin)
    return SparseLMNN(targets, valid, impostors, mu, margin)(Z)


class LMNN(MahalanobisTransformer):
    """Weinberger & Saul (2009) large-margin nearest neighbour metric learning, L-BFGS on ``L``.

    Parameters
    ----------
    n_neighbors : target neighbours per point ``k``.
    mu : weight of the push (impostor) term, ``1 - mu`` of the pull term.
    n_components : output dimension ``d`` (``None``: ``D``).
    init : ``"auto"`` (identity when ``d = D``, else PCA), ``"lda"``, ``"identity"``, ``"pca"``,
        ``"random"`` or an array ``[d, D]``. The target neighbours are always taken in the input space.
    max_iter : L-BFGS iterations in all (at most).
    tol : stop when an iteration decreases ``f`` by less than ``tol * |f|`` (or every gradient entry
        is below ``tol``) and no pair outside the active set can be active. Default 1e-3 (the value
        of metric-learn's LMNN ``convergence_tol``): ``f`` is a sum of hinges, L-BFGS crawls at the
        end, and on digits the 1-NN accuracy no longer moves once the decrease falls under 1e-3.
    slack : the active set holds the impostor pairs with ``D_il < (1 + slack)(1 + max_j D_ij)``;
        it is rebuilt after iterations 1, 3, 7, 15, then every 10, and before stopping. Larger:
        fewer pairs go missing between rebuilds, but each evaluation costs more.
    dtype : ``"float32"`` (default) or ``"float64"``: precision of the torch work (the data are
        centred first; ``L`` and the optimiser stay float64).
    device : torch device for the ``[N, N]`` work (``None``: CPU).
    random_state : seed for ``init="random"``.

    Attributes: ``components_``, ``objective_`` (``f`` at the end), ``n_iter_``, ``n_refreshes_``
    (active-set rebuilds), ``n_active_pairs_`` (impostor pairs in the last active set).
    """

    def __init__(
        self,
        n_neighbors: int = 3,
        mu: float = 0.5,
        n_components: int | None = None,
        init="auto",
        max_iter: int = 200,
        tol: float = 1e-3,
        slack: float = 0.2,
        dtype: str = "float32",
        device=None,
        random_state=None,
    ):
        self.n_neighbors = n_neighbors
        self.mu = mu
        self.n_components = n_components
        self.init = init
        self.max_iter = max_iter
        self.tol = tol
        self.slack = slack
        self.dtype = dtype
        self.device = device
        self.random_state = random_state

    def _fit(self, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        if not isinstance(self.max_iter, numbers.Integral) or self.max_iter < 1:
            raise ValueError(f"max_iter must be a positive int, got {self.max_iter!r}")
        if not isinstance(self.n_neighbors, numbers.Integral) or self.n_neighbors < 1:
            raise ValueError(f"n_neighbors must be a positive int, got {self.n_neighbors!r}")
        if not isinstance(self.mu, numbers.Real) or not 0.0 <= self.mu <= 1.0:
            raise ValueError(f"mu must be in [0, 1], got {self.mu!r}")
        if not isinstance(self.slack, numbers.Real) or not self.slack >= 0:
            raise ValueError(f"slack must be a non-negative number, got {self.slack!r}")
        dev, dt = resolve_device(self.device), work_dtype(self.dtype)
        d = self._check_n_components(X.shape[1])
        init = self.init
        if isinstance(init, str) and init == "auto":
            init = "identity" if d == X.shape[1] else "pca"
        L0 = initial_components(init, X, d, self.random_state, y)
        Xt = torch.tensor(X - X.mean(0), dtype=dt, device=dev)  # distances do not see the mean
        yt = torch.as_tensor(y, device=dev)
        targets, valid = target_neighbors(Xt, yt, int(self.n_neighbors))
        mu, slack, N = float(self.mu), float(self.slack), len(y)
        state: dict = {"refreshes": 0, "calls": -1, "next": 0, "gap": 1}

        def refresh(L: np.ndarray, final: bool = True) -> bool:
            """Rebuild the active set at ``L`` when due (before stopping; after iterations 1, 3, 7, 15,
            then every 10); True when a pair that can be active at ``L`` was missing from it."""
            state["calls"] += 1
            if not (final or state["calls"] >= state["next"]):
                return False
            state["next"] = state["calls"] + state["gap"]
            state["gap"] = min(2 * state["gap"], 10)
            ii, ll, tight = candidate_impostors(embed(L), yt, targets, valid, slack=slack, tight=True)
            keys = ii * N + ll
            missing = "keys" not in state or not bool(torch.isin(keys[tight], state["keys"]).all())
            state.update(keys=keys, terms=SparseLMNN(targets, valid, (ii, ll), mu))
            state["refreshes"] += 1
            return missing

        def embed(L: np.ndarray) -> torch.Tensor:
            return Xt @ torch.as_tensor(L, device=dev).to(dt).T

        def fun(L: np.ndarray) -> tuple[float, np.ndarray]:
            f, gZ = state["terms"](embed(L))
            return float(f), (gZ.T @ Xt).cpu().numpy()

        refresh(L0)
        L, self.objective_, n_iter = lbfgs(fun, L0, int(self.max_iter), float(self.tol), refresh)
        self.n_iter_ = max(n_iter, 1)  # the check of the start point counts (sklearn: n_iter_ >= 1)
        self.n_refreshes_, self.n_active_pairs_ = state["refreshes"], len(state["keys"])
        return L
