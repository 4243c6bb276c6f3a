"""L-BFGS on the linear map ``L`` (``[d, D]``) for objectives written in torch.

The objective returns ``(f, dfdZ)`` for ``Z = X L^T``; the chain rule ``df/dL = dfdZ^T X`` is done
by the caller's closure, so the per-method code only works with the embedded points. ``L`` and the
optimiser state are float64; the torch work runs in the dtype of ``X`` (:func:`work_dtype`), on the
chosen device, over blocks of rows (:func:`row_blocks`).

Two drivers, one stopping rule (scikit-learn's ``NeighborhoodComponentsAnalysis`` uses it):
``tol`` acts as L-BFGS-B's ``ftol`` and ``gtol``, so a run stops when an iteration decreases ``f``
by less than ``tol * max(|f|, 1)`` or when the largest gradient entry is below ``tol``.

* :func:`minimize_on_L`: scipy's L-BFGS-B (NCA).
* :func:`lbfgs`: a small L-BFGS on torch tensors whose objective may be rebuilt between iterations
  (LMNN's active set of impostors) without losing its curvature memory.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from scipy.optimize import minimize

from likewise.linear.projected_gradient import armijo_step

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def work_dtype(dtype) -> torch.dtype:
    """``"float32"`` or ``"float64"`` -> the torch dtype of the ``[N, N]`` work (a clear error otherwise)."""
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return _DTYPES[dtype]


def row_blocks(N: int, budget: int = 1 << 19) -> list[tuple[int, int]]:
    """Row ranges ``[(start, end), ...]`` of an ``[N, N]`` matrix in blocks of about ``budget`` entries
    (2 MiB of float32): the ``[N, N]`` work is never held whole, and a block's passes stay in cache
    (on digits, blocks of this size made the NCA evaluation about twice as fast as one block)."""
    step = max(1, budget // max(N, 1))
    return [(s, min(s + step, N)) for s in range(0, N, step)]


def minimize_on_L(
    objective: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    X: torch.Tensor,
    L0: np.ndarray,
    max_iter: int,
    tol: float,
) -> tuple[np.ndarray, float, int]:
    """Minimise ``objective(X @ L.T)`` over ``L`` from ``L0``; returns ``(L, f, n_iter)``."""
    shape = L0.shape

    def fun(flat: np.ndarray) -> tuple[float, np.ndarray]:
        L = torch.as_tensor(flat.reshape(shape), device=X.device).to(X.dtype)
        f, gZ = objective(X @ L.T)
        gL = gZ.T @ X
        return float(f), gL.detach().cpu().numpy().astype(np.float64).ravel()

    res = minimize(
        fun,
        L0.ravel(),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": int(max_iter), "ftol": float(tol), "gtol": float(tol)},
    )
    # n_iter counts the check of the start point as one iteration (sklearn's convention: >= 1)
    return res.x.reshape(shape), float(res.fun), max(int(res.nit), 1)


def lbfgs(
    fun: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0: np.ndarray,
    max_iter: int,
    tol: float,
    refresh: Callable[[np.ndarray, bool], bool] | None = None,
    memory: int = 10,
) -> tuple[np.ndarray, float, int]:
    """L-BFGS (Nocedal 1980, two-loop recursion) with Armijo backtracking.

    The optimiser state lives in NumPy float64 (a few kB: its ~80 small vector operations per
    iteration cost microseconds there); ``fun`` moves ``x`` to the torch work and back.

    For objectives evaluated in a cheap form that must be rebuilt as ``x`` moves (LMNN's active
    set), ``refresh(x, final)`` is called after every iteration, ``final=True`` when the run would
    stop; it may rebuild what ``fun`` evaluates (it must check when ``final``) and returns True when
    that changed ``f`` at ``x``. Then ``f`` and the gradient are evaluated again and the run goes on
    with its curvature memory (the two forms agree near ``x``): a run only stops on a form that
    ``refresh`` confirmed. Stops as L-BFGS-B with ``ftol = gtol = tol``; returns ``(x, f, n_iter)``.
    """
    x = np.array(x0, dtype=np.float64).ravel()
    shape = np.shape(x0)

    def fg(v: np.ndarray) -> tuple[float, np.ndarray]:
        f, g = fun(v.reshape(shape))
        return float(f), np.asarray(g, dtype=np.float64).ravel()

    f, g = fg(x)
    S: list[np.ndarray] = []
    Y: list[np.ndarray] = []
    rho: list[float] = []
    n_iter = 0
    while n_iter < max_iter:
        if np.abs(g).max() <= tol:
            if refresh is None or not refresh(x.reshape(shape), True):
                break
            f, g = fg(x)
            continue
        q = g.copy()  # two-loop recursion: d = -H g
        alpha = []
        for s, y, r in zip(reversed(S), reversed(Y), reversed(rho)):
            a = r * (s @ q)
            q -= a * y
            alpha.append(a)
        if S:
            q *= (S[-1] @ Y[-1]) / (Y[-1] @ Y[-1])
            step = 1.0
        else:
            step = min(1.0, 1.0 / max(np.linalg.norm(g), 1e-300)) * max(np.linalg.norm(x), 1.0)
        for s, y, r, a in zip(S, Y, rho, reversed(alpha)):
            q += (a - r * (y @ q)) * s
        d = -q
        slope = g @ d
        if not slope < 0:  # not a descent direction (round-off): restart from steepest descent
            S.clear(), Y.clear(), rho.clear()
            d, slope = -g, -(g @ g)
        found = armijo_step(fg, x, d, f, slope, step, 40)
        if found is None:  # no decrease representable: x is stationary at this precision
            if refresh is None or not refresh(x.reshape(shape), True):
                break
            f, g = fg(x)
            continue
        x_new, f_new, g_new = found
        n_iter += 1
        s, y = x_new - x, g_new - g
        sy = s @ y
        if sy > 1e-10 * np.linalg.norm(s) * np.linalg.norm(y):
            S.append(s), Y.append(y), rho.append(1.0 / sy)
            if len(S) > memory:
                S.pop(0), Y.pop(0), rho.pop(0)
        done = f - f_new <= tol * max(abs(f), abs(f_new), 1.0)
        x, f, g = x_new, f_new, g_new
        if refresh is not None and refresh(x.reshape(shape), done):
            f, g = fg(x)
            continue
        if done:
            break
    return x.reshape(shape), float(f), n_iter
