"""Newton fits of one data set."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from hps_bayes.core import FitData, FloatArray
from hps_bayes.fit.protocol import FitResult, Objective


def _scaled_cholesky(hess: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Cholesky factor of the diagonally equilibrated Hessian, and the scale.

    Parameters differ in scale by many orders of magnitude (A in events,
    polynomial coefficients of order one), so the Hessian is equilibrated
    by its diagonal first.  A Hessian that is not positive definite is
    regularised by a Levenberg shift (the step is then a damped Newton step).
    """
    diag = np.abs(np.diag(hess))
    scale = 1.0 / np.sqrt(np.where(diag > 0, diag, 1.0))
    hs = hess * scale[:, None] * scale[None, :]
    try:
        return np.linalg.cholesky(hs), scale
    except np.linalg.LinAlgError:
        pass
    shift = 1e-10
    eye = np.eye(len(hs))
    for _ in range(39):
        try:
            return np.linalg.cholesky(hs + shift * eye), scale
        except np.linalg.LinAlgError:
            shift *= 2
    raise np.linalg.LinAlgError("Hessian could not be regularised")


def _newton_step(hess: FloatArray, grad: FloatArray) -> FloatArray:
    """Solve ``H x = g`` through the equilibrated Cholesky factor."""
    chol, scale = _scaled_cholesky(hess)
    y = np.linalg.solve(chol, grad * scale)
    return np.asarray(np.linalg.solve(chol.T, y) * scale)


def _inverse(hess: FloatArray) -> FloatArray:
    """``H⁻¹`` through the equilibrated Cholesky factor."""
    chol, scale = _scaled_cholesky(hess)
    inv_l = np.linalg.inv(chol)
    return np.asarray((inv_l.T @ inv_l) * scale[:, None] * scale[None, :])


def newton_fit(
    objective: Objective,
    data: FitData,
    *,
    poi_fixed: float | None = None,
    init: FloatArray | None = None,
    tol: float = 1e-9,
    precision_tol: float = 1e-6,
    max_iter: int = 50,
) -> FitResult:
    """Minimise the NLL by Newton's method with backtracking.

    Parameters
    ----------
    objective : the likelihood.
    data : counts and constraint centres.
    poi_fixed : hold the POI at this value (conditional fit θ̂̂(μ)); None fits it.
    init : starting point (warm start); ``objective.initial(data)`` when None.
    tol : convergence when the Newton decrement ``gᵀH⁻¹g/2`` is below ``tol``.
    precision_tol : when the line search can no longer decrease the NLL in floating
        point, the fit still counts as converged if the decrement is below this.
    max_iter : iteration limit.

    Returns
    -------
    FitResult
    """
    theta = np.array(objective.initial(data) if init is None else init, dtype=float)
    free = np.ones(objective.n_params, dtype=bool)
    if poi_fixed is not None:
        theta[objective.poi_index] = poi_fixed
        free[objective.poi_index] = False
    f, g, h = objective.nll_grad_hess(theta, data)
    if not np.isfinite(f):
        theta = np.array(objective.initial(data), dtype=float)
        if poi_fixed is not None:
            theta[objective.poi_index] = poi_fixed
        f, g, h = objective.nll_grad_hess(theta, data)
        if not np.isfinite(f):
            return _result(theta, f, False, 0, poi_fixed, free, h, "NLL not finite at the start")
    message = f"no convergence in {max_iter} iterations"
    converged = False
    it = 0
    block = np.ix_(free, free)
    for it in range(1, max_iter + 1):
        step = _newton_step(h[block], g[free])
        decrement = 0.5 * float(g[free] @ step)
        if decrement < tol:
            converged, message = True, "converged"
            break
        at_precision = decrement < precision_tol
        t = 1.0
        for _ in range(60):
            trial = theta.copy()
            trial[free] -= t * step
            f_trial = objective.nll(trial, data)
            if np.isfinite(f_trial) and f_trial <= f - 2e-4 * t * decrement:
                break
            t *= 0.5
        else:
            # no decrease measurable in floating point: converged if the remaining
            # predicted decrease is negligible on the scale of q (1e-6), failed otherwise
            converged = at_precision
            message = "converged (numerical precision)" if converged else "line search failed"
            break
        theta = trial
        f_previous = f
        f, g, h = objective.nll_grad_hess(theta, data)
        if at_precision and f_previous - f < 1e-12 * max(abs(f), 1.0):
            # the NLL no longer changes in floating point while Newton predicts < 1e-6
            converged, message = True, "converged (numerical precision)"
            break
    return _result(theta, f, converged, it, poi_fixed, free, h, message)


def _result(
    theta: FloatArray,
    f: float,
    converged: bool,
    n_iter: int,
    poi_fixed: float | None,
    free: NDArray[np.bool_],
    hess: FloatArray,
    message: str,
) -> FitResult:
    cov = np.zeros((len(theta), len(theta)))
    if np.all(np.isfinite(hess)):
        try:
            cov[np.ix_(free, free)] = _inverse(hess[np.ix_(free, free)])
        except np.linalg.LinAlgError:
            converged, message = False, "singular Hessian"
    return FitResult(theta=theta, nll=float(f), converged=converged, n_iter=n_iter,
                     poi_fixed=poi_fixed, covariance=cov, message=message)
