"""Root finders of the limit searches: secant steps for smooth asymptotic curves, bracketing with
Brent's method for any curve, and a scan with linear interpolation for toys.

scipy's secant (``scipy.optimize.newton``) has no acceptance test on the step and no signal to hand
over to bracketing when a curve stops being monotone, and ``brentq`` needs a bracket first; these
helpers add exactly that around :func:`scipy.optimize.brentq`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["GRID_GROWTH", "bracket", "grid_below", "scan_root", "solve_bracketed", "solve_increasing",
           "solve_secant"]

#: Factor by which :func:`scan_root` widens its grid on a side where no crossing lies inside it.
GRID_GROWTH = 1.6


def bracket(f: Callable[[float], float], guess: float, *, max_steps: int) -> tuple[float, float] | None:
    """Widen geometrically from ``guess`` until the decreasing ``f`` changes sign."""
    a, fa, factor = guess, f(guess), 1.05
    if fa == 0:
        return a, a
    for _ in range(max_steps):
        b = a * factor if fa > 0 else a / factor
        fb = f(b)
        if np.sign(fb) != np.sign(fa) and np.isfinite(fb):
            return (a, b) if a < b else (b, a)
        a, fa, factor = b, fb, min(factor**2, 10.0)
    return None


def solve_bracketed(f: Callable[[float], float], guess: float, *, rtol: float, what: str,
                    floor: float | None = None) -> tuple[float, str]:
    """Root of ``f`` near ``guess``: (root, "") or (NaN, why not).

    With a ``floor`` (one-sided limits), the root is 0 when ``f(floor)`` ≤ 0 and the search starts
    at ``floor`` or above.
    """
    if floor is not None and np.isfinite(guess):
        if f(floor) <= 0:
            return 0.0, ""
        guess = max(guess, floor)
    if not (np.isfinite(guess) and guess > 0):
        return float("nan"), f"{what}: no positive starting scale (guess = {guess})"
    found = bracket(f, guess, max_steps=60)
    if found is None:
        return float("nan"), f"{what}: CLs - alpha did not change sign in 60 geometric steps from mu = {guess:g}"
    lo, hi = found
    if lo == hi:
        return lo, ""
    from scipy.optimize import brentq  # the fallback only: most processes never import scipy.optimize

    root, info = brentq(f, lo, hi, xtol=1e-3 * rtol * lo, rtol=rtol, full_output=True, disp=False)
    return float(root), ("" if info.converged else f"{what}: brentq {info.flag}")


def solve_secant(f: Callable[[float], float], guess: float, scale: float, *, rtol: float,
                 floor: float | None = None, max_iter: int = 8) -> float | None:
    """Root of the decreasing, nearly linear ``f`` (Φ⁻¹(CLs) − Φ⁻¹(α) of an asymptotic calculator, slope
    ≈ −1/σ) by secant steps from ``guess``; None when they do not settle within ``max_iter`` steps or
    leave the region where ``f`` decreases (the caller then brackets, :func:`solve_bracketed`).

    The first step uses the Wald slope −1/``scale``; a step that moves the root by less than
    ``rtol`` (relative) ends the search, usually after three evaluations instead of the five or six of
    bracketing and Brent's method.  With a ``floor`` (one-sided limits) the root is 0 where
    ``f(floor)`` ≤ 0, as in :func:`solve_bracketed`.
    """
    if not (np.isfinite(guess) and guess > 0 and np.isfinite(scale) and scale > 0):
        return None
    if floor is not None:
        if f(floor) <= 0:
            return 0.0
        guess = max(guess, floor)
    mu_a, f_a = guess, f(guess)
    if f_a == 0:
        return float(guess)
    mu_b = mu_a + f_a * scale
    for _ in range(max_iter):
        if not (np.isfinite(f_a) and np.isfinite(mu_b) and mu_b > 0 and mu_b != mu_a):
            return None
        f_b = f(mu_b)
        slope = (f_b - f_a) / (mu_b - mu_a)
        if not (np.isfinite(slope) and slope < 0):
            return None
        mu_next = mu_b - f_b / slope
        if not (np.isfinite(mu_next) and mu_next > 0 and (floor is None or mu_next >= floor)):
            return None
        if abs(mu_next - mu_b) <= rtol * mu_next:
            return float(mu_next)
        mu_a, f_a, mu_b = mu_b, f_b, mu_next
    return None


def solve_increasing(s: Callable[[float], float], target: float, guess: float, *, rtol: float,
                     max_iter: int = 8) -> float | None:
    """Root μ > 0 of ``s(μ) = target`` for an increasing, nearly linear ``s`` with s(0) = 0, by secant
    steps from ``guess``; None when they do not settle or ``s`` stops increasing (the caller then
    brackets).

    Made for √q_{μ,A}(μ) = μ/σ_A(μ), on which every asymptotic expected limit lies
    (:func:`hps_bayes.stats.limits.upper_limit`): the first step is the fixed point
    μ ← target · μ/s(μ) (the secant through s(0) = 0), then secant steps; the root is accepted when a
    step moves it by less than ``rtol`` (relative), after which its error is of the order of the
    step squared: usually two evaluations instead of the five or six of bracketing and Brent's
    method.  Targets near 0 are left to the bracketing.
    """
    if not (target > 0.05 and np.isfinite(guess) and guess > 0):
        return None
    mu_a, s_a = 0.0, 0.0
    mu_b = guess
    for _ in range(max_iter):
        s_b = s(mu_b)
        slope = (s_b - s_a) / (mu_b - mu_a)
        if not (np.isfinite(slope) and slope > 0):
            return None
        mu_next = mu_b + (target - s_b) / slope
        if not (np.isfinite(mu_next) and mu_next > 0):
            return None
        if abs(mu_next - mu_b) <= rtol * mu_next:
            return float(mu_next)
        mu_a, s_a, mu_b = mu_b, s_b, mu_next
    return None


def grid_below(first: float, floor: float | None) -> float | None:
    """The value :func:`scan_root` puts below a grid starting at ``first``: ``first``/:data:`GRID_GROWTH`, or
    the ``floor`` of a one-sided search; None once the grid starts at that floor."""
    if floor is None:
        return first / GRID_GROWTH
    return None if first <= floor * (1.0 + 1e-12) else floor


def scan_root(f: Callable[[float], float], grid: list[float], *, what: str,
              floor: float | None = None) -> tuple[float, str, float]:
    """First downward crossing of ``f`` on ``grid`` (extended geometrically where needed), linearly
    interpolated: (root, why-not, slope of f there); 0 where ``f`` ≤ 0 already at ``floor``."""
    for _ in range(12):
        values = [f(m) for m in grid]
        if values[0] <= 0:
            below = grid_below(grid[0], floor)
            if below is None:
                return 0.0, "", float("nan")
            grid.insert(0, below)
            continue
        if values[-1] > 0:
            grid.append(grid[-1] * GRID_GROWTH)
            continue
        i = next(i for i in range(len(values) - 1) if values[i] > 0 >= values[i + 1])
        slope = (values[i + 1] - values[i]) / (grid[i + 1] - grid[i])
        return float(grid[i] - values[i] / slope), "", float(slope)
    return float("nan"), f"{what}: CLs - alpha did not change sign on mu in [{grid[0]:g}, {grid[-1]:g}]", \
        float("nan")
