"""``task=spurious``: the spurious-signal study."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hps_bayes.analysis.settings import AnalysisSettings
from hps_bayes.cli.inputs import _demo_options, load_validated
from hps_bayes.cli.task_merge import _merge_chunk
from hps_bayes.results.files import write_json

log = logging.getLogger("hps_bayes")

def task_spurious(settings: AnalysisSettings, cfg: dict[str, Any], out: Path) -> Any:
    """Spurious-signal study (``hps_bayes.studies``): ``spurious.csv``, summary, plots, S(m) table; chunked
    over masses by scan.n_chunks/chunk like ``task=inject`` (each chunk writes ``spurious_chunk<k>of<n>.csv``;
    the last one to finish merges them and writes the rest)."""
    from hps_bayes.model.spurious import spurious_table_path
    from hps_bayes.plots import spurious as plots
    from hps_bayes.studies import spurious as studies

    task, scan, name = cfg.get("task", {}), settings.scan, settings.dataset.name
    data = load_validated(settings, cfg, out) if task.get("reference", "demo") == "data" else None
    families = [f for f in task.get("families", studies.FAMILIES) if data is None or f != "demo"]
    reference = studies.reference_spectrum(settings, _demo_options(cfg), data)
    cells, _ = studies.run_spurious(
        settings, reference, families=families, n_toys=int(task.get("n_toys", 100)),
        step=float(task.get("step", 0.002)), seed=settings.seed, inject_sigmas=float(task.get("inject_sigmas", 5.0)),
        edge_sigmas=task.get("edge_sigmas"), n_chunks=scan.n_chunks, chunk=scan.chunk)
    frame = _merge_chunk(out, "spurious", cells, scan)
    if frame is None:
        return studies.summarise(cells) if len(cells) else {}
    summary = studies.summarise(frame)
    write_json(out / "spurious_summary.json", {"summary": summary, "settings": settings.to_dict(), "task": task})
    fmt = settings.plots.format
    plots.plot_spurious(frame, out / f"spurious_{name}.{fmt}", dataset_label=f"HPS {name}")
    plots.plot_spurious_nuisance(frame, out / f"spurious_nuisance_{name}.{fmt}", dataset_label=f"HPS {name}")
    masses, relative = studies.spurious_relative(frame)
    note = f"S/(rho sigma) from task=spurious on {name} (config {settings.config_hash()}, {task.get('n_toys')} toys)"
    studies.write_spurious_table(out / f"spurious_{name}.csv", masses, relative, note=note)
    if task.get("write_table"):
        target = studies.write_spurious_table(spurious_table_path(name), masses, relative, note=note)
        log.info("spurious-signal table written to %s", target)
    log.info("spurious-signal study of %s:\n%s", name, studies.summary_table(summary))
    log.info("bias criterion alone (|mean A_hat| - S <= 0.2 sigma_A, any width): %s", "; ".join(
        f"{k} {v['cells_bias_ok']}/{v['cells']} (noise-free uncovered max {v['worst_asimov_resid_z']:.2f})"
        for k, v in summary.items()))
    return summary
