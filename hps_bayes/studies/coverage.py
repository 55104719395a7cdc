"""Coverage of the upper limits (``task=coverage``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from hps_bayes.analysis.grid import (
    guard_turn_on,
    prepare_spectrum,
)
from hps_bayes.analysis.seeds import COVERAGE, point_rng
from hps_bayes.analysis.settings import AnalysisSettings
from hps_bayes.core import FitData, FloatArray
from hps_bayes.errors import ConfigError
from hps_bayes.inputs.spectrum import Spectrum
from hps_bayes.model.objective import WindowObjective
from hps_bayes.results.objects import record_to_dict
from hps_bayes.results.progress import progress_bar
from hps_bayes.stats import KnownBackgroundObjective
from hps_bayes.studies.closure import LimitMethod, WindowTruth, draw, limit_of, truth_spectra, window_truths

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
        return record_to_dict(self)


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

    bad = sorted(set(methods) - {"asymptotic", "toys"})
    if bad or not methods:
        raise ConfigError(f"task.methods={list(methods)}: choose from ['asymptotic', 'toys']")
    if "toys" in methods and n_toys < 10:
        raise ConfigError(f"task.n_toys={n_toys}: toy limits need at least 10 toys per ensemble (200-1000)")
    settings = guard_turn_on(data, settings)
    spec = prepare_spectrum(data, settings)
    spectra = truth_spectra(data, settings, [truth])
    cells = []
    for mass in masses:
        objective, (wtruth,) = window_truths(spec, float(mass), settings, spectra)
        models = _coverage_models(objective, wtruth, known_scales)
        jobs = [(m, meth, j, v) for m in models for meth in methods for j, v in enumerate(true_sigmas)]
        for (name, obj, b, centre, sigma, init), method, j, value in progress_bar(
                jobs, progress, desc=f"coverage {mass * 1e3:.0f} MeV", unit="cell", leave=False):
            purpose = COVERAGE + 100 * [m[0] for m in models].index(name) + 10 * list(methods).index(method) + j
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
