"""The active-learning loop: ask a batch, evaluate it (in-process or through an executor), tell, save.

The history (one row per evaluation: iteration, the point, value, status,
message, seconds) is written atomically as CSV after every batch; a rerun with
the same history file tells the learner everything saved and continues.
Batches run through any executor with ``submit`` (``submitit.AutoExecutor`` for
local processes or SLURM jobs, as the scan's launchers; submitted as one job
array when the executor has ``batch()``).  An evaluation that raises, returns a
non-finite value, or whose job dies is recorded as failed (NaN) — the loop goes on.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hps_bayes.active.acquisition import CONTOUR
from hps_bayes.active.learner import ActiveLearner
from hps_bayes.core import FloatArray
from hps_bayes.errors import ConfigError
from hps_bayes.results.files import write_json, write_table
from hps_bayes.results.objects import record_from_dict, record_to_dict

log = logging.getLogger(__name__)

Objective = Callable[[Any], float]
Cluster = Literal["none", "local", "slurm", "debug"]


@dataclass(frozen=True)
class ActiveSummary:
    """Outcome of an active-learning run (fixed shape; NaN where not applicable)."""

    n_evaluations: int
    n_failed: int
    n_iterations: int
    stop_reason: str
    estimated_misclassified: float = math.nan
    estimated_misclassified_raw: float = math.nan
    sigma_scale: float = math.nan
    best_value: float = math.nan
    best_point: tuple[float, ...] = ()
    resumed_from: int = 0
    seconds: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        return record_to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ActiveSummary:
        return record_from_dict(cls, d)


def make_executor(cluster: Cluster, folder: str | Path, parameters: dict[str, Any] | None = None) -> Any:
    """``None`` (in-process) for cluster "none", else a ``submitit.AutoExecutor`` ("local", "slurm", "debug")."""
    if cluster == "none":
        return None
    if cluster not in ("local", "slurm", "debug"):
        raise ConfigError(f"executor cluster={cluster!r}: choose none, local, slurm or debug")
    import submitit

    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    executor.update_parameters(**(parameters or {}))
    return executor


def evaluate_batch(objective: Objective, points: FloatArray, executor: Any = None) -> list[tuple[float, str, str, float]]:
    """(value, status, message, seconds) per point; failures become (NaN, "failed", reason, …)."""
    if executor is None:
        return [_safe_call(objective, p) for p in points]
    batch = executor.batch() if hasattr(executor, "batch") else contextlib.nullcontext()
    with batch:
        jobs = [executor.submit(_safe_call, objective, p) for p in points]
    out = []
    for job, p in zip(jobs, points, strict=True):
        try:
            out.append(job.result())
        except Exception as exc:  # noqa: BLE001  (a killed or failed job: record it, keep going)
            log.warning("job for point %s failed: %s", np.round(p, 8).tolist(), str(exc).splitlines()[0][:200])
            out.append((math.nan, "failed", f"job: {str(exc).splitlines()[0][:200]}", math.nan))
    return out


def _safe_call(objective: Objective, point: FloatArray) -> tuple[float, str, str, float]:
    start = time.perf_counter()
    try:
        value = float(objective(np.asarray(point, dtype=np.float64)))
    except Exception as exc:  # noqa: BLE001  (any failure of a user objective is recorded, not fatal)
        return math.nan, "failed", f"{type(exc).__name__}: {exc}"[:300], time.perf_counter() - start
    status = "ok" if math.isfinite(value) else "failed"
    return value, status, "" if status == "ok" else "non-finite value", time.perf_counter() - start


def load_history(path: Path, learner: ActiveLearner, axes: Sequence[str]) -> tuple[Any, int]:
    """Tell ``learner`` the saved history at ``path`` (if any); (frame, last iteration)."""
    import pandas as pd

    if not path.exists():
        return pd.DataFrame(), 0
    frame = pd.read_csv(path, keep_default_na=False, na_values=["nan", "NaN", ""])
    missing = [a for a in axes if a not in frame]
    if missing:
        raise ConfigError(f"history {path} has no column(s) {missing}: it belongs to another problem; "
                          f"choose another run_dir or remove the file")
    if len(frame):
        learner.tell(frame[list(axes)].to_numpy(float), frame["value"].to_numpy(float),
                     iteration=frame["iteration"].to_numpy(float))
        log.info("resuming from %s: %d evaluations in %d iterations", path, len(frame), int(frame.iteration.max()))
    return frame, int(frame.iteration.max()) if len(frame) else 0


def run_active(objective: Objective, learner: ActiveLearner, *, axes: Sequence[str], max_evaluations: int,
               q: int = 1, history_path: str | Path | None = None, executor: Any = None,
               target_misclassified: float = 0.01, patience: int = 2, ei_tolerance: float = 0.01,
               callback: Callable[[ActiveLearner, int], None] | None = None) -> tuple[ActiveSummary, Any]:
    """Ask/evaluate/tell until the stopping rule holds or ``max_evaluations`` are spent.

    Stopping: for a contour, the surrogate's calibrated estimate of the misclassified
    fraction (:meth:`ActiveLearner.misclassified_fraction`) ≤ ``target_misclassified``
    in ``patience`` consecutive iterations, once values on both sides of the threshold have been
    seen (before that the surrogate can be confidently wrong about a contour it has never met) and
    while the fitted noise variance is below the signal variance (a fit that explains the values as
    noise around a constant is sure of a contour it does not model);
    for an extremum, the largest expected
    improvement over the candidates < ``ei_tolerance``·(spread of the values).

    Returns the summary and the history (a pandas DataFrame).
    """
    import pandas as pd

    start = time.perf_counter()
    path = Path(history_path) if history_path else None
    frame, iteration = load_history(path, learner, axes) if path else (pd.DataFrame(), 0)
    resumed, calm, reason = len(frame), 0, "max_evaluations"
    while learner.n_told < max_evaluations:
        points = learner.ask(min(q, max_evaluations - learner.n_told))
        iteration += 1
        results = evaluate_batch(objective, points, executor)
        learner.tell(points, [r[0] for r in results], iteration=np.full(len(points), iteration))
        frame = pd.concat([frame, _rows(points, results, axes, iteration)], ignore_index=True)
        if path:
            write_table(path, frame)
        if callback:
            callback(learner, iteration)
        done, text = _should_stop(learner, target_misclassified, ei_tolerance)
        calm = calm + 1 if done else 0
        log.info("iteration %d: %d evaluations (%d failed); %s", iteration, learner.n_told,
                 learner.n_told - learner.n_finite, text)
        if calm >= patience:
            reason = "converged"
            break
    summary = _summary(learner, iteration, reason, resumed, time.perf_counter() - start)
    if path:
        write_json(path.with_name("active_summary.json"), summary.to_dict())
    return summary, frame


def _rows(points: FloatArray, results: list[tuple[float, str, str, float]], axes: Sequence[str],
          iteration: int) -> Any:
    import pandas as pd

    data: dict[str, Any] = {"iteration": iteration}
    for i, name in enumerate(axes):
        data[name] = points[:, i]
    data.update(value=[r[0] for r in results], status=[r[1] for r in results], message=[r[2] for r in results],
                seconds=[r[3] for r in results])
    return pd.DataFrame(data)


def _should_stop(learner: ActiveLearner, target: float, ei_tolerance: float) -> tuple[bool, str]:
    if learner.n_finite < learner.n_init or learner._post is None:
        return False, "initial design"
    if learner.acquisition in CONTOUR:
        y = learner.y[np.isfinite(learner.y)]
        if not (np.any(y <= learner.threshold) and np.any(y > learner.threshold)):  # type: ignore[operator]
            return False, "no value on each side of the threshold yet: the contour has not been found"
        post = learner._post
        if post.noise_var >= post.prior_var:
            return False, (f"the surrogate explains the values mostly as noise (noise variance "
                           f"{post.noise_var:.3g} >= signal variance {post.prior_var:.3g}): no contour to trust")
        est = learner.misclassified_fraction()
        return est <= target, f"estimated misclassified fraction {est:.4f} (σ scale {learner.sigma_scale:.2f})"
    ei, spread = learner.max_expected_improvement()
    return ei < ei_tolerance * spread, f"best {learner.best_value():.4g}, max EI {ei:.3g}"


def _summary(learner: ActiveLearner, iteration: int, reason: str, resumed: int, seconds: float) -> ActiveSummary:
    contour = learner.acquisition in CONTOUR and learner._post is not None
    best_point: tuple[float, ...] = ()
    best = math.nan
    if learner.n_finite and not contour:
        best, best_point = learner.best_value(), tuple(float(v) for v in learner.best_point())
    return ActiveSummary(
        n_evaluations=learner.n_told, n_failed=learner.n_told - learner.n_finite, n_iterations=iteration,
        stop_reason=reason,
        estimated_misclassified=learner.misclassified_fraction() if contour else math.nan,
        estimated_misclassified_raw=learner.misclassified_fraction(calibrated=False) if contour else math.nan,
        sigma_scale=learner.sigma_scale, best_value=best, best_point=best_point, resumed_from=resumed,
        seconds=seconds)
