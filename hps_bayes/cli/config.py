"""The composed Hydra config: loading, type checks and the typed settings."""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

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
from hps_bayes.cli.task_settings import (
    TASK_SETTINGS,
    ActiveTask,
    CombineTask,
    DatasetEntry,
    SpuriousTask,
    TaskSettings,
)
from hps_bayes.errors import ConfigError
from hps_bayes.model.settings import BackgroundSettings
from hps_bayes.physics.presets import CONF_DIR, preset_mapping
from hps_bayes.plots.label import ExperimentLabel

if TYPE_CHECKING:
    from hps_bayes.active.settings import ActiveSettings

#: Tasks whose plots show pseudo-data (toys) drawn from shapes fitted to the spectrum.
_TOY_TASKS = frozenset({"spurious", "inject", "coverage"})
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


def task_settings(cfg: DictConfig | Mapping[str, Any]) -> TaskSettings:
    """Validate the ``task:`` section (and for ``task=active`` the ``active:`` one) into its typed settings
    (:mod:`hps_bayes.cli.task_settings`): a ConfigError names an unknown, missing or mistyped key."""
    plain = _plain(cfg) if isinstance(cfg, DictConfig) else dict(cfg)
    section = dict(plain["task"])
    name = section["name"]
    if name not in TASK_SETTINGS:
        raise ConfigError(f"task={name!r} is not known; choose one of {sorted(TASK_SETTINGS)}")
    localns: dict[str, Any] = {}
    if name == "active":
        section["active"] = active_settings(plain["active"])
        localns["ActiveSettings"] = type(section["active"])
    return build_section(TASK_SETTINGS[name], "task", section, localns=localns)  # type: ignore[no-any-return]


def active_settings(section: Mapping[str, Any]) -> ActiveSettings:
    """Validate the ``active:`` section (``conf/active/<preset>.yaml``) into :class:`~hps_bayes.active.settings.ActiveSettings`."""
    from hps_bayes.active.settings import ActiveSettings

    return build_section(ActiveSettings, "active", section)


def build_section[T](cls: type[T], section: str, values: Any, *, localns: dict[str, Any] | None = None) -> T:
    """The frozen dataclass ``cls`` from the config mapping ``values`` (lists become tuples, nested mappings
    nested dataclasses); ConfigError for a key that is unknown, missing (a field without a default) or of
    the wrong type, naming ``section.key``, the value and what is allowed."""
    names = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    if not isinstance(values, Mapping):
        raise ConfigError(f"{section}={values!r}: expected a mapping with the keys {sorted(names)}")
    split = getattr(cls, "split_mapping", None)
    values = dict(split(dict(values)) if split else values)
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"{section}: unknown key(s) {unknown}; allowed keys are {sorted(names)}")
    missing = sorted(n for n, f in names.items()
                     if n not in values and f.default is MISSING and f.default_factory is MISSING)
    if missing:
        raise ConfigError(f"{section}: missing key(s) {missing}; set them in the config file "
                          f"(or on the command line: +{section}.{missing[0]}=...)")
    hints = typing.get_type_hints(cls, localns=localns)
    built = {key: _convert(f"{section}.{key}", hints[key], value) for key, value in values.items()}
    _check_types(section, cls, built, localns=localns)
    try:
        return cls(**built)
    except TypeError as exc:
        raise ConfigError(f"{section}: {exc}") from exc


def _convert(key: str, hint: Any, value: Any) -> Any:
    """A config value in the form of the field: lists as tuples, mappings as the dataclass of ``hint``."""
    if isinstance(value, Mapping):
        cls = next((h for h in _members(hint) if is_dataclass(h)), None)
        return build_section(cls, key, value) if isinstance(cls, type) else dict(value)
    if isinstance(value, (list, tuple)):
        inner = next((typing.get_args(h)[0] for h in _members(hint)
                      if typing.get_origin(h) in (tuple, list) and typing.get_args(h)), Any)
        return tuple(_convert(f"{key}[{i}]", inner, v) for i, v in enumerate(value))
    return value


def _members(hint: Any) -> tuple[Any, ...]:
    """The alternatives of a union hint (the hint itself otherwise)."""
    return typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)


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
    if origin is dict:
        return isinstance(value, Mapping)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _check_types(section: str, cls: type, values: Mapping[str, Any], *,
                 localns: dict[str, Any] | None = None) -> None:
    """Raise ConfigError naming ``section.key``, the value and the expected type."""
    hints = typing.get_type_hints(cls, localns=localns)
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name in values and not _accepts(hints[f.name], values[f.name]):
            hint = hints[f.name]
            expected = hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
            default = "" if f.default is MISSING else f" (default {f.default!r})"
            raise ConfigError(f"{section}.{f.name}={values[f.name]!r}: expected {expected}{default}; "
                              "fix the override or the config file")


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


def plot_label(plain: Mapping[str, Any]) -> ExperimentLabel:
    """The experiment label of a run's plots (:mod:`hps_bayes.plots.label`), from the composed config:
    ``demo`` when a spectrum the task reads is a generated demo spectrum (``demo.generate``, or the
    spurious-signal study's demo reference), ``simulation`` for the toy studies of a measured spectrum,
    else ``data``; the status is ``plots.status``."""
    task = task_settings(plain)
    if isinstance(task, (CombineTask, ActiveTask)) and task.datasets:
        spectra = [_entry_dataset(e) for e in task.datasets if e.enabled]
    else:
        spectra = [dict(plain["dataset"])]
    demo = any(bool((d.get("demo") or {}).get("generate")) for d in spectra) or (
        isinstance(task, SpuriousTask) and task.reference == "demo")
    kind: Literal["demo", "simulation", "data"] = "demo" if demo else "simulation" if task.name in _TOY_TASKS else "data"
    return ExperimentLabel(kind=kind, status=plain["plots"]["status"])


def _entry_dataset(entry: DatasetEntry) -> dict[str, Any]:
    """The dataset mapping of a ``task.datasets`` entry: its preset with the entry's ``demo`` keys."""
    mapping = preset_mapping(entry.preset)
    mapping["demo"] = {**(mapping.get("demo") or {}), **dict(entry.overrides.get("demo") or {})}
    return mapping
