"""Typed analysis settings: dataset, background, statistics, scan and plots in one object.

The Hydra config (``conf/``) is composed by :mod:`hps_bayes.app` and turned
into these frozen dataclasses before anything runs; library functions take
them (or plain mappings), never a ``DictConfig``.  Every invalid value raises
:class:`~hps_bayes.errors.ConfigError` naming the key, the value and what is
allowed.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from hps_bayes.analysis.checks import MIN_TOYS_BEYOND
from hps_bayes.errors import ConfigError
from hps_bayes.model.settings import BackgroundSettings
from hps_bayes.physics.presets import DatasetPreset, load_preset, preset_from_mapping

Method = Literal["asymptotic", "toys"]
Limit = Literal["cls", "pl", "pcl"]


@dataclass(frozen=True)
class StatsSettings:
    """How limits and significances are computed.

    ``lee_toys`` > 0: after a (one-chunk) scan, that many background-only toy scans give the
    global significance of the largest local excess (:func:`hps_bayes.scan.toy_scans`,
    :mod:`hps_bayes.stats.lee`); ``lee_c0`` is the Gross–Vitells upcrossing level (Z units).
    Neither changes a mass point's numbers (they are not part of the config hash).
    ``toy_p0_above_z`` > 0: where the local Z reaches it, p0 and Z come from
    ``toy_p0_toys`` background-only toys instead of the asymptotic formula (``p0_method``).
    ``limit`` is the kind of upper limit (:func:`hps_bayes.stats.upper_limit`): ``"cls"``,
    ``"pl"`` (one-sided profile likelihood, p_{s+b} = alpha) or ``"pcl"`` (``"pl"``
    power-constrained at the −1σ expected limit); ``method`` says how its p-values are computed.
    """

    method: Method = "asymptotic"
    limit: Limit = "cls"
    alpha: float = 0.05
    n_toys: int = 0
    lee_toys: int = 0
    lee_c0: float = 1.0
    toy_p0_above_z: float = 0.0
    toy_p0_toys: int = 10000

    def __post_init__(self) -> None:
        if self.toy_p0_above_z < 0 or self.toy_p0_toys < 100:
            raise ConfigError(f"stats.toy_p0_above_z={self.toy_p0_above_z}, stats.toy_p0_toys={self.toy_p0_toys}: "
                              "the threshold must be >= 0 (0: off) and at least 100 toys are needed")
        if self.method not in ("asymptotic", "toys"):
            raise ConfigError(f"stats.method={self.method!r}: allowed are 'asymptotic' and 'toys'")
        if self.limit not in ("cls", "pl", "pcl"):
            raise ConfigError(f"stats.limit={self.limit!r}: allowed are 'cls' (default), 'pl' (one-sided "
                              "profile likelihood) and 'pcl' (power-constrained one-sided)")
        if not 0.0 < self.alpha < 0.5:
            raise ConfigError(f"stats.alpha={self.alpha}: use 0 < alpha < 0.5 (0.05 for 95% CL)")
        if self.n_toys < 0:
            raise ConfigError(f"stats.n_toys={self.n_toys}: must be >= 0")
        if self.method == "toys" and self.n_toys < 10:
            raise ConfigError(f"stats.method=toys with stats.n_toys={self.n_toys}: a toy calculator needs at least 10 "
                              f"toys, and {math.ceil(MIN_TOYS_BEYOND / self.alpha)} to resolve CLs = alpha = {self.alpha:g}; "
                              "set stats.n_toys=1000 (10000 for bands)")
        if self.lee_toys < 0 or self.lee_c0 < 0:
            raise ConfigError(f"stats.lee_toys={self.lee_toys}, stats.lee_c0={self.lee_c0}: both must be >= 0 "
                              "(lee_toys=0 switches the look-elsewhere toy scans off; lee_c0 ~ 0.5-1)")


@dataclass(frozen=True)
class ScanSettings:
    """The mass grid (GeV) and how it is split into chunks."""

    mass_min: float | None = None
    mass_max: float | None = None
    step: float = 0.001
    edge_sigmas: float = 5.0
    n_chunks: int = 1
    chunk: int = 0

    def __post_init__(self) -> None:
        if self.step <= 0:
            raise ConfigError(f"scan.step={self.step}: the mass step (GeV) must be > 0, e.g. 0.001")
        if self.n_chunks < 1 or not 0 <= self.chunk < self.n_chunks:
            raise ConfigError(
                f"scan.chunk={self.chunk}, scan.n_chunks={self.n_chunks}: need n_chunks >= 1 and "
                f"0 <= chunk < n_chunks"
            )
        if self.edge_sigmas < 0:
            raise ConfigError(f"scan.edge_sigmas={self.edge_sigmas}: must be >= 0")


@dataclass(frozen=True)
class PlotSettings:
    summary: bool = True
    per_mass: bool = False
    per_mass_masses: tuple[float, ...] = ()
    format: Literal["png", "pdf"] = "png"
    status: Literal["Internal", "Preliminary"] | None = "Internal"  # after the experiment's name on every plot
    workers: int | None = None  # processes drawing the per-mass figures (None: the CPUs available)

    def __post_init__(self) -> None:
        if self.workers is not None and (isinstance(self.workers, bool) or not self.workers >= 1):
            raise ConfigError(f"plots.workers={self.workers!r}: use a number of processes >= 1, or null for "
                              "the CPUs this job may use")


@dataclass(frozen=True)
class AnalysisSettings:
    """Everything a mass-point evaluation or a scan needs, validated."""

    dataset: DatasetPreset
    background: BackgroundSettings = field(default_factory=BackgroundSettings)
    stats: StatsSettings = field(default_factory=StatsSettings)
    scan: ScanSettings = field(default_factory=ScanSettings)
    plots: PlotSettings = field(default_factory=PlotSettings)
    seed: int = 20151

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def config_hash(self) -> str:
        """Hash of the settings that change a mass point's numbers (not chunking, not plots)."""
        d = self.to_dict()
        d.pop("plots")
        d["scan"] = {}
        for key in ("lee_toys", "lee_c0"):  # scan-level look-elsewhere: no point's numbers change
            d["stats"].pop(key)
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _build[T](cls: type[T], section: str, values: Mapping[str, Any] | None) -> T:
    values = dict(values or {})
    allowed = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - allowed)
    if unknown:
        raise ConfigError(f"{section}: unknown key(s) {unknown}; allowed keys are {sorted(allowed)}")
    for key, value in list(values.items()):
        if isinstance(value, list):
            values[key] = tuple(value)
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"{section}: {exc}") from exc


def settings_from_mapping(cfg: Mapping[str, Any]) -> AnalysisSettings:
    """Validate a plain nested mapping (the composed config) into :class:`AnalysisSettings`.

    ``dataset`` may be a preset name ("2015", "hps2016", "demo") or a mapping
    of preset fields; ``background``, ``stats``, ``scan``, ``plots`` are
    mappings of their fields.  Keys of other sections are ignored here.
    """
    ds = cfg.get("dataset", "demo")
    dataset = load_preset(ds) if isinstance(ds, str) else preset_from_mapping(dict(ds))
    return AnalysisSettings(
        dataset=dataset,
        background=_build(BackgroundSettings, "background", cfg.get("background")),
        stats=_build(StatsSettings, "stats", cfg.get("stats")),
        scan=_build(ScanSettings, "scan", cfg.get("scan")),
        plots=_build(PlotSettings, "plots", cfg.get("plots")),
        seed=int(cfg.get("seed", 20151)),
    )


def resolve_settings(
    dataset: str | DatasetPreset | Mapping[str, Any] = "demo",
    config: AnalysisSettings | Mapping[str, Any] | None = None,
) -> AnalysisSettings:
    """Settings for the public API: a dataset (preset name or object) plus overrides."""
    if isinstance(config, AnalysisSettings):
        return config
    overrides = dict(config or {})
    if isinstance(dataset, DatasetPreset):
        overrides["dataset"] = dataset.to_dict()
    else:
        overrides.setdefault("dataset", dataset)
    return settings_from_mapping(overrides)
