"""``task=active``: active learning."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hps_bayes.analysis.settings import AnalysisSettings
from hps_bayes.cli.inputs import load_guarded, load_validated
from hps_bayes.cli.task_combine import combination_members
from hps_bayes.cli.task_settings import ActiveTask
from hps_bayes.inputs.spectrum import Spectrum


def task_active(settings: AnalysisSettings, task: ActiveTask, cfg: dict[str, Any], out: Path) -> Any:
    """Active learning (``hps_bayes.active``, config ``active:``): history ``active_history.csv`` (resumable),
    ``active_summary.json``, ``active_convergence.csv`` and ``active_plots/``."""
    from hps_bayes.active.runner import run_configured
    from hps_bayes.plots import active as plots_active

    spec = task.active
    user = None
    if spec.objective.kind == "callable" and spec.objective.callable:
        from hydra.utils import instantiate

        user = instantiate(spec.objective.callable)

    def datasets() -> tuple[dict[str, Spectrum], dict[str, AnalysisSettings]]:
        members = combination_members(task.datasets, cfg)  # for active.objective.combined=true
        loaded = {n: load_guarded(s, plain, out) for n, (s, plain) in members.items()}
        return {n: spec for n, (spec, _) in loaded.items()}, {n: s for n, (_, s) in loaded.items()}

    summary = run_configured(spec, settings, out, spectrum=lambda: load_validated(settings, cfg, out),
                             user_objective=user, plotter=plots_active.plot_snapshot, datasets=datasets)
    return summary
