"""Command line: ``python -m hps_bayes [overrides]`` (Hydra).

The Hydra main is thin: it validates the composed config into typed settings
and hands off to one task function per ``task=`` choice.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import hydra
import numpy as np
from omegaconf import DictConfig, OmegaConf

from hps_bayes.analysis.rundir import ScanInterrupted
from hps_bayes.cli.config import CONF_DIR, _first_set, _plain, run_dir, settings_from_config
from hps_bayes.cli.tasks import task_function
from hps_bayes.errors import HpsBayesError

log = logging.getLogger("hps_bayes")

OmegaConf.register_new_resolver("hps_or", _first_set, replace=True)


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> Any:
    """The Hydra task function: validate, run the task, turn package errors into exit codes."""
    np.seterr(all="ignore")
    logging.getLogger("arviz").setLevel(logging.WARNING)  # its import banner is not run information
    name = str(cfg.task.name)
    try:
        function = task_function(name)
        settings = settings_from_config(cfg)
        return function(settings, _plain(cfg), run_dir(cfg))
    except ScanInterrupted as exc:
        log.error("%s", exc)
        if callable(exc.previous_handler):  # under submitit: checkpoint and requeue (SIGUSR2)
            exc.previous_handler(exc.signum, None)
        raise SystemExit(128 + exc.signum) from exc
    except HpsBayesError as exc:
        log.error("%s", exc)
        raise SystemExit(getattr(exc, "exit_code", 2)) from exc


def main() -> Any:
    """Entry point of ``python -m hps_bayes``: configuration errors (unknown key, bad
    override syntax, unknown config group option) exit with status 2 and a one-line message."""
    from hydra.errors import HydraException

    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # let composition errors reach us, not exit(1)
    try:
        return hydra_main()
    except HydraException as exc:
        message = str(exc).strip().splitlines()
        print(f"hps_bayes: configuration error: {' '.join(message)}", file=sys.stderr)
        print("  see `python -m hps_bayes --help` for the config groups and keys", file=sys.stderr)
        raise SystemExit(2) from exc
