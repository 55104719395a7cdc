"""Per-mass figures of a scan drawn by worker processes, each with its own reused figures.

Drawing is CPU-bound Python (matplotlib's Agg renderer and the PNG encoder), so threads do not help
and :class:`concurrent.futures.ProcessPoolExecutor` is the tool: every worker keeps one
:class:`~hps_bayes.plots.window.WindowPlotter` for all the masses it draws, and the files are the same
as those of one plotter in one process (each figure depends only on its own mass window).  The
workers are forked (where the platform can) after matplotlib is imported here, so they start at
once; each builds its figures once (about half a second), which pays off from a handful of masses
on.  The parent's compiled functions are never called in a worker, and its BLAS runs one thread.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Literal

from hps_bayes.plots.label import ExperimentLabel, current_label, experiment_label
from hps_bayes.plots.window import WindowFitArrays, WindowPlotter

__all__ = ["MAX_DEFAULT_WORKERS", "MIN_MASSES_PER_WORKER", "available_workers", "plot_windows"]

#: Below this many masses per extra worker, one process draws them (a worker's start costs ~1 s,
#: about three masses' figures).
MIN_MASSES_PER_WORKER = 6

#: At most this many workers unless asked for more (a shared login node is not the job's own).
MAX_DEFAULT_WORKERS = 8

_PLOTTER: WindowPlotter | None = None
_LABEL: ExperimentLabel | None = None


def available_workers() -> int:
    """The CPUs this process may run on (a SLURM task's allocation, a container's limit)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _start(label: ExperimentLabel) -> None:
    global _PLOTTER, _LABEL
    _PLOTTER, _LABEL = WindowPlotter(), label


def _draw(arrays: WindowFitArrays, folder: Path, ext: Literal["png", "pdf"]) -> list[Path]:
    assert _PLOTTER is not None and _LABEL is not None
    with experiment_label(_LABEL):
        return _PLOTTER.plot_all(arrays, folder, ext=ext)


def plot_windows(items: Sequence[tuple[WindowFitArrays, Path]], *, ext: Literal["png", "pdf"] = "png",
                 workers: int | None = None, meanwhile: Callable[[], object] | None = None) -> list[Path]:
    """The three figures of every ``(arrays, folder)`` of ``items``, into ``folder/<kind>.<ext>``.

    ``workers``: processes that draw (None: :func:`available_workers`, at most :data:`MAX_DEFAULT_WORKERS`);
    fewer are used where there are fewer than :data:`MIN_MASSES_PER_WORKER` masses per worker, and
    with one, everything is drawn here.  The label of the figures is the caller's (:func:`~hps_bayes.plots.label.current_label`).
    ``meanwhile``: other work of the caller, run here while the workers draw (first, without workers).
    """
    n = max(1, min(workers or min(available_workers(), MAX_DEFAULT_WORKERS), len(items) // MIN_MASSES_PER_WORKER))
    if n == 1:
        if meanwhile is not None:
            meanwhile()
        with WindowPlotter() as plotter:
            return [path for arrays, folder in items for path in plotter.plot_all(arrays, folder, ext=ext)]
    # fork: the workers start with matplotlib already imported here and do not import the caller's
    # __main__ again (a spawned worker would rerun the command line's imports, ~1-2 s each)
    context = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    with ProcessPoolExecutor(max_workers=n, mp_context=context, initializer=_start,
                             initargs=(current_label(),)) as pool:
        chunks = pool.map(_draw, [a for a, _ in items], [f for _, f in items], [ext] * len(items),
                          chunksize=max(1, len(items) // (4 * n)))
        if meanwhile is not None:
            meanwhile()
        return [path for paths in chunks for path in paths]
