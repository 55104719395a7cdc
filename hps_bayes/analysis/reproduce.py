"""Reproduction of a published limit: scans under a chain of settings and their ratio to the published curve.

A *step* is a label and a mapping of settings (``background``, ``stats``, ...) applied on top
of the previous step's, so that a chain from the package's default to a publication's method
changes one thing per step and the ratio to the published ε² curve moves piece by piece
(limit method, nuisances, background form, window).  Each step is one mass scan
(:func:`hps_bayes.analysis.scan.run_scan`) on the same masses; the summary of a step is the
median and the 16–84 % spread over the masses of ε²_ours / ε²_published, for the observed and
the median expected limit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hps_bayes.analysis.grid import guard_turn_on, prepare_spectrum
from hps_bayes.analysis.point import build_window
from hps_bayes.analysis.scan import run_scan
from hps_bayes.analysis.settings import AnalysisSettings, settings_from_mapping
from hps_bayes.errors import InputError
from hps_bayes.fit.newton import newton_fit
from hps_bayes.inputs.spectrum import Spectrum
from hps_bayes.model.objective import WindowObjective
from hps_bayes.stats.lee import regions_global_pvalue
from hps_bayes.stats.simple import known_background_sigma, poisson_deviance

__all__ = ["PUBLISHED_2015", "RatioSummary", "Step", "deep_merge", "load_published", "ratio_to_published",
           "run_steps", "step_settings", "summarize", "window_gof"]

#: The published HPS 2015 95 % CL limit (mass_GeV, epsilon, epsilon2), shipped with the package.
PUBLISHED_2015 = Path(__file__).resolve().parents[1] / "data" / "hps2015_published_limit.csv"


@dataclass(frozen=True)
class Step:
    """One link of the chain: its label and the settings it changes (nested mapping)."""

    label: str
    changes: Mapping[str, Any]


@dataclass(frozen=True)
class RatioSummary:
    """ε²_ours / ε²_published of one step over the compared masses.

    Attributes
    ----------
    label : the step.
    n_masses : masses with status "ok" inside the compared range.
    observed_median, observed_p16, observed_p84 : the ratio of the observed limits.
    expected_median, expected_p16, expected_p84 : the ratio of the median expected limits.
    sigma_A_median : median σ_A (events) of the step's fits.
    pull_p16, pull_median, pull_p84 : percentiles of the local Â/σ_A: far below 0 where the background
        form overshoots the data (observed limits then fall below the expected ones).
    power_constrained : fraction of masses whose observed limit is the −1σ expected one (PCL).
    gof_median, gof_bad : median Poisson deviance per degree of freedom of the background-only window
        fits, and the fraction of masses whose fit has a χ² p-value below 0.01 (:func:`window_gof`).
    sigma_floor_ratio : median σ_A / σ_A⁰, σ_A⁰ the known-background floor of each window
        (:func:`hps_bayes.stats.known_background_sigma` of the background-only fit, :func:`window_gof`);
        NaN without a ``window_gof`` table.
    z_max, mass_at_z_max : the largest local Z and its mass (GeV).
    p_global_regions, n_regions : the published global-significance recipe N_reg · p_local.
    """

    label: str
    n_masses: int
    observed_median: float
    observed_p16: float
    observed_p84: float
    expected_median: float
    expected_p16: float
    expected_p84: float
    sigma_A_median: float
    pull_p16: float
    pull_median: float
    pull_p84: float
    power_constrained: float
    gof_median: float
    gof_bad: float
    z_max: float
    mass_at_z_max: float
    p_global_regions: float
    n_regions: float
    sigma_floor_ratio: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def load_published(path: str | Path | None = None) -> Any:
    """The published curve as a DataFrame with ``mass_GeV`` and ``epsilon2`` (default: HPS 2015)."""
    import pandas as pd

    source = Path(path) if path else PUBLISHED_2015
    if not source.is_file():
        raise InputError(f"published curve {source} does not exist: give a CSV with columns mass_GeV, epsilon2")
    frame = pd.read_csv(source, comment="#")
    missing = [c for c in ("mass_GeV", "epsilon2") if c not in frame.columns]
    if missing:
        raise InputError(f"published curve {source} lacks columns {missing}: it needs mass_GeV and epsilon2")
    return frame.sort_values("mass_GeV").reset_index(drop=True)


def deep_merge(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` applied: nested mappings merged key by key, other values replaced.

    >>> deep_merge({"stats": {"limit": "cls", "alpha": 0.05}}, {"stats": {"limit": "pcl"}})
    {'stats': {'limit': 'pcl', 'alpha': 0.05}}
    """
    out = dict(base)
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def step_settings(base: Mapping[str, Any], steps: Sequence[Step]) -> list[AnalysisSettings]:
    """Validated settings of every step: the changes of steps 1..k applied in turn to ``base``."""
    current, out = dict(base), []
    for step in steps:
        current = deep_merge(current, step.changes)
        out.append(settings_from_mapping(current))
    return out


def ratio_to_published(frame: Any, published: Any, *, column: str, mass_lo: float, mass_hi: float) -> Any:
    """Per mass of ``frame`` (status "ok", inside [mass_lo, mass_hi]): ``column`` / published ε².

    The published curve is interpolated linearly in ln ε² at the scanned masses.
    """
    ok = frame[(frame.status == "ok") & (frame.mass >= mass_lo - 1e-9) & (frame.mass <= mass_hi + 1e-9)]
    log_pub = np.interp(ok.mass, published.mass_GeV, np.log(published.epsilon2))
    return ok.assign(ratio=ok[column].to_numpy() / np.exp(log_pub))[["mass", "ratio"]]


def window_gof(spectrum: Spectrum, settings: AnalysisSettings, masses: Sequence[float]) -> Any:
    """Goodness of fit of the background-only window fit at each mass: Poisson deviance, ndf, χ² p-value,
    and the known-background floor σ_A⁰ of the window (``sigma_floor``: its fitted background taken as known).

    D = 2 Σ [μ − n + n ln(n/μ)] of the fit at A = 0 with ndf = bins − free background coefficients;
    the p-value is that of χ²_ndf (a rough guide at low counts).  Masses whose window cannot be built
    get NaN.
    """
    import pandas as pd
    from scipy.stats import chi2

    settings = guard_turn_on(spectrum, settings)
    spec = prepare_spectrum(spectrum, settings)
    rows = []
    for mass in masses:
        try:
            objective = WindowObjective(build_window(spec, float(mass), settings), settings.background)
            fit = newton_fit(objective, objective.observed(), poi_fixed=0.0)
        except (InputError, ArithmeticError, np.linalg.LinAlgError):
            rows.append((float(mass), np.nan, np.nan, np.nan, np.nan))
            continue
        n, mu = objective.window.counts, objective.background(fit.theta)
        deviance = poisson_deviance(n, mu)
        ndf = objective.window.n_bins - objective.window.legendre.shape[1]
        floor = known_background_sigma(objective.window.template, mu)
        rows.append((float(mass), deviance, ndf, float(chi2.sf(deviance, ndf)), floor))
    return pd.DataFrame(rows, columns=["mass", "deviance", "ndf", "p_gof", "sigma_floor"])


def summarize(frame: Any, published: Any, *, label: str, mass_lo: float, mass_hi: float,
              gof: Any = None) -> RatioSummary:
    """The :class:`RatioSummary` of one step's scan (``gof``: its :func:`window_gof` table, or None)."""
    obs = ratio_to_published(frame, published, column="eps2_up", mass_lo=mass_lo, mass_hi=mass_hi).ratio
    exp = ratio_to_published(frame, published, column="eps2_up_expected_median", mass_lo=mass_lo,
                             mass_hi=mass_hi).ratio
    if len(obs) == 0:
        raise InputError(f"step {label!r}: no mass in [{mass_lo}, {mass_hi}] GeV was fitted (status 'ok'); "
                         "check the masses and the step's messages")
    ok = frame[frame.status == "ok"]
    inside = ok[(ok.mass >= mass_lo - 1e-9) & (ok.mass <= mass_hi + 1e-9)]
    pull = (inside.A_hat / inside.sigma_A).to_numpy()
    constrained = float(np.mean(inside.eps2_up.to_numpy() == inside.eps2_up_expected_m1.to_numpy()))
    fits = gof[(gof.mass >= mass_lo - 1e-9) & (gof.mass <= mass_hi + 1e-9)].dropna() if gof is not None else None
    gof_median = float(np.median(fits.deviance / fits.ndf)) if fits is not None and len(fits) else float("nan")
    gof_bad = float(np.mean(fits.p_gof < 0.01)) if fits is not None and len(fits) else float("nan")
    floor = dict(zip(fits.mass.round(7), fits.sigma_floor, strict=True)) if fits is not None else {}
    ratios = [s / floor[m] for m, s in zip(inside.mass.round(7), inside.sigma_A, strict=True) if m in floor]
    floor_ratio = float(np.median(ratios)) if ratios else float("nan")
    i = int(np.nanargmax(ok.Z.to_numpy()))
    n_reg, p_global = regions_global_pvalue(float(ok.p0.iloc[i]), ok.mass.to_numpy(), ok.sigma_m.to_numpy())
    q = np.percentile
    return RatioSummary(
        label=label, n_masses=len(obs), observed_median=float(np.median(obs)), observed_p16=float(q(obs, 16)),
        observed_p84=float(q(obs, 84)), expected_median=float(np.median(exp)), expected_p16=float(q(exp, 16)),
        expected_p84=float(q(exp, 84)), sigma_A_median=float(np.median(inside.sigma_A)),
        pull_p16=float(q(pull, 16)), pull_median=float(np.median(pull)), pull_p84=float(q(pull, 84)),
        power_constrained=constrained, gof_median=gof_median, gof_bad=gof_bad, z_max=float(ok.Z.iloc[i]),
        mass_at_z_max=float(ok.mass.iloc[i]), p_global_regions=p_global, n_regions=n_reg,
        sigma_floor_ratio=floor_ratio)


def run_steps(spectrum: Spectrum, steps: Sequence[Step], settings: Sequence[AnalysisSettings], *,
              masses: Sequence[float], published: Any, mass_lo: float, mass_hi: float,
              progress: bool | None = None) -> tuple[dict[str, Any], list[RatioSummary]]:
    """Scan ``masses`` under each step's settings; the frames by label and their summaries."""
    if len(steps) != len(settings) or not steps:
        raise InputError(f"{len(steps)} steps but {len(settings)} settings: give one settings object per step")
    frames: dict[str, Any] = {}
    summaries = []
    for step, config in zip(steps, settings, strict=True):
        frames[step.label] = run_scan(spectrum, config=config, masses=masses, progress=progress)
        gof = window_gof(spectrum, config, masses)
        summaries.append(summarize(frames[step.label], published, label=step.label, mass_lo=mass_lo,
                                   mass_hi=mass_hi, gof=gof))
    return frames, summaries
