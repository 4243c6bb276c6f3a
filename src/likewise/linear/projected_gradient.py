"""Spectral projected gradient (SPG; Birgin, Martinez & Raydan 2000), monotone variant.

Minimises a smooth ``f`` over a closed convex set ``C`` given by its Euclidean projection. Each
iteration projects once and searches along the segment to the projected point:

    d_t = P_C(x_t - eta_t grad f(x_t)) - x_t,   x_{t+1} = x_t + lambda_t d_t,

with the Barzilai-Borwein step ``eta_t = <s, s> / <s, r>`` (Barzilai & Borwein 1988; ``s``, ``r``:
the last changes of ``x`` and of the gradient) and ``lambda_t`` from 1, halved until the Armijo
test ``f(x_t + lambda d_t) <= f(x_t) + 1e-4 lambda <grad f(x_t), d_t>`` holds (the segment stays in
``C``, so a shorter step needs no new projection: one eigendecomposition per iteration for the
PSD cone). A point where ``f`` is infinite (outside a barrier's domain) fails the test. The
non-monotone test of Grippo, Lampariello & Lucidi (1986) made the stopping rule below fire too
early on the ill-conditioned MMC problems, hence this monotone one: every accepted step decreases
``f``, so the last point is the best.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def armijo_step(
    fun_grad: Callable, x: np.ndarray, d: np.ndarray, ref: float, slope: float, step: float, halvings: int
) -> tuple[np.ndarray, float, np.ndarray] | None:
    """Backtracking along ``d``: halve ``step`` until ``f(x + step d) <= ref + 1e-4 step slope``.

    Returns ``(x_new, f_new, grad_new)``, or ``None`` when ``halvings`` halvings found no such step
    (no decrease representable at this precision). A non-finite ``f`` fails the test.
    """
    for _ in range(halvings):
        x_new = x + step * d
        f_new, g_new = fun_grad(x_new)
        if np.isfinite(f_new) and f_new <= ref + 1e-4 * step * slope:
            return x_new, f_new, g_new
        step *= 0.5
    return None


def projected_gradient(
    fun_grad: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0: np.ndarray,
    project: Callable[[np.ndarray], np.ndarray],
    max_iter: int,
    tol: float,
) -> tuple[np.ndarray, float, int]:
    """Return ``(x, f(x), n_iter)``; stops when an iteration changes ``f`` by less than
    ``tol * max(1, |f|)``, or when no step along ``d_t`` decreases ``f`` (``x`` is stationary)."""
    x = project(x0)
    f, g = fun_grad(x)
    if not np.isfinite(f):
        raise FloatingPointError("projected gradient: the objective is not finite at the start point")
    eta = max(np.linalg.norm(x), 1.0) / max(np.linalg.norm(g), 1e-300)
    n_iter = 0
    for n_iter in range(1, max_iter + 1):  # noqa: B007 - n_iter is returned
        d = project(x - eta * g) - x
        slope = float(np.vdot(g, d))
        if not slope < 0:
            break  # the projected step is no descent direction: x is stationary
        found = armijo_step(fun_grad, x, d, f, slope, 1.0, 60)
        if found is None:
            break  # no decrease representable at machine precision
        x_new, f_new, g_new = found
        s, r = (x_new - x).ravel(), (g_new - g).ravel()
        sr = float(s @ r)
        eta = float(s @ s) / sr if sr > 0 else 2.0 * eta
        done = abs(f - f_new) <= tol * max(1.0, abs(f_new))
        x, f, g = x_new, f_new, g_new
        if done:
            break
    return x, float(f), n_iter
