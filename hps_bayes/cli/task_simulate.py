"""``task=simulate``: write a demo spectrum."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hps_bayes.analysis.settings import AnalysisSettings
from hps_bayes.cli.inputs import _demo_options, write_demo
from hps_bayes.cli.task_settings import SimulateTask
from hps_bayes.errors import InputError

log = logging.getLogger("hps_bayes")

def task_simulate(settings: AnalysisSettings, task: SimulateTask, cfg: dict[str, Any], out: Path) -> Path:
    """Write the dataset's demo spectrum (``dataset.demo`` settings) to ``dataset.path`` (an existing file is
    kept with ``task.overwrite=false``)."""
    demo = _demo_options(cfg)
    if not demo:
        raise InputError(f"dataset {settings.dataset.name!r} has no `demo:` block to simulate from")
    if not task.overwrite and Path(settings.dataset.path).exists():
        log.info("%s exists and task.overwrite=false: kept", settings.dataset.path)
        return Path(settings.dataset.path)
    path = write_demo(Path(settings.dataset.path), settings, demo)
    log.info("wrote %s (%s, %d events, seed %s)", path, settings.dataset.hist_name, demo["n_events"],
             demo["seed"])
    return path
