"""``task=bands``: toy expected bands, in one job or in batches of toys pooled by ``task.merge=true``."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from hps_bayes.analysis.grid import mass_grid
from hps_bayes.analysis.scan import run_scan
from hps_bayes.analysis.settings import AnalysisSettings
from hps_bayes.cli.inputs import load_guarded
from hps_bayes.cli.task_scan import _log_summary
from hps_bayes.cli.task_settings import BandsTask
from hps_bayes.errors import ConfigError
from hps_bayes.results.files import write_json, write_table

log = logging.getLogger("hps_bayes")

def task_bands(settings: AnalysisSettings, task: BandsTask, cfg: dict[str, Any], out: Path) -> Any:
    """Toy-based expected limits (median, ±1σ, ±2σ) beside the asymptotic ones over the dataset's grid.

    ``task.n_toys`` (null: ``stats.n_toys``, 1000 if that is 0) background-only and s+b toys per
    mass and tested A.  Writes ``bands.csv`` (one row per mass and ``method``, the columns of
    ``results_single.csv``, with ``A_up_error`` the toy limit's MC error) and Brazil plots of A and ε²
    (``summary_plots/bands_{A,eps2}_<dataset>``): toy band and observed limit, asymptotic band over it.

    With ``task.batch=k`` this job only makes batch k (``task.toys_per_batch`` toys of every mass,
    :func:`hps_bayes.analysis.bandbatches.band_batch`); ``task.merge=true`` then pools every batch in the
    run folder into the same outputs, with ``bands_report.json`` (batches found, missing, toys per mass);
    ``task=merge`` of the folder does the same with the batches' own settings.
    """
    if task.batch is not None and task.merge:
        raise ConfigError("task.batch and task.merge=true together: a batch job makes one batch (task.batch=k), "
                          "the merge (task.merge=true, task.batch=null) pools them")
    spectrum, settings = load_guarded(settings, cfg, out)
    if task.batch is not None:
        return _one_batch(spectrum, settings, task, task.batch, out)
    if task.merge:
        return pooled_bands(spectrum, settings, out, toys_per_batch=task.toys_per_batch)
    n_toys = int(task.n_toys or settings.stats.n_toys or 1000)
    toys = run_scan(spectrum, masses=mass_grid(settings), config=replace(
        settings, stats=replace(settings.stats, method="toys", n_toys=n_toys)))
    return write_bands(spectrum, settings, out, toys, n_toys)


def pooled_bands(spectrum: Any, settings: AnalysisSettings, out: Path, *, toys_per_batch: int) -> Any:
    """The band toy batches in ``out`` pooled (:func:`hps_bayes.analysis.bandbatches.pooled_results`) into
    ``bands.csv``, the plots and ``bands_report.json``: ``task=bands task.merge=true`` and ``task=merge``."""
    from hps_bayes.analysis.bandbatches import pooled_results
    from hps_bayes.results.objects import results_frame

    results, report = pooled_results(spectrum, settings, out, toys_per_batch=toys_per_batch)
    log.info("bands of dataset %s from %d toy batches %s: %d-%d toys per mass", settings.dataset.name,
             report["n_batches"], report["batches"], report["toys_per_mass_min"], report["toys_per_mass_max"])
    write_json(out / "bands_report.json", report)
    return write_bands(spectrum, settings, out, results_frame(results), int(report["toys_per_mass_min"]))


def write_bands(spectrum: Any, settings: AnalysisSettings, out: Path, toys: Any, n_toys: int) -> Any:
    """``bands.csv`` and the Brazil plots of the toy results ``toys`` beside an asymptotic scan of the grid."""
    import pandas as pd

    from hps_bayes.plots import scan as plots

    _warn_few_toys(n_toys, settings.stats.alpha)
    masses = mass_grid(settings)
    log.info("bands of dataset %s: %d masses (%.1f-%.1f MeV), %d toys per ensemble", settings.dataset.name,
             len(masses), masses[0] * 1e3, masses[-1] * 1e3, n_toys)
    frames = {"asymptotic": run_scan(spectrum, masses=masses, config=replace(
        settings, stats=replace(settings.stats, method="asymptotic", n_toys=0))), "toys": toys}
    table = pd.concat(list(frames.values()), ignore_index=True).sort_values(["mass", "method"], kind="stable")
    write_table(out / "bands.csv", table)
    name, ext = settings.dataset.name, settings.plots.format
    for quantity, short in (("A_up", "A"), ("eps2_up", "eps2")):
        plots.plot_limit_bands(frames["toys"], frames["asymptotic"], out / "summary_plots" /
                               f"bands_{short}_{name}.{ext}", quantity=quantity,  # type: ignore[arg-type]
                               dataset_label=f"HPS {name}")
    _log_summary(frames["toys"].to_dict("records"))
    return table


def _warn_few_toys(n_toys: int, alpha: float) -> None:
    needed = int(np.ceil(10.0 / (alpha * 0.02275)))
    if n_toys < needed:  # p_{s+b} ≈ α Φ(−2) at the −2σ expected limit must be resolved by ~10 toys
        log.warning("bands with %d toys: the -2 sigma (and -1 sigma) expected limits are biased low: p_s+b near "
                    "alpha*Phi(-2) = %.1e is resolved only with >= %d toys (stats.n_toys=10000)", n_toys,
                    alpha * 0.02275, needed)


def _one_batch(spectrum: Any, settings: AnalysisSettings, task: BandsTask, batch: int, out: Path) -> Path:
    """``task.batch``: batch k of the toys of every mass (:func:`hps_bayes.analysis.bandbatches.band_batch`)."""
    from hps_bayes.analysis.bandbatches import band_batch

    path, computed = band_batch(spectrum, settings, batch=batch, toys_per_batch=task.toys_per_batch,
                                run_dir=out, n_batches=task.n_batches)
    log.info("band toy batch %d%s of dataset %s (%d toys per mass) %s %s; pool the batches with "
             "task=bands task.merge=true run_dir=%s", batch, f"/{task.n_batches}" if task.n_batches else "",
             settings.dataset.name, task.toys_per_batch, "written to" if computed else "reused from", path, out)
    return path
