"""``task=bands``: toy expected bands."""

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
from hps_bayes.results.files import write_table

log = logging.getLogger("hps_bayes")

def task_bands(settings: AnalysisSettings, task: BandsTask, cfg: dict[str, Any], out: Path) -> Any:
    """Toy-based expected limits (median, ±1σ, ±2σ) beside the asymptotic ones over the dataset's grid.

    ``task.n_toys`` (null: ``stats.n_toys``, 1000 if that is 0) background-only and s+b toys per
    mass and tested A.  Writes ``bands.csv`` (one row per mass and ``method``, the columns of
    ``results_single.csv``, with ``A_up_error`` the toy limit's MC error) and Brazil plots of A and ε²
    (``summary_plots/bands_{A,eps2}_<dataset>``): toy band and observed limit, asymptotic band over it.
    """
    import pandas as pd

    from hps_bayes.plots import scan as plots

    n_toys = int(task.n_toys or settings.stats.n_toys or 1000)
    needed = int(np.ceil(10.0 / (settings.stats.alpha * 0.02275)))
    if n_toys < needed:  # p_{s+b} ≈ α Φ(−2) at the −2σ expected limit must be resolved by ~10 toys
        log.warning("bands with %d toys: the -2 sigma (and -1 sigma) expected limits are biased low: p_s+b near "
                    "alpha*Phi(-2) = %.1e is resolved only with >= %d toys (stats.n_toys=10000)", n_toys,
                    settings.stats.alpha * 0.02275, needed)
    spectrum, settings = load_guarded(settings, cfg, out)
    masses = mass_grid(settings)
    log.info("bands of dataset %s: %d masses (%.1f-%.1f MeV), %d toys per ensemble", settings.dataset.name,
             len(masses), masses[0] * 1e3, masses[-1] * 1e3, n_toys)
    frames = {method: run_scan(spectrum, masses=masses, config=replace(
        settings, stats=replace(settings.stats, method=method, n_toys=n_toys if method == "toys" else 0)))
        for method in ("asymptotic", "toys")}
    table = pd.concat(list(frames.values()), ignore_index=True).sort_values(["mass", "method"], kind="stable")
    write_table(out / "bands.csv", table)
    name, ext = settings.dataset.name, settings.plots.format
    for quantity, short in (("A_up", "A"), ("eps2_up", "eps2")):
        plots.plot_limit_bands(frames["toys"], frames["asymptotic"], out / "summary_plots" /
                               f"bands_{short}_{name}.{ext}", quantity=quantity,  # type: ignore[arg-type]
                               dataset_label=f"HPS {name}")
    _log_summary(frames["toys"])
    return table
