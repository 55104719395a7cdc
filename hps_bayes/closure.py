"""Closure studies: signal injection and extraction (``task=inject``) and coverage (``task=coverage``).

Injection.  At each mass, pseudo-data are drawn from a *background truth*
plus a signal of known yield A_inj, the window model is refit on every pseudo-dataset
(its constraint centres — global observables — drawn too), and per pseudo-experiment

* Â and σ_A (the Hessian error of the free fit, every nuisance profiled),
* the pull (Â − A_inj)/σ_A, which must be N(0, 1) when the model closes,
* Z = √q0 (arXiv:1007.1727, Eqs. 12, 54) and the asymptotic 95% CL CLs limit A_up

are recorded.  The truths (:func:`window_truths`):

* ``fit`` (truth a): the window model's background-only fit θ̂̂(0) of the data; counts
  ``ν(θ̂̂(0))`` and global observables ``N(θ̂̂_aux(0), 1)``, the toy convention of
  DESIGN.md — a self-consistency test of the fit and of σ_A;
* ``expcheb``, ``powerlaw``, ``demo`` (truth b): smooth functions fitted to the data
  (:func:`hps_bayes.studies.fit_truth`), global observables ``N(0, 1)`` — the model is
  then *not* the truth, so background mis-modelling shows up as a pull bias.

Pseudo-data are ``n_i ~ Poisson(b_i + A_inj T_i)`` (Poisson on the total).  A_inj is given in
events or in units of the expected σ_A (the Hessian σ_A of the fit of the truth's noise-free
counts, "Asimov").  All fits of one cell (mass, truth, A_inj) are one batch
(:func:`hps_bayes.fit.newton_fit_batch`); only the limits are computed one by one.

Coverage.  For true yields A_true (including 0): pseudo-experiments from a
truth plus A_true, the 95% CL CLs upper limit of each (asymptotic, or toys with
``n_toys`` per ensemble), and the fraction with A_up ≥ A_true with its binomial error, on

* ``known``: a known-background model (:class:`hps_bayes.stats.KnownBackgroundObjective`;
  background = the truth's expected counts in the window, optionally scaled down to probe
  low counts), and
* ``window``: the window model itself, pseudo-data from a truth as above.

Randomness: one ``numpy.random.Generator`` per cell from the base seed, the mass and the cell's
indices (:func:`hps_bayes.scan.point_rng`), so results do not depend on chunking.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from hps_bayes.core import FitData, FloatArray
from hps_bayes.errors import ConfigError, FitError, HpsBayesError, InputError
from hps_bayes.fit import newton_fit, newton_fit_batch
from hps_bayes.io import Spectrum
from hps_bayes.model import WindowObjective
from hps_bayes.scan import (
    TOY_SCAN_POINTS,
    build_window,
    fit_range,
    guard_turn_on,
    mass_grid,
    point_rng,
    prepare_spectrum,
    whole_range_spectrum,
)

__all__ = ["TRUTHS", "CoverageCell", "WindowTruth", "coverage_cell", "coverage_fraction", "inject_cell",
           "prepare_spectrum", "run_coverage", "run_injection", "study_masses", "truth_spectra", "window_truths"]
from hps_bayes.settings import AnalysisSettings
from hps_bayes.stats import AsymptoticCalculator, KnownBackgroundObjective, ToyCalculator, upper_limit
from hps_bayes.studies import FAMILIES, fit_truth

log = logging.getLogger(__name__)

#: Truth (a): the window model's own background-only fit of the data.
FIT_TRUTH = "fit"
TRUTHS: tuple[str, ...] = (FIT_TRUTH, *FAMILIES)
Units = Literal["sigma", "events"]
LimitMethod = Literal["asymptotic", "toys"]


# --------------------------------------------------------------------------- truths


@dataclass(frozen=True)
class WindowTruth:
    """The expected background counts of one truth on one window's bins, and its global observables.

    ``aux_centre`` is where the toys' constraint centres are drawn around (N(centre, 1));
    ``init`` is the free fit of the noise-free counts (the start of every toy fit).
    """

    name: str
    counts: FloatArray
    aux_centre: FloatArray
    init: FloatArray
    sigma_A: float


def truth_spectra(data: Spectrum, settings: AnalysisSettings, truths: Sequence[str]) -> dict[str, Spectrum | None]:
    """The smooth truth spectra fitted to the data over the dataset's whole range (turn-on included,
    also where the turn-on guard starts the fit range above it); ``fit`` maps to None (made per window)."""
    unknown = sorted(set(truths) - set(TRUTHS))
    if unknown or not truths:
        raise ConfigError(f"task.truths={list(truths)}: choose from {list(TRUTHS)}")
    spec = whole_range_spectrum(data, settings)
    return {name: None if name == FIT_TRUTH else fit_truth(spec, name) for name in truths}


def _window_slice(spectrum: Spectrum, objective: WindowObjective) -> slice:
    edges = objective.window.edges
    first = int(np.searchsorted(spectrum.edges, edges[0] + 1e-12 * abs(edges[0])) - 1)
    return slice(first, first + objective.window.n_bins)


def window_truths(spec: Spectrum, mass: float, settings: AnalysisSettings,
                  spectra: dict[str, Spectrum | None]) -> tuple[WindowObjective, list[WindowTruth]]:
    """The window at ``mass`` built on the prepared data ``spec`` and every truth on its bins."""
    objective = WindowObjective(build_window(spec, mass, settings), settings.background)
    n_aux = objective.model.n_aux
    out = []
    for name, truth in spectra.items():
        if truth is None:
            null = newton_fit(objective, objective.observed(), poi_fixed=0.0)
            if not null.converged:
                raise FitError(f"m={mass * 1e3:.2f} MeV: the background-only fit of the data failed ({null.message})")
            counts, centre = objective.expected_counts(null.theta), objective.aux_at(null.theta)
        else:
            counts, centre = np.asarray(truth.counts[_window_slice(truth, objective)], float), np.zeros(n_aux)
        asimov = newton_fit(objective, FitData(counts, centre))
        sigma = asimov.poi_error(objective)
        if not (asimov.converged and np.isfinite(sigma)):
            raise FitError(f"m={mass * 1e3:.2f} MeV, truth {name}: the fit of its expected counts failed")
        out.append(WindowTruth(name=name, counts=counts, aux_centre=centre, init=asimov.theta, sigma_A=sigma))
    return objective, out


# --------------------------------------------------------------------------- batched fits of many toys


@dataclass(frozen=True)
class ToyFits:
    """Free fits of K pseudo-datasets: Â, σ_A (Hessian), Z = √q0 and which fits converged."""

    A_hat: FloatArray
    sigma_A: FloatArray
    Z: FloatArray
    theta: FloatArray
    converged: NDArray[np.bool_]


def _poi_errors(objective: WindowObjective, thetas: FloatArray, counts: FloatArray, aux: FloatArray) -> FloatArray:
    """√(H⁻¹)_AA per row, the Hessian equilibrated by its diagonal before inversion."""
    _, _, hess = objective.nll_grad_hess_batch(thetas, counts, aux)
    diag = np.abs(np.diagonal(hess, axis1=1, axis2=2))
    scale = 1.0 / np.sqrt(np.where(diag > 0, diag, 1.0))
    scaled = hess * scale[:, :, None] * scale[:, None, :]
    out = np.full(len(thetas), np.nan)
    good = np.all(np.isfinite(scaled), axis=(1, 2))
    if good.any():
        with np.errstate(all="ignore"):
            var = np.linalg.inv(scaled[good])[:, 0, 0] * scale[good, 0] ** 2
        out[good] = np.where(var > 0, np.sqrt(np.abs(var)), np.nan)
    return out


def fit_toys(objective: WindowObjective, counts: FloatArray, aux: FloatArray, init: FloatArray) -> ToyFits:
    """Free fit and fit at A = 0 of every pseudo-dataset, batched; q0 = 2 ΔNLL where Â > 0 (Eq. 12)."""
    start = np.array(np.broadcast_to(init, (len(counts), objective.n_params)))
    start[:, objective.n_params - objective.model.n_aux:] = aux
    free = newton_fit_batch(objective, counts, aux, init=start)
    null = newton_fit_batch(objective, counts, aux, poi_fixed=0.0, init=free.theta)
    a_hat = free.theta[:, 0]
    q0 = np.where(a_hat > 0, np.maximum(2.0 * (null.nll - free.nll), 0.0), 0.0)
    sigma = _poi_errors(objective, free.theta, counts, aux)
    ok = free.converged & null.converged & np.isfinite(sigma)
    return ToyFits(A_hat=a_hat, sigma_A=sigma, Z=np.sqrt(q0), theta=free.theta, converged=ok)


def limit_of(objective: Any, data: FitData, *, method: LimitMethod, alpha: float, n_toys: int = 0,
             rng: np.random.Generator | None = None, init: FloatArray | None = None) -> float:
    """The 95% CL (1 − alpha) CLs upper limit of one pseudo-dataset; NaN when it did not converge."""
    calc: AsymptoticCalculator | ToyCalculator
    try:
        if method == "asymptotic":
            calc = AsymptoticCalculator(objective, data, init=init)
            lim = upper_limit(calc, alpha=alpha)
        else:
            assert rng is not None
            calc = ToyCalculator(objective, data, n_toys=n_toys, rng=rng, init=init)
            lim = upper_limit(calc, alpha=alpha, rtol=1e-3, scan=TOY_SCAN_POINTS)
    except (HpsBayesError, FloatingPointError, np.linalg.LinAlgError, ArithmeticError) as exc:
        log.debug("limit failed: %s", exc)
        return math.nan
    # only the observed limit matters here: an expected-band limit that a small toy ensemble
    # cannot bracket (N = -2 with few toys) does not invalidate it
    observed_ok = np.isfinite(lim.mu_up) and "observed limit" not in lim.message
    return lim.mu_up if observed_ok and calc.converged else math.nan


def draw(truth_counts: FloatArray, signal: FloatArray, aux_centre: FloatArray, n: int,
         rng: np.random.Generator) -> tuple[FloatArray, FloatArray]:
    """n pseudo-datasets: counts ~ Poisson(b + signal) (total), aux ~ N(centre, 1)."""
    counts = rng.poisson(truth_counts + signal, size=(n, len(truth_counts))).astype(float)
    aux = aux_centre + rng.standard_normal((n, len(aux_centre)))
    return counts, aux


# --------------------------------------------------------------------------- injection


def _mean_and_width(x: FloatArray) -> tuple[float, float, float, float]:
    """mean, its error (sd/√N), width (sd) and its error (sd/√(2(N−1)))."""
    n = len(x)
    if n < 2:
        return math.nan, math.nan, math.nan, math.nan
    sd = float(np.std(x, ddof=1))
    return float(np.mean(x)), sd / math.sqrt(n), sd, sd / math.sqrt(2.0 * (n - 1))


def inject_cell(objective: WindowObjective, truth: WindowTruth, a_inj: float, *, n_toys: int,
                rng: np.random.Generator, limits: bool, alpha: float = 0.05) -> tuple[dict[str, Any], dict[str, Any]]:
    """One (mass, truth, A_inj) cell: the summary row and the per-toy arrays."""
    tpl = objective.window.template
    counts, aux = draw(truth.counts, a_inj * tpl, truth.aux_centre, n_toys, rng)
    fits = fit_toys(objective, counts, aux, truth.init)
    a_up = np.full(n_toys, np.nan)
    if limits:
        for k in np.flatnonzero(fits.converged):
            a_up[k] = limit_of(objective, FitData(counts[k], aux[k]), method="asymptotic", alpha=alpha,
                               init=fits.theta[k])
    asimov = newton_fit(objective, FitData(truth.counts + a_inj * tpl, truth.aux_centre), init=truth.init)
    ok = fits.converged
    pull = (fits.A_hat[ok] - a_inj) / fits.sigma_A[ok]
    p_mean, p_err, p_width, p_width_err = _mean_and_width(pull)
    a_mean, a_err, _, _ = _mean_and_width(fits.A_hat[ok])
    has_up = np.isfinite(a_up)
    row = {
        "truth": truth.name, "mass": objective.window.mass, "A_inj": float(a_inj),
        "A_inj_sigmas": round(float(a_inj / truth.sigma_A), 9), "sigma_A_expected": truth.sigma_A,
        "n_toys": n_toys, "n_ok": int(ok.sum()), "n_failed": int((~ok).sum()),
        "pull_mean": p_mean, "pull_mean_err": p_err, "pull_width": p_width, "pull_width_err": p_width_err,
        "A_hat_mean": a_mean, "A_hat_mean_err": a_err,
        "A_hat_over_inj": a_mean / a_inj if a_inj > 0 else math.nan,
        "A_hat_over_inj_err": a_err / a_inj if a_inj > 0 else math.nan,
        "asimov_pull": float((asimov.theta[0] - a_inj) / truth.sigma_A) if asimov.converged else math.nan,
        "sigma_A_median": float(np.median(fits.sigma_A[ok])) if ok.any() else math.nan,
        "Z_mean": float(np.mean(fits.Z[ok])) if ok.any() else math.nan,
        "Z_median": float(np.median(fits.Z[ok])) if ok.any() else math.nan,
        "A_up_median": float(np.median(a_up[has_up])) if has_up.any() else math.nan,
        "A_up_coverage": float(np.mean(a_up[has_up] >= a_inj)) if has_up.any() else math.nan,
        "n_limits": int(has_up.sum()), "window_lo": float(objective.window.edges[0]),
        "window_hi": float(objective.window.edges[-1]), "spurious": objective.window.spurious,
    }
    toys = {"A_hat": fits.A_hat, "sigma_A": fits.sigma_A, "Z": fits.Z, "A_up": a_up, "converged": ok}
    return row, toys


def study_masses(settings: AnalysisSettings, masses: Sequence[float] | None, n_masses: int) -> FloatArray:
    """``masses`` (GeV) if given, else ``n_masses`` points spread evenly over the scan grid."""
    if masses:
        return np.asarray([float(m) for m in masses])
    grid = mass_grid(settings)
    if n_masses < 1:
        raise ConfigError(f"task.n_masses={n_masses}: use at least 1 (or give task.masses)")
    idx = np.unique(np.round(np.linspace(0, len(grid) - 1, n_masses + 2)[1:-1]).astype(int))
    return np.asarray(grid[idx])


def run_injection(data: Spectrum, settings: AnalysisSettings, *, masses: Sequence[float] | FloatArray,
                  truths: Sequence[str], yields: Sequence[float], units: Units = "sigma", n_toys: int,
                  limits: bool = True, progress: bool | None = None) -> tuple[Any, Any]:
    """The injection study at ``masses``: (one row per cell, one row per pseudo-experiment), pandas frames.

    Parameters
    ----------
    data : the spectrum as read (rebinned and cropped here); the truths are fitted to it.
    settings : the analysis settings (background model, dataset, seed, alpha).
    masses : masses in GeV.
    truths : names from :data:`TRUTHS`.
    yields : injected yields, in units of the expected σ_A (``units="sigma"``) or in events.
    n_toys : pseudo-experiments per cell.
    limits : also compute the asymptotic CLs limit of every pseudo-experiment.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    if n_toys < 2:
        raise ConfigError(f"task.n_toys={n_toys}: use at least 2 (300-500 for numbers)")
    if units not in ("sigma", "events"):
        raise ConfigError(f"task.units={units!r}: use 'sigma' (units of the expected sigma_A) or 'events'")
    settings = guard_turn_on(data, settings)
    spec = prepare_spectrum(data, settings)
    spectra = truth_spectra(data, settings, truths)
    rows, toy_rows = [], []
    for mass in tqdm(masses, desc="inject", unit="mass", disable=None if progress is None else not progress):
        try:
            objective, wtruths = window_truths(spec, float(mass), settings, spectra)
        except (HpsBayesError, np.linalg.LinAlgError) as exc:
            log.warning("inject m=%.2f MeV: %s", mass * 1e3, exc)
            rows.append({"mass": float(mass), "status": f"failed: {exc}"})
            continue
        for i, truth in enumerate(wtruths):
            for j, value in enumerate(yields):
                a_inj = float(value) * (truth.sigma_A if units == "sigma" else 1.0)
                rng = point_rng(settings, float(mass), purpose=1000 + 100 * TRUTHS.index(truth.name) + j)
                row, toys = inject_cell(objective, truth, a_inj, n_toys=n_toys, rng=rng, limits=limits,
                                        alpha=settings.stats.alpha)
                rows.append(row | {"status": "ok", "dataset": settings.dataset.name})
                toy_rows.append(pd.DataFrame({"truth": truth.name, "mass": float(mass), "A_inj": a_inj, **toys}))
        done = [r for r in rows if r.get("mass") == float(mass) and r.get("status") == "ok"]
        log.info("inject m=%.2f MeV: %s", mass * 1e3, ", ".join(
            f"{r['truth']} {r['A_inj_sigmas']:.0f}σ pull {r['pull_mean']:+.2f}/{r['pull_width']:.2f}" for r in done))
    toys_frame = pd.concat(toy_rows, ignore_index=True) if toy_rows else pd.DataFrame()
    return pd.DataFrame(rows), toys_frame


def injection_summary(frame: Any, *, mean_tol: float = 0.1, width: tuple[float, float] = (0.9, 1.1)) -> dict[str, Any]:
    """Per truth (and ``all``): worst pull mean, width range, Â/A_inj range, cells passing.

    A cell passes when |pull mean| ≤ ``mean_tol`` and the width lies in ``width``
    (the closure criterion); with N toys the mean carries ±1/√N and the width ±1/√(2N) of noise.
    """
    ok = frame[frame.status == "ok"] if "status" in frame else frame
    out: dict[str, Any] = {}
    for name, g in [*ok.groupby("truth"), ("all", ok)]:
        if g.empty:
            continue
        worst = g.loc[g.pull_mean.abs().idxmax()]
        passing = (g.pull_mean.abs() <= mean_tol) & g.pull_width.between(*width)
        ratio = g.A_hat_over_inj.dropna()
        out[str(name)] = {
            "worst_pull_mean": float(worst.pull_mean), "worst_pull_mean_err": float(worst.pull_mean_err),
            "worst_mass_mev": float(worst.mass * 1e3), "worst_A_inj_sigmas": float(worst.A_inj_sigmas),
            "width_min": float(g.pull_width.min()), "width_max": float(g.pull_width.max()),
            "ratio_min": float(ratio.min()) if len(ratio) else math.nan,
            "ratio_max": float(ratio.max()) if len(ratio) else math.nan,
            "cells": len(g), "cells_passing": int(passing.sum()), "failed_fits": int(g.n_failed.sum()),
            "limit_coverage_min": float(g.A_up_coverage.min()),
        }
    return out


def injection_table(summary: dict[str, Any]) -> str:
    """:func:`injection_summary` as a Markdown table."""
    head = ("| truth | worst pull mean (m MeV, A_inj/σ) | pull width min–max | Â/A_inj | cells passing "
            "| min A_up coverage |\n|---|---|---|---|---|---|")
    rows = [f"| {k} | {v['worst_pull_mean']:+.3f} ± {v['worst_pull_mean_err']:.3f} ({v['worst_mass_mev']:.1f}, "
            f"{v['worst_A_inj_sigmas']:.0f}) | {v['width_min']:.3f}–{v['width_max']:.3f} | "
            f"{v['ratio_min']:.3f}–{v['ratio_max']:.3f} | {v['cells_passing']}/{v['cells']} | "
            f"{v['limit_coverage_min']:.3f} |" for k, v in summary.items()]
    return "\n".join([head, *rows])


# --------------------------------------------------------------------------- coverage


@dataclass(frozen=True)
class CoverageCell:
    """Coverage of the 95% CL limits of one (model, truth, method, A_true) cell at one mass.

    ``coverage`` = fraction of the ``n_ok`` pseudo-experiments with A_up ≥ A_true, ``error`` its
    binomial error √(p(1 − p)/n), ``z_nominal`` = (coverage − CL)/√(CL(1 − CL)/n) (negative: under-coverage).
    """

    model: str
    truth: str
    method: str
    mass: float
    A_true: float
    A_true_sigmas: float
    sigma_A: float
    n_experiments: int
    n_ok: int
    n_toys: int
    coverage: float
    error: float
    z_nominal: float
    A_up_median: float
    seed_purpose: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def coverage_fraction(a_up: FloatArray, a_true: float, *, cl: float = 0.95) -> tuple[float, float, float, int]:
    """(coverage, binomial error, (coverage − cl)/σ_binomial(cl), n) over the finite limits."""
    good = a_up[np.isfinite(a_up)]
    n = len(good)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    p = float(np.mean(good >= a_true))
    return p, math.sqrt(p * (1 - p) / n), (p - cl) / math.sqrt(cl * (1 - cl) / n), n


def coverage_cell(objective: Any, truth_counts: FloatArray, aux_centre: FloatArray, template: FloatArray,
                  a_true: float, *, method: LimitMethod, n_experiments: int, n_toys: int,
                  rng: np.random.Generator, alpha: float, init: FloatArray | None = None) -> FloatArray:
    """The upper limits of ``n_experiments`` pseudo-experiments (NaN where a limit failed)."""
    counts, aux = draw(truth_counts, a_true * template, aux_centre, n_experiments, rng)
    limits = np.full(n_experiments, np.nan)
    for k in range(n_experiments):
        start = None
        if init is not None:
            start = init.copy()
            start[len(start) - len(aux[k]):] = aux[k]
        limits[k] = limit_of(objective, FitData(counts[k], aux[k]), method=method, alpha=alpha, n_toys=n_toys,
                             rng=rng, init=start)
    return limits


def _coverage_models(objective: WindowObjective, truth: WindowTruth,
                     known_scales: Sequence[float]) -> list[tuple[str, Any, FloatArray, FloatArray, float, Any]]:
    """(name, objective, truth counts, aux centre, σ_A, init) of the known-background models and the window."""
    tpl = objective.window.template
    out: list[tuple[str, Any, FloatArray, FloatArray, float, Any]] = []
    for scale in known_scales:
        b = truth.counts * float(scale)
        known = KnownBackgroundObjective(b, tpl)
        sigma = float(1.0 / np.sqrt(np.sum(tpl**2 / b)))
        name = "known" if scale == 1 else f"known_x{scale:g}"
        out.append((name, known, b, np.zeros(0), sigma, None))
    out.append(("window", objective, truth.counts, truth.aux_centre, truth.sigma_A, truth.init))
    return out


def run_coverage(data: Spectrum, settings: AnalysisSettings, *, masses: Sequence[float] | FloatArray, truth: str,
                 true_sigmas: Sequence[float], methods: Sequence[LimitMethod], n_experiments: dict[str, int],
                 n_toys: int, known_scales: Sequence[float] = (1.0,), progress: bool | None = None) -> Any:
    """Coverage cells (pandas frame) for every mass, model, method and A_true = value · σ_A of the model.

    ``n_experiments`` maps a method to its number of pseudo-experiments per cell (toys: fewer);
    ``n_toys`` is the toys per ensemble of a toy limit.
    """
    import pandas as pd
    from tqdm.auto import tqdm

    bad = sorted(set(methods) - {"asymptotic", "toys"})
    if bad or not methods:
        raise ConfigError(f"task.methods={list(methods)}: choose from ['asymptotic', 'toys']")
    if "toys" in methods and n_toys < 10:
        raise ConfigError(f"task.n_toys={n_toys}: toy limits need at least 10 toys per ensemble (200-1000)")
    settings = guard_turn_on(data, settings)
    spec = prepare_spectrum(data, settings)
    spectra = truth_spectra(data, settings, [truth])
    cells = []
    disable = None if progress is None else not progress
    for mass in masses:
        objective, (wtruth,) = window_truths(spec, float(mass), settings, spectra)
        models = _coverage_models(objective, wtruth, known_scales)
        jobs = [(m, meth, j, v) for m in models for meth in methods for j, v in enumerate(true_sigmas)]
        for (name, obj, b, centre, sigma, init), method, j, value in tqdm(
                jobs, desc=f"coverage {mass * 1e3:.0f} MeV", unit="cell", disable=disable, leave=False):
            purpose = 5000 + 100 * [m[0] for m in models].index(name) + 10 * list(methods).index(method) + j
            rng = point_rng(settings, float(mass), purpose=purpose)
            a_true = float(value) * sigma
            n_exp = int(n_experiments[method])
            limits = coverage_cell(obj, b, centre, objective.window.template, a_true, method=method,
                                   n_experiments=n_exp, n_toys=n_toys, rng=rng, alpha=settings.stats.alpha,
                                   init=init)
            cov, err, z, n_ok = coverage_fraction(limits, a_true, cl=1 - settings.stats.alpha)
            cells.append(CoverageCell(
                model=name, truth=wtruth.name, method=method, mass=float(mass), A_true=a_true,
                A_true_sigmas=float(value), sigma_A=sigma, n_experiments=n_exp, n_ok=n_ok,
                n_toys=n_toys if method == "toys" else 0, coverage=cov, error=err, z_nominal=z,
                A_up_median=float(np.nanmedian(limits)) if n_ok else math.nan, seed_purpose=purpose).to_dict())
    return pd.DataFrame(cells)


def coverage_table(frame: Any) -> str:
    """The coverage cells as a Markdown table (one row per model, method, mass; A_true in columns)."""
    values = sorted(frame.A_true_sigmas.unique())
    head = "| model | method | m [MeV] | N (toys) | " + " | ".join(f"A = {v:g} σ" for v in values) + " |"
    lines = [head, "|" + "---|" * (4 + len(values))]
    for (model, method, mass), g in frame.groupby(["model", "method", "mass"], sort=False):
        by = {r.A_true_sigmas: r for r in g.itertuples()}
        n = int(g.n_experiments.max())
        toys = f" ({int(g.n_toys.max())})" if method == "toys" else ""
        cells = [f"{by[v].coverage:.3f} ± {by[v].error:.3f}" + (f" ({by[v].n_experiments - by[v].n_ok} failed)"
                 if by[v].n_ok < by[v].n_experiments else "") if v in by else "" for v in values]
        lines.append(f"| {model} | {method} | {mass * 1e3:.1f} | {n}{toys} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def check_inputs(spectrum: Spectrum, settings: AnalysisSettings, masses: FloatArray) -> None:
    """Raise :class:`InputError` for masses outside the dataset range (before any fit)."""
    lo, hi = fit_range(settings)
    bad = [m for m in masses if not lo <= m <= hi]
    if bad:
        why = (" (the background fit range starts above the spectrum's sharp turn-on: background.turn_on=off "
               "or background.fit_range_min to change it)" if lo > settings.dataset.mass_range[0] else "")
        raise InputError(f"task.masses {bad} (GeV) lie outside dataset {settings.dataset.name!r}'s fit range "
                         f"[{lo:.4g}, {hi:.4g}] GeV{why}; choose masses inside it")


# --------------------------------------------------------------------------- chunked runs


def chunk_table(kind: str, chunk: int, n_chunks: int) -> str:
    """``<kind>.csv`` for a one-chunk run, else ``<kind>_chunk<k>of<n>.csv``."""
    return f"{kind}.csv" if n_chunks == 1 else f"{kind}_chunk{chunk}of{n_chunks}.csv"


def merge_chunks(folder: Any, kind: str, n_chunks: int) -> Any:
    """All chunk tables of a run concatenated (sorted by mass), or None while some are missing."""
    import pandas as pd

    paths = [Path(folder) / chunk_table(kind, k, n_chunks) for k in range(n_chunks)]
    if not all(p.is_file() for p in paths):
        return None
    frame = pd.concat([pd.read_csv(p) for p in paths], ignore_index=True)
    return frame.sort_values("mass", kind="stable").reset_index(drop=True)
