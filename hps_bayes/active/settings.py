"""Typed settings of an active-learning run (the ``active:`` config section, ``conf/active/*.yaml``).

Every field is set by the preset (``conf/active/<preset>.yaml``), which is where the values
and their explanations live; the only defaults here are for the blocks that belong to one
objective kind (``model`` for ``wedge``, ``callable`` for ``callable``, ``combined`` for
``excess``).  :func:`hps_bayes.cli.config.active_settings` validates the composed section
into these objects before anything runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from hps_bayes.active.acquisition import Acquisition
from hps_bayes.active.loop import Cluster
from hps_bayes.active.models import WedgeSignalModel

ObjectiveKind = Literal["wedge", "excess", "callable"]
BatchRule = Literal["auto", "sur", "believer-sur", "believer"]


@dataclass(frozen=True)
class ObjectiveSettings:
    """What is learnt: the wedge model, the largest local excess (of one dataset or the combination),
    or a user callable (``callable``: the ``_target_`` mapping that Hydra instantiates)."""

    kind: ObjectiveKind
    model: WedgeSignalModel | None = None
    combined: bool = False
    callable: dict[str, Any] | None = None


@dataclass(frozen=True)
class ExecutorSettings:
    """Where the batches run (``none``: in-process; else ``submitit.AutoExecutor(cluster=...)``)."""

    cluster: Cluster
    parameters: dict[str, Any]


@dataclass(frozen=True)
class ActiveSettings:
    """The ``active:`` section: objective, box, surrogate, acquisition, batch, stopping rule, outputs.

    ``bounds``: one (low, high) pair per axis (None: the objective's own, for ``excess``);
    ``candidates``: a number of scrambled-Sobol points, or ``"grid"`` (the scan's mass grid, ``excess``);
    ``patience``: consecutive iterations the stopping rule must hold; ``truth_grid``: points per axis of
    a dense grid of the objective for plots and checks (0: none); ``plots_every``: also plot every k-th
    iteration (0: final only).
    """

    objective: ObjectiveSettings
    axes: tuple[str, ...]
    bounds: tuple[tuple[float, ...], ...] | None
    log_axes: tuple[bool, ...]
    acquisition: Acquisition
    threshold: float | None
    maximize: bool
    q: int
    batch: BatchRule
    sur_until: float
    max_evaluations: int
    n_init: int | None
    candidates: int | Literal["grid"]
    max_fit: int
    lengthscale_prior: tuple[float, float] | None
    prior_mean: float | None
    noise: bool
    target_misclassified: float
    patience: int
    truth_grid: int
    plots_every: int
    executor: ExecutorSettings
