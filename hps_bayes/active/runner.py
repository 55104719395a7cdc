"""``task=active`` as a library function: build the objective and learner from the typed settings, run, plot.

Takes the ``active:`` config section as :class:`~hps_bayes.active.settings.ActiveSettings`
(never a DictConfig); Hydra-specific work (``_target_`` instantiation) is done by the caller
(:func:`hps_bayes.cli.task_active.task_active`) and the result passed as ``user_objective``.
Plots are drawn by the ``plotter`` passed in (``hps_bayes.plots_active.plot_snapshot``),
from the arrays computed here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hps_bayes.active.acquisition import CONTOUR
from hps_bayes.active.learner import ActiveLearner
from hps_bayes.active.loop import ActiveSummary, make_executor, run_active
from hps_bayes.active.models import WedgeSignalModel, is_pure_eps2_scaling, per_mass_eps2_limit
from hps_bayes.active.objectives import CombinedExcessObjective, ExcessObjective, grid_values
from hps_bayes.active.settings import ActiveSettings
from hps_bayes.analysis.seeds import loop_rng
from hps_bayes.analysis.settings import AnalysisSettings
from hps_bayes.core import FloatArray
from hps_bayes.errors import ConfigError
from hps_bayes.inputs.spectrum import Spectrum
from hps_bayes.results.files import write_table

log = logging.getLogger(__name__)
HISTORY = "active_history.csv"
Datasets = Callable[[], tuple[dict[str, Spectrum], dict[str, AnalysisSettings]]]
LABELS = {"mass_gev": "$m_{A'}$ [GeV]", "eps2": r"$\epsilon^2$"}


def build_objective(spec: ActiveSettings, settings: AnalysisSettings, spectrum: Callable[[], Spectrum],
                    user_objective: Any = None, datasets: Datasets | None = None) -> Any:
    """The objective named by ``spec.objective.kind``: wedge, excess or callable.

    ``kind: excess`` with ``combined: true`` is the combination of the datasets that ``datasets()``
    returns (spectra and settings by name; ``task.datasets`` in the CLI), with ``settings.stats``'
    method (asymptotic or toys).
    """
    obj = spec.objective
    kind = obj.kind
    if kind == "wedge":
        if obj.model is None:
            raise ConfigError("active.objective.kind=wedge needs active.objective.model (see conf/active/wedge.yaml)")
        return obj.model
    if kind == "excess" and obj.combined:
        if datasets is None:
            raise ConfigError("active.objective.combined=true needs the datasets to combine (task.datasets)")
        spectra, by_name = datasets()
        return CombinedExcessObjective(spectra, by_name, method=settings.stats.method,
                                       n_toys=max(settings.stats.n_toys, 10))
    if kind == "excess":
        return ExcessObjective(spectrum(), settings)
    if kind == "callable":
        if user_objective is None or not callable(user_objective):
            raise ConfigError("active.objective.kind=callable needs active.objective.callable._target_ naming a "
                              "callable (a function or a class with __call__), e.g. my_module.MyModel")
        return user_objective
    raise ConfigError(f"active.objective.kind={kind!r}: choose wedge, excess or callable")


def build_learner(spec: ActiveSettings, objective: Any, rng: np.random.Generator) -> ActiveLearner:
    """The learner of ``spec`` (bounds, log_axes, acquisition, threshold, q, candidates...)."""
    candidates: Any = spec.candidates
    bounds: Any = spec.bounds
    if isinstance(objective, (ExcessObjective, CombinedExcessObjective)):
        grid = objective.grid()
        bounds = bounds or objective.bounds()
        candidates = grid[:, None] if candidates in (None, "grid") else candidates
    if not bounds:
        raise ConfigError("active.bounds is missing: give one [low, high] pair per axis")
    return ActiveLearner(bounds, log_axes=list(spec.log_axes), acquisition=spec.acquisition,
                         threshold=spec.threshold, rng=rng, candidates=candidates, n_init=spec.n_init,
                         maximize=spec.maximize, noise=spec.noise, max_fit=spec.max_fit, batch=spec.batch,
                         sur_until=spec.sur_until, prior_mean=spec.prior_mean,
                         lengthscale_prior=spec.lengthscale_prior)  # None: maximum likelihood


def run_configured(spec: ActiveSettings, settings: AnalysisSettings, out: Path, *,
                   spectrum: Callable[[], Spectrum], user_objective: Any = None,
                   plotter: Callable[[dict[str, Any], Path], Any] | None = None,
                   datasets: Datasets | None = None) -> ActiveSummary:
    """Run the loop of the ``active:`` config section into ``out`` (history, summary, convergence, plots)."""
    objective = build_objective(spec, settings, spectrum, user_objective, datasets)
    axes = list(spec.axes or [f"x{i}" for i in range(len(spec.bounds or [[0, 1]]))])
    if isinstance(objective, WedgeSignalModel) and _pure_scaling(objective, spec, out):
        return ActiveSummary(0, 0, 0, "pure_eps2_scaling: solved per mass exactly (active_per_mass.csv)")
    learner = build_learner(spec, objective, loop_rng(settings.seed))
    truth = _truth(spec, objective, learner)
    track: list[dict[str, float]] = []
    value_label = "local significance Z" if isinstance(objective, (ExcessObjective, CombinedExcessObjective)) else (
        "objective")

    def callback(lr: ActiveLearner, iteration: int) -> None:
        track.append(_progress(lr, truth))
        every = spec.plots_every
        if plotter and every and iteration % every == 0:
            plotter(snapshot(lr, axes, truth, iteration_label=f"iteration {iteration}", value_label=value_label),
                    out / "active_plots"
                    / f"iter{iteration:03d}")

    executor = make_executor(spec.executor.cluster, out / "active_jobs", dict(spec.executor.parameters))
    summary, _ = run_active(objective, learner, axes=axes, max_evaluations=spec.max_evaluations, q=spec.q,
                            history_path=out / HISTORY, executor=executor,
                            target_misclassified=spec.target_misclassified, patience=spec.patience,
                            callback=callback)
    if track:
        import pandas as pd

        write_table(out / "active_convergence.csv", pd.DataFrame(track))
    if plotter and learner.n_finite >= 3:
        plotter(snapshot(learner, axes, truth, convergence=track, target=spec.target_misclassified,
                         value_label=value_label), out / "active_plots" / "final")
    log.info("active learning: %d evaluations (%d failed), stop: %s; %s", summary.n_evaluations, summary.n_failed,
             summary.stop_reason, _describe(summary))
    return summary


def _describe(s: ActiveSummary) -> str:
    if math.isfinite(s.estimated_misclassified):
        return f"estimated misclassified fraction {s.estimated_misclassified:.4f} (raw {s.estimated_misclassified_raw:.4f})"
    return f"best value {s.best_value:.4g} at {np.round(s.best_point, 6).tolist()}"


def _pure_scaling(model: WedgeSignalModel, spec: ActiveSettings, out: Path) -> bool:
    """For a pure ε² scaling, write the exact per-mass limits and say so (no active learning needed)."""
    if spec.bounds is None or len(spec.bounds) != 2:
        raise ConfigError(f"active.bounds={spec.bounds}: the wedge model needs [[m_lo, m_hi], [eps2_lo, eps2_hi]]")
    (m_lo, m_hi), (e_lo, e_hi) = spec.bounds
    masses = np.geomspace(m_lo, m_hi, 200)
    if not is_pure_eps2_scaling(model.expected_yield, masses[::20], np.geomspace(e_lo, e_hi, 5)):
        return False
    import pandas as pd

    eps2 = per_mass_eps2_limit(model.expected_yield, model.a_up, masses)
    write_table(out / "active_per_mass.csv", pd.DataFrame({"mass_gev": masses, "eps2_up": eps2}))
    log.info("the signal yield is a pure eps^2 scaling: one limit per mass fixes the contour exactly; wrote "
             "%s (no active learning needed)", out / "active_per_mass.csv")
    return True


def _axis_grid(learner: ActiveLearner, axis: int, n: int) -> FloatArray:
    lo, hi = learner.bounds[axis]
    return np.geomspace(lo, hi, n) if learner.log_axes[axis] else np.linspace(lo, hi, n)


def _truth(spec: ActiveSettings, objective: Any, learner: ActiveLearner) -> dict[str, Any] | None:
    """The objective on a dense grid, when cheap and asked for (``truth_grid``: points per axis; 0: none)."""
    n = spec.truth_grid
    if n <= 0 or learner.dim > 2:
        return None
    if learner.dim == 1:
        excess = isinstance(objective, (ExcessObjective, CombinedExcessObjective))
        x = learner.candidates[:, 0] if excess else _axis_grid(learner, 0, n)
        return {"axes": [x], "values": grid_values(objective, x[:, None])}
    xs = [_axis_grid(learner, 0, n), _axis_grid(learner, 1, n)]
    mm, ee = np.meshgrid(*xs, indexing="ij")
    if hasattr(objective, "log_mu95"):
        values = objective.log_mu95(mm, ee)
    else:
        values = grid_values(objective, np.c_[mm.ravel(), ee.ravel()]).reshape(mm.shape)
    return {"axes": xs, "values": np.asarray(values)}


def _progress(learner: ActiveLearner, truth: dict[str, Any] | None) -> dict[str, float]:
    row: dict[str, float] = {"n_evaluations": learner.n_told, "n_failed": learner.n_told - learner.n_finite}
    if learner._post is None:
        return row
    if learner.acquisition in CONTOUR:
        row["estimated_misclassified"] = learner.misclassified_fraction()
        row["estimated_misclassified_raw"] = learner.misclassified_fraction(calibrated=False)
        if truth is not None and learner.dim == 2:
            mean = _grid_prediction(learner, truth["axes"])[0]
            t = float(learner.threshold)  # type: ignore[arg-type]
            row["true_misclassified"] = float(np.mean((mean <= t) != (truth["values"] <= t)))
    else:
        row["best_value"] = learner.best_value()
        row["best_point_0"] = float(learner.best_point()[0])
    return row


def _grid_prediction(learner: ActiveLearner, axes: list[FloatArray]) -> tuple[FloatArray, FloatArray]:
    mesh = np.meshgrid(*axes, indexing="ij")
    pred = learner.predict(np.stack([m.ravel() for m in mesh], axis=1))
    return pred.mean.reshape(mesh[0].shape), pred.std.reshape(mesh[0].shape)


def snapshot(learner: ActiveLearner, axes: list[str], truth: dict[str, Any] | None, *, iteration_label: str = "",
             convergence: list[dict[str, float]] | None = None, target: float | None = None,
             value_label: str = "objective") -> dict[str, Any]:
    """Everything a plot of the current surrogate needs, as plain arrays (``value_label``: the objective's name)."""
    import pandas as pd

    grid_axes = truth["axes"] if truth is not None else [_axis_grid(learner, i, 80) for i in range(min(learner.dim, 2))]
    if learner.dim == 1 and truth is None:  # the curve passes through the evaluated points, not between them
        told = learner.points[:, 0]
        grid_axes = [np.union1d(np.asarray(grid_axes[0], dtype=np.float64), told[np.isfinite(learner.y)])]
    snap: dict[str, Any] = {"dim": learner.dim, "axes": axes, "labels": [LABELS.get(a, a) for a in axes],
                            "log_axes": learner.log_axes.tolist(), "threshold": learner.threshold,
                            "points": learner.points, "values": learner.y, "title": iteration_label,
                            "iteration": learner.iteration, "truth": None if truth is None else truth["values"],
                            "convergence": pd.DataFrame(convergence or []), "target": target,
                            "value_label": value_label}
    if learner.dim <= 2 and learner._post is not None:
        snap["grid"] = grid_axes
        snap["mean"], snap["std"] = _grid_prediction(learner, grid_axes)
        if learner.dim == 1 and learner.n_finite:
            snap["best"] = float(learner.best_point()[0])
    return snap

