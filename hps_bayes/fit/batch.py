"""Newton fits batched over toys (vectorised, a shared Hessian factor first)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.linalg import solve_triangular

from hps_bayes.core import FitData, FloatArray
from hps_bayes.fit.newton import _newton_step, _scaled_cholesky, newton_fit
from hps_bayes.fit.protocol import BatchFitResult, BatchObjective


def _batched_steps(hess: FloatArray, grad: FloatArray) -> FloatArray:
    """Solve ``H_k x_k = g_k`` for a stack of Hessians (equilibrated Cholesky; per-row fallback)."""
    diag = np.abs(np.diagonal(hess, axis1=1, axis2=2))
    scale = 1.0 / np.sqrt(np.where(diag > 0, diag, 1.0))
    hs = hess * scale[:, :, None] * scale[:, None, :]
    try:
        chol = np.linalg.cholesky(hs)
        if not np.all(np.isfinite(chol)):
            raise np.linalg.LinAlgError("non-finite Cholesky factor")
        y = np.linalg.solve(chol, (grad * scale)[..., None])
        return np.asarray(np.linalg.solve(np.swapaxes(chol, 1, 2), y)[..., 0] * scale)
    except np.linalg.LinAlgError:
        out = np.full_like(grad, np.nan)
        for k in range(len(grad)):
            try:
                out[k] = _newton_step(hess[k], grad[k])
            except np.linalg.LinAlgError:
                pass
        return out


def _line_search(objective: BatchObjective, theta: FloatArray, step: FloatArray, f: FloatArray,
                 decrement: FloatArray, counts: FloatArray, aux: FloatArray,
                 free: NDArray[np.bool_], *, precision_tol: float = 0.0
                 ) -> tuple[FloatArray, FloatArray, NDArray[np.bool_]]:
    """Backtracking (Armijo) per row: returns new thetas, NLLs and which rows found a decrease.

    Rows whose decrement is below ``precision_tol`` try only the full step: if it brings no
    measurable decrease they have converged in floating point (halving would move them by nothing).
    """
    t = np.ones(len(theta))
    new_theta, new_f = theta.copy(), f.copy()
    todo = np.ones(len(theta), dtype=bool)
    moved = np.zeros(len(theta), dtype=bool)
    for attempt in range(40):
        if attempt == 1:
            todo &= decrement >= precision_tol
        idx = np.flatnonzero(todo)
        if idx.size == 0:
            break
        trial = theta[idx].copy()
        trial[:, free] -= t[idx, None] * step[idx]
        f_trial = objective.nll_batch(trial, counts[idx], aux[idx])
        ok = np.isfinite(f_trial) & (f_trial <= f[idx] - 2e-4 * t[idx] * decrement[idx] + 1e-12 * np.abs(f[idx]))
        new_theta[idx[ok]], new_f[idx[ok]] = trial[ok], f_trial[ok]
        todo[idx[ok]], moved[idx[ok]] = False, True
        t[idx[~ok]] *= 0.5
    return new_theta, new_f, moved


def _iterate(objective: BatchObjective, theta: FloatArray, counts: FloatArray, aux: FloatArray,
             free: NDArray[np.bool_], rows: NDArray[np.intp], *, shared: FloatArray | None,
             tol: float, precision_tol: float, max_iter: int,
             state: dict[str, Any]) -> NDArray[np.intp]:
    """Newton iterations on ``rows`` (shared Hessian when ``shared`` is given); returns the rows left."""
    f, conv, n_iter = state["nll"], state["converged"], state["n_iter"]
    grad: FloatArray | None = state.pop("grad", None)  # gradient at theta[rows] when known
    for _ in range(max_iter):
        if rows.size == 0:
            break
        th, c, a = theta[rows], counts[rows], aux[rows]
        if shared is None:
            f_r, g, h = objective.nll_grad_hess_batch(th, c, a)
            step = _batched_steps(h[:, free][:, :, free], g[:, free])
        else:
            f_r, g = objective.nll_grad_batch(th, c, a) if grad is None else (f[rows], grad)
            chol, scale = shared
            y = solve_triangular(chol, (g[:, free] * scale).T, lower=True, check_finite=False)
            step = np.asarray(solve_triangular(chol.T, y, lower=False, check_finite=False).T * scale)
        f[rows] = f_r
        decrement = 0.5 * np.einsum("ki,ki->k", g[:, free], step)
        bad = ~np.isfinite(decrement)
        done = ~bad & (decrement < tol)
        conv[rows[done]] = True
        keep = ~done & ~bad
        rows, step, decrement = rows[keep], step[keep], decrement[keep]
        if rows.size == 0:
            break
        grad = None
        if shared is not None:  # try the full step with the gradient at once (it is nearly always taken)
            trial = theta[rows].copy()
            trial[:, free] -= step
            f_t, g_t = objective.nll_grad_batch(trial, counts[rows], aux[rows])
            ok = np.isfinite(f_t) & (f_t <= f[rows] - 2e-4 * decrement + 1e-12 * np.abs(f[rows]))
            theta[rows[ok]], f[rows[ok]], grad = trial[ok], f_t[ok], g_t[ok]
            n_iter[rows[ok]] += 1
            if ok.all():
                continue
            # a failed full step with a decrement below precision_tol: no decrease is measurable in
            # floating point any more, the row has converged (as in newton_fit); the other failed rows
            # backtrack (from t = 1/2) and rejoin with a fresh gradient
            at_precision = ~ok & (decrement < precision_tol)
            conv[rows[at_precision]] = True
            retry = ~ok & ~at_precision
            sub = rows[retry]
            new_theta, new_f, moved = _line_search(objective, theta[sub], 0.5 * step[retry], f[sub],
                                                   0.5 * decrement[retry], counts[sub], aux[sub], free)
            theta[sub], f[sub] = new_theta, new_f
            n_iter[sub] += 1
            sub = sub[moved]  # rows whose line search failed go on to the next phase
            if sub.size:
                grad = np.vstack([grad, objective.nll_grad_batch(theta[sub], counts[sub], aux[sub])[1]])
            rows = np.concatenate([rows[ok], sub])
            continue
        new_theta, new_f, moved = _line_search(objective, theta[rows], step, f[rows], decrement,
                                               counts[rows], aux[rows], free, precision_tol=precision_tol)
        theta[rows], f[rows] = new_theta, new_f
        n_iter[rows] += 1
        stuck = ~moved
        conv[rows[stuck & (decrement < precision_tol)]] = True
        rows = rows[moved]  # rows whose line search failed go on to the next phase
    return rows


#: Data sets fitted together by :func:`newton_fit_batch`: larger batches are split into chunks of this
#: size, whose (K, n) work arrays stay in the CPU cache (2-3x faster than one batch of 10k toys).
BATCH_CHUNK = 512


def newton_fit_batch(
    objective: BatchObjective,
    counts: FloatArray,
    aux: FloatArray,
    *,
    poi_fixed: float | None = None,
    init: FloatArray | None = None,
    tol: float = 1e-8,
    precision_tol: float = 1e-6,
    shared_hessian: bool = True,
    max_shared_iter: int = 30,
    max_iter: int = 30,
    fallback: bool = True,
    chunk_size: int = BATCH_CHUNK,
) -> BatchFitResult:
    """Fit K data sets at once: vectorised Newton with backtracking per data set.

    Three phases, each on the data sets the previous one left unconverged:

    1. (``shared_hessian``) quasi-Newton steps ``Δθ_k = −H₀⁻¹ g_k`` with one Hessian H₀ for
       all data sets, evaluated at the mean start on the mean counts (toys scatter around
       a common truth, so H₀ is close to every toy's Hessian and the iteration converges
       linearly with a small rate; only gradients are evaluated per toy);
    2. full Newton steps with each data set's own Hessian, batched;
    3. (``fallback``) :func:`newton_fit` one data set at a time.

    Convergence is declared per data set when the decrement ``gᵀ H⁻¹ g / 2`` (with the
    Hessian of the phase) is below ``tol``, or below ``precision_tol`` when no further
    decrease is measurable in floating point.

    Parameters
    ----------
    objective : a :class:`BatchObjective`.
    counts, aux : data, shapes (K, n) and (K, q).
    poi_fixed : hold the POI at this value for every data set; None fits it.
    init : start, shape (p,) (shared) or (K, p); ``objective.initial`` of the mean data when None.
    tol, precision_tol : see above (as in :func:`newton_fit`).
    shared_hessian : run phase 1.
    max_shared_iter, max_iter : iteration limits of phases 1 and 2.
    fallback : run phase 3.
    chunk_size : more data sets than this are fitted in chunks of this size (each with its own
        shared Hessian), for speed.

    The default ``tol`` (1e-8 on the decrement) keeps q = 2 ΔNLL within ~3e-8 of fits converged to
    1e-14 (measured on 2000 toys of the 2015-like demo windows at 50 and 90 MeV).

    Returns
    -------
    BatchFitResult
    """
    counts = np.atleast_2d(np.asarray(counts, dtype=float))
    n_sets = counts.shape[0]
    aux = np.asarray(aux, dtype=float).reshape(n_sets, -1)
    if init is None:
        init = objective.initial(FitData(counts.mean(axis=0), aux.mean(axis=0)))
    options: dict[str, Any] = {"poi_fixed": poi_fixed, "tol": tol, "precision_tol": precision_tol,
                               "shared_hessian": shared_hessian, "max_shared_iter": max_shared_iter,
                               "max_iter": max_iter, "fallback": fallback}
    if n_sets > chunk_size:
        init2d = np.asarray(init, dtype=float)
        parts = [_fit_chunk(objective, counts[s:s + chunk_size], aux[s:s + chunk_size],
                            init=init2d if init2d.ndim == 1 else init2d[s:s + chunk_size], **options)
                 for s in range(0, n_sets, chunk_size)]
        return BatchFitResult(theta=np.vstack([r.theta for r in parts]), nll=np.concatenate([r.nll for r in parts]),
                              converged=np.concatenate([r.converged for r in parts]),
                              n_iter=np.concatenate([r.n_iter for r in parts]), poi_fixed=poi_fixed,
                              n_full_newton=sum(r.n_full_newton for r in parts),
                              n_fallback=sum(r.n_fallback for r in parts))
    return _fit_chunk(objective, counts, aux, init=init, **options)


def _fit_chunk(objective: BatchObjective, counts: FloatArray, aux: FloatArray, *, init: FloatArray,
               poi_fixed: float | None, tol: float, precision_tol: float, shared_hessian: bool,
               max_shared_iter: int, max_iter: int, fallback: bool) -> BatchFitResult:
    """:func:`newton_fit_batch` on one chunk of data sets."""
    n_sets = counts.shape[0]
    theta = np.array(np.broadcast_to(init, (n_sets, objective.n_params)), dtype=float)
    free = np.ones(objective.n_params, dtype=bool)
    if poi_fixed is not None:
        theta[:, objective.poi_index] = poi_fixed
        free[objective.poi_index] = False
    state: dict[str, Any] = {"nll": np.full(n_sets, np.inf), "converged": np.zeros(n_sets, dtype=bool),
                             "n_iter": np.zeros(n_sets, dtype=int)}
    rows = np.arange(n_sets)
    start_f, start_g = objective.nll_grad_batch(theta, counts, aux)
    infeasible = np.flatnonzero(~np.isfinite(start_f))
    for k in infeasible:  # a start where some expected count is <= 0: the objective's own start
        theta[k] = objective.initial(FitData(counts[k], aux[k]))
        if poi_fixed is not None:
            theta[k, objective.poi_index] = poi_fixed
    if infeasible.size:
        start_f[infeasible], start_g[infeasible] = objective.nll_grad_batch(theta[infeasible], counts[infeasible],
                                                                            aux[infeasible])
    state["nll"][:] = start_f
    state["grad"] = start_g  # the shared-Hessian phase starts from it (no second evaluation)
    opts: dict[str, Any] = {"tol": tol, "precision_tol": precision_tol, "state": state}
    if shared_hessian:
        shared = _shared_factor(objective, theta, counts, aux, free)
        if shared is not None:
            rows = _iterate(objective, theta, counts, aux, free, rows, shared=shared,
                            max_iter=max_shared_iter, **opts)
    rows = np.flatnonzero(~state["converged"])
    n_full = rows.size
    _iterate(objective, theta, counts, aux, free, rows, shared=None, max_iter=max_iter, **opts)
    rows = np.flatnonzero(~state["converged"])
    n_fallback = rows.size if fallback else 0
    for k in rows if fallback else ():
        fit = newton_fit(objective, FitData(counts[k], aux[k]), poi_fixed=poi_fixed,
                         init=theta[k] if np.isfinite(state["nll"][k]) else None)
        if fit.converged or fit.nll < state["nll"][k]:
            theta[k], state["nll"][k] = fit.theta, fit.nll
        state["converged"][k] = fit.converged
        state["n_iter"][k] += fit.n_iter
    return BatchFitResult(theta=theta, nll=state["nll"], converged=state["converged"],
                          n_iter=state["n_iter"], poi_fixed=poi_fixed, n_full_newton=n_full,
                          n_fallback=n_fallback)


def _shared_factor(objective: BatchObjective, theta: FloatArray, counts: FloatArray, aux: FloatArray,
                   free: NDArray[np.bool_]) -> Any:
    """Equilibrated Cholesky factor and scale of the Hessian at the mean start on the mean data."""
    mean_theta = theta.mean(axis=0)[None, :]
    f, _, h = objective.nll_grad_hess_batch(mean_theta, counts.mean(axis=0)[None, :], aux.mean(axis=0)[None, :])
    hess = h[0][np.ix_(free, free)]
    if not (np.isfinite(f[0]) and np.all(np.isfinite(hess))):
        return None
    try:
        return _scaled_cholesky(hess)
    except np.linalg.LinAlgError:
        return None


def poi_fits_batch(objective: BatchObjective, counts: FloatArray, aux: FloatArray,
                   init: FloatArray) -> tuple[FloatArray, FloatArray]:
    """The POI and its error (from each data set's Hessian, every nuisance profiled) of K data sets
    fitted at once; NaN in both where a fit failed or its Hessian is singular.

    A batch that fails as a whole (a non-finite step) is fitted one data set at a time.
    """
    from hps_bayes.core import FitData
    from hps_bayes.fit.newton import newton_fit

    k = counts.shape[0]
    a_hat, err = np.full(k, np.nan), np.full(k, np.nan)
    poi = objective.poi_index
    try:
        fit = newton_fit_batch(objective, counts, aux, init=init)
    except (ValueError, np.linalg.LinAlgError):
        for i in range(k):
            one = newton_fit(objective, FitData(counts[i], aux[i]), init=init[i])
            if one.converged:
                a_hat[i], err[i] = one.theta[poi], one.poi_error(objective)
        return a_hat, err
    _, _, hess = objective.nll_grad_hess_batch(fit.theta, counts, aux)
    for i in np.flatnonzero(fit.converged & np.all(np.isfinite(hess), axis=(1, 2))).tolist():
        try:
            var = float(np.linalg.inv(hess[i])[poi, poi])
        except np.linalg.LinAlgError:
            continue
        if var > 0:
            a_hat[i], err[i] = fit.theta[i, poi], np.sqrt(var)
    return a_hat, err
