"""Typed settings of every ``task=`` choice (the ``task:`` config section, ``conf/task/<name>.yaml``).

The values and their explanations live in the YAML files; these frozen dataclasses
have no defaults of their own (except the optional keys of one ``task.datasets`` entry),
so a key missing from the composed config is an error, not a silently different value.
:func:`hps_bayes.cli.config.task_settings` validates the section before anything runs
(unknown key, missing key, wrong type: :class:`~hps_bayes.errors.ConfigError`).

The truth shapes (``families``, ``truths``, ``truth``) are checked by the studies against the
shapes they know.

>>> DatasetEntry(**DatasetEntry.split_mapping({"preset": "demo2016", "path": "/data/2016.root"}))
DatasetEntry(preset='demo2016', enabled=True, background=None, overrides={'path': '/data/2016.root'})
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Literal

from hps_bayes.analysis.settings import Method
from hps_bayes.errors import ConfigError
from hps_bayes.physics.presets import DatasetPreset

if TYPE_CHECKING:
    from hps_bayes.active.settings import ActiveSettings



@dataclass(frozen=True)
class DatasetEntry:
    """One entry of ``task.datasets``: a dataset preset, whether it is used, its own background model
    (a ``conf/background`` name or a mapping of changed keys; None: the run's) and ``overrides`` of the
    preset's keys (``path``, ``demo``, ...)."""

    preset: str
    enabled: bool = True
    background: str | dict[str, Any] | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        allowed = {f.name for f in fields(DatasetPreset)} | {"demo"}
        unknown = sorted(set(self.overrides) - allowed)
        if unknown:
            raise ConfigError(f"task.datasets entry {self.preset!r}: unknown key(s) {unknown}; allowed are "
                              f"preset, enabled, background and the dataset keys {sorted(allowed)}")

    @staticmethod
    def split_mapping(values: dict[str, Any]) -> dict[str, Any]:
        """The config form (dataset keys beside ``preset``) in the form of the fields (``overrides``)."""
        own = {"preset", "enabled", "background"}
        return {**{k: v for k, v in values.items() if k in own},
                "overrides": {k: v for k, v in values.items() if k not in own}}


@dataclass(frozen=True)
class ScanTask:
    """``task=scan``: no settings of its own (``scan:``, ``stats:``, ``posterior:`` sections)."""

    name: str


@dataclass(frozen=True)
class TestTask:
    """``task=test``: one mass, the top-level ``mass``; ``plots``: its three figures."""

    __test__ = False  # not a pytest test class
    name: str
    plots: bool


@dataclass(frozen=True)
class SimulateTask:
    """``task=simulate``: write ``dataset.path`` from the ``dataset.demo`` block."""

    name: str
    overwrite: bool


@dataclass(frozen=True)
class MergeTask:
    """``task=merge``: ``strict``: exit with status 3 when mass points are missing or failed."""

    name: str
    strict: bool


@dataclass(frozen=True)
class PosteriorTask:
    """``task=posterior``: ``masses`` in GeV (empty: the top-level ``mass``), ``plots`` of each point."""

    name: str
    masses: tuple[float, ...]
    plots: bool


@dataclass(frozen=True)
class BandsTask:
    """``task=bands``: toys per ensemble (None: ``stats.n_toys``, 1000 when that is 0).  In batches: ``batch``
    (None: all toys in this job) of ``toys_per_batch`` toys per mass, ``n_batches`` (None: not known) lets
    the merge name missing ones; ``merge``: pool the batches of the run folder instead of drawing toys."""

    name: str
    n_toys: int | None
    batch: int | None = None
    n_batches: int | None = None
    toys_per_batch: int = 1000
    merge: bool = False


@dataclass(frozen=True)
class LeeTask:
    """``task=lee``: one batch (``batch``) of ``toys_per_batch`` look-elsewhere toy scans; ``n_batches``
    (None: not known) lets ``task=merge`` name the batches still missing."""

    name: str
    toys_per_batch: int
    batch: int
    n_batches: int | None


@dataclass(frozen=True)
class CombineTask:
    """``task=combine``: the datasets, whether to combine them, whether to write HEPData."""

    name: str
    datasets: tuple[DatasetEntry, ...]
    combine: bool
    hepdata: bool


@dataclass(frozen=True)
class SpuriousTask:
    """``task=spurious``: truth families, reference spectrum, toys, mass step, injected signal."""

    name: str
    families: tuple[str, ...]
    reference: Literal["demo", "data"]
    n_toys: int
    step: float
    edge_sigmas: float | None
    inject_sigmas: float
    write_table: bool


@dataclass(frozen=True)
class SelectTask:
    """``task=select``: candidate backgrounds, truth families, grid, toys and the adequacy criteria."""

    name: str
    candidates: dict[str, dict[str, Any]]
    use: tuple[str, ...] | None
    families: tuple[str, ...]
    step: float
    mass_min: float | None
    mass_max: float | None
    n_toys: int
    gof_min_p: float
    sideband_max_z: float
    spread_max: float
    spread_sigmas: float
    spread_window: int
    spurious_beyond_prior: bool
    truth_min_p_without_gp: float
    beyond_noise: tuple[str, ...] = ("flexible",)


@dataclass(frozen=True)
class InjectTask:
    """``task=inject``: truths, injected yields and their units, masses, toys per cell."""

    name: str
    truths: tuple[str, ...]
    yields: tuple[float, ...]
    units: Literal["sigma", "events"]
    masses: tuple[float, ...] | None
    n_masses: int
    n_toys: int
    limits: bool
    write_toys: bool


@dataclass(frozen=True)
class CoverageTask:
    """``task=coverage``: truth, true signals, limit methods, experiments and toys, known-background scales."""

    name: str
    truth: str
    true_sigmas: tuple[float, ...]
    methods: tuple[Method, ...]
    n_experiments: int
    n_experiments_toys: int
    n_toys: int
    known_scales: tuple[float, ...]
    masses: tuple[float, ...] | None
    n_masses: int


@dataclass(frozen=True)
class ActiveTask:
    """``task=active``: the datasets of ``active=excess_combined`` and the ``active:`` section."""

    name: str
    datasets: tuple[DatasetEntry, ...]
    active: ActiveSettings


@dataclass(frozen=True)
class ReproduceStep:
    """One step of ``task=reproduce``: its label, an experiment whose ``background``/``stats`` it applies
    first (None: none), and the ``changes`` (nested mapping) applied on top of the previous step."""

    label: str
    changes: dict[str, Any]
    experiment: str | None = None


@dataclass(frozen=True)
class ReproduceTask:
    """``task=reproduce``: the published curve (None: HPS 2015), masses, compared range, steps, plotted steps."""

    name: str
    published: str | None
    mass_min: float
    mass_max: float
    step: float
    compare_min: float
    compare_max: float
    plot: tuple[str, ...]
    steps: tuple[ReproduceStep, ...]


TaskSettings = (ScanTask | TestTask | SimulateTask | MergeTask | LeeTask | PosteriorTask | BandsTask | CombineTask
                | SpuriousTask | InjectTask | CoverageTask | ActiveTask | ReproduceTask)

TASK_SETTINGS: dict[str, type] = {
    "scan": ScanTask, "test": TestTask, "simulate": SimulateTask, "merge": MergeTask, "lee": LeeTask,
    "posterior": PosteriorTask, "bands": BandsTask, "combine": CombineTask, "spurious": SpuriousTask,
    "inject": InjectTask, "coverage": CoverageTask, "active": ActiveTask, "reproduce": ReproduceTask,
    "select": SelectTask,
}
