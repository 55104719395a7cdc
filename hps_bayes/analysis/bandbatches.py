"""Toy limits and expected bands made in batches of toys, by separate jobs, and pooled.

A mass point's toy limits need ~10k toys per ensemble for the ±2σ expected limits; chunking a
scan over masses spreads the masses over jobs, but every mass still makes all of its toys in one
job.  Here a multirun sweeps ``task=bands task.batch=k`` (:func:`band_batch`): batch k makes
``task.toys_per_batch`` toys of every mass of the grid from its own stream
``[seed, mass in 0.1 keV, BAND_TOYS, k]`` and stores their test statistics at the tested μ
(:class:`~hps_bayes.stats.toys.ToyBatch`) in ``bands/<dataset>/toys_<k>.npz`` (k in four digits); ``task=bands
task.merge=true`` (:func:`pooled_results`) stacks the batches of each mass
(:class:`~hps_bayes.stats.pooled.PooledToyCalculator`) and evaluates the mass point with them, with
the Monte Carlo errors of all toys together.  The tested μ come from the observed data's asymptotic
fits (the same in every job): every batch tests the μ of the limit search and two more on each side
of them (16 values, where one job's toy limit tests about 13), so the pooled search finds every value
it needs; a limit whose crossing lies further out is reported as failed at that mass, with the reason.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from hps_bayes.analysis.batches import check_batch, kept_batch, missing_batches
from hps_bayes.analysis.grid import mass_grid
from hps_bayes.analysis.point import POINT_FAILURES, TOY_SCAN_POINTS, build_window, evaluate_point
from hps_bayes.analysis.seeds import BAND_TOYS, generator, mass_key
from hps_bayes.analysis.settings import AnalysisSettings, settings_from_mapping
from hps_bayes.errors import ConfigError
from hps_bayes.inputs.spectrum import Spectrum
from hps_bayes.model.objective import WindowObjective
from hps_bayes.results.files import atomic_path
from hps_bayes.results.objects import MassPointResult
from hps_bayes.results.progress import progress_bar
from hps_bayes.stats import ToyBatch, ToyCalculator
from hps_bayes.stats.limits import scan_mu_values

log = logging.getLogger(__name__)

#: Where batch k of a dataset's band toys is written, under the run folder.
BATCH_PATTERN = "bands/{dataset}/toys_{batch:04d}.npz"
#: The key entries that belong to a batch, not to the mass points it serves.
BATCH_FIELDS = ("batch", "toys_per_batch", "n_batches", "seed")


def toy_settings(settings: AnalysisSettings, n_toys: int) -> AnalysisSettings:
    """``settings`` with toy limits of ``n_toys`` toys per ensemble (what a batch and the merge record)."""
    return replace(settings, stats=replace(settings.stats, method="toys", n_toys=int(n_toys)))


def batch_path(run_dir: str | Path, dataset: str, batch: int) -> Path:
    return Path(run_dir) / BATCH_PATTERN.format(dataset=dataset, batch=int(batch))


def _batch_of_mass(spec: Spectrum, mass: float, settings: AnalysisSettings, n_toys: int,
                   batch: int) -> ToyBatch:
    """One mass's toys of batch ``batch``: the window and objective of a scan at ``mass``, a toy
    calculator on its own stream, evaluated at every μ a toy limit of :data:`TOY_SCAN_POINTS` values tests
    and at the two values it would add on each side (:func:`~hps_bayes.stats.limits.scan_mu_values`)."""
    objective = WindowObjective(build_window(spec, mass, settings), settings.background)
    calc = ToyCalculator(objective, objective.observed(), n_toys=n_toys,
                         rng=generator(settings.seed, mass_key(mass), BAND_TOYS, batch))
    for mu in scan_mu_values(calc, alpha=settings.stats.alpha, scan=TOY_SCAN_POINTS, method=settings.stats.limit):
        calc.distributions(mu)
    return calc.batch()


def band_batch(spectrum: Spectrum, settings: AnalysisSettings, *, batch: int, toys_per_batch: int,
               run_dir: str | Path, n_batches: int | None = None, progress: bool | None = None
               ) -> tuple[Path, bool]:
    """Batch ``batch`` of the band toys of every mass of the grid, into ``bands/<dataset>/toys_<batch>.npz``.

    A batch already written under the same key (the scan's result key,
    :func:`hps_bayes.analysis.rundir.result_key`, plus batch, size, count and seed) is kept.  A mass
    whose window cannot be fitted is left out of the batch with a warning (the merge pools the batches that
    hold it, or gives it status ``fit_failed`` when none does).  Returns (the file, whether it was computed now).
    """
    from hps_bayes.analysis.scan import prepare_scan

    check_batch(batch, n_batches, "band toy batch")
    if toys_per_batch < 10:
        raise ConfigError(f"task.toys_per_batch = {toys_per_batch}: use at least 10 toys per batch (e.g. 1000; "
                          "10 batches of 1000 give the 10000 toys of a band)")
    prep = prepare_scan(spectrum, config=toy_settings(settings, toys_per_batch))
    masses = mass_grid(prep.settings)
    key = {**prep.key, "batch": int(batch), "toys_per_batch": int(toys_per_batch), "n_batches": n_batches,
           "seed": int(settings.seed)}
    stored = json.dumps(key)
    path = batch_path(run_dir, prep.settings.dataset.name, batch)
    if kept_batch(path, json.loads(stored), masses, "band toy batch"):
        return path, False
    arrays: dict[str, Any] = {"masses": masses, "key": np.array(stored),
                              "settings": np.array(json.dumps(settings.to_dict(), default=str))}
    failures: dict[str, dict[str, int]] = {}
    for i, mass in enumerate(progress_bar(masses, progress, desc=f"band toys {batch}", unit="mass", leave=False)):
        try:
            done = _batch_of_mass(prep.spectrum, float(mass), prep.settings, toys_per_batch, batch)
        except POINT_FAILURES as exc:
            log.warning("band toys: m=%.2f MeV left out of batch %d (%s)", mass * 1e3, batch, exc)
            continue
        arrays |= {f"mu_{i}": done.mu, f"sb_{i}": done.sb, f"b_{i}": done.b, f"q0_{i}": done.q0}
        failures[str(i)] = done.failures
    arrays["failures"] = np.array(json.dumps(failures))
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        np.savez(fh, **arrays)
    return path, True


def _unreadable(path: Path, exc: Exception) -> ConfigError:
    return ConfigError(f"band toy batch {path} cannot be read ({type(exc).__name__}: {exc}); delete it and "
                       "rerun that batch (task=bands task.batch=<its number>)")


def batch_datasets(run_dir: str | Path) -> list[str]:
    """The datasets with band toy batches under ``run_dir``."""
    return sorted(p.name for p in Path(run_dir).glob("bands/*") if any(p.glob("toys_*.npz")))


def batch_settings(run_dir: str | Path, dataset: str) -> tuple[AnalysisSettings, int]:
    """The settings (turn-on guard applied) and toys per batch that ``dataset``'s band toy batches under
    ``run_dir`` were made with, read from the first one: what ``task=merge`` pools them with."""
    path = min(Path(run_dir).glob(f"bands/{dataset}/toys_*.npz"))
    try:
        with np.load(path, allow_pickle=False) as data:
            return (settings_from_mapping(json.loads(str(data["settings"]))),
                    int(json.loads(str(data["key"]))["toys_per_batch"]))
    except (OSError, ValueError, KeyError) as exc:
        raise _unreadable(path, exc) from exc


def read_batches(run_dir: str | Path, dataset: str, key: dict[str, Any]
                 ) -> tuple[dict[float, list[ToyBatch]], dict[str, Any]]:
    """Every band toy batch of ``dataset`` under ``run_dir``, per mass; and a report (batches found, toys
    per mass, missing batch numbers when the batches were made with ``task.n_batches``).

    Raises
    ------
    ConfigError
        No batch, a batch that cannot be read, or one made with other settings, data or version than
        ``key`` (the scan's result key of the merge's settings): the fix is named.
    """
    files = sorted(Path(run_dir).glob(f"bands/{dataset}/toys_*.npz"))
    if not files:
        raise ConfigError(f"no band toy batch (bands/{dataset}/toys_<k>.npz) in {run_dir}; "
                          "make them first: hps-bayes -m task=bands 'task.batch=range(10)' run_dir=... ")
    per_mass: dict[float, list[ToyBatch]] = {}
    made = []
    for path in files:
        try:
            with np.load(path, allow_pickle=False) as data:
                stored = json.loads(str(data["key"]))
                masses = np.asarray(data["masses"], dtype=float)
                failures = json.loads(str(data["failures"]))
                items = {i: ToyBatch(mu=data[f"mu_{i}"], sb=data[f"sb_{i}"], b=data[f"b_{i}"], q0=data[f"q0_{i}"],
                                     failures={k: int(v) for k, v in failures[str(i)].items()})
                         for i in range(masses.size) if f"mu_{i}" in data}
        except (OSError, ValueError, KeyError) as exc:
            raise _unreadable(path, exc) from exc
        if {k: v for k, v in stored.items() if k not in BATCH_FIELDS} != key:
            raise ConfigError(f"band toy batch {path} was made with other settings, data or package version than "
                              "this merge's; pool with task=merge (it reads the batches' own settings), or give "
                              "task=bands task.merge=true the overrides the batches were made with (task.toys_per_batch "
                              "included), or delete the batch")
        for i, item in items.items():
            per_mass.setdefault(round(float(masses[i]), 9), []).append(item)
        made.append(stored)
    totals = [sum(b.n_toys for b in v) for v in per_mass.values()] or [0]
    found, missing = missing_batches(made)
    report = {"n_batches": len(found), "batches": found, "missing_batches": missing,
              "toys_per_mass_min": min(totals), "toys_per_mass_max": max(totals)}
    return per_mass, report


def pooled_results(spectrum: Spectrum, settings: AnalysisSettings, run_dir: str | Path, *, toys_per_batch: int
                   ) -> tuple[list[MassPointResult], dict[str, Any]]:
    """The toy results of every mass of the grid from all band toy batches in ``run_dir`` (the toys of each
    mass stacked, :class:`~hps_bayes.stats.pooled.PooledToyCalculator`), and the batches' report.  The
    settings and ``toys_per_batch`` must be those the batches were made with.  A mass that no batch holds
    gets status ``fit_failed`` with the reason."""
    from hps_bayes.analysis.scan import prepare_scan

    probe = prepare_scan(spectrum, config=toy_settings(settings, toys_per_batch))
    per_mass, report = read_batches(run_dir, probe.settings.dataset.name, probe.key)
    if report["missing_batches"]:
        log.warning("band toy batches %s of dataset %s are missing (rerun task=bands for them); the limits use "
                    "the %d batches there", report["missing_batches"], probe.settings.dataset.name,
                    report["n_batches"])
    results = []
    for mass in mass_grid(probe.settings):
        batches = per_mass.get(round(float(mass), 9), [])
        total = sum(b.n_toys for b in batches)
        if not batches:
            results.append(MassPointResult(dataset=probe.settings.dataset.name, mass=float(mass), status="fit_failed",
                                           message="no band toy batch holds this mass (its window could not be "
                                                   "fitted in any batch job: see their logs)",
                                           seed=settings.seed, config_hash=probe.settings.config_hash()))
            continue
        results.append(evaluate_point(probe.spectrum, float(mass), toy_settings(probe.settings, total),
                                      weight_scale=probe.weight_scale, toy_batches=batches))
    return results, report
