"""Signal injection and extraction (``task=inject``)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from hps_bayes.analysis.grid import (
    guard_turn_on,
    prepare_spectrum,
)
from hps_bayes.analysis.seeds import INJECTION, point_rng
from hps_bayes.analysis.settings import AnalysisSettings
from hps_bayes.core import FitData, FloatArray
from hps_bayes.errors import ConfigError, HpsBayesError
from hps_bayes.fit.newton import newton_fit
from hps_bayes.inputs.spectrum import Spectrum
from hps_bayes.model.objective import WindowObjective
from hps_bayes.results.progress import progress_bar
from hps_bayes.studies.closure import (
    TRUTHS,
    Units,
    WindowTruth,
    _mean_and_width,
    draw,
    fit_toys,
    limit_of,
    truth_spectra,
    window_truths,
)

log = logging.getLogger(__name__)

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

    if n_toys < 2:
        raise ConfigError(f"task.n_toys={n_toys}: use at least 2 (300-500 for numbers)")
    if units not in ("sigma", "events"):
        raise ConfigError(f"task.units={units!r}: use 'sigma' (units of the expected sigma_A) or 'events'")
    settings = guard_turn_on(data, settings)
    spec = prepare_spectrum(data, settings)
    spectra = truth_spectra(data, settings, truths)
    rows, toy_rows = [], []
    for mass in progress_bar(masses, progress, desc="inject", unit="mass"):
        try:
            objective, wtruths = window_truths(spec, float(mass), settings, spectra)
        except (HpsBayesError, np.linalg.LinAlgError) as exc:
            log.warning("inject m=%.2f MeV: %s", mass * 1e3, exc)
            rows.append({"mass": float(mass), "status": f"failed: {exc}"})
            continue
        for i, truth in enumerate(wtruths):
            for j, value in enumerate(yields):
                a_inj = float(value) * (truth.sigma_A if units == "sigma" else 1.0)
                rng = point_rng(settings, float(mass), purpose=INJECTION + 100 * TRUTHS.index(truth.name) + j)
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
