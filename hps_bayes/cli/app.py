"""Command line: ``python -m hps_bayes [overrides]`` (Hydra).

The Hydra main is thin: it validates the composed config into typed settings
and hands off to one task function per ``task=`` choice.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from hps_bayes.analysis.rundir import ScanInterrupted
from hps_bayes.cli.config import (
    CONF_DIR,
    _first_set,
    _plain,
    plot_label,
    run_dir,
    settings_from_config,
    task_settings,
)
from hps_bayes.cli.tasks import task_function
from hps_bayes.errors import ConfigError, HpsBayesError
from hps_bayes.plots.label import experiment_label

log = logging.getLogger("hps_bayes")

OmegaConf.register_new_resolver("hps_or", _first_set, replace=True)
# PyTensor reports at INFO each of its settings that no config file sets ("Suppressed KeyError ..."); imported
# inside Hydra's callbacks (the run-folder check of a rerun), that is a screenful of noise in the run's log
logging.getLogger("pytensor.configparser").setLevel(logging.WARNING)


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> Any:
    """The Hydra task function: validate, run the task, turn package errors into exit codes."""
    np.seterr(all="ignore")
    logging.getLogger("arviz").setLevel(logging.WARNING)  # its import banner is not run information
    name = str(cfg.task.name)
    try:
        function = task_function(name)
        check_top_level(cfg)
        guard_run_folder(cfg, run_dir(cfg))
        settings, task, plain = settings_from_config(cfg), task_settings(cfg), _plain(cfg)
        with experiment_label(plot_label(plain)):
            result = function(settings, task, plain, run_dir(cfg))
        return finished(result) if name in GUARDED_TASKS else result
    except ScanInterrupted as exc:
        log.error("%s", exc)
        if callable(exc.previous_handler):  # under submitit: checkpoint and requeue (SIGUSR2)
            exc.previous_handler(exc.signum, None)
        raise SystemExit(128 + exc.signum) from exc
    except HpsBayesError as exc:
        log.error("%s", exc)
        raise SystemExit(getattr(exc, "exit_code", 2)) from exc
    except OSError as exc:
        log.error("%s: %s; check that the run folder (run_dir=...) and the input paths are writable/readable",
                  type(exc).__name__, exc)
        raise SystemExit(2) from exc


#: Exit status of a run that finished but whose every mass point failed or was flagged.
EXIT_NO_RESULT = 4


class NoResultError(HpsBayesError):
    """A scan or test whose every mass point failed or was flagged (status other than "ok")."""

    exit_code = EXIT_NO_RESULT


def finished(result: Any) -> Any:
    """A task's return value, or :class:`NoResultError` when it holds mass points and none is "ok"."""
    statuses = getattr(result, "status", None)
    if isinstance(statuses, str):
        statuses = [statuses]
    if statuses is not None and not isinstance(statuses, str) and len(statuses) and "ok" not in set(statuses):
        raise NoResultError(f"none of the {len(statuses)} mass points is ok (statuses: {sorted(set(statuses))}); "
                            "see the warnings above and the message column of the results")
    return result


def check_top_level(cfg: DictConfig) -> None:
    """The top-level keys the sections do not check: ``mass`` (null or a positive number in GeV),
    ``seed`` (an integer >= 0), ``overwrite`` (a boolean)."""
    from hps_bayes.analysis.point import check_mass_value

    mass, seed, overwrite = cfg.get("mass"), cfg.get("seed"), cfg.get("overwrite", False)
    if mass is not None:
        check_mass_value(mass)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed={seed!r}: give an integer >= 0, e.g. seed=20151")
    if not isinstance(overwrite, bool):
        raise ConfigError(f"overwrite={overwrite!r}: give true or false")


#: The tasks whose run folder is checked before anything is written (:func:`guard_run_folder`).
GUARDED_TASKS = ("scan", "test")


def guard_run_folder(cfg: DictConfig, folder: Path) -> None:
    """:func:`hps_bayes.cli.inputs.preflight` for the tasks that write mass points."""
    from hps_bayes.cli.inputs import preflight

    if str(cfg.task.name) in GUARDED_TASKS:
        task_cfg = OmegaConf.masked_copy(cfg, [str(k) for k in cfg if k != "hydra"])
        preflight(settings_from_config(task_cfg), _plain(task_cfg), folder)


class RunFolderGuard(Callback):
    """Hydra callback: a run folder that holds results of other settings (:func:`guard_run_folder`)
    keeps its ``.hydra/`` (Hydra is told not to write it); the task then refuses to run."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            guard_run_folder(config, Path(str(config.get("run_dir") or config.hydra.run.dir)))
        except HpsBayesError:
            with read_write(config), open_dict(config):
                config.hydra.output_subdir = None


#: Command-line arguments after which ``hydra.mode`` may come from somewhere other than the package's
#: own configuration: the flags that bring configuration files, and overrides that name these keys.
_MODE_FLAGS = ("--config-dir", "-cd", "--config-name", "-cn", "--config-path", "-cp")
_MODE_KEYS = ("hydra.mode", "searchpath")


@contextlib.contextmanager
def _no_mode_probe(args: list[str]) -> Iterator[None]:
    """Compose the configuration once, not twice.

    Before every run Hydra composes the whole configuration only to read ``hydra.mode``
    (``Hydra.get_mode``), then composes it again for the run: ≈ 0.17 s of a 2 s process. The
    package's configuration never sets ``hydra.mode``, so the probe answers None (run, or multirun
    with ``-m``) unless an argument names the mode or brings configuration files of its own; then
    the probe runs as usual. Hydra is pinned below 1.4, where ``get_mode`` is what its command line
    calls (``hydra._internal.utils._run_hydra``).
    """
    from hydra._internal.hydra import Hydra

    if any(arg.startswith(_MODE_FLAGS) or any(key in arg for key in _MODE_KEYS) for arg in args):
        yield
        return
    probe = Hydra.get_mode
    Hydra.get_mode = lambda self, config_name, overrides: None  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        Hydra.get_mode = probe  # type: ignore[method-assign]


def main() -> Any:
    """Entry point of ``python -m hps_bayes``: configuration errors (unknown key, bad
    override syntax, unknown config group option) exit with status 2 and a one-line message."""
    from hydra.errors import HydraException

    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # let composition errors reach us, not exit(1)
    try:
        with _no_mode_probe(sys.argv[1:]):
            return hydra_main()
    except HydraException as exc:
        message = str(exc).strip().splitlines()
        print(f"hps_bayes: configuration error: {' '.join(message)}", file=sys.stderr)
        print("  see `python -m hps_bayes --help` for the config groups and keys", file=sys.stderr)
        raise SystemExit(2) from exc
    except HpsBayesError as exc:  # raised outside the task function (e.g. while Hydra starts the run)
        print(f"hps_bayes: error: {exc}", file=sys.stderr)
        raise SystemExit(getattr(exc, "exit_code", 2)) from exc
    except BrokenPipeError:  # the reader of the output went away (`hps-bayes --help | head`): nothing to report
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
        raise SystemExit(1) from None
    except OSError as exc:  # e.g. Hydra cannot create the run folder
        print(f"hps_bayes: error: {type(exc).__name__}: {exc}; choose a writable run folder (run_dir=...)",
              file=sys.stderr)
        raise SystemExit(2) from exc
