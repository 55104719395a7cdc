"""What the closure studies share: window truths, toy fits, limits, masses and chunk tables.

Injection.  At each mass, pseudo-data are drawn from a *background truth*
plus a signal of known yield A_inj, the window model is refit on every pseudo-dataset
(its constraint centres — global observables — drawn too), and per pseudo-experiment

* Â and σ_A (the Hessian error of the free fit, every nuisance profiled),
* the pull (Â − A_inj)/σ_A, which must be N(0, 1) when the model closes,
* Z = √q0 (arXiv:1007.1727, Eqs. 12, 54) and the asymptotic 95% CL CLs limit A_up

are recorded.  The truths (:func:`window_truths`):

* ``fit`` (truth a): the window model's background-only fit θ̂̂(0) of the data; counts
  ``ν(θ̂̂(0))`` and global observables ``N(θ̂̂_aux(0), 1)``, the toy convention of
  the toy calculator — a self-consistency test of the fit and of σ_A;
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
indices (:func:`hps_bayes.analysis.seeds.point_rng`), so results do not depend on chunking.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from hps_bayes.analysis.grid import (
    fit_range,
    mass_grid,
    whole_range_spectrum,
)
from hps_bayes.analysis.point import POINT_FAILURES, TOY_SCAN_POINTS, build_window
from hps_bayes.analysis.settings import AnalysisSettings
from hps_bayes.core import FitData, FloatArray
from hps_bayes.errors import ConfigError, FitError, InputError
from hps_bayes.fit.batch import newton_fit_batch
from hps_bayes.fit.newton import newton_fit
from hps_bayes.inputs.spectrum import Spectrum
from hps_bayes.model.objective import WindowObjective
from hps_bayes.stats import AsymptoticCalculator, ToyCalculator, upper_limit
from hps_bayes.studies.spurious import FAMILIES, fit_truth

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
    except POINT_FAILURES as exc:
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


def study_masses(settings: AnalysisSettings, masses: Sequence[float] | None, n_masses: int) -> FloatArray:
    """``masses`` (GeV) if given, else ``n_masses`` points spread evenly over the scan grid."""
    if masses:
        return np.asarray([float(m) for m in masses])
    grid = mass_grid(settings)
    if n_masses < 1:
        raise ConfigError(f"task.n_masses={n_masses}: use at least 1 (or give task.masses)")
    idx = np.unique(np.round(np.linspace(0, len(grid) - 1, n_masses + 2)[1:-1]).astype(int))
    return np.asarray(grid[idx])


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
