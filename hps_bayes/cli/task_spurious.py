"""``task=spurious``: the spurious-signal study."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hps_bayes.analysis.settings import AnalysisSettings
from hps_bayes.cli.inputs import _demo_options, load_validated
from hps_bayes.cli.task_merge import _merge_chunk
from hps_bayes.cli.task_settings import SpuriousTask
from hps_bayes.results.files import write_json

log = logging.getLogger("hps_bayes")


def task_spurious(settings: AnalysisSettings, task: SpuriousTask, cfg: dict[str, Any], out: Path) -> Any:
    """Spurious-signal study (``hps_bayes.studies``): ``spurious.csv``, summary, plots and the S(m) table
    ``spurious_<dataset>.csv``, all in the run folder ``out`` (never in the installed package); chunked
    over masses by scan.n_chunks/chunk like ``task=inject`` (each chunk writes ``spurious_chunk<k>of<n>.csv``;
    the last one to finish merges them and writes the rest)."""
    from hps_bayes.plots import spurious as plots
    from hps_bayes.studies import spurious as studies

    scan, name = settings.scan, settings.dataset.name
    data = load_validated(settings, cfg, out) if task.reference == "data" else None
    families = [f for f in task.families if data is None or f != "demo"]
    reference = studies.reference_spectrum(settings, _demo_options(cfg), data)
    cells, _ = studies.run_spurious(
        settings, reference, families=families, n_toys=task.n_toys, step=task.step, seed=settings.seed,
        inject_sigmas=task.inject_sigmas, edge_sigmas=task.edge_sigmas, n_chunks=scan.n_chunks, chunk=scan.chunk)
    frame = _merge_chunk(out, "spurious", cells, scan)
    if frame is None:
        return studies.summarise(cells) if len(cells) else {}
    summary = studies.summarise(frame)
    write_json(out / "spurious_summary.json", {"summary": summary, "settings": settings.to_dict(), "task": asdict(task)})
    fmt = settings.plots.format
    plots.plot_spurious(frame, out / f"spurious_{name}.{fmt}", dataset_label=f"HPS {name}")
    plots.plot_spurious_nuisance(studies.with_nuisance_columns(frame), out / f"spurious_nuisance_{name}.{fmt}",
                                 dataset_label=f"HPS {name}")
    masses, relative = studies.spurious_relative(frame)
    note = (f"S/(rho sigma) from task=spurious on {name} (config {settings.config_hash()}, {task.n_toys} toys); "
            f"background: {settings.background.label()}")
    table = studies.write_spurious_table(out / f"spurious_{name}.csv", masses, relative, note=note)
    if task.write_table:  # the run folder only: the tables shipped in hps_bayes/data are read-only defaults
        log.info("spurious-signal table written to %s; use it with background.spurious_table=%s",
                 table, table.resolve())
    log.info("spurious-signal study of %s:\n%s", name, studies.summary_table(summary))
    log.info("bias criterion alone (|mean A_hat| - S <= 0.2 sigma_A, any width): %s", "; ".join(
        f"{k} {v['cells_bias_ok']}/{v['cells']} (noise-free uncovered max {v['worst_asimov_resid_z']:.2f})"
        for k, v in summary.items()))
    return summary
