"""``task=combine``: the datasets one by one, then combined."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from hps_bayes.analysis.combine import combined_masses, run_combination
from hps_bayes.analysis.grid import mass_grid
from hps_bayes.analysis.scan import run_scan
from hps_bayes.analysis.settings import AnalysisSettings, settings_from_mapping
from hps_bayes.cli.inputs import load_guarded, warn_without_selection
from hps_bayes.cli.task_scan import PUBLISHED_2015, _summary_plots
from hps_bayes.cli.task_settings import CombineTask, DatasetEntry
from hps_bayes.errors import ConfigError
from hps_bayes.physics.presets import background_mapping, preset_mapping
from hps_bayes.results.export import limits_table, write_hepdata, write_limits
from hps_bayes.results.files import write_table

log = logging.getLogger("hps_bayes")

def combination_members(entries: Sequence[DatasetEntry], cfg: dict[str, Any]
                        ) -> dict[str, tuple[AnalysisSettings, dict[str, Any]]]:
    """The enabled datasets of ``entries`` (``task.datasets``): name → (settings, plain config for that dataset).

    An entry's ``background`` gives that dataset its own background model: a config name
    (``background: whole15``, from ``conf/background/``) or a mapping of keys changed from the run's
    ``background`` (``background: {poly_degree: 12}``); without it the run's ``background`` is used.
    """
    members: dict[str, tuple[AnalysisSettings, dict[str, Any]]] = {}
    for entry in entries:
        if not entry.enabled:
            continue
        mapping = preset_mapping(entry.preset)
        background = dict(cfg["background"])
        if isinstance(entry.background, str):
            background = background_mapping(entry.background)
        elif entry.background is not None:
            background = {**background, **entry.background}
        for key, value in entry.overrides.items():
            mapping[key] = {**mapping.get("demo", {}), **value} if key == "demo" else value
        plain = {**cfg, "dataset": mapping, "background": background}
        settings = settings_from_mapping({**plain, "dataset": {k: v for k, v in mapping.items() if k != "demo"}})
        if settings.dataset.name in members:
            raise ConfigError(f"task.datasets: two enabled entries are named {settings.dataset.name!r} "
                              f"(preset {entry.preset!r}); give each dataset its own name")
        members[settings.dataset.name] = (settings, plain)
    if not members:
        raise ConfigError("task=combine: no enabled dataset in task.datasets; enable at least one")
    return members


def task_combine(settings: AnalysisSettings, task: CombineTask, cfg: dict[str, Any], out: Path) -> Any:
    """Scan every enabled dataset, combine them (shared ε²) where their grids overlap, export.

    Writes ``results_single.csv``, ``results_combined.csv``, ``limits.csv``/``.parquet``,
    ``hepdata/``, per-dataset and combined ``numbers.json`` and the summary plots.
    """
    members = combination_members(task.datasets, cfg)
    loaded = {name: load_guarded(s, plain, out) for name, (s, plain) in members.items()}
    spectra = {name: spec for name, (spec, _) in loaded.items()}
    members = {name: (loaded[name][1], plain) for name, (_, plain) in members.items()}
    for s, plain in members.values():
        warn_without_selection(s, plain)
    grids = {name: mass_grid(s) for name, (s, _) in members.items()}
    frames = {name: run_scan(spectra[name], config=s, masses=grids[name], out_dir=out)
              for name, (s, _) in members.items()}
    single = pd.concat(list(frames.values()), ignore_index=True)
    write_table(out / "results_single.csv", single)
    masses = combined_masses(grids)
    if task.combine and len(members) > 1 and len(masses) == 0:
        raise ConfigError(f"task=combine: the grids of {sorted(members)} do not overlap; nothing to combine "
                          f"(ranges: { {n: s.dataset.mass_range for n, (s, _) in members.items()} })")
    stats = settings.stats
    combined = run_combination(spectra, {n: s for n, (s, _) in members.items()}, masses, out_dir=out,
                               alpha=stats.alpha, method=stats.method, n_toys=max(stats.n_toys, 10)
                               ) if task.combine else pd.DataFrame()
    write_table(out / "results_combined.csv", combined)
    _export(single, combined, out, hepdata=task.hepdata)
    _combination_plots(frames, combined, {n: s for n, (s, _) in members.items()}, out)
    log.info("combined %d masses (%s); results in %s", len(combined),
             ", ".join(sorted(set(combined.datasets))) if len(combined) else "none", out)
    return single, combined


def _export(single: Any, combined: Any, out: Path, *, hepdata: bool) -> None:
    table = limits_table(single, combined)
    write_limits(table, out)
    if hepdata and len(table):
        write_hepdata(table, out)


def _combination_plots(frames: dict[str, Any], combined: Any, settings: dict[str, AnalysisSettings],
                       out: Path) -> None:
    from hps_bayes.plots import scan as plots

    for name, frame in frames.items():
        _summary_plots(frame, settings[name], out)
    folder = out / "summary_plots"
    curves = {f"HPS {name}": frame for name, frame in frames.items()}
    if len(combined):
        plots.plot_eps2_limits(combined, folder / "eps2_ul_combined.png", dataset_label="combined",
                               title="Combination (shared $\\epsilon^2$)")
        plots.plot_p0(combined, folder / "p0_combined.png", dataset_label="combined")
        curves["combined"] = combined
    published = pd.read_csv(PUBLISHED_2015, comment="#") if "2015" in frames else None
    plots.plot_eps2_overlay(curves, folder / "eps2_ul_overlay.png", published=published)
    plots.plot_p0_overlay(curves, folder / "p0_overlay.png")
