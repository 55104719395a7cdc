"""``task=select``: the background model chosen per mass from the data."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hps_bayes.analysis.settings import AnalysisSettings
from hps_bayes.cli.inputs import load_validated
from hps_bayes.cli.task_settings import SelectTask
from hps_bayes.errors import ConfigError
from hps_bayes.inputs.validation import poisson_equivalent
from hps_bayes.results.files import atomic_path, content_hash, write_json

log = logging.getLogger("hps_bayes")


def task_select(settings: AnalysisSettings, task: SelectTask, cfg: dict[str, Any], out: Path) -> dict[str, Any]:
    """Run the selection (:mod:`hps_bayes.studies.selection`) on ``dataset.path`` and write
    ``selection_<dataset>.json`` (read by ``background.selection``), ``selection_<dataset>.csv`` (one row per
    mass), ``selection_cells.csv`` (every candidate at every mass) and the figure ``selection_<dataset>.<fmt>``."""
    import pandas as pd

    from hps_bayes.plots.selection import plot_selection
    from hps_bayes.studies.selection import Criteria, masses_without_a_good_truth, run_selection

    if settings.background.selection:
        log.info("task=select ignores background.selection=%s (it makes a new one)", settings.background.selection)
    name = settings.dataset.name
    unknown = sorted(set(task.use or ()) - set(task.candidates))
    if unknown:
        raise ConfigError(f"task.use={list(task.use or ())}: {unknown} not among task.candidates {sorted(task.candidates)}")
    candidates = {k: v for k, v in task.candidates.items() if task.use is None or k in task.use}
    raw = load_validated(settings, cfg, out)
    data, _ = poisson_equivalent(raw, mass_range=settings.dataset.mass_range)
    criteria = Criteria(gof_min_p=task.gof_min_p, sideband_max_z=task.sideband_max_z, spread_max=task.spread_max,
                        spread_sigmas=task.spread_sigmas, spread_window=task.spread_window,
                        spurious_beyond_prior=task.spurious_beyond_prior,
                        truth_min_p_without_gp=task.truth_min_p_without_gp, beyond_noise=task.beyond_noise)
    cells, content = run_selection(
        data, settings, candidates, families=task.families, step=task.step, n_toys=task.n_toys,
        seed=settings.seed, criteria=criteria, mass_min=task.mass_min, mass_max=task.mass_max)
    content |= {"config_hash": settings.config_hash(), "task": asdict(task), "input": str(settings.dataset.path),
                "input_hash": content_hash(raw.edges, raw.counts, raw.variances),
                "effective_hash": content_hash(data.edges, data.counts, data.variances)}  # the same for counts
    path = write_json(out / f"selection_{name}.json", content)
    with atomic_path(out / "selection_cells.csv") as tmp:
        cells.to_csv(tmp, index=False)
    with atomic_path(out / f"selection_{name}.csv") as tmp:
        pd.DataFrame(content["rows"]).to_csv(tmp, index=False)
    plot_selection(cells, content, out / f"selection_{name}.{settings.plots.format}", dataset_label=f"HPS {name}")
    served = [r for r in content["rows"] if r["model"]]
    ratios = sorted(r["ratio"] for r in served)
    log.info("background selection of %s: %d of %d masses served (median sigma_tot/sigma_A0 %.2f); models used: %s",
             name, len(served), len(content["rows"]), ratios[len(ratios) // 2] if ratios else float("nan"),
             ", ".join(f"{k} x{v['chosen_at']}" for k, v in content["candidates"].items() if v["chosen_at"]))
    for row in content["rows"]:
        if not row["model"]:
            log.warning("m = %.1f MeV: no candidate serves it: %s", row["mass"] * 1e3, row["reason"])
        elif row["note"]:
            log.warning("m = %.1f MeV: %s", row["mass"] * 1e3, row["note"])
    loose = masses_without_a_good_truth(cells)
    if loose:
        log.info("at %d of %d masses (between %.0f and %.0f MeV) no truth describes the data with window p >= %g: the spectrum has "
                 "structure the truths do not resolve there, and windows without a GP were not eligible "
                 "(task.truth_min_p_without_gp)", len(loose), len(content["rows"]), loose[0] * 1e3, loose[-1] * 1e3,
                 task.truth_min_p_without_gp)
    log.info("scan with it: background.selection=%s", path.resolve())
    return content
