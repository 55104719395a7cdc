"""The composed Hydra config: loading, type checks and the typed settings."""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from hps_bayes.analysis.settings import (
    AnalysisSettings,
    PlotSettings,
    ScanSettings,
    StatsSettings,
    settings_from_mapping,
)
from hps_bayes.errors import ConfigError
from hps_bayes.model.settings import BackgroundSettings

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
SECTIONS = {"background": BackgroundSettings, "stats": StatsSettings, "scan": ScanSettings, "plots": PlotSettings}


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
    for section, cls in SECTIONS.items():
        _check_types(section, cls, plain.get(section) or {})
    return settings_from_mapping(plain)


def _accepts(hint: Any, value: Any) -> bool:
    """Whether ``value`` (from YAML or the command line) fits the type hint ``hint``."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_accepts(h, value) for h in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin in (tuple, list):
        inner = typing.get_args(hint)[:1] or (Any,)
        return isinstance(value, (list, tuple)) and all(_accepts(inner[0], v) for v in value)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _check_types(section: str, cls: type, values: Mapping[str, Any]) -> None:
    """Raise ConfigError naming ``section.key``, the value and the expected type."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name in values and not _accepts(hints[f.name], values[f.name]):
            hint = hints[f.name]
            expected = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
            raise ConfigError(f"{section}.{f.name}={values[f.name]!r}: expected {expected} "
                              f"(default {f.default!r}); fix the override or the config file")


def _plain(cfg: DictConfig) -> dict[str, Any]:
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    return {str(k): v for k, v in plain.items()}


def _first_set(value: Any, default: Any) -> Any:
    """``value`` unless it is null or empty, else ``default`` (the ``hps_or`` resolver of conf/config.yaml)."""
    return default if value is None or value == "" else value


def run_dir(cfg: DictConfig) -> Path:
    """The run folder all results go to: ``run_dir`` if set, else Hydra's run folder
    (``outputs/<date>/<time>``), or in a multirun the sweep folder shared by all its jobs."""
    if cfg.get("run_dir"):
        return Path(str(cfg.run_dir))
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode == RunMode.MULTIRUN:
        return Path(str(hydra_cfg.sweep.dir))
    return Path(hydra_cfg.runtime.output_dir)
