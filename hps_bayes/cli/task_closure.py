"""``task=inject`` and ``task=coverage``: closure studies."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from hps_bayes.analysis.grid import chunk_of
from hps_bayes.analysis.settings import AnalysisSettings
from hps_bayes.cli.inputs import load_guarded
from hps_bayes.cli.task_merge import _merge_chunk
from hps_bayes.cli.task_settings import CoverageTask, InjectTask
from hps_bayes.results.files import write_json, write_table

log = logging.getLogger("hps_bayes")

def task_inject(settings: AnalysisSettings, task: InjectTask, cfg: dict[str, Any], out: Path) -> Any:
    """Signal injection and extraction (:mod:`hps_bayes.closure`): ``inject.csv`` (one row per mass, truth
    and A_inj), ``inject_toys.csv``, pull and linearity plots; chunked over masses by scan.n_chunks/chunk
    (each chunk writes ``inject_chunk<k>of<n>.csv``; the last one to finish merges them)."""
    from hps_bayes.plots import closure as plots_closure
    from hps_bayes.studies import closure
    from hps_bayes.studies import injection as closure_injection

    scan, name = settings.scan, settings.dataset.name
    data, settings = load_guarded(settings, cfg, out)
    masses = closure.study_masses(settings, task.masses, task.n_masses)
    closure.check_inputs(data, settings, masses)
    mine = chunk_of(masses, scan.n_chunks, scan.chunk)
    log.info("inject (chunk %d/%d): %d masses %s MeV, truths %s, yields %s %s, %d toys per cell", scan.chunk + 1,
             scan.n_chunks, len(mine), np.round(mine * 1e3, 2).tolist(), list(task.truths),
             list(task.yields), task.units, task.n_toys)
    cells, toys = closure_injection.run_injection(
        data, settings, masses=mine, truths=list(task.truths), yields=[float(v) for v in task.yields],
        units=task.units, n_toys=task.n_toys, limits=task.limits)
    cells["config_hash"], cells["seed"] = settings.config_hash(), settings.seed
    if task.write_toys:
        write_table(out / closure.chunk_table("inject_toys", scan.chunk, scan.n_chunks), toys)
    frame = _merge_chunk(out, "inject", cells, scan)
    if frame is None:
        return cells
    summary = closure_injection.injection_summary(frame)
    write_json(out / "inject_summary.json", {"summary": summary, "settings": settings.to_dict(), "task": asdict(task)})
    fmt = settings.plots.format
    plots_closure.plot_injection_pulls(frame, out / f"inject_pulls_{name}.{fmt}", dataset_label=f"HPS {name}")
    plots_closure.plot_injection_linearity(frame, out / f"inject_linearity_{name}.{fmt}", dataset_label=f"HPS {name}")
    log.info("injection closure of %s (pull = (A_hat - A_inj)/sigma_A):\n%s", name, closure_injection.injection_table(summary))
    return frame


def task_coverage(settings: AnalysisSettings, task: CoverageTask, cfg: dict[str, Any], out: Path) -> Any:
    """Coverage of the 95% CL limits (:mod:`hps_bayes.closure`): ``coverage.csv``, ``coverage_<dataset>.png``;
    known-background models and the window model, asymptotic and toy limits; chunked over masses."""
    from hps_bayes.plots import closure as plots_closure
    from hps_bayes.studies import closure
    from hps_bayes.studies import coverage as closure_coverage

    scan, name = settings.scan, settings.dataset.name
    data, settings = load_guarded(settings, cfg, out)
    masses = closure.study_masses(settings, task.masses, task.n_masses)
    closure.check_inputs(data, settings, masses)
    mine = chunk_of(masses, scan.n_chunks, scan.chunk)
    n_exp = {"asymptotic": task.n_experiments, "toys": task.n_experiments_toys}
    log.info("coverage (chunk %d/%d): masses %s MeV, truth %s, A_true/sigma_A %s, methods %s, experiments %s, "
             "%s toys per limit", scan.chunk + 1, scan.n_chunks, np.round(mine * 1e3, 2).tolist(),
             task.truth, list(task.true_sigmas), list(task.methods), n_exp, task.n_toys)
    frame = closure_coverage.run_coverage(
        data, settings, masses=mine, truth=task.truth, true_sigmas=[float(v) for v in task.true_sigmas],
        methods=list(task.methods), n_experiments=n_exp, n_toys=task.n_toys,
        known_scales=[float(v) for v in task.known_scales])
    frame["config_hash"], frame["seed"] = settings.config_hash(), settings.seed
    merged = _merge_chunk(out, "coverage", frame, scan)
    if merged is None:
        return frame
    plots_closure.plot_coverage(merged, out / f"coverage_{name}.{settings.plots.format}", dataset_label=f"HPS {name}",
                                cl=1 - settings.stats.alpha)
    log.info("coverage of the %.0f%% CL limits on %s:\n%s", 100 * (1 - settings.stats.alpha), name,
             closure_coverage.coverage_table(merged))
    return merged
