"""The task registry: every ``task=`` name, its one-line description, and ``run_task`` for notebooks and tests.

A task module is imported only when its task runs, so ``task=test`` does not load the
posterior, plotting or active-learning code.

>>> sorted(TASKS)[:3]
['active', 'bands', 'combine']
>>> TASKS["scan"].summary
'scan the spectrum over the mass grid: limits, significance, plots'
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hps_bayes.errors import ConfigError


@dataclass(frozen=True)
class TaskEntry:
    """Where a task's function lives and what it does, in one line."""

    module: str
    function: str
    summary: str

    def load(self) -> Any:
        return getattr(importlib.import_module(f"hps_bayes.cli.{self.module}"), self.function)


TASKS: dict[str, TaskEntry] = {
    "scan": TaskEntry("task_scan", "task_scan", "scan the spectrum over the mass grid: limits, significance, plots"),
    "test": TaskEntry("task_scan", "task_test", "one mass point (mass=...), printed summary and its plots"),
    "simulate": TaskEntry("task_simulate", "task_simulate", "write a demo spectrum (optionally with an injected A')"),
    "spurious": TaskEntry("task_spurious", "task_spurious", "spurious-signal study of the background model"),
    "select": TaskEntry("task_select", "task_select", "background model chosen per mass from the data"),
    "merge": TaskEntry("task_merge", "task_merge", "collect the chunks of a multirun into one table and plots"),
    "active": TaskEntry("task_active", "task_active", "active learning of an exclusion contour or of the largest excess"),
    "posterior": TaskEntry("task_posterior", "task_posterior", "NUTS posteriors at chosen masses, beside the CLs limits"),
    "lee": TaskEntry("task_lee", "task_lee", "one batch of look-elsewhere toy scans (a multirun sweeps task.batch)"),
    "bands": TaskEntry("task_bands", "task_bands", "toy expected-limit bands (Brazil plot)"),
    "combine": TaskEntry("task_combine", "task_combine", "2015, 2016, 2021 one by one, then combined with a shared eps^2"),
    "inject": TaskEntry("task_closure", "task_inject", "signal injection and extraction (closure)"),
    "coverage": TaskEntry("task_closure", "task_coverage", "coverage of the upper limits with toys"),
    "reproduce": TaskEntry("task_reproduce", "task_reproduce",
                           "the published HPS 2015 limit reproduced piece by piece (table, ratio plot)"),
}


def task_function(name: str) -> Any:
    """The function behind ``task=<name>``; a clear error for an unknown name."""
    if name not in TASKS:
        raise ConfigError(f"task={name!r} is not known; choose one of {sorted(TASKS)}")
    return TASKS[name].load()


def run_task(name: str, overrides: Sequence[str] = (), run_dir: str | Path | None = None) -> Any:
    """Run ``task=<name>`` with command-line ``overrides`` into ``run_dir``, as ``python -m hps_bayes`` does.

    The config is composed and validated exactly as on the command line; package errors are raised
    (not turned into exit codes). ``run_dir`` defaults to the config's ``run_dir`` (required when that
    is null, since no Hydra run folder exists outside the command line).  A scan's results come back as
    a DataFrame (:meth:`~hps_bayes.results.objects.ScanResults.frame`).
    """
    from hps_bayes.cli.config import _plain, load_config, plot_label, settings_from_config, task_settings
    from hps_bayes.plots.label import experiment_label
    from hps_bayes.results.objects import ScanResults

    extra = [f"run_dir={Path(run_dir).resolve()}"] if run_dir is not None else []
    cfg = load_config([f"task={name}", *overrides, *extra])
    if not cfg.get("run_dir"):
        raise ConfigError(f"run_task({name!r}): no run folder; pass run_dir=... (a folder for the results)")
    function = task_function(name)
    settings, task, plain = settings_from_config(cfg), task_settings(cfg), _plain(cfg)
    with experiment_label(plot_label(plain)):
        result = function(settings, task, plain, Path(str(cfg.run_dir)))
    return result.frame() if isinstance(result, ScanResults) else result
