"""Background-only toy scans for the look-elsewhere effect, in one process or in batches.

A multirun sweeps ``task=lee``'s ``task.batch`` (:func:`toy_scan_batch`); each job writes its batch
of toy scans under the run folder, and ``task=merge`` stacks them (:func:`merge_toy_scan_batches`)
for the global significance of the scan's largest excess with the Monte Carlo error of all batches.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hps_bayes.analysis.batches import check_batch, kept_batch, missing_batches
from hps_bayes.analysis.grid import mass_grid, prepare_spectrum
from hps_bayes.analysis.point import build_window
from hps_bayes.analysis.settings import AnalysisSettings
from hps_bayes.core import FloatArray
from hps_bayes.errors import ConfigError, InputError
from hps_bayes.fit.newton import newton_fit
from hps_bayes.inputs.spectrum import Spectrum
from hps_bayes.model.objective import WindowObjective
from hps_bayes.results.files import atomic_path
from hps_bayes.results.progress import progress_bar

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
    from hps_bayes.stats.toys import q0_batch

    if n_scans < 1:
        raise ConfigError(f"toy_scans: n_scans = {n_scans}; use at least 1 (e.g. stats.lee_toys=1000)")
    spec = prepare_spectrum(spectrum, settings)
    grid = mass_grid(settings) if masses is None else np.asarray(list(masses), dtype=float)
    truth, fits = _null_truth(spec, grid, settings)
    toys = rng.poisson(truth, size=(n_scans, truth.size)).astype(np.int32)
    z = np.full((n_scans, grid.size), np.nan)
    n_failed = 0
    for j, item in enumerate(progress_bar(fits, progress, desc="toy scans", unit="mass", leave=False)):
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


# --- toy scans in batches: one multirun job per batch, merged by task=merge -----------------------------

#: The file of batch ``k`` of a dataset's toy scans, under the run folder.
BATCH_PATTERN = "lee/{dataset}/toys_{batch:04d}.npz"


@dataclass(frozen=True)
class ToyScanBatch:
    """One batch of look-elsewhere toy scans as written: local Z (n_scans, n_masses) on ``masses``,
    and the key it was made under (the scan's result key, ``batch``, ``n_scans``, ``n_batches``)."""

    z: FloatArray
    masses: FloatArray
    key: dict[str, Any]

    @property
    def point_key(self) -> dict[str, Any]:
        """The part of the key a mass point's ``numbers.json`` shares (settings, input, tables, version)."""
        return {k: v for k, v in self.key.items() if k not in BATCH_FIELDS}


#: The key entries that belong to a batch, not to the scan it goes with.
BATCH_FIELDS = ("batch", "n_scans", "n_batches", "seed")


def batch_path(run_dir: str | Path, dataset: str, batch: int) -> Path:
    return Path(run_dir) / BATCH_PATTERN.format(dataset=dataset, batch=int(batch))


def read_batch(path: str | Path) -> ToyScanBatch:
    """A batch file written by :func:`toy_scan_batch`."""
    with np.load(path, allow_pickle=False) as data:
        return ToyScanBatch(z=np.asarray(data["z"], dtype=float), masses=np.asarray(data["masses"], dtype=float),
                            key=json.loads(str(data["key"])))


def toy_scan_batch(spectrum: Spectrum, settings: AnalysisSettings, *, batch: int, n_scans: int,
                   run_dir: str | Path, n_batches: int | None = None,
                   progress: bool | None = None) -> tuple[ToyScanBatch, bool]:
    """Batch ``batch`` of the look-elsewhere toy scans of a run: ``n_scans`` toy scans over the scan's
    whole grid (:func:`toy_scans`), written to ``<run_dir>/lee/<dataset>/toys_<batch>.npz``.

    The batch's toys come from the stream ``[seed, 0, LEE_SCANS, batch]``
    (:mod:`hps_bayes.analysis.seeds`), so a batch is the same whichever job, chunking or rerun makes it,
    and batches are independent of each other.  A batch already written under the same key (the
    scan's result key, :func:`hps_bayes.analysis.rundir.result_key`, plus batch, size and count)
    is read back instead of recomputed.  Returns (the batch, whether it was computed now).
    """
    from hps_bayes.analysis.scan import prepare_scan
    from hps_bayes.analysis.seeds import LEE_SCANS, generator

    check_batch(batch, n_batches, "toy-scan batch")
    prep = prepare_scan(spectrum, config=settings)
    masses = mass_grid(prep.settings)
    entropy = [int(settings.seed), 0, LEE_SCANS, int(batch)]
    key = {**prep.key, "batch": int(batch), "n_scans": int(n_scans), "n_batches": n_batches, "seed": entropy}
    stored = json.dumps(key)
    path = batch_path(run_dir, prep.settings.dataset.name, batch)
    if kept_batch(path, json.loads(stored), masses, "toy-scan batch"):
        return read_batch(path), False
    z = toy_scans(spectrum, prep.settings, n_scans=n_scans, rng=generator(*entropy), masses=masses,
                  progress=progress)
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        np.savez(fh, z=z, masses=masses, key=np.array(stored))
    return ToyScanBatch(z=z, masses=masses, key=json.loads(stored)), True


def merge_toy_scan_batches(run_dir: str | Path, dataset: str, keys: list[dict[str, Any]],
                           masses: FloatArray) -> tuple[FloatArray, dict[str, Any]]:
    """The toy scans of every batch of ``dataset`` under ``run_dir`` on ``masses`` (the observed
    scan's masses with a result), stacked: shape (total scans, len(masses)); and a report (batches
    found, toy scans, missing batch numbers when the batches were made with ``task.n_batches``).

    Raises
    ------
    ConfigError
        A batch made with other settings, data or version than the scan's points (``keys``), or on
        a grid that lacks one of ``masses``: the fix is named.
    """
    files = sorted(Path(run_dir).glob(f"lee/{dataset}/toys_*.npz"))
    report: dict[str, Any] = {"n_batches": 0, "n_toy_scans": 0, "batches": [], "missing_batches": []}
    if not files:
        return np.zeros((0, len(masses))), report
    blocks, made = [], []
    masses = np.asarray(masses, dtype=float)
    for path in files:
        try:
            done = read_batch(path)
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"toy-scan batch {path} cannot be read ({type(exc).__name__}: {exc}); delete it and "
                              "rerun that batch (task=lee task.batch=<its number>) with the scan's settings") from exc
        if done.point_key not in keys:
            raise ConfigError(f"toy-scan batch {path} was made with other settings, data or package version than "
                              f"the scan's mass points in {run_dir}; delete it or rerun the batch with the scan's "
                              "settings (task=lee with the same overrides)")
        columns = [np.flatnonzero(np.isclose(done.masses, m, rtol=0, atol=1e-9)) for m in masses]
        if any(c.size == 0 for c in columns):
            raise ConfigError(f"toy-scan batch {path} lacks some of the scan's masses (its grid: "
                              f"{done.masses[0] * 1e3:.2f}-{done.masses[-1] * 1e3:.2f} MeV, {done.masses.size} masses); "
                              "rerun the batches with the scan's grid settings")
        blocks.append(done.z[:, [int(c[0]) for c in columns]])
        made.append(done.key)
    report["n_batches"] = len(blocks)
    report["batches"], report["missing_batches"] = missing_batches(made)
    z = np.vstack(blocks)
    report["n_toy_scans"] = int(z.shape[0])
    return z, report
