"""HSGP hyperparameters η, ℓ by the Laplace approximation of the marginal likelihood.

Written by hand: PyMC's HSGP gives the basis φ√S (:func:`_gp_basis`), but neither PyMC nor SciPy gives
the Laplace evidence of this Poisson log-linear model, nor its gradient in (ln η, ln ℓ)
(:func:`laplace_gradient`), which the bounded search (SciPy's L-BFGS-B) uses.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.polynomial import legendre

from hps_bayes.core import FloatArray
from hps_bayes.model.compiled import compiled_model
from hps_bayes.model.coordinate import least_squares_start, lnm_coordinate
from hps_bayes.model.settings import BackgroundSettings

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- η, ℓ by the marginal likelihood


@dataclass(frozen=True)
class HyperFit:
    """η, ℓ chosen by :func:`marginal_likelihood_hyperparameters`.

    ``lengthscale`` is in the coordinate t of the fit; ``neg_log_evidence`` is the Laplace
    approximation −ln p(n | η, ℓ) up to a constant (η = 0 when the GP gains less than
    :data:`EVIDENCE_MIN_GAIN` in ln Z); ``eta_at_bound``/``ell_at_bound`` say
    whether the optimum sits at the lower bound (η at its bound: the GP is effectively off).
    """

    eta: float
    lengthscale: float
    neg_log_evidence: float
    neg_log_evidence_no_gp: float
    eta_at_bound: bool
    ell_at_bound: bool
    n_evaluations: int


#: Lower and upper bounds of η (ln counts) in the marginal-likelihood search.
ETA_BOUNDS = (1e-4, 3.0)
#: The GP is switched on (η > 0) only if it raises ln Z by at least this much over no GP: where the
#: evidence is flat in η (a long-ℓ GP duplicating the Legendre mean) η = 0 is the Occam choice.
EVIDENCE_MIN_GAIN = 0.5


def _gp_basis(t: FloatArray, eta: float, ell_t: float, settings: BackgroundSettings) -> FloatArray:
    """The HSGP basis φ_j(t) √S(λ_j; η, ℓ) of the compiled PyMC graph (n × ``n_basis``, also where the
    settings' own model has no GP: this search decides whether to switch it on)."""
    return compiled_model(settings.compile_key(with_gp=True)).hsgp_basis(t, eta, ell_t)


def laplace_neg_log_evidence(offset: FloatArray, free_basis: FloatArray, gp_basis: FloatArray,
                             counts: FloatArray, start: FloatArray | None = None,
                             ) -> tuple[float, FloatArray]:
    """Laplace approximation of −ln p(n | η, ℓ) of the background-only model (A = 0).

    μ = exp(offset + F c + G β), c flat, β ~ N(0, 1):
    NLL(γ̂) + ½ ln det H(γ̂), γ = (c, β), H = Bᵀ diag(μ) B + diag(0, I) (Poisson with log link:
    the Hessian is exact), constants dropped.  Returns the value and γ̂ (a warm start).
    """
    from scipy.linalg import cho_solve

    basis = np.hstack([free_basis, gp_basis])
    n_free = free_basis.shape[1]
    prior = np.r_[np.zeros(n_free), np.ones(gp_basis.shape[1])]
    if start is None:
        start = np.r_[least_squares_start(counts, offset, free_basis), np.zeros(gp_basis.shape[1])]
    gamma = np.asarray(start, float).copy()

    def value(g: FloatArray) -> tuple[float, FloatArray]:
        eta_ = offset + basis @ g
        mu = np.exp(np.minimum(eta_, 700.0))
        return float(np.sum(mu - counts * eta_) + 0.5 * np.sum(prior * g * g)), mu

    f, mu = value(gamma)
    hess = basis.T @ (mu[:, None] * basis) + np.diag(prior)
    for _ in range(100):
        grad = basis.T @ (mu - counts) + prior * gamma
        scale = 1.0 / np.sqrt(np.maximum(np.diag(hess), 1e-300))
        chol = np.linalg.cholesky(hess * scale[:, None] * scale[None, :])
        step = scale * cho_solve((chol, True), scale * grad)
        decrement = float(grad @ step)
        lam = 1.0
        while True:
            f_new, mu_new = value(gamma - lam * step)
            if f_new <= f + 1e-12 * abs(f) or lam < 1e-6:
                break
            lam *= 0.5
        gamma, f, mu = gamma - lam * step, f_new, mu_new
        hess = basis.T @ (mu[:, None] * basis) + np.diag(prior)
        if decrement < 1e-9:
            break
    scale = 1.0 / np.sqrt(np.diag(hess))
    logdet = np.linalg.slogdet(hess * scale[:, None] * scale[None, :])[1] - 2.0 * np.sum(np.log(scale))
    return f + 0.5 * float(logdet), gamma


def _log_scale_slope(t: FloatArray, eta: float, ell_t: float, settings: BackgroundSettings,
                     step: float = 1e-4) -> FloatArray:
    """d ln s_j / d ln ℓ of every HSGP column (central differences of the columns' norms; φ_j does not
    depend on ℓ; 0 for a column whose spectral density underflows)."""
    up, down = (np.linalg.norm(_gp_basis(t, eta, ell_t * math.exp(h), settings), axis=0) for h in (step, -step))
    ok = (up > 0) & (down > 0)
    return np.where(ok, np.log(np.where(ok, up, 1.0)) - np.log(np.where(ok, down, 1.0)), 0.0) / (2 * step)


def laplace_gradient(offset: FloatArray, free_basis: FloatArray, gp_basis: FloatArray, counts: FloatArray,
                     gamma: FloatArray) -> FloatArray:
    """d(−ln Z)/du_j of :func:`laplace_neg_log_evidence` at its optimum γ̂ = ``gamma``, where u_j = ln s_j
    scales the GP column j (G_j = φ_j s_j, s_j = √S(λ_j; η, ℓ)): one entry per column.

    With B = (F, G), μ = exp(offset + B γ̂), H = Bᵀ diag(μ) B + diag(0, I), h_i = b_iᵀ H⁻¹ b_i, k_j the
    index of β_j in γ and M = Bᵀ diag(μ) G:

        d/du_j = (μ − n)ᵀ G_j β_j + (H⁻¹ M)_{k_j j} + ½ Σ_i h_i μ_i (G_ij β_j + (B dγ̂_j)_i),
        dγ̂_j = −H⁻¹ (e_{k_j} G_jᵀ(μ − n) + M_j β_j)

    (the envelope theorem for the NLL at γ̂; the log-determinant's change through B and through μ,
    with γ̂'s own change by the implicit function theorem).
    """
    from scipy.linalg import cho_solve, solve_triangular

    basis = np.hstack([free_basis, gp_basis])
    n_free, m = free_basis.shape[1], gp_basis.shape[1]
    beta, k = gamma[n_free:], n_free + np.arange(m)
    mu = np.exp(np.minimum(offset + basis @ gamma, 700.0))
    weighted = mu[:, None] * basis
    hess = basis.T @ weighted
    hess[k, k] += 1.0
    chol = np.linalg.cholesky(hess)
    leverage = np.sum(solve_triangular(chol, basis.T, lower=True) ** 2, axis=0)  # b_iᵀ H⁻¹ b_i
    resid = gp_basis.T @ (mu - counts)  # G_jᵀ(μ − n)
    mixed = weighted.T @ gp_basis  # M
    rhs = mixed * beta
    rhs[k, np.arange(m)] += resid
    solved = cho_solve((chol, True), np.hstack([mixed, rhs]))  # H⁻¹ M, −dγ̂
    d_mu = mu[:, None] * (gp_basis * beta - basis @ solved[:, m:])
    return np.asarray(resid * beta + solved[k, np.arange(m)] + 0.5 * leverage @ d_mu)


def marginal_likelihood_hyperparameters(t: FloatArray, counts: FloatArray, log_offset: FloatArray, *,
                                        degree: int, settings: BackgroundSettings, ell_min: float,
                                        ell_fixed: float | None = None, ell_max: float = 4.0,
                                        signal: FloatArray | None = None) -> HyperFit:
    """η, ℓ (ℓ in the coordinate ``t`` ∈ [−1, 1]) maximising the Laplace marginal likelihood.

    The background-only model exp(offset + Legendre(degree) in t + HSGP(η, ℓ)) with the Legendre
    coefficients flat and the HSGP weights N(0, 1) (:func:`laplace_neg_log_evidence`), minimised
    over (ln η, ln ℓ) with ``scipy.optimize.minimize`` (L-BFGS-B, bounded: η in :data:`ETA_BOUNDS`,
    ℓ in [ell_min, ell_max]; the gradient of :func:`laplace_gradient`) from the best point of a small
    grid; with ``ell_fixed`` only η.  With ``signal`` (a signal's counts per event in each bin), the model has
    a signal of that shape and free size as well (linearised in ln μ): the GP is then chosen by the structure
    a signal there does not explain, and a signal cannot switch it on to absorb itself.
    """
    from scipy.optimize import minimize

    free = legendre.legvander(np.asarray(t, float), degree)
    counts = np.asarray(counts, float)
    if signal is not None:  # ln(μ + A s) ≈ ln μ + A s/μ: a signal of free size, linearised (μ ≈ the counts)
        column = np.asarray(signal, float) / np.maximum(counts, 1.0)
        free = np.column_stack([free, column / np.max(np.abs(column))])
    warm: dict[str, FloatArray] = {}
    n_eval = 0
    ell_min = float(ell_min)
    ell_max = max(float(ell_max), 1.01 * ell_min)

    def objective(x: FloatArray) -> float:
        return value_and_gradient(x, gradient=False)[0]

    def value_and_gradient(x: FloatArray, gradient: bool = True) -> tuple[float, FloatArray]:
        nonlocal n_eval
        n_eval += 1
        eta = math.exp(x[0])
        ell = float(ell_fixed) if ell_fixed is not None else math.exp(x[1])
        gp = _gp_basis(t, eta, ell, settings)
        val, gamma = laplace_neg_log_evidence(log_offset, free, gp, counts, warm.get("gamma"))
        warm["gamma"] = gamma
        if not gradient:
            return val, np.zeros(len(x))
        per_column = laplace_gradient(log_offset, free, gp, counts, gamma)  # s_j ∝ η: d ln s_j / d ln η = 1
        grad = [float(per_column.sum())]
        if ell_fixed is None:
            grad.append(float(per_column @ _log_scale_slope(t, eta, ell, settings)))
        return val, np.array(grad)

    lo_eta, hi_eta = (math.log(b) for b in ETA_BOUNDS)
    if ell_fixed is None:
        bounds = [(lo_eta, hi_eta), (math.log(ell_min), math.log(ell_max))]
        grid = [np.array([math.log(e), math.log(ell_min * k)]) for e in (3e-3, 3e-2, 3e-1) for k in (1.0, 3.0, 10.0)
                if ell_min * k <= ell_max]
    else:
        bounds = [(lo_eta, hi_eta)]
        grid = [np.array([math.log(e)]) for e in (1e-3, 1e-2, 1e-1, 1.0)]
    values = [objective(x) for x in grid]  # each warm-started from the previous optimum γ̂ (the same optimum:
    x0 = grid[int(np.argmin(values))]      # the Laplace problem is convex), in fewer Newton steps
    res = minimize(value_and_gradient, x0, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": 200})
    no_gp, _ = laplace_neg_log_evidence(log_offset, free, np.zeros((len(t), 0)), counts)
    x = np.asarray(res.x)
    eta = math.exp(x[0])
    ell = float(ell_fixed) if ell_fixed is not None else math.exp(x[1])
    best = float(res.fun)
    if min(values) < best:  # the optimiser never ends above its start; guard anyway
        x, best = grid[int(np.argmin(values))], min(values)
        eta = math.exp(x[0])
        ell = float(ell_fixed) if ell_fixed is not None else math.exp(x[1])
    if no_gp <= best + EVIDENCE_MIN_GAIN:  # η → 0 (the limit of the lower bound) unless the GP earns it
        eta, best = 0.0, float(no_gp)
    return HyperFit(eta=eta, lengthscale=ell, neg_log_evidence=best, neg_log_evidence_no_gp=float(no_gp),
                    eta_at_bound=bool(eta == 0.0 or x[0] <= lo_eta + 1e-3),
                    ell_at_bound=bool(ell_fixed is None and x[1] <= math.log(ell_min) + 1e-3),
                    n_evaluations=n_eval)


_SPECTRUM_HYPER: dict[tuple[Any, ...], tuple[float, float]] = {}


def spectrum_hyperparameters(edges: FloatArray, counts: FloatArray, range_lo: float, range_hi: float,
                             settings: BackgroundSettings, *, ell_min: float,
                             ell_fixed: float) -> tuple[float, float]:
    """(η, ℓ in ln m) of the whole range ``[range_lo, range_hi]``, chosen once per spectrum.

    The fit: Legendre of degree ``hyper_degree`` in the range's normalised ln m + HSGP, A = 0
    (:func:`marginal_likelihood_hyperparameters`); ``ell_min``/``ell_fixed`` in ln m.  Cached per
    (spectrum, settings, bound), so a scan pays it once.
    """
    import hashlib

    centers = 0.5 * (edges[1:] + edges[:-1])
    sel = (centers >= range_lo) & (centers <= range_hi)
    idx = np.flatnonzero(sel)
    e = np.asarray(edges[idx[0]: idx[-1] + 2], float)
    n = np.asarray(counts[idx], float)
    digest = hashlib.sha1(e.tobytes() + n.tobytes()).hexdigest()
    free_ell = settings.hyper_free == "both"
    key = (digest, settings.compile_key(), settings.hyper_degree, settings.poly_degree, free_ell,
           round(ell_min if free_ell else ell_fixed, 12))
    if key not in _SPECTRUM_HYPER:
        t, half = lnm_coordinate(e)
        widths = np.diff(e)
        degree = settings.poly_degree if settings.hyper_degree < 0 else settings.hyper_degree
        fit = marginal_likelihood_hyperparameters(
            t, n, np.log(widths / widths.mean()), degree=degree, settings=settings, ell_min=ell_min / half,
            ell_fixed=None if free_ell else ell_fixed / half)
        log.info("eta, ell by the marginal likelihood of the whole range (degree %d): eta = %.4g, "
                 "ell = %.4g in ln m (%s%s; -ln Z gain over no GP %.2f)", degree, fit.eta, fit.lengthscale * half,
                 "eta at its bound, " if fit.eta_at_bound else "", "ell at its bound" if fit.ell_at_bound else "",
                 fit.neg_log_evidence_no_gp - fit.neg_log_evidence)
        _SPECTRUM_HYPER[key] = (fit.eta, fit.lengthscale * half)
    return _SPECTRUM_HYPER[key]
