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

The selection (``task.beyond_noise``) counts a flexible truth's bias this way for windows without an
active GP: its fit resolves structure that the stiffer truths smooth over, and without the correction its
own noise would be counted as bias (docs/background_selection.md, "How much of S is the truth's own noise").

Written by hand: the propagation is a few lines of linear algebra on the fits the package makes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hps_bayes.core import FloatArray
from hps_bayes.fit.protocol import FitResult
from hps_bayes.inputs.spectrum import Spectrum, edge_index
from hps_bayes.inputs.turnon import fit_shape, missing_bins, shape_model, turn_on_bounds
from hps_bayes.model.objective import WindowObjective
from hps_bayes.studies.spurious import fit_truth

#: Singular values of R below this fraction of the largest are left out of C (directions the fit does not
#: constrain; none on the spectra measured, kept as a guard against a degenerate turn-on).
RCOND = 1e-10


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


def fit_with_noise(reference: Spectrum, family: str) -> TruthNoise:
    """``family`` fitted to ``reference`` (as :func:`hps_bayes.studies.spurious.fit_truth` fits it, whose
    truth it returns) and the factor of its counts' covariance (module docstring)."""
    edges, counts = np.asarray(reference.edges, float), np.asarray(reference.counts, float)
    fit = fit_shape(edges, counts, family)
    truth = fit_truth(reference, family, shape=fit)
    m, w = 0.5 * (edges[1:] + edges[:-1]), np.diff(edges)
    model, _ = shape_model(family, float(edges[0]), float(edges[-1]))
    jac = np.empty((len(m), len(fit.params)))
    for k in range(len(fit.params)):
        h = 1e-6 * max(1.0, abs(float(fit.params[k])))
        up, down = np.array(fit.params), np.array(fit.params)
        up[k] += h
        down[k] -= h
        jac[:, k] = w * (np.exp(model(m, up)) - np.exp(model(m, down))) / (2 * h)
    # a turn-on parameter at its bound is held there by the fit, not by the data: it does not move with them
    held = [k for k, (b_lo, b_hi) in enumerate(turn_on_bounds(float(edges[0]), float(edges[-1])))
            if min(fit.params[k] - b_lo, b_hi - fit.params[k]) < 1e-6 * max(1.0, abs(b_lo), abs(b_hi))]
    jac[:, held] = 0.0
    use = ~missing_bins(counts)
    _, s, vt = np.linalg.svd(jac[use] / np.sqrt(np.maximum(counts[use], 1.0))[:, None], full_matrices=False)
    keep = s > RCOND * s[0]
    return TruthNoise(truth, jac @ (vt[keep].T / s[keep]))
