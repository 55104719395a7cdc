"""One candidate background at one mass of ``task=select``: its fit of the data, its adequacy there, and its S.

S is the largest noise-free |Â| of the candidate on the truths that describe the data in the window
(:mod:`hps_bayes.studies.selection`, step 2).  Where the data's ``smooth`` fit finds a signal at the tested
mass, each truth enters twice: its fit to the whole spectrum, and its refit with that signal free, less it
(:mod:`hps_bayes.studies.truths_at_mass`).
The smaller of the two |Â| counts: the part of a truth's bias that a signal at this mass would explain is
not counted.  With a signal in the data, the whole fit takes part of it up and the refit does not; without
one, the refit of structure broader than a signal leaves a notch where the refitted signal was taken out,
which a candidate reads as a deficit that the data do not have (counted alone, it cost 31 % of σ_A on a
spectrum with structure of 3–6 σ(m)/m wavelengths), and the whole fit counts.

Written by hand: no library measures a background's spurious signal on truths fitted to the data.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from scipy.stats import chi2

from hps_bayes.analysis.checks import sideband_excess, window_gof
from hps_bayes.analysis.settings import AnalysisSettings
from hps_bayes.analysis.windows import MIN_SIGNAL_CONTAINED, build_window
from hps_bayes.core import FloatArray
from hps_bayes.errors import FitError, InputError
from hps_bayes.fit.newton import newton_fit
from hps_bayes.inputs.spectrum import Spectrum, crop
from hps_bayes.model.objective import WindowObjective
from hps_bayes.stats.calculators import AsymptoticCalculator
from hps_bayes.stats.simple import known_background_sigma
from hps_bayes.studies.gp_prior import prior_share
from hps_bayes.studies.truth_noise import TruthNoise

#: A truth counts for S in a window where it describes the data there: Pearson χ² p-value at least this.
PLAUSIBLE_P = 1e-3
#: The truth tried where none of ``task.families`` describes a window (unless it is among them).
FALLBACK_TRUTH = "flexible"


def data_cell(spec: Spectrum, truths: Sequence[Spectrum], mass: float, settings: AnalysisSettings,
              truth_settings: Sequence[AnalysisSettings], *,
              fallback: tuple[Spectrum, AnalysisSettings] | None = None, min_p_without_gp: float = PLAUSIBLE_P,
              noise: Mapping[str, TruthNoise] | None = None, free: Mapping[str, TruthNoise] | None = None
              ) -> tuple[dict[str, Any], WindowObjective, FloatArray]:
    """One candidate at one mass: the fit of the data, its adequacy, and the truths' noise-free Â (each truth
    fitted with its own settings: its turn-on measured on it); S counts the truths that describe the data on the
    window's sidebands (Pearson χ² p ≥ :data:`PLAUSIBLE_P`, or ≥ ``min_p_without_gp`` where the window has no
    active GP: :mod:`hps_bayes.studies.selection`).  Where none does (very precise data), the ``fallback`` truth
    (the data's ``flexible`` fit) is tried, and the cell says so (``truth_note``).  ``sigma_prior`` is the part of
    σ_stat the window's GP prior holds (0 without a GP).  A truth named in ``noise`` counts, in a window without an
    active GP, with its bias beyond the noise of its own fit, √max(Â² − σ_n², 0)
    (:mod:`hps_bayes.studies.truth_noise`); a GP-carried window leaves it out (but for the fallback), as its
    prior already covers structure its mean does not follow.  A truth named in ``free`` (its refit with a signal
    at ``mass`` free, whole range; :mod:`hps_bayes.studies.truths_at_mass`) counts with the smaller of its two
    biases (module docstring).  Also the window objective and the data's best fit, which the Z-spread toys
    (:func:`hps_bayes.studies.zspread.toy_z`) reuse."""
    window = build_window(spec, mass, settings)
    if float(np.sum(window.template)) < MIN_SIGNAL_CONTAINED:
        raise InputError(f"only {np.sum(window.template):.0%} of the signal lies inside the window at "
                         f"m = {mass * 1e3:.2f} MeV (the range end)")
    objective = WindowObjective(window, settings.background)
    fit = newton_fit(objective, objective.observed())
    sigma = fit.poi_error(objective)
    if not (fit.converged and np.isfinite(sigma)):
        raise FitError(f"the fit of the data did not converge at m = {mass * 1e3:.2f} MeV")
    n, mu = window.counts, objective.expected_counts(fit.theta)
    side = window.sidebands  # where the truths are judged: blind to a signal at this mass
    counted = dict(noise or {}) if window.eta == 0 else {}  # a GP-carried window leaves them out (but for the fallback)
    free = free or {}

    def on_truth(truth: Spectrum, own: AnalysisSettings, noisy: TruthNoise | None) -> tuple[float, float, float]:
        # the truth's own turn-on (offsets), the data's GP hyperparameters: as a scan of such data would fit it
        tw = replace(build_window(truth, mass, own, live_from=spec), eta=window.eta, lengthscale_t=window.lengthscale_t)
        tobj = WindowObjective(tw, own.background)
        tfit = newton_fit(tobj, tobj.observed())
        if len(tw.counts) != len(n):
            raise ValueError(f"truth {truth.name}'s window has {len(tw.counts)} bins, the data's {len(n)}")
        p = float(chi2.sf(np.sum(((n - tw.counts) ** 2 / np.maximum(tw.counts, 1.0))[side]), int(side.sum())))
        return (float(tfit.theta[0]) if tfit.converged else math.inf, p,
                noisy.sigma(tobj, tfit) if noisy is not None else 0.0)

    def both(truth: Spectrum, own: AnalysisSettings) -> dict[str, float]:
        a, p, sn = on_truth(truth, own, counted.get(truth.name))
        out = {"A": a, "p": p, "noise": sn, "S": math.sqrt(max(a * a - sn * sn, 0.0))}
        if truth.name in free:  # on the bins of the truth given (the candidate's range)
            refit = free[truth.name]
            cut = crop(refit.truth, float(truth.edges[0]), float(truth.edges[-1]))
            af, _, snf = on_truth(cut, own, refit if truth.name in counted else None)
            out |= {"A_free": af, "noise_free": snf, "S": min(out["S"], math.sqrt(max(af * af - snf * snf, 0.0)))}
        return out

    named = {truth.name: both(truth, own) for truth, own in zip(truths, truth_settings)
             if truth.name in counted or truth.name not in (noise or {})}
    min_p = PLAUSIBLE_P if window.eta > 0 else max(PLAUSIBLE_P, min_p_without_gp)
    plausible = [t["S"] for t in named.values() if t["p"] >= min_p]
    truth_note = ""
    if not plausible and fallback is not None and fallback[0].name not in named:
        best = max(named, key=lambda k: named[k]["p"])
        named[fallback[0].name] = flex = both(*fallback)
        if flex["p"] >= min_p:
            plausible = [flex["S"]]
            truth_note = (f"S from the '{fallback[0].name}' truth: none of the others describes the data in this "
                          f"window (best: {best}, p = {named[best]['p']:.3g} < {min_p:g}); that fit follows the data, "
                          "so a narrow excess there raises S: search such masses with a control spectrum's selection")
    deviance, ndf, gof_p = window_gof(window, mu)
    tpl = window.template
    values = {"A_hat": float(fit.theta[0]), "sigma_stat": float(sigma), "z": float(fit.theta[0] / sigma),
              "sigma_asimov": float(AsymptoticCalculator(objective, objective.observed()).sigma_mu()),
              "sigma_prior": prior_share(objective, fit.covariance) if window.eta > 0 else 0.0,
              "sigma_floor": known_background_sigma(tpl, np.maximum(n, 1.0)), "gof_p": gof_p,
              "deviance": deviance, "ndf": ndf, "sideband_z": sideband_excess(window, (n - mu) / np.sqrt(mu)),
              "spurious_raw": float(max(plausible)) if plausible else math.nan,
              "n_truths": len(plausible), "truth_min_p": min_p, "truth_note": truth_note,
              "best_truth_p": max(t["p"] for t in named.values()),
              "rho": float(np.sum(n / window.widths * tpl) / np.sum(tpl)), "sigma_m": window.sigma,
              "window_lo": float(window.edges[0]), "window_hi": float(window.edges[-1]), "eta": window.eta,
              "lengthscale": window.lengthscale_sigma}
    for k, t in named.items():
        values |= {f"A_{k}": t["A"], f"p_{k}": t["p"]} | ({f"A_free_{k}": t["A_free"]} if "A_free" in t else {})
        if k in counted:
            values |= {f"noise_{k}": t["noise"]} | ({f"noise_free_{k}": t["noise_free"]} if "noise_free" in t else {})
    return values, objective, fit.theta

