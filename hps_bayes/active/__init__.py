"""Active learning: a GP surrogate and acquisition functions choose what to compute next.

Ask/tell API (as scikit-optimize's ``Optimizer`` or optuna's ask/tell)::

    learner = ActiveLearner([(0.02, 0.1), (1e-10, 1e-6)], log_axes=[0, 1], acquisition="straddle",
                            threshold=0.0, rng=np.random.default_rng(1))
    while learner.n_told < 100 and learner.misclassified_fraction() > 0.01:
        x = learner.ask(10)
        learner.tell(x, [model(p) for p in x])

:func:`run_active` runs that loop with an executor (in-process, or submitit for
local processes / SLURM) and a resumable CSV history.  Objectives:
:class:`WedgeSignalModel` (exclusion contour of a displaced-vertex signal, a
wedge in (m, ε²)), :class:`ExcessObjective` (largest local Z along the mass),
:class:`CombinedExcessObjective` (the same for the combination of datasets, shared ε²),
or any callable.  For a pure ε² scaling, :func:`per_mass_eps2_limit` solves the
contour exactly per mass (:func:`is_pure_eps2_scaling` detects the case).
"""

from __future__ import annotations

from hps_bayes.active.acquisition import CONTOUR, acquisition_values
from hps_bayes.active.learner import ActiveLearner, Prediction
from hps_bayes.active.loop import ActiveSummary, evaluate_batch, make_executor, run_active
from hps_bayes.active.models import (
    WedgeSignalModel,
    contour_error_decades,
    is_pure_eps2_scaling,
    per_mass_eps2_limit,
    truth_grid,
)
from hps_bayes.active.objectives import CombinedExcessObjective, ExcessObjective, grid_values

__all__ = ["CONTOUR", "ActiveLearner", "ActiveSummary", "CombinedExcessObjective", "ExcessObjective", "Prediction", "WedgeSignalModel",
           "acquisition_values", "contour_error_decades", "evaluate_batch", "grid_values", "is_pure_eps2_scaling",
           "make_executor", "per_mass_eps2_limit", "run_active", "truth_grid"]
