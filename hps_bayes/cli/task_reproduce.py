"""``task=reproduce``: a published limit reproduced piece by piece (table, ratio plot, per-step scans)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from hps_bayes.analysis.reproduce import (
    RatioSummary,
    Step,
    deep_merge,
    load_published,
    ratio_to_published,
    run_steps,
    step_settings,
)
from hps_bayes.analysis.settings import AnalysisSettings
from hps_bayes.cli.inputs import load_validated
from hps_bayes.cli.task_settings import ReproduceTask
from hps_bayes.errors import ConfigError
from hps_bayes.physics.presets import CONF_DIR
from hps_bayes.results.files import write_json, write_table

log = logging.getLogger("hps_bayes")

CONF_EXPERIMENT = Path(CONF_DIR) / "experiment"


def _experiment_changes(name: str) -> dict[str, Any]:
    """The ``background``, ``stats`` and ``dataset`` sections of ``conf/experiment/<name>.yaml`` (a global
    package)."""
    from omegaconf import OmegaConf

    path = CONF_EXPERIMENT / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"task.steps: experiment {name!r} has no file {path}; choose one of "
                          f"{sorted(p.stem for p in CONF_EXPERIMENT.glob('*.yaml'))}")
    content = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    assert isinstance(content, dict)
    return {key: content[key] for key in ("background", "stats", "dataset") if key in content}


def _steps(task: ReproduceTask) -> list[Step]:
    return [Step(label=s.label, changes=deep_merge(_experiment_changes(s.experiment) if s.experiment else {},
                                                   s.changes)) for s in task.steps]


def markdown_table(summaries: list[RatioSummary]) -> str:
    """The summaries as a Markdown table (ratios ε²_ours / ε²_published: median [16 %, 84 %])."""
    header = ("| step | masses | observed: median [16%, 84%] | expected: median [16%, 84%] | median σ_A | σ_A/σ_A⁰ | "
              "Â/σ_A: median [16%, 84%] | PCL-constrained | deviance/ndf (p < 0.01) | max local Z (mass) | "
              "p_global = N_reg·p_local |")
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        lines.append(f"| {s.label} | {s.n_masses} | {s.observed_median:.2f} [{s.observed_p16:.2f}, "
                     f"{s.observed_p84:.2f}] | {s.expected_median:.2f} [{s.expected_p16:.2f}, {s.expected_p84:.2f}] "
                     f"| {s.sigma_A_median:.0f} | {s.sigma_floor_ratio:.2f} | {s.pull_median:.2f} [{s.pull_p16:.2f}, {s.pull_p84:.2f}] "
                     f"| {100 * s.power_constrained:.0f}% | {s.gof_median:.2f} ({100 * s.gof_bad:.0f}%) "
                     f"| {s.z_max:.2f} ({s.mass_at_z_max * 1e3:.1f} MeV) | "
                     f"{s.p_global_regions:.2g} (N_reg = {s.n_regions:.0f}) |")
    return "\n".join(lines)


def task_reproduce(settings: AnalysisSettings, task: ReproduceTask, cfg: dict[str, Any], out: Path) -> Any:
    """Scan the spectrum under each of ``task.steps`` and compare every step's ε² limits with the published curve.

    Writes ``reproduction.csv`` and ``reproduction.md`` (one row per step: ratio median and 16–84 %
    spread, observed and expected), ``reproduction_<k>.csv`` (each step's scan) and
    ``summary_plots/reproduction_<dataset>.<ext>`` (the steps named in ``task.plot`` over the
    published curve, with the ratio panel).
    """
    import pandas as pd

    from hps_bayes.plots.reproduction import plot_reproduction

    steps = _steps(task)
    unknown = sorted(set(task.plot) - {s.label for s in steps})
    if unknown:
        raise ConfigError(f"task.plot names {unknown}, which are no step labels; use labels of task.steps")
    published = load_published(task.published)
    spectrum = load_validated(settings, cfg, out)
    masses = [float(m) for m in np.round(np.arange(task.mass_min, task.mass_max + 0.5 * task.step, task.step), 7)]
    configs = step_settings(settings.to_dict(), steps)
    frames, summaries = run_steps(spectrum, steps, configs, masses=masses, published=published,
                                  mass_lo=task.compare_min, mass_hi=task.compare_max)
    for k, frame in enumerate(frames.values()):
        write_table(out / f"reproduction_{k}.csv", frame)
    table = pd.DataFrame([s.to_dict() for s in summaries])
    write_table(out / "reproduction.csv", table)
    text = markdown_table(summaries)
    (out / "reproduction.md").write_text(text + "\n")
    write_json(out / "reproduction_steps.json", {"steps": [{"label": s.label, "settings": c.to_dict()}
                                                           for s, c in zip(steps, configs, strict=True)]})
    drawn = {label: frames[label] for label in task.plot}
    ratios = {label: tuple(ratio_to_published(frames[label], published, column=c, mass_lo=task.compare_min,
                                              mass_hi=task.compare_max)
                           for c in ("eps2_up", "eps2_up_expected_median")) for label in task.plot}
    plot_reproduction(drawn, ratios, published, out / "summary_plots" /  # type: ignore[arg-type]
                      f"reproduction_{settings.dataset.name}.{settings.plots.format}",
                      published_label="published", title=f"{settings.dataset.name}: ours / published")
    log.info("reproduction of the published limit (ratio ours / published over %.0f-%.0f MeV):\n%s",
             task.compare_min * 1e3, task.compare_max * 1e3, text)
    return table
