"""Command line: ``python -m hps_bayes [overrides]`` (Hydra).

The Hydra main is thin: it validates the composed config into typed settings
and hands off to one task function per ``task=`` choice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import hydra
import numpy as np
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from hps_bayes import tasks
from hps_bayes.errors import ConfigError, HpsBayesError
from hps_bayes.settings import AnalysisSettings, settings_from_mapping

log = logging.getLogger("hps_bayes")

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

TASKS: dict[str, Callable[[AnalysisSettings, dict[str, Any], Path], Any]] = {
    "scan": tasks.task_scan,
    "test": tasks.task_test,
    "simulate": tasks.task_simulate,
}


def load_config(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose the same configuration as the command line, for notebooks and tests.

    >>> cfg = load_config(["dataset=hps2016", "scan.step=0.002"])  # doctest: +SKIP
    """
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def settings_from_config(cfg: DictConfig) -> AnalysisSettings:
    """Validate a composed config into :class:`~hps_bayes.settings.AnalysisSettings`."""
    plain = _plain(cfg)
    dataset = dict(plain["dataset"])
    dataset.pop("demo", None)
    plain["dataset"] = dataset
    return settings_from_mapping(plain)


def _plain(cfg: DictConfig) -> dict[str, Any]:
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    return {str(k): v for k, v in plain.items()}


def _output_dir(cfg: DictConfig) -> Path:
    if cfg.get("output_dir"):
        return Path(str(cfg.output_dir))
    return Path(HydraConfig.get().runtime.output_dir)


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> Any:
    """Entry point of ``python -m hps_bayes``."""
    np.seterr(all="ignore")
    name = str(cfg.task.name)
    if name not in TASKS:
        raise ConfigError(f"task={name!r} is not known; choose one of {sorted(TASKS)}")
    try:
        settings = settings_from_config(cfg)
        return TASKS[name](settings, _plain(cfg), _output_dir(cfg))
    except HpsBayesError as exc:
        log.error("%s", exc)
        raise SystemExit(2) from exc
