"""Projected gradient descent with Barzilai-Borwein steps and Armijo backtracking.

Minimises a smooth ``f`` over a closed convex set ``C`` given by its Euclidean projection:

    x_{t+1} = P_C(x_t - eta_t grad f(x_t)),   eta_t = <s, s> / <s, r> (Barzilai & Borwein 1988),

halving ``eta_t`` until ``f(x_{t+1}) <= f(x_t) + <grad, x_{t+1} - x_t> + ||x_{t+1} - x_t||^2 / (2 eta_t)``
(the standard sufficient-decrease test for projected steps; Beck & Teboulle 2009).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def projected_gradient(
    fun_grad: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0: np.ndarray,
    project: Callable[[np.ndarray], np.ndarray],
    max_iter: int,
    tol: float,
) -> tuple[np.ndarray, float, int]:
    """Return ``(x, f(x), n_iter)``; stops when the relative decrease of ``f`` is below ``tol``."""
    x = project(x0)
    f, g = fun_grad(x)
    if not np.isfinite(f):
        raise FloatingPointError("projected gradient: the objective is not finite at the start point")
    step = 1.0 / max(np.linalg.norm(g), 1e-300) * max(np.linalg.norm(x), 1.0)
    n_iter = 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007 - n_iter is returned
        for _ in range(60):
            x_new = project(x - step * g)
            f_new, g_new = fun_grad(x_new)
            dx = x_new - x
            if np.isfinite(f_new) and f_new <= f + np.vdot(g, dx) + np.vdot(dx, dx) / (2 * step):
                break
            step *= 0.5
        else:
            break  # no decrease possible at machine precision: x is stationary
        s, r = dx.ravel(), (g_new - g).ravel()
        sr = float(s @ r)
        step = float(s @ s) / sr if sr > 0 else step * 2.0
        done = abs(f - f_new) <= tol * max(1.0, abs(f_new))
        x, f, g = x_new, f_new, g_new
        if done:
            break
    return x, float(f), n_iter
