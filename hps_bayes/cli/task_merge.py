"""``task=merge``: the results of a chunked run in one table."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

from hps_bayes.analysis.checks import flag_local_pulls_frame
from hps_bayes.analysis.rundir import (
    collect_points,
)
from hps_bayes.analysis.settings import AnalysisSettings, settings_from_mapping
from hps_bayes.cli.inputs import IncompleteRunError, _locked
from hps_bayes.cli.task_scan import _summary_plots, record_look_elsewhere
from hps_bayes.cli.task_settings import MergeTask
from hps_bayes.errors import ConfigError
from hps_bayes.results.export import export_scan
from hps_bayes.results.files import read_json, write_json, write_table

log = logging.getLogger("hps_bayes")

def run_settings(run_dir: Path, settings: AnalysisSettings) -> list[AnalysisSettings]:
    """The settings of every scan recorded in ``run_dir`` (``scan_<dataset>.json``), else the configured one.

    The run's own settings define its grid and config hash; plots follow the current config.
    """
    found = []
    for path in sorted(run_dir.glob("scan_*.json")):
        recorded = settings_from_mapping(read_json(path)["settings"])
        found.append(replace(recorded, plots=settings.plots))
    if not found:
        log.warning("no scan_<dataset>.json in %s: merging the configured grid of dataset %s", run_dir,
                    settings.dataset.name)
    return found or [settings]


def task_merge(settings: AnalysisSettings, task: MergeTask, cfg: dict[str, Any], out: Path) -> Any:
    """Collect a chunked run's ``numbers.json`` into ``results_single.csv`` (+ ``.parquet``, ``hepdata/``),
    summary plots and ``merge_report.json``; missing and failed points are reported (an error with ``task.strict=true``)."""
    import pandas as pd

    if not cfg.get("run_dir") or not out.is_dir():
        raise ConfigError(f"task=merge needs the folder of the run to merge, e.g. run_dir=multirun/2026-01-31/"
                          f"12-00-00; got run_dir={cfg.get('run_dir')!r}" + ("" if out.is_dir() else " (not found)"))
    from hps_bayes.analysis.bandbatches import batch_datasets

    bands = batch_datasets(out)
    if bands and not any(out.glob("scan_*.json")):  # a folder of band toy batches only
        return _merge_bands(out, bands, settings)
    frames, reports = [], []
    for run in run_settings(out, settings):
        frame, report = collect_points(out, run)
        frame = flag_local_pulls_frame(frame) if len(frame) else frame  # over the masses of all chunks
        _refuse_mixed(out, report)
        frames.append(frame)
        reports.append(report)
        _summary_plots(frame, run, out)
        _log_merge(report)
        report["look_elsewhere"] = _merge_look_elsewhere(out, frame, run, report)
    merged = pd.concat(frames, ignore_index=True)
    write_table(out / "results_single.csv", merged)
    export_scan(merged, out)
    complete = all(r["complete"] for r in reports)
    write_json(out / "merge_report.json", {"run_dir": str(out), "complete": complete, "datasets": reports})
    log.info("merged %d mass points into %s (%s)", len(merged), out / "results_single.csv",
             "complete" if complete else "INCOMPLETE: rerun the scan command to fill the gaps")
    if not complete and task.strict:
        raise IncompleteRunError(f"run {out} is incomplete (task.strict=true): see merge_report.json")
    if bands:
        _merge_bands(out, bands, settings)
    return merged


def _merge_bands(out: Path, datasets: list[str], settings: AnalysisSettings) -> Any:
    """The band toy batches of the run folder (``task=bands task.batch=k``) pooled with the settings they were
    made with (:func:`hps_bayes.cli.task_bands.pooled_bands`): ``bands.csv``, plots, ``bands_report.json``."""
    from hps_bayes.analysis.bandbatches import batch_settings
    from hps_bayes.cli.task_bands import pooled_bands
    from hps_bayes.inputs.root_io import load_spectrum

    if len(datasets) > 1:
        raise ConfigError(f"run folder {out} holds band toy batches of {len(datasets)} datasets ({datasets}); bands.csv "
                          "holds one: make each dataset's band batches in its own run_dir")
    made, toys_per_batch = batch_settings(out, datasets[0])
    made = replace(made, plots=settings.plots)
    return pooled_bands(load_spectrum(made.dataset.path, made.dataset.hist_name), made, out,
                        toys_per_batch=toys_per_batch)


def _refuse_mixed(out: Path, report: dict[str, Any]) -> None:
    """Refuse to merge points of one dataset computed with other settings, data, tables or version."""
    stale, keys = report["stale"], report["keys"]
    if stale or len(keys) > 1:
        what = (f"{len(stale)} mass points computed with other settings (e.g. {stale[0] * 1e3:.2f} MeV)" if stale
                else f"points of {len(keys)} different inputs (spectrum content, tables or version differ)")
        raise ConfigError(f"run folder {out} mixes results of dataset {report['dataset']}: {what}; merge only "
                          "one run's results: rerun the differing chunks with the run's settings and data "
                          "(overwrite=true), or put each run in its own run_dir")


def _merge_look_elsewhere(out: Path, frame: Any, settings: AnalysisSettings,
                          report: dict[str, Any]) -> dict[str, Any] | None:
    """The batches of look-elsewhere toy scans in the run folder (``task=lee``), stacked, on the scan's
    masses with a result: the global significance of its largest excess into ``summary.json``.
    Returns the batches' report (None when there are none)."""
    from hps_bayes.analysis.toyscans import merge_toy_scan_batches
    from hps_bayes.stats.lee import look_elsewhere

    ok = frame[frame.status == "ok"]
    z_toys, batches = merge_toy_scan_batches(out, settings.dataset.name, report["keys"], ok.mass.to_numpy())
    if batches["n_batches"] == 0:
        return None
    if len(ok) == 0:
        log.warning("dataset %s: %d toy-scan batches but no mass point with a result: no global significance",
                    settings.dataset.name, batches["n_batches"])
        return batches
    if not report["complete"]:
        log.warning("dataset %s: the scan is incomplete; the global significance covers its %d masses with a "
                    "result only", settings.dataset.name, len(ok))
    if batches["missing_batches"]:
        log.warning("dataset %s: toy-scan batches %s are missing (rerun task=lee for them); the global p-value "
                    "uses the %d batches there", settings.dataset.name, batches["missing_batches"],
                    batches["n_batches"])
    lee = look_elsewhere(ok.mass.to_numpy(), ok.Z.to_numpy(), z_toys, ok.sigma_m.to_numpy(),
                         c0=settings.stats.lee_c0)
    record_look_elsewhere(out, settings, lee, n_masses=len(ok), source={"seed": settings.seed, **batches})
    return {**batches, "p_global_toys": lee.p_global_toys, "p_global_toys_error": lee.p_global_toys_error}


def _log_merge(report: dict[str, Any]) -> None:
    log.info("dataset %s: %d of %d mass points ok, %d missing, %d failed", report["dataset"], report["n_ok"],
             report["n_points"], report["n_missing"], report["n_failed"])
    if report["missing"] or report["stale"]:
        masses = ", ".join(f"{m * 1e3:.2f}" for m in report["missing"] + report["stale"])
        log.warning("dataset %s: missing mass points [MeV]: %s", report["dataset"], masses)
    for bad in report["failed"]:
        log.warning("dataset %s: m=%.2f MeV failed: %s (%s)", report["dataset"], bad["mass"] * 1e3,
                    bad["status"], bad["message"])


def _merge_chunk(out: Path, stem: str, frame: Any, scan: Any) -> Any:
    """Write this chunk's ``<stem>`` table and, when every chunk of the run is done, merge them into
    ``<stem>.csv`` (under a lock: the last chunk to finish merges).  Returns the merged table, or
    None while other chunks are still running."""
    from hps_bayes.studies import closure

    with _locked(out / f"{stem}.csv"):
        write_table(out / closure.chunk_table(stem, scan.chunk, scan.n_chunks), frame)
        merged = closure.merge_chunks(out, stem, scan.n_chunks)
        if merged is not None and scan.n_chunks > 1:
            write_table(out / f"{stem}.csv", merged)
    if merged is None:
        log.info("%s chunk %d/%d done; the last chunk to finish merges the run", stem, scan.chunk + 1, scan.n_chunks)
    return merged
