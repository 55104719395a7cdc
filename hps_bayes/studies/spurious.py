"""Spurious-signal study of the window background model (``task=spurious``).

The background model must neither fake nor swallow a signal on realistic
spectra (``docs/background_study.md``).  This study measures it:

1. *Truth shapes that are not the fitted model*: smooth families fitted to a
   reference spectrum (the dataset's demo expected counts, or its data), each
   with the trigger turn-on multiplied in (:func:`fit_truth`):

   - ``demo``: the demo density itself (two log-normals × turn-on);
   - ``expcheb``: Φ((m − m_on)/w) · exp(Σ_k c_k T_k(x)), Chebyshev T_k of degree 7 in m
     (x maps the range onto [−1, 1]) — the published HPS 2015 background form;
   - ``powerlaw``: Φ((m − m_on)/w) · exp(p₀ + a ln r + b r + c r² + d/r), r = m/m_mid;
   - ``dijet`` (a spectrum the defaults were never tuned on): a logistic turn-on × the
     dijet form x^(−p₁ − p₂ ln x) (1 − x)^p₃, x = m / (2 m_hi), fitted to the reference and
     then *distorted*: the turn-on 2 MeV higher and half as wide, the fall steeper by
     (m/m_mid)^(−0.5), renormalised to the reference's events;
   - ``smooth``: the reference's own high-flexibility smooth fit, Φ((m − m_on)/w) · exp(Legendre of
     degree 16 in ln m): it keeps the few-percent structure of real spectra at 5–20 MeV scales.
   - ``flexible``: the same with Legendre degree 24, optional: it resolves more of the structure
     than ``smooth`` where the data are precise enough (``docs/background_selection.md``).

2. At every mass of a grid, background-only Poisson toys of each truth (window
   bins only; ``numpy.random.Generator`` seeded per shape and mass from one base
   seed through ``SeedSequence``), each fitted with the window model
   (:func:`hps_bayes.fit.newton_fit`; the constraint centres drawn per toy as well):
   Â/σ_A per toy, σ_A from that toy's Hessian
   with every nuisance profiled.  Reported per mass and shape: mean and width of
   Â/σ_A, the spurious yield (mean Â), the noise-free check (the fit of the
   expected counts, "Asimov"), and σ_A against the floor σ_A⁰ = (Σ_i T_i²/b_i)^{-1/2}
   of a fit with the background known (Fisher information of A at A = 0).

3. The same toys with a signal of ``inject_sigmas`` × σ_A injected: the fraction
   recovered, mean Â / A_inj.

Criterion (ATLAS/CMS spurious signal): |mean Â/σ_A| ≤ 0.2, width 0.9–1.1,
injected signals recovered within 10 %.  With N toys the mean carries ±1/√N of noise,
so the noise-free Â/σ_A is the precise number for the bias.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np

from hps_bayes.analysis.grid import default_grid_ends, guard_turn_on, prepare_spectrum
from hps_bayes.analysis.point import build_window
from hps_bayes.analysis.seeds import cell_seed
from hps_bayes.analysis.settings import AnalysisSettings
from hps_bayes.core import FloatArray
from hps_bayes.errors import ConfigError, InputError
from hps_bayes.fit.batch import poi_fits_batch
from hps_bayes.fit.newton import newton_fit
from hps_bayes.inputs.spectrum import Spectrum
from hps_bayes.inputs.turnon import ShapeFit, fit_shape, shape_model
from hps_bayes.model.objective import WindowObjective
from hps_bayes.physics.demo import Structure, expected_spectrum
from hps_bayes.results.files import atomic_write_text
from hps_bayes.results.objects import record_to_dict
from hps_bayes.results.progress import progress_bar
from hps_bayes.stats.simple import known_background_sigma

log = logging.getLogger(__name__)

Family = Literal["demo", "expcheb", "powerlaw", "dijet", "smooth", "flexible"]
FAMILIES: tuple[str, ...] = get_args(Family)


# --------------------------------------------------------------------------- truth shapes


def fit_truth(reference: Spectrum, family: str, *, turn_on: tuple[float, float] | None = None,
              shape: ShapeFit | None = None) -> Spectrum:
    """A smooth truth shape of ``family`` fitted to ``reference``'s counts (χ², Neyman weights).

    Parameters
    ----------
    reference : the (rebinned, cropped) spectrum the shape imitates.
    family : ``"demo"`` returns ``reference`` itself (it must then be the demo expected counts);
        ``"expcheb"``, ``"powerlaw"`` or ``"dijet"`` (module docstring; :func:`hps_bayes.turnon.fit_shape`).
    turn_on : starting (m_on, width) of the turn-on in GeV; default 5 MeV below the range, 2 MeV.
    shape : the fit of ``family`` to ``reference`` where it is already made.

    Returns
    -------
    Spectrum
        Expected counts of the fitted shape on ``reference``'s bins (midpoint × width).
    """
    if family == "demo":
        return replace(reference, name="demo")
    if family not in FAMILIES:
        raise ConfigError(f"truth family {family!r} is not one of {list(FAMILIES)}")
    edges, counts = reference.edges, np.asarray(reference.counts, float)
    fit = shape if shape is not None else fit_shape(edges, counts, family, turn_on=turn_on)
    truth = truth_of_fit(reference, fit)
    log.info("truth %s fitted to %s: chi2/bin = %.3g", family, reference.name, fit.chi2 / fit.n_bins)
    return truth


def truth_of_fit(reference: Spectrum, fit: ShapeFit, *, note: str = "") -> Spectrum:
    """The truth :func:`fit_truth` makes of ``fit`` (a fit of its family to ``reference``); ``note`` is added
    to its source."""
    expected = fit.expected
    if fit.family == "dijet":  # distort: a spectrum the model was never tuned on
        edges, counts = reference.edges, np.asarray(reference.counts, float)
        lo, hi = float(edges[0]), float(edges[-1])
        m, w = 0.5 * (edges[1:] + edges[:-1]), np.diff(edges)
        params = np.array(fit.params)
        params[0] += 0.002
        params[1] += math.log(0.5)
        expected = w * np.exp(shape_model(fit.family, lo, hi)[0](m, params))
        expected *= (m / (0.5 * (lo + hi))) ** -0.5
        expected *= counts.sum() / expected.sum()
    return replace(reference, counts=expected, variances=expected, name=fit.family,
                   source=f"{fit.family} fitted to {reference.source}{note} (chi2/bin {fit.chi2 / fit.n_bins:.3g})")


def reference_spectrum(settings: AnalysisSettings, demo: dict[str, Any], data: Spectrum | None = None) -> Spectrum:
    """The spectrum the truths imitate: ``data`` (prepared) if given, else the demo expected counts."""
    if data is not None:
        return prepare_spectrum(data, settings)
    shape = str(demo.get("shape") or settings.dataset.name)
    n_events = float(demo.get("n_events") or 0)
    if not n_events > 0:
        raise InputError(f"dataset {settings.dataset.name!r} has no demo.n_events for the study's reference; "
                         f"set dataset.demo.n_events or use task.reference=data")
    structured = bool(demo.get("structured", False))
    expected = expected_spectrum(shape, n_events=n_events, structured=structured,  # type: ignore[arg-type]
                                 structure=Structure.from_settings(demo) if structured else None)
    return prepare_spectrum(expected, settings)


# --------------------------------------------------------------------------- one mass, one truth


@dataclass(frozen=True)
class SpuriousPoint:
    """Spurious-signal and injection results of one truth shape at one mass.

    ``z`` means Â/σ_A; ``asimov_*`` are fits of the noise-free expected counts;
    ``sigma_A_floor`` is σ_A of a fit with the background known; ``recovered`` is
    mean Â / A_inj with ``A_inj = inject_sigmas · asimov_sigma_A``.
    """

    shape: str
    mass: float
    sigma_m: float
    n_toys: int
    mean_z: float
    width_z: float
    mean_A: float
    sd_A: float
    sigma_A: float
    asimov_A: float
    asimov_z: float
    asimov_sigma_A: float
    sigma_A_floor: float
    spurious: float
    rho: float
    A_inj: float
    recovered: float
    recovered_err: float
    n_failed: int
    window_lo: float
    window_hi: float
    window_clipped: bool
    seed: int
    eta: float = 0.0
    lengthscale: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return record_to_dict(self)


def _toy_fits(objective: WindowObjective, expected: FloatArray, rng: np.random.Generator, n_toys: int,
              init: FloatArray) -> tuple[FloatArray, FloatArray, int]:
    """Â and σ_A of ``n_toys`` Poisson toys of ``expected`` (failed fits left out).

    Each toy draws its global observables too (the constraint centres β⁰, ν⁰ ~ N(0, 1),
    as the toy calculator does), so that Â scatters as the frequentist σ_A (GP prior and
    spurious-signal nuisance included) says it should.
    """
    n_aux = objective.model.n_aux
    aux_slice = slice(objective.n_params - n_aux, objective.n_params)
    counts_all = rng.poisson(expected, size=(n_toys, len(expected))).astype(float)
    aux_all = rng.standard_normal((n_toys, n_aux))
    start = np.tile(init, (n_toys, 1))
    start[:, aux_slice] = aux_all
    a_hat, err = poi_fits_batch(objective, counts_all, aux_all, start)
    ok = np.isfinite(a_hat) & np.isfinite(err)
    return np.asarray(a_hat[ok]), np.asarray(err[ok]), int(n_toys - ok.sum())


def spurious_point(truth: Spectrum, mass: float, settings: AnalysisSettings, *, n_toys: int,
                   seed: int, inject_sigmas: float = 5.0) -> SpuriousPoint:
    """Toys and the noise-free fit of one truth at one mass (see the module docstring)."""
    window = build_window(truth, mass, settings)
    objective = WindowObjective(window, settings.background)
    asimov = newton_fit(objective, objective.observed())
    sigma_asimov = asimov.poi_error(objective)
    b = window.counts
    floor = known_background_sigma(window.template, b)
    rng = np.random.default_rng(seed)
    a_hat, sig, failed = _toy_fits(objective, b, rng, n_toys, asimov.theta)
    a_inj = inject_sigmas * sigma_asimov
    a_hat_inj, _, failed_inj = _toy_fits(objective, b + a_inj * window.template, rng, n_toys, asimov.theta)
    z = a_hat / sig
    n_ok = max(len(z), 1)
    rho = float(np.sum(b / window.widths * window.template) / np.sum(window.template))
    return SpuriousPoint(
        shape=truth.name, mass=float(mass), sigma_m=window.sigma, n_toys=n_toys, mean_z=float(np.mean(z)) if len(z) else math.nan,
        width_z=float(np.std(z, ddof=1)) if len(z) > 1 else math.nan,
        mean_A=float(np.mean(a_hat)) if len(a_hat) else math.nan,
        sd_A=float(np.std(a_hat, ddof=1)) if len(a_hat) > 1 else math.nan,
        sigma_A=float(np.median(sig)) if len(sig) else math.nan, asimov_A=float(asimov.theta[0]),
        asimov_z=float(asimov.theta[0] / sigma_asimov), asimov_sigma_A=float(sigma_asimov),
        sigma_A_floor=floor, spurious=window.spurious, rho=rho, A_inj=float(a_inj),
        recovered=float(np.mean(a_hat_inj) / a_inj) if len(a_hat_inj) else math.nan,
        recovered_err=float(np.std(a_hat_inj) / a_inj / math.sqrt(n_ok)) if len(a_hat_inj) else math.nan,
        n_failed=failed + failed_inj, window_lo=float(window.edges[0]), window_hi=float(window.edges[-1]),
        window_clipped=bool(window.clipped_low or window.clipped_high), seed=seed, eta=float(window.eta),
        lengthscale=window.lengthscale_sigma,
    )


# --------------------------------------------------------------------------- the study


def spurious_study(truths: Sequence[Spectrum], masses: Sequence[float] | FloatArray, settings: AnalysisSettings, *,
                   n_toys: int, seed: int, inject_sigmas: float = 5.0, progress: bool | None = None,
                   mass_indices: Sequence[int] | None = None,
                   truth_settings: Sequence[AnalysisSettings] | None = None) -> Any:
    """:func:`spurious_point` for every truth and mass; a pandas DataFrame (one row per cell).

    ``mass_indices``: the masses' places in the whole study grid (default 0, 1, ...), which seed
    their toys (:func:`hps_bayes.analysis.seeds.cell_seed`), so that a chunk of the grid gives the rows of the whole run.
    ``truth_settings``: per truth, the settings to fit it with (default ``settings``; e.g. each
    truth's own turn-on guard, :func:`truth_guards`); masses outside that truth's scan grid
    (:func:`study_masses`) are left out for it.
    """
    import pandas as pd

    if n_toys < 2:
        raise ConfigError(f"task.n_toys={n_toys}: the study needs at least 2 toys per mass (100 for numbers)")
    indices = list(range(len(masses))) if mass_indices is None else [int(j) for j in mass_indices]
    if len(indices) != len(masses):
        raise ValueError(f"{len(indices)} mass indices for {len(masses)} masses")
    rows = []
    own = list(truth_settings) if truth_settings is not None else [settings] * len(truths)
    if len(own) != len(truths):
        raise ValueError(f"{len(own)} truth settings for {len(truths)} truths")
    spans = [default_grid_ends(s) for s in own]
    cells = [(i, truth, j, mass) for i, truth in enumerate(truths) for j, mass in zip(indices, masses)
             if spans[i][0] - 1e-9 <= mass <= spans[i][1] + 1e-9]
    for i, truth, j, mass in progress_bar(cells, progress, desc="spurious", unit="cell", leave=False):
        try:
            point = spurious_point(truth, float(mass), own[i], n_toys=n_toys, seed=cell_seed(seed, i, j),
                                   inject_sigmas=inject_sigmas)
            rows.append(point.to_dict() | {"status": "ok", "fit_range_min": own[i].background.fit_range_min})
        except (InputError, np.linalg.LinAlgError, FloatingPointError, ValueError) as exc:
            log.warning("%s m=%.1f MeV: %s", truth.name, mass * 1e3, exc)
            rows.append({"shape": truth.name, "mass": float(mass), "status": f"failed: {exc}"})
    return pd.DataFrame(rows)


def uncovered_bias(frame: Any, *, column: Literal["mean_A", "asimov_A"] = "mean_A") -> Any:
    """The bias the spurious-signal nuisance leaves uncovered: max(|Â| − S, 0)/σ_A (σ_A with S in it), with
    Â the toys' mean (``"mean_A"``) or the noise-free fit's (``"asimov_A"``)."""
    return (frame[column].abs() - frame.spurious).clip(lower=0) / frame.sigma_A


def with_nuisance_columns(frame: Any) -> Any:
    """The cells with what the nuisance figure draws: ``spurious_z`` = S/σ_A and ``uncovered_z``
    (:func:`uncovered_bias` of the toys' mean)."""
    return frame.assign(spurious_z=frame.spurious / frame.sigma_A, uncovered_z=uncovered_bias(frame))


def summarise(frame: Any) -> dict[str, dict[str, float]]:
    """Per truth shape (and ``all``): worst mean Â/σ_A, width range, σ_A/σ_A⁰, recovered range, cells passing.

    A cell passes when the bias the nuisance leaves uncovered (:func:`uncovered_bias`; = |mean Â/σ_A|
    with the nuisance off) is ≤ 0.2 and 0.9 ≤ width ≤ 1.1 (the width carries ±1/√(2N) of noise);
    ``cells_bias_ok`` counts the cells meeting the bias criterion alone, ``worst_asimov_resid_z`` is
    the uncovered bias of the noise-free fit (no toy noise).
    """
    ok = frame[frame.status == "ok"].copy()
    ok["resid_z"] = uncovered_bias(ok)
    out: dict[str, dict[str, float]] = {}
    for name, group in [*ok.groupby("shape"), ("all", ok)]:
        if group.empty:
            continue
        worst = group.loc[group.mean_z.abs().idxmax()]
        worst_asimov = group.loc[group.asimov_z.abs().idxmax()]
        passing = (group.resid_z.abs() <= 0.2) & group.width_z.between(0.9, 1.1)
        out[str(name)] = {
            "worst_mean_z": float(worst.mean_z), "worst_mean_z_mass_mev": float(worst.mass * 1e3),
            "worst_resid_z": float(group.resid_z.abs().max()), "width_mean": float(group.width_z.mean()),
            "worst_asimov_z": float(worst_asimov.asimov_z),
            "worst_asimov_z_mass_mev": float(worst_asimov.mass * 1e3),
            "width_min": float(group.width_z.min()), "width_max": float(group.width_z.max()),
            "sigma_ratio_median": float((group.sigma_A / group.sigma_A_floor).median()),
            "sigma_ratio_max": float((group.sigma_A / group.sigma_A_floor).max()),
            "recovered_min": float(group.recovered.min()), "recovered_max": float(group.recovered.max()),
            "recovered_net_min": float((group.recovered - group.mean_A / group.A_inj).min()),
            "recovered_net_max": float((group.recovered - group.mean_A / group.A_inj).max()),
            "cells": len(group), "cells_passing": int(passing.sum()),
            "cells_bias_ok": int((group.resid_z.abs() <= 0.2).sum()),
            "worst_asimov_resid_z": float(uncovered_bias(group, column="asimov_A").max()),
            "failed_fits": int(group.n_failed.sum()),
        }
    return out


def spurious_relative(frame: Any, *, smooth: int = 1) -> tuple[FloatArray, FloatArray]:
    """S(m)/(ρ σ) per mass: the largest over shapes of the noise-free |Â| (precise) and of the
    toys' |mean Â| beyond its 1σ noise, relative to ρ(m) σ(m); a running maximum over
    ``smooth`` neighbours on each side covers the masses between grid points."""
    ok = frame[frame.status == "ok"].copy()
    noise = ok.sd_A / np.sqrt(ok.n_toys)
    ok["s_abs"] = np.maximum(ok.asimov_A.abs(), (ok.mean_A.abs() - noise).clip(lower=0))
    ok["s_rel"] = ok.s_abs / ok.rho / ok.sigma_m
    per_mass = ok.groupby("mass").s_rel.max().sort_index()
    values = per_mass.to_numpy()
    padded = np.pad(values, smooth, mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * smooth + 1)
    return per_mass.index.to_numpy(dtype=float), windows.max(axis=1)


def write_spurious_table(path: str | Path, masses: FloatArray, relative: FloatArray, *, note: str) -> Path:
    """Write ``mass_gev, spurious_rel`` (read by :func:`hps_bayes.model.load_spurious_table`)."""
    lines = [f"# {note}", "mass_gev,spurious_rel"] + [f"{m:.6f},{r:.6g}" for m, r in zip(masses, relative)]
    return atomic_write_text(path, "\n".join(lines) + "\n")


def study_masses(settings: AnalysisSettings, *, step: float, edge_sigmas: float | None = None) -> FloatArray:
    """The study's grid: the scan grid (``scan.edge_sigmas`` from the ends, or ``edge_sigmas``) in ``step``."""
    from hps_bayes.analysis.grid import mass_grid

    scan = replace(settings.scan, step=step, mass_min=None, mass_max=None,
                   edge_sigmas=settings.scan.edge_sigmas if edge_sigmas is None else edge_sigmas)
    return mass_grid(replace(settings, scan=scan))


def truth_guards(truths: Sequence[Spectrum], settings: AnalysisSettings) -> list[AnalysisSettings]:
    """Each truth's own settings: its turn-on measured on its expected counts (as it would be on data of
    that shape) and the background fit range guarded accordingly (:func:`hps_bayes.scan.guard_turn_on`)."""
    return [guard_turn_on(t, settings, prepared=True) for t in truths]


def run_spurious(settings: AnalysisSettings, reference: Spectrum, *, families: Sequence[str], n_toys: int,
                 step: float, seed: int, inject_sigmas: float = 5.0, edge_sigmas: float | None = None,
                 progress: bool | None = None, n_chunks: int = 1,
                 chunk: int = 0) -> tuple[Any, dict[str, dict[str, float]]]:
    """The study on ``reference``: truths, grid, toys; the per-cell frame (sorted by mass) and :func:`summarise`.

    With ``n_chunks`` > 1 only the ``chunk``-th contiguous piece of the grid
    (:func:`hps_bayes.scan.chunk_of`) is run; its toys are seeded by the masses' places in the
    whole grid, so the chunks' frames concatenated are the one-chunk frame.
    """
    from hps_bayes.analysis.grid import chunk_of

    unknown = sorted(set(families) - set(FAMILIES))
    if unknown or not families:
        raise ConfigError(f"task.families={list(families)}: choose from {list(FAMILIES)}")
    truths = [fit_truth(reference, f) for f in families]
    if edge_sigmas is not None:
        settings = replace(settings, scan=replace(settings.scan, edge_sigmas=edge_sigmas))
    own = truth_guards(truths, settings)
    # the union of the truths' grids: each truth is studied from its own fit range on
    grid = np.unique(np.concatenate([study_masses(s, step=step) for s in own]))
    indices = chunk_of(np.arange(len(grid), dtype=float), n_chunks, chunk).astype(int)
    masses = grid[indices]
    if len(masses) == 0:
        log.warning("spurious-signal study of %s: chunk %d of %d has no masses (%d in the grid)",
                    settings.dataset.name, chunk + 1, n_chunks, len(grid))
        import pandas as pd

        return pd.DataFrame(columns=["shape", "mass", "status"]), {}
    log.info("spurious-signal study of %s (chunk %d/%d): %d shapes x %d of %d masses (%.1f-%.1f MeV) x %d toys "
             "(+ injection)", settings.dataset.name, chunk + 1, n_chunks, len(truths), len(masses), len(grid),
             masses[0] * 1e3, masses[-1] * 1e3, n_toys)
    frame = spurious_study(truths, masses, settings, n_toys=n_toys, seed=seed, inject_sigmas=inject_sigmas,
                           progress=progress, mass_indices=[int(j) for j in indices], truth_settings=own)
    frame = frame.sort_values("mass", kind="stable").reset_index(drop=True)
    return frame, summarise(frame)


def summary_table(summary: dict[str, dict[str, float]]) -> str:
    """The summary as a Markdown table (one row per truth shape)."""
    head = ("| truth | worst mean Â/σ_A (m) | worst noise-free Â/σ_A (m) | uncovered by S | width (mean) "
            "| σ_A/σ_A⁰ median (max) | recovered | cells passing |\n|---|---|---|---|---|---|---|---|")
    rows = [f"| {k} | {v['worst_mean_z']:+.2f} ({v['worst_mean_z_mass_mev']:.0f}) | "
            f"{v['worst_asimov_z']:+.2f} ({v['worst_asimov_z_mass_mev']:.0f}) | {v['worst_resid_z']:.2f} | "
            f"{v['width_min']:.2f}–{v['width_max']:.2f} ({v['width_mean']:.2f}) | {v['sigma_ratio_median']:.2f} "
            f"({v['sigma_ratio_max']:.2f}) | {v['recovered_min']:.2f}–{v['recovered_max']:.2f} | "
            f"{v['cells_passing']}/{v['cells']} |" for k, v in summary.items()]
    return "\n".join([head, *rows])
