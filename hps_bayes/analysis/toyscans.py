"""Background-only toy scans for the look-elsewhere effect."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import numpy as np

from hps_bayes.analysis.grid import mass_grid, prepare_spectrum
from hps_bayes.analysis.point import build_window
from hps_bayes.analysis.settings import AnalysisSettings
from hps_bayes.core import FloatArray
from hps_bayes.errors import ConfigError, InputError
from hps_bayes.fit.newton import newton_fit
from hps_bayes.inputs.spectrum import Spectrum
from hps_bayes.model.objective import WindowObjective

log = logging.getLogger(__name__)

def _null_truth(spec: Spectrum, grid: FloatArray, settings: AnalysisSettings) -> tuple[FloatArray, list[Any]]:
    """Background-only truth per bin and, per mass, (objective, θ̂̂(0), first bin) or None.

    Bin i's truth is the background of the A = 0 fit of the observed window whose mass is
    nearest to the bin centre among the windows that contain the bin; bins in no window
    keep their observed counts (no fit ever sees them).
    """
    centers = 0.5 * (spec.edges[1:] + spec.edges[:-1])
    fits: list[Any] = []
    for mass in grid:
        try:
            obj = WindowObjective(build_window(spec, float(mass), settings), settings.background)
        except InputError as exc:
            log.warning("toy scans: m=%.2f MeV left out (%s)", mass * 1e3, exc)
            fits.append(None)
            continue
        fit = newton_fit(obj, obj.observed(), poi_fixed=0.0)
        first = int(np.searchsorted(spec.edges, obj.window.edges[0] + 1e-12 * abs(obj.window.edges[0])) - 1)
        fits.append((obj, fit.theta, first) if fit.converged else None)
    truth = np.array(spec.counts, dtype=float)
    best = np.full(len(centers), np.inf)
    for mass, item in zip(grid, fits, strict=True):
        if item is None:
            continue
        obj, theta, first = item
        rows = np.arange(first, first + obj.window.n_bins)
        closer = np.abs(centers[rows] - mass) < best[rows]
        truth[rows[closer]] = obj.background(theta)[closer]
        best[rows[closer]] = np.abs(centers[rows[closer]] - mass)
    return truth, fits


def toy_scans(spectrum: Spectrum, settings: AnalysisSettings, *, n_scans: int, rng: np.random.Generator,
              masses: Iterable[float] | None = None, progress: bool | None = None) -> FloatArray:
    """Local significance Z(m) = √q0(m) of background-only toy spectra, shape (n_scans, n_masses).

    The toy spectra are Poisson draws, over the whole (rebinned, cropped) spectrum, from the
    background-only fit of the observed data: per bin, the A = 0 fit of the window centred
    nearest to that bin (:func:`_null_truth`).  Each toy is then analysed like the data at every
    mass of the grid (or ``masses``): the window's fits at A = 0 and free, with the constraint
    centres of the observed analysis, give the asymptotic q0 (arXiv:1007.1727, Eq. 12); all toy
    scans at one mass form one batched fit (:func:`hps_bayes.stats.toys.q0_batch`).  Points
    whose fit failed are NaN (counted in the log); masses whose window cannot be built are NaN.

    Parameters
    ----------
    spectrum : the spectrum as read (rebinned and cropped here, as :func:`run_scan` does).
    settings : the scan's settings.
    n_scans : number of toy scans.
    rng : the source of the toys (same seed, same scans).
    masses : the masses (GeV); the scan grid when None.
    progress : progress bar (None: only on a terminal).
    """
    from tqdm.auto import tqdm

    from hps_bayes.stats.toys import q0_batch

    if n_scans < 1:
        raise ConfigError(f"toy_scans: n_scans = {n_scans}; use at least 1 (e.g. stats.lee_toys=1000)")
    spec = prepare_spectrum(spectrum, settings)
    grid = mass_grid(settings) if masses is None else np.asarray(list(masses), dtype=float)
    truth, fits = _null_truth(spec, grid, settings)
    toys = rng.poisson(truth, size=(n_scans, truth.size)).astype(np.int32)
    z = np.full((n_scans, grid.size), np.nan)
    n_failed = 0
    disable = None if progress is None else not progress
    for j, item in enumerate(tqdm(fits, desc="toy scans", unit="mass", disable=disable, leave=False)):
        if item is None:
            continue
        obj, theta, first = item
        counts = toys[:, first:first + obj.window.n_bins].astype(float)
        aux = np.broadcast_to(obj.observed().aux, (n_scans, obj.model.n_aux))
        q0, failed = q0_batch(obj, counts, aux, init=theta)
        z[:, j] = np.where(failed, np.nan, np.sqrt(q0))
        n_failed += int(np.count_nonzero(failed))
    if n_failed:
        log.warning("toy scans: %d of %d toy fits failed (left out as NaN)", n_failed, z.size)
    return z
