"""How much of a candidate's bias on a truth is the noise of the truth's own fit.

A truth fitted to the data (:func:`hps_bayes.studies.spurious.fit_truth`) carries the data's
fluctuations, the more so the more flexible it is, so a candidate's noise-free Â on it is its bias on
the true shape plus a noise term.  Linearised:

- the truth's expected counts μ(p) have the covariance K = J C Jᵀ, J = ∂μ/∂p (central differences:
  the turn-on enters non-linearly) and C = (RᵀR)⁻¹ the covariance of the Neyman-weighted least squares
  that fitted p (R = J/√n on the bins the fit used), written K = L Lᵀ with L = J V Σ⁻¹ from the
  singular values of R; a turn-on parameter at its bound stays there (its column of J is left out);
- the candidate's Â responds to a change of the counts it is fitted to by
  g_i = ∂Â/∂n_i = Σ_k [H⁻¹]_Ak (∂μ_i/∂θ_k)/μ_i (the fit's stationarity, the Poisson likelihood's
  only dependence on n; H the Hessian of its NLL, the GP weights' and the nuisances' constraints
  included), with ∂μ/∂θ from the closed-form design
  (:meth:`hps_bayes.model.objective.WindowObjective.design`);
- so σ_n² = |gᵀ L|², and the bias beyond that noise is √max(Â² − σ_n², 0).

The same linearisation refits a truth with a signal of free size added (:meth:`Linearised.with_signal`,
used by :mod:`hps_bayes.studies.truths_at_mass`).

The selection (``task.beyond_noise``) counts a flexible truth's bias this way for windows without an
active GP: its fit resolves structure that the stiffer truths smooth over, and without the correction its
own noise would be counted as bias (docs/background_selection.md, "How much of S is the truth's own noise").

Written by hand: the propagation is a few lines of linear algebra on the fits the package makes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from hps_bayes.core import FloatArray
from hps_bayes.fit.protocol import FitResult
from hps_bayes.inputs.spectrum import Spectrum, edge_index
from hps_bayes.inputs.turnon import ShapeFit, missing_bins, shape_fit, shape_model, turn_on_bounds
from hps_bayes.model.objective import WindowObjective

#: Singular values of R below this fraction of the largest are left out of C (directions the fit does not
#: constrain; none on the spectra measured, kept as a guard against a degenerate turn-on).
RCOND = 1e-10
#: At most this many Gauss–Newton steps refit a truth with a signal free (:meth:`Linearised.with_signal`) ...
REFIT_STEPS = 20
#: ... stopping once no parameter moves by more than this (relative, or absolute below 1).
REFIT_TOL = 1e-9


@dataclass(frozen=True)
class TruthNoise:
    """A truth fitted to data, with the factor ``factor`` (bins × directions) of its counts' covariance."""

    truth: Spectrum
    factor: FloatArray

    def sigma(self, objective: WindowObjective, fit: FitResult) -> float:
        """σ_n of the candidate's Â fitted (``fit``, ``objective`` on this truth's window) to the truth."""
        window = objective.window
        i0 = edge_index(self.truth.edges, float(window.edges[0]))
        rows = self.factor[i0:i0 + window.n_bins]
        d = objective.design()
        theta = np.asarray(fit.theta, float)
        e = np.exp(d.offset + d.basis @ theta[1:-1])
        mu = e + (theta[0] + d.spurious * theta[-1]) * d.template
        dmu = np.column_stack([d.template, e[:, None] * d.basis, d.spurious * d.template])  # bins × θ
        g = (dmu / mu[:, None]) @ fit.covariance[0]
        return float(np.linalg.norm(g @ rows))


@dataclass(frozen=True)
class Linearised:
    """A shape fit to ``reference`` linearised at its parameters: the Jacobian of its expected counts (central
    differences; a turn-on parameter at its bound is held there by the fit, not by the data, so its column is 0)."""

    reference: Spectrum
    fit: ShapeFit
    jac: FloatArray
    used: NDArray[np.bool_]  # the bins the fit uses (missing data left out)

    @classmethod
    def at(cls, reference: Spectrum, fit: ShapeFit) -> Linearised:
        edges, counts = np.asarray(reference.edges, float), np.asarray(reference.counts, float)
        m, w = 0.5 * (edges[1:] + edges[:-1]), np.diff(edges)
        model, _ = shape_model(fit.family, float(edges[0]), float(edges[-1]))
        jac = np.empty((len(m), len(fit.params)))
        for k in range(len(fit.params)):
            h = 1e-6 * max(1.0, abs(float(fit.params[k])))
            up, down = np.array(fit.params), np.array(fit.params)
            up[k] += h
            down[k] -= h
            jac[:, k] = w * (np.exp(model(m, up)) - np.exp(model(m, down))) / (2 * h)
        held = [k for k, (b_lo, b_hi) in enumerate(turn_on_bounds(float(edges[0]), float(edges[-1])))
                if min(fit.params[k] - b_lo, b_hi - fit.params[k]) < 1e-6 * max(1.0, abs(b_lo), abs(b_hi))]
        jac[:, held] = 0.0
        return cls(reference, fit, jac, ~missing_bins(counts))

    def _svd(self, jac: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(Uᵀ/√n, Σ, Vᵀ) of the Neyman-weighted ``jac`` (bins × directions) on the bins the fit uses (singular
        values below :data:`RCOND` of the largest left out)."""
        err = np.sqrt(np.maximum(np.asarray(self.reference.counts, float)[self.used], 1.0))
        u, s, vt = np.linalg.svd(jac[self.used] / err[:, None], full_matrices=False)
        keep = s > RCOND * s[0]
        return u[:, keep].T / err, s[keep], vt[keep]

    def factor(self, template: FloatArray | None = None) -> FloatArray:
        """L, with L Lᵀ the covariance of the fit's expected counts; with a ``template`` (a signal's counts per
        event), of the background part of the fit with that signal's size free as well."""
        jac = self.jac if template is None else np.column_stack([self.jac, template])
        _, s, vt = self._svd(jac)
        return self.jac @ (vt[:, :self.jac.shape[1]].T / s)

    def with_signal(self, template: FloatArray, *, with_factor: bool = True,
                    steps: int = REFIT_STEPS) -> tuple[ShapeFit, float, float, FloatArray]:
        """The fit refitted with a signal of free size a and shape ``template`` (counts per event) added: its
        background part, a, the error of a, and that part's factor L (bins × 0 unless ``with_factor``).  Gauss–Newton steps on the
        same least squares from this fit's parameters and a = 0; the turn-on stays this fit's, and the shape
        parameters enter ln ρ linearly in every family, so the background's Jacobian at p is this one's with its
        rows scaled by μ_b(p)/μ_b(p₀)."""
        edges, counts = np.asarray(self.reference.edges, float), np.asarray(self.reference.counts, float)
        m, w = 0.5 * (edges[1:] + edges[:-1]), np.diff(edges)
        model, _ = shape_model(self.fit.family, float(edges[0]), float(edges[-1]))
        params, size = np.array(self.fit.params, float), 0.0
        mu0 = w * np.exp(model(m, params))
        for _ in range(steps):
            mu = w * np.exp(model(m, params))
            u_t, s, vt = self._svd(np.column_stack([self.jac[:, 2:] * (mu / mu0)[:, None], template]))
            step = vt.T @ ((u_t @ (counts - mu - size * template)[self.used]) / s)
            params[2:] += step[:-1]
            size += float(step[-1])
            if np.max(np.abs(step[:-1]) / np.maximum(np.abs(params[2:]), 1.0)) < REFIT_TOL:
                break
        factor = self.factor(template) if with_factor else np.zeros((len(m), 0))
        return shape_fit(edges, counts, self.fit.family, params), size, float(np.linalg.norm(vt[:, -1] / s)), factor
