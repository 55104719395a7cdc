"""One mass point: window, fits, local significance, CLs limits and ε².

``evaluate_mass`` fits one window (free fit, fit at A = 0), computes the local
significance and the CLs upper limits on A (observed and expected band), and
converts them to ε².  ``run_scan`` does this over a grid, with a progress bar,
optionally writing each point's ``numbers.json`` atomically as soon as it is
done and skipping points whose results already exist (resume).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from hps_bayes import __version__
from hps_bayes.analysis.checks import (
    PointNumbers,
    check_point,
    point_status,
    sideband_excess,
    sigma_hesse_asimov,
    window_gof,
)
from hps_bayes.analysis.grid import check_binning, guard_turn_on, prepare_spectrum
from hps_bayes.analysis.seeds import TOY_P0, point_rng
from hps_bayes.analysis.settings import AnalysisSettings, resolve_settings
from hps_bayes.analysis.windows import build_window, check_mass_range, spurious_table, window_notes
from hps_bayes.core import FloatArray
from hps_bayes.errors import ConfigError, FitError, HpsBayesError, InputError
from hps_bayes.fit.newton import newton_fit
from hps_bayes.inputs.spectrum import Spectrum
from hps_bayes.inputs.validation import check_analysable, poisson_equivalent, validate_spectrum
from hps_bayes.model.objective import WindowObjective
from hps_bayes.model.selection import load_selection
from hps_bayes.physics.signal import f_rad, yield_per_eps2
from hps_bayes.results.objects import MassPointResult, WindowFitArrays
from hps_bayes.stats import (
    AsymptoticCalculator,
    Discovery,
    PooledToyCalculator,
    ToyBatch,
    ToyCalculator,
    upper_limit,
)

log = logging.getLogger(__name__)

#: What evaluating a mass point raises where its numbers cannot be had, turned into a status at that mass
#: (the package's own errors and the fits' numerical failures; FloatingPointError is an ArithmeticError).
POINT_FAILURES = (HpsBayesError, np.linalg.LinAlgError, ArithmeticError)



def background_density(objective: WindowObjective, theta: FloatArray, *, at: str = "template") -> float:
    """ρ(m) = dN/dm (counts/GeV) of the background under the signal.

    The background-only fit's expected counts per bin divided by the bin width, averaged with the
    signal template as weight (``at="template"``), or taken at m (``at="mass"``: ln ρ interpolated
    linearly between the bin centres around m; the published HPS searches' choice).
    """
    w = objective.window
    density = objective.background(theta) / w.widths
    if at == "mass":
        centres = 0.5 * (w.edges[1:] + w.edges[:-1])
        return float(np.exp(np.interp(w.mass, centres, np.log(density))))
    weights = w.template / w.template.sum()
    return float(density @ weights)


def _evaluate(spectrum: Spectrum, mass: float, settings: AnalysisSettings,
              toy_batches: list[ToyBatch] | None = None) -> MassPointResult:
    t_start = time.perf_counter()
    preset = settings.dataset
    window = build_window(spectrum, mass, settings)
    objective = WindowObjective(window, settings.background)
    calc = (PooledToyCalculator(objective, objective.observed(), toy_batches) if toy_batches
            else _calculator(objective, mass, settings))
    disc = calc.discovery()  # toys: p0 from the background-only toys where any reaches q0
    p0_asymptotic = calc.asymptotic.discovery().p0 if isinstance(calc, ToyCalculator) else disc.p0
    if 0 < settings.stats.toy_p0_above_z <= disc.z0 and disc.n_toys == 0:
        disc = _toy_discovery(objective, mass, settings, disc)
    if isinstance(calc, ToyCalculator):
        limit = upper_limit(calc, alpha=settings.stats.alpha, rtol=1e-3, scan=TOY_SCAN_POINTS,
                            method=settings.stats.limit)
        calc = calc.asymptotic  # observed fits and σ for the columns below
    else:
        limit = upper_limit(calc, alpha=settings.stats.alpha, method=settings.stats.limit)
    free, null = calc.free_fit, calc.fit_at_zero
    rho = background_density(objective, null.theta, at=preset.rho_at)
    frad = float(f_rad(mass, preset))
    k = float(yield_per_eps2(mass, f_rad=frad, rho=rho, n_eff=preset.n_eff, alpha_em=preset.alpha_em))
    converged = calc.converged and limit.converged
    sigma_a, sigma_hesse = calc.sigma_mu(), free.poi_error(objective)
    expected = objective.expected_counts(free.theta)
    gof_p = window_gof(window, expected)[2]
    sideband_z = sideband_excess(window, (window.counts - expected) / np.sqrt(np.maximum(expected, 1e-300)))
    consistency = check_point(PointNumbers(
        a_hat=free.poi(objective), sigma_a=sigma_a, sigma_hesse_asimov=sigma_hesse_asimov(calc),
        sigma_stat=sigma_hesse, spurious=window.spurious, a_up=limit.mu_up,
        a_up_error=limit.mu_up_error if limit.n_toys else 0.0, a_up_expected=limit.mu_up_expected,
        alpha=settings.stats.alpha, limit=settings.stats.limit, toys=limit.n_toys > 0, n_toys=limit.n_toys,
        background=smooth_background(objective, free.theta, null.theta), gof_p=gof_p))
    status, message = point_status(converged, limit.message, consistency, window_notes(window, settings))
    sigma_stat = float(np.sqrt(max(sigma_a**2 - window.spurious**2, 0.0)))
    message = "; ".join(m for m in (message, selection_note(settings, mass),
                                    excess_note(settings, free.poi(objective), sigma_stat, window.spurious, disc.z0)) if m)
    return MassPointResult(
        dataset=preset.name, mass=float(mass), status=status, message=message,
        sigma_m=window.sigma, f_rad=frad, A_hat=free.poi(objective), sigma_A=sigma_a,
        sigma_A_stat=sigma_stat, sigma_A_hesse=sigma_hesse, q0=disc.q0, p0=disc.p0, Z=disc.z0,
        p0_method="toys" if disc.n_toys else "asymptotic", p0_asymptotic=p0_asymptotic,
        A_up=limit.mu_up, A_up_error=limit.mu_up_error if limit.n_toys else float("nan"),
        A_up_expected=tuple(limit.mu_up_expected),
        A_up_expected_error=tuple(limit.mu_up_expected_error) if limit.n_toys else (float("nan"),) * 5,
        eps2_up=limit.mu_up / k, eps2_up_expected=tuple(v / k for v in limit.mu_up_expected),
        rho=rho, spurious_signal=window.spurious, window_lo=float(window.edges[0]),
        window_hi=float(window.edges[-1]), window_bins=window.n_bins, window_clipped=window.clipped_low or window.clipped_high,
        converged=converged, gof_p=gof_p, sideband_z=sideband_z, n_iter=free.n_iter, eta=window.eta,
        lengthscale=window.lengthscale_sigma, method=settings.stats.method, n_toys=limit.n_toys, limit=limit.method,
        seed=settings.seed, config_hash=settings.config_hash(), version=__version__,
        seconds=time.perf_counter() - t_start, background_model=model_name(settings, mass),
    )


def model_name(settings: AnalysisSettings, mass: float) -> str:
    """The background at ``mass``: the selection's model name, or the settings' label."""
    bkg = settings.background
    if bkg.selection:
        return load_selection(bkg.selection).model_at(mass)
    return bkg.at_mass(mass).label()


#: Â/σ_stat from which an excess that a selection's S reduces by more than 1 in Z gets :func:`excess_note`.  Largest
#: Â/σ_stat of signal-free scans with a selection made on the same spectrum: 2.92 over 14 spectra (the bundled demos,
#: 2015 and 2016 with 1.5-2.3× their structure, six smooth 2015 realizations; 3.05 with another spectrum's selection,
#: where S lowered Z by 0.2); 5σ_A signals: 3.9 (2015, 24 MeV) and 5.3 (2016, 40 MeV), S lowering Z by 2.0 and 4.2.
EXCESS_STAT_Z = 3.0
EXCESS_NOTE = "an excess that S reduces"


def excess_note(settings: AnalysisSettings, a_hat: float, sigma_stat: float, spurious: float, z: float) -> str:
    """A note where a background selection's S turns an excess of Â/σ_stat ≥ :data:`EXCESS_STAT_Z` into a local Z
    more than 1 smaller: S is measured on truths fitted to the data the selection was made on, and a signal in
    them raises it (docs/background_selection.md, "A signal in the data")."""
    z_stat = a_hat / sigma_stat if sigma_stat > 0 else 0.0
    if not settings.background.selection or spurious <= 0 or z_stat < EXCESS_STAT_Z or not z_stat - z > 1.0:
        return ""
    return (f"{EXCESS_NOTE}: A_hat/sigma_stat = {z_stat:.1f}, Z = {z:.1f} with S = {spurious:.4g}; a selection made "
            "on these data measures S on truths fitted to them, and a signal raises it: make the selection on a "
            "control spectrum and scan with it to tell")


def selection_note(settings: AnalysisSettings, mass: float) -> str:
    """The background selection's note on the model it chose at ``mass`` ("" without one)."""
    bkg = settings.background
    return load_selection(bkg.selection).note_at(mass) if bkg.selection else ""


def _toy_discovery(objective: WindowObjective, mass: float, settings: AnalysisSettings,
                   asymptotic: Discovery) -> Discovery:
    """p0 from ``stats.toy_p0_toys`` background-only toys (q0 of each, batched), for an excess
    whose asymptotic Z reached ``stats.toy_p0_above_z``; the asymptotic p0 where no toy reaches
    the observed q0 (then p0 < 1/N and the log says so)."""
    toys = ToyCalculator(objective, objective.observed(), n_toys=settings.stats.toy_p0_toys,
                         rng=point_rng(settings, mass, purpose=TOY_P0))
    disc = toys.discovery()
    if disc.n_toys == 0:
        log.info("m=%.2f MeV: no toy of %d reaches q0 = %.1f; p0 < %.1e, the asymptotic p0 is kept",
                 mass * 1e3, settings.stats.toy_p0_toys, asymptotic.q0, 1 / settings.stats.toy_p0_toys)
    return disc


def evaluate_point(spectrum: Spectrum, mass: float, settings: AnalysisSettings, *,
                   weight_scale: float = 1.0, toy_batches: list[ToyBatch] | None = None) -> MassPointResult:
    """:func:`_evaluate`, turning a failure at this mass into a result with a status.

    ``spectrum`` is prepared (:func:`analysable`); a weighted one in effective counts, whose
    yields (A, σ_A, S, ρ) are multiplied by ``weight_scale`` back into weighted events
    (ε² does not change: it is a ratio of a yield and ρ).  ``toy_batches``: toys made for this mass
    by batch jobs (:mod:`hps_bayes.analysis.bandbatches`), pooled instead of drawing toys here.
    """
    try:
        return _in_weighted_events(_evaluate(spectrum, mass, settings, toy_batches), weight_scale)
    except POINT_FAILURES as exc:
        kind = "input_error" if isinstance(exc, InputError) else "fit_failed"
        if isinstance(exc, FitError):
            kind = "fit_failed"
        log.warning("m=%.2f MeV: %s", mass * 1e3, exc)
        return MassPointResult(dataset=settings.dataset.name, mass=float(mass), status=kind,
                               message=str(exc), seed=settings.seed, config_hash=settings.config_hash(),
                               version=__version__)


def evaluate_mass(
    spectrum: Spectrum,
    mass: float,
    dataset: Any = "2015",
    config: AnalysisSettings | Mapping[str, Any] | None = None,
) -> MassPointResult:
    """Fit one mass hypothesis and return significance and CLs limits.

    Parameters
    ----------
    spectrum : the full spectrum (as read by :func:`hps_bayes.load_spectrum`);
        it is rebinned and cropped as the dataset preset says.
    mass : mass hypothesis in GeV.
    dataset : a preset name ("2015", "2016", "2021", "demo") or a
        :class:`~hps_bayes.physics.DatasetPreset`.
    config : :class:`~hps_bayes.settings.AnalysisSettings`, or a mapping of
        overrides such as ``{"background": {"poly_degree": 5}}``; defaults when None.

    Returns
    -------
    MassPointResult
        ``A_hat, sigma_A, p0, Z, A_up, eps2_up, A_up_expected`` (N = -2..2) and ``status``.
    """
    mass = check_mass_value(mass)
    settings, spec, scale = analysable(spectrum, resolve_settings(dataset, config))
    check_mass_range(spec, mass, settings)
    return evaluate_point(spec, mass, settings, weight_scale=scale)


def check_mass_value(mass: Any) -> float:
    """``mass`` as a float in GeV; :class:`~hps_bayes.errors.ConfigError` for text, NaN or a non-number."""
    if isinstance(mass, (bool, str, bytes)) or not isinstance(mass, (int, float, np.integer, np.floating)):
        raise ConfigError(f"mass={mass!r} is not a number; give the mass in GeV, e.g. mass=0.030")
    if not np.isfinite(mass) or mass <= 0:
        raise ConfigError(f"mass={mass!r} must be a positive finite number in GeV, e.g. mass=0.030")
    return float(mass)


def analysable(spectrum: Spectrum, settings: AnalysisSettings) -> tuple[AnalysisSettings, Spectrum, float]:
    """Check ``spectrum`` as the command line does and prepare it for the window fits.

    Refuses (:class:`~hps_bayes.errors.InputError`) what the input validation calls a problem
    (NaN, infinite or negative bins, spikes, too few entries, a range that misses the dataset's,
    variable bins with ``dataset.rebin`` > 1) and a configured spurious-signal table that is
    missing (:class:`~hps_bayes.errors.ConfigError`), before any fit.

    Returns
    -------
    (AnalysisSettings, Spectrum, float)
        The settings after the turn-on guard (:func:`~hps_bayes.analysis.grid.guard_turn_on`),
        the rebinned, cropped spectrum in effective counts and its weight scale
        (:func:`hps_bayes.inputs.validation.poisson_equivalent`; 1.0 for counts).
    """
    check_input(spectrum, settings)
    effective, scale = poisson_equivalent(spectrum, mass_range=settings.dataset.mass_range)
    settings = guard_turn_on(effective, settings)
    return settings, prepare_spectrum(effective, settings), scale


def smooth_background(objective: WindowObjective, *thetas: FloatArray) -> FloatArray:
    """The fitted backgrounds at ``thetas`` with the window's offsets divided out (the bin widths and the
    turn-on factor): the smooth density whose collapse the checks look for. A turn-on inside the window, or
    narrower bins there, lowers the counts without anything being wrong."""
    scale = np.exp(-objective.window.log_offset)
    return np.concatenate([objective.background(theta) * scale for theta in thetas])


def check_input(spectrum: Spectrum, settings: AnalysisSettings) -> None:
    """The checks of :func:`analysable` that need no turn-on guard: the raw spectrum against the
    dataset's range, rebinning and resolution, and the configured spurious-signal table."""
    check_analysable(validate_spectrum(spectrum, mass_range=settings.dataset.mass_range), warn=False)
    check_binning(spectrum, settings.dataset)
    spurious_table(settings)


def _in_weighted_events(result: MassPointResult, scale: float) -> MassPointResult:
    """``result`` with its yields in weighted events: multiplied by the weight scale (unchanged at 1)."""
    if scale == 1.0:
        return result
    return replace(
        result, A_hat=result.A_hat * scale, sigma_A=result.sigma_A * scale, sigma_A_stat=result.sigma_A_stat * scale,
        sigma_A_hesse=result.sigma_A_hesse * scale, A_up=result.A_up * scale, A_up_error=result.A_up_error * scale, rho=result.rho * scale,
        A_up_expected=tuple(v * scale for v in result.A_up_expected), spurious_signal=result.spurious_signal * scale)


def check_mass(spectrum: Spectrum, mass: float, settings: AnalysisSettings) -> None:
    """Raise :class:`~hps_bayes.errors.InputError` when ``mass`` is outside the dataset's range."""
    check_mass_range(prepare_spectrum(spectrum, settings), mass, settings)


def window_fit_arrays(spectrum: Spectrum, result: MassPointResult, settings: AnalysisSettings) -> WindowFitArrays:
    """Refit one finished point (free and at A = A_up) and return the arrays its plots draw."""
    window = build_window(spectrum, result.mass, settings)
    objective = WindowObjective(window, settings.background)
    data = objective.observed()
    free = newton_fit(objective, data)
    at_limit = newton_fit(objective, data, poi_fixed=result.A_up, init=free.theta)
    return WindowFitArrays(
        dataset=result.dataset, mass=result.mass, sigma_m=window.sigma, edges=window.edges,
        counts=window.counts, background_free=objective.background(free.theta),
        signal_free=free.theta[0] * window.template, background_limit=objective.background(at_limit.theta),
        signal_limit=result.A_up * window.template, A_hat=result.A_hat, A_up=result.A_up, Z=result.Z,
    )


# --- toys: calculator choice, per-point seeds, look-elsewhere toy scans ---------------------------------

#: μ values of the CLs scan of a toy limit (see :func:`hps_bayes.stats.upper_limit`).
TOY_SCAN_POINTS = 12


def _calculator(objective: WindowObjective, mass: float,
                settings: AnalysisSettings) -> AsymptoticCalculator | ToyCalculator:
    """The calculator ``settings.stats.method`` names."""
    if settings.stats.method == "asymptotic":
        return AsymptoticCalculator(objective, objective.observed())
    return ToyCalculator(objective, objective.observed(), n_toys=settings.stats.n_toys,
                         rng=point_rng(settings, mass))
