"""``task=lee``: one batch of look-elsewhere toy scans, for a multirun over ``task.batch``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from hps_bayes.analysis.batches import check_batch
from hps_bayes.analysis.rundir import write_run_manifest
from hps_bayes.analysis.settings import AnalysisSettings
from hps_bayes.analysis.toyscans import ToyScanBatch, batch_path, toy_scan_batch
from hps_bayes.cli.inputs import load_guarded
from hps_bayes.cli.task_settings import LeeTask
from hps_bayes.errors import ConfigError

log = logging.getLogger("hps_bayes")


def task_lee(settings: AnalysisSettings, task: LeeTask, cfg: dict[str, Any], out: Path) -> ToyScanBatch:
    """Batch ``task.batch`` of ``task.toys_per_batch`` background-only toy scans over the scan's grid
    (:func:`hps_bayes.analysis.toyscans.toy_scan_batch`), written to ``lee/<dataset>/toys_<batch>.npz``
    in the run folder; ``task=merge`` of the folder turns all batches and the scan's points into the
    global significance (``summary.json``, key ``look_elsewhere``)."""
    if task.toys_per_batch < 1:
        raise ConfigError(f"task.toys_per_batch = {task.toys_per_batch}: use at least 1 (e.g. 500)")
    check_batch(task.batch, task.n_batches, "toy-scan batch")  # before the run folder's manifest is written
    spectrum, settings = load_guarded(settings, cfg, out)
    write_run_manifest(out, settings, overwrite=bool(cfg.get("overwrite")), keep_existing=True)
    done, computed = toy_scan_batch(spectrum, settings, batch=task.batch, n_scans=task.toys_per_batch,
                                    run_dir=out, n_batches=task.n_batches)
    log.info("toy-scan batch %d%s of dataset %s: %d toy scans over %d masses %s %s", task.batch,
             f"/{task.n_batches}" if task.n_batches else "", settings.dataset.name, done.z.shape[0],
             done.masses.size, "written to" if computed else "reused from",
             batch_path(out, settings.dataset.name, task.batch))
    return done
