"""LMNN: Large Margin Nearest Neighbour (Weinberger & Saul 2009).

Each point ``i`` has ``k`` target neighbours ``j ~> i`` (its nearest same-class points in the input
space). With ``z = L x`` and ``D_ij = ||z_i - z_j||^2``, LMNN pulls targets in and pushes impostors
``l`` (``y_l != y_i``) out of the margin:

    f(L) = (1 - mu) sum_{i, j ~> i} D_ij + mu sum_{i, j ~> i} sum_{l : y_l != y_i} [1 + D_ij - D_il]_+.

Gradient (vectorised): ``f`` is ``sum W_ij D_ij`` for the weights ``W`` of the active terms
(``+(1 - mu) + mu * #active l`` on each target pair, ``-mu * #active j`` on each impostor pair), so
``df/dZ = 2 Lap(W) Z``, computed on the sparse list of target and candidate-impostor pairs with
two sparse kernels (:class:`SparseLMNN`).

Solver: L-BFGS on ``L`` (``[d, D]``) over an *active set*, as Weinberger & Saul's own solver does.
A pair ``(i, l)`` can only be active while ``D_il < 1 + max_j D_ij``; one pass over the ``[N, N]``
distances (:func:`~likewise.linear.impostors.candidate_impostors`, in blocks of rows, on
``device``) lists those pairs with some slack, and L-BFGS (:func:`likewise.linear.lbfgs.lbfgs`)
runs on that sparse list, where an evaluation costs ``O((N k + #pairs) d)`` instead of
``O(N^2 d)``. The list is built at the start, rebuilt after iteration 5, then every 10, and
whenever L-BFGS would stop: if a pair that can be active was missing, the run goes on (curvature
memory kept); if none was, the sparse objective *is* ``f`` at the solution. Earlier rebuilds
(after iterations 1, 3, 7, 15) cost more than they saved: a list taken where few impostors were
near let the next iterations shrink the metric into a region with many (digits: 50,000 listed
pairs after iteration 7, against 8,800 at the end; 39 evaluations and 7 rebuilds instead of 30
and 5). Later rebuilds (first after 8 or 10 iterations, then every 15 or 20) or a wider list
(``slack=0.3``) were slower too (digits, CPU time in one process: 76-107 ms against 66 ms).
Digits (1,257 x 64): 5 rebuilds, 8,800-24,000 listed pairs against 1.4 million. Where the time
goes there (one thread, measured on a loaded machine): about 40% in the 30 sparse evaluations
(two sparse kernels and a few small gathers each), 35% in the 5 list rebuilds (a third of that
the triangle GEMM, the rest the threshold passes and the CSR tables), 13% in the two dense
``[N, D] x [D, d]`` products per evaluation.

A named start (identity, PCA, ...) is scaled so that the median target distance is the margin
(:func:`margin_scale`): the margin sets LMNN's scale, and from the unscaled identity the first
iterations only shrink ``L`` (digits: 42 iterations from the identity, 25 scaled).
``X`` ``[N, D]``; torch on ``device``.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np
import torch

from likewise.linear.base import MahalanobisTransformer, resolve_device
from likewise.linear.impostors import (
    candidate_impostors,
    class_ranges,
    target_distances,
    target_neighbors,
)
from likewise.linear.init import initial_components
from likewise.linear.lbfgs import lbfgs, work_dtype

__all__ = [
    "LMNN",
    "SparseLMNN",
    "candidate_impostors",
    "class_ranges",
    "lmnn_objective",
    "margin_scale",
    "target_distances",
    "target_neighbors",
]


def _crow(rows: np.ndarray, N: int) -> np.ndarray:
    """CSR row pointers ``[N + 1]`` of entries sorted by row (``rows``: their row indices)."""
    crow = np.zeros(N + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=N), out=crow[1:])
    return crow


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    with warnings.catch_warnings():  # torch: "sparse CSR support is in beta state"
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, shape)


class SparseLMNN:
    """``f`` and ``df/dZ`` on fixed pair lists: the valid target pairs ``(i, j)`` and the impostor
    pairs ``(i, l)`` (``impostors``: two ``[P]`` index tensors, in any order).

    The ``n = N k + P`` pairs ``(r, c)`` are one sparsity pattern of an ``[N, N]`` matrix ``W``,
    kept in its CSR order (built once, with NumPy on the host):

    * distances ``D_rc = ||z_r||^2 + ||z_c||^2 - 2 z_r.z_c``, the dot products by one sampled product
      (``torch.sparse.sampled_addmm``: ``Z Z^T`` at the pattern only, no ``[P, d]`` gather);
    * ``f`` is ``sum W_rc D_rc`` for the weights of the active terms (``(1 - mu) + mu * #active l``
      on a target pair, ``-mu * #active j`` on an impostor pair), so
      ``df/dZ = 2 (diag(W 1 + W^T 1) Z - (W + W^T) Z)``. Both parts come from one sparse-dense
      product: ``[W | W^T] [Z 1; Z 1]`` (``[N, 2N] x [2N, d + 1]``) holds ``(W + W^T) Z`` and, in its
      last column, the degrees ``W 1 + W^T 1``.

    An evaluation costs ``O(n (d + k))``, with no ``[P, d]`` work buffer.
    """

    def __init__(self, targets: torch.Tensor, valid: torch.Tensor, impostors, mu: float, margin: float = 1.0):
        N, k = targets.shape
        dev = targets.device
        self.N, self.k, self.mu, self.margin = N, k, float(mu), float(margin)
        vd = valid.cpu().numpy().reshape(-1)
        self.valid, self.all_valid = valid, bool(vd.all())
        slots = np.flatnonzero(vd)  # the valid slots of [N * k]
        ii, ll = (t.cpu().numpy().astype(np.int64, copy=False) for t in impostors)
        r = np.concatenate([slots // k, ii])
        c = np.concatenate([targets.cpu().numpy().reshape(-1)[slots], ll])
        n, self.n_t = len(r), len(slots)
        order = np.argsort(r * N + c)  # W's CSR order (the keys are distinct)
        R, C = r[order], c[order]
        at = np.empty(n, dtype=np.int64)  # pair p's place in the CSR order
        at[order] = np.arange(n)
        crow = _crow(R, N)
        # [W | W^T]: row i holds W's row i (columns C), then W^T's row i (columns N + R of the
        # entries with C = i, in W^T's CSR order t2); values are gathered from W's by src2
        t2 = np.argsort(C * N + R)
        tcrow = _crow(C[t2], N)
        crow2 = crow + tcrow
        q = np.arange(n)
        at_w = crow2[R] + (q - crow[R])
        Ct = C[t2]
        at_t = crow2[Ct] + (crow[Ct + 1] - crow[Ct]) + (q - tcrow[Ct])
        src2, col2 = np.empty(2 * n, dtype=np.int64), np.empty(2 * n, dtype=np.int64)
        src2[at_w], src2[at_t] = q, t2
        col2[at_w], col2[at_t] = C, R[t2] + N

        def put(a: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(a).to(dev)

        self.keys = R * N + C  # sorted r * N + c of the pairs (NumPy, host)
        self.R, self.C, self.crow, self.at = put(R), put(C), put(crow), put(at)
        self.t_at, self.i_at = self.at[: self.n_t], self.at[self.n_t :]
        self.ii = put(ii)
        self.crow2, self.col2, self.src2 = put(crow2), put(col2), put(src2)
        self.slots = put(slots)
        self.pull = (1.0 - self.mu) * valid.to(torch.float64)  # pull weights before the impostors' share
        self.buffers: tuple | None = None
        self.last_z: torch.Tensor | None = None  # the last Z evaluated, and its target distances
        self.last_t: torch.Tensor | None = None

    def _buffers(self, Z: torch.Tensor) -> tuple:
        """Work buffers for ``Z``'s dtype and width, made once: the sampled product's CSR pattern
        (its values: ``||z_r||^2 + ||z_c||^2``, written per call), the CSR matrix ``[W | W^T]`` (its
        values written per call: the CSR tensors alias them) and ``[Z 1; Z 1]``."""
        N, d = Z.shape
        if self.buffers is None or self.buffers[0] != (Z.dtype, d):
            self.pull = self.pull.to(Z.dtype)
            base = Z.new_empty(len(self.C))
            w2 = Z.new_empty(len(self.src2))
            ZZ1 = Z.new_ones(2 * N, d + 1)
            pattern = _csr(self.crow, self.C, base, (N, N))
            W2 = _csr(self.crow2, self.col2, w2, (N, 2 * N))
            self.buffers = ((Z.dtype, d), base, pattern, w2, W2, ZZ1)
        return self.buffers[1:]

    def __call__(self, Z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        N, k, mu = self.N, self.k, self.mu
        d_out = Z.shape[1]
        base, pattern, w2, W2, ZZ1 = self._buffers(Z)
        sq = (Z * Z).sum(1)
        torch.index_select(sq, 0, self.R, out=base).add_(sq.index_select(0, self.C))
        with warnings.catch_warnings():  # torch: "sparse CSR support is in beta state"
            warnings.simplefilter("ignore", UserWarning)
            d = torch.sparse.sampled_addmm(pattern, Z, Z.T, alpha=-2.0).values()  # [n], CSR order
            if self.all_valid:
                t = tm = d.index_select(0, self.t_at).view(N, k)  # target distances [N, k]
            else:
                t = Z.new_zeros(N * k).index_copy_(0, self.slots, d.index_select(0, self.t_at)).view(N, k)
                tm = t.masked_fill(~self.valid, -torch.inf)  # an invalid slot has no hinge
            H = tm.index_select(0, self.ii).sub_(d.index_select(0, self.i_at)[:, None]).add_(self.margin)
            active = (H > 0).to(Z.dtype)  # [P, k]
            loss = (1.0 - mu) * t.sum(dtype=torch.float64) + mu * H.clamp_min_(0.0).sum(dtype=torch.float64)
            wt = active.new_zeros(N, k).index_add_(0, self.ii, active).mul_(mu).add_(self.pull).view(-1)
            if not self.all_valid:
                wt = wt.index_select(0, self.slots)
            w = d.index_copy_(0, self.at, torch.cat([wt, active.sum(1).mul_(-mu)]))  # weights, CSR order
            torch.index_select(w, 0, self.src2, out=w2)  # the values of W2
            ZZ1[:N, :d_out] = Z
            ZZ1[N:, :d_out] = Z
            out = W2 @ ZZ1  # [(W + W^T) Z | W 1 + W^T 1]
        G = (Z * out[:, d_out:]).sub_(out[:, :d_out])
        self.last_z, self.last_t = Z, t
        return loss, G.mul_(2.0)


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


def margin_scale(Z: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor, margin: float = 1.0) -> float:
    """``s`` such that the median over the valid target pairs of ``s^2 D_ij`` is ``margin``
    (``Z`` ``[N, d]``, ``targets``/``valid`` ``[N, k]``; 1 when no target distance is positive)."""
    t = target_distances(Z, targets, valid)[valid]
    med = float(t.median()) if len(t) else 0.0
    return float(np.sqrt(margin / med)) if med > 0 else 1.0


class ActiveSet:
    """LMNN's objective on an impostor list rebuilt now and then: the ``fun`` and ``refresh`` of
    :func:`~likewise.linear.lbfgs.lbfgs`.

    ``X`` ``[N, D]`` (centred, class-sorted), ``y`` ``[N]``, ``targets``/``valid`` ``[N, k]``. A rebuild
    lists the impostor pairs with ``D_il < (1 + slack)(margin + max_j D_ij)`` at the current ``L``
    (:func:`candidate_impostors`); it happens at the start, after iteration 5, then every 10, and
    whenever L-BFGS would stop, and reports whether a pair that can be active (``slack = 0``) was
    missing from the previous list.
    """

    def __init__(self, X: torch.Tensor, y: torch.Tensor, targets, valid, mu: float, slack: float, margin=1.0):
        self.X, self.y, self.targets, self.valid = X, y, targets, valid
        self.mu, self.slack, self.margin = mu, slack, margin
        self.calls, self.next, self.gap, self.n_rebuilds = -1, 0, 5, 0
        self.terms: SparseLMNN | None = None
        self.n_impostors = 0  # impostor pairs in the current list
        self.ranges = class_ranges(y)
        self.last: tuple[np.ndarray, torch.Tensor] | None = None  # (L, Z) of the last embedding

    def embed(self, L: np.ndarray) -> torch.Tensor:
        """``Z = X L^T`` ``[N, d]`` in the work dtype and device (the last one again for the same
        ``L``: L-BFGS checks the list at the point it has just evaluated)."""
        if self.last is not None and np.array_equal(self.last[0], L):
            return self.last[1]
        Z = self.X @ torch.as_tensor(L, device=self.X.device).to(self.X.dtype).T
        self.last = (np.array(L), Z)
        return Z

    def fun(self, L: np.ndarray) -> tuple[float, np.ndarray]:
        """``(f, df/dL)`` on the current list (``df/dL = (df/dZ)^T X``)."""
        f, gZ = self.terms(self.embed(L))
        return float(f), (gZ.T @ self.X).cpu().numpy()

    def __call__(self, L: np.ndarray, final: bool = True) -> bool:
        """Rebuild the list at ``L`` when due (or ``final``); True when a pair that can be active at
        ``L`` was missing from the previous list (then ``f`` at ``L`` has changed)."""
        self.calls += 1
        if not (final or self.calls >= self.next):
            return False
        self.next, self.gap = self.calls + self.gap, 10
        Z = self.embed(L)
        t = self.terms.last_t if self.terms is not None and self.terms.last_z is Z else None  # same Z
        ii, ll, tight = candidate_impostors(
            Z,
            self.y,
            self.targets,
            self.valid,
            self.margin,
            self.slack,
            tight=True,
            sort=False,
            ranges=self.ranges,
            t=t,
        )
        old, self.terms = self.terms, SparseLMNN(self.targets, self.valid, (ii, ll), self.mu, self.margin)
        missing = old is None or not _all_in((ii * len(self.y) + ll)[tight], old.keys)
        self.n_rebuilds, self.n_impostors = self.n_rebuilds + 1, len(ii)
        return missing


def _all_in(a, sorted_b) -> bool:
    """Whether every entry of ``a`` is in the sorted ``sorted_b`` (1-D int tensors or arrays)."""
    a, sorted_b = (t.cpu().numpy() if isinstance(t, torch.Tensor) else np.asarray(t) for t in (a, sorted_b))
    if len(a) == 0:
        return True
    if len(sorted_b) == 0:
        return False
    pos = np.searchsorted(sorted_b, a).clip(max=len(sorted_b) - 1)
    return bool((sorted_b[pos] == a).all())


class LMNN(MahalanobisTransformer):
    """Weinberger & Saul (2009) large-margin nearest neighbour metric learning, L-BFGS on ``L``.

    Parameters
    ----------
    n_neighbors : target neighbours per point ``k``.
    mu : weight of the push (impostor) term, ``1 - mu`` of the pull term.
    n_components : output dimension ``d`` (``None``: ``D``).
    init : ``"auto"`` (identity when ``d = D``, else PCA), ``"lda"``, ``"identity"``, ``"pca"``,
        ``"random"`` or an array ``[d, D]``. The target neighbours are always taken in the input space.
        A named start is scaled so that the median squared distance to the target neighbours is the
        margin, 1: the margin sets LMNN's scale, and at a solution target neighbours lie about that
        far (digits: median 0.65), so the first iterations need not shrink ``L`` (from the
        identity: 42 iterations on digits, 22 on mnist5k; scaled: 25 and 16, to the same objective
        within 0.2%). An array is used as given.
    max_iter : L-BFGS iterations in all (at most).
    tol : stop when an iteration decreases ``f`` by less than ``tol * |f|`` (or every gradient entry
        is below ``tol``) and no pair outside the active set can be active. Default 1e-3 (the value
        of metric-learn's LMNN ``convergence_tol``): ``f`` is a sum of hinges, L-BFGS crawls at the
        end, and on digits the 1-NN accuracy no longer moves once the decrease falls under 1e-3.
    slack : the active set holds the impostor pairs with ``D_il < (1 + slack)(1 + max_j D_ij)``;
        it is rebuilt after iteration 5, then every 10, and before stopping. Larger:
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
        if not isinstance(init, str):  # an array is in input units; X here is scaled (base class)
            L0 = self._in_fit_units(L0)
        order = np.argsort(y, kind="stable")  # class-sorted: a class is a contiguous range
        Xt = torch.tensor((X - X.mean(0))[order], dtype=dt, device=dev)  # distances do not see the mean
        yt = torch.as_tensor(y[order], device=dev)
        targets, valid = target_neighbors(Xt, yt, int(self.n_neighbors))
        active = ActiveSet(Xt, yt, targets, valid, float(self.mu), float(self.slack))
        if isinstance(self.init, str):
            L0 = L0 * margin_scale(active.embed(L0), targets, valid)
        active(L0)
        L, self.objective_, n_iter = lbfgs(active.fun, L0, int(self.max_iter), float(self.tol), active)
        self.n_iter_ = max(n_iter, 1)  # the check of the start point counts (sklearn: n_iter_ >= 1)
        self.n_refreshes_, self.n_active_pairs_ = active.n_rebuilds, active.n_impostors
        return L
