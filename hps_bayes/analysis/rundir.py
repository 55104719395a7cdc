"""The run folder: per-point files, resume, job provenance and signal handling."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from hps_bayes import __version__
from hps_bayes.analysis.grid import mass_grid
from hps_bayes.analysis.settings import AnalysisSettings
from hps_bayes.errors import HpsBayesError
from hps_bayes.results.files import read_json, write_json
from hps_bayes.results.objects import MassPointResult, mass_label, results_frame

log = logging.getLogger(__name__)

SLURM_KEYS = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT",
              "SLURM_CLUSTER_NAME", "SLURM_JOB_PARTITION")


FAULT_ENV = "HPS_BAYES_FAULT"

def point_path(out_dir: str | Path, result_or_mass: MassPointResult | float, dataset: str) -> Path:
    """``<out_dir>/m030MeV/<dataset>/numbers.json``: where one mass point's results live."""
    mass = result_or_mass.mass if isinstance(result_or_mass, MassPointResult) else result_or_mass
    return Path(out_dir) / mass_label(mass) / dataset / "numbers.json"


def read_point(path: Path) -> MassPointResult | None:
    """The result stored in a ``numbers.json``; None when absent or unreadable."""
    if not path.exists():
        return None
    try:
        return MassPointResult.from_dict(read_json(path)["result"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable %s (%s); the point is recomputed", path, exc)
        return None


def load_finished(path: Path, config_hash: str) -> MassPointResult | None:
    """A finished result at ``path`` computed with the same settings, else None.

    Failed points (status other than "ok") and points computed with other
    settings return None, so that a rerun computes them again.
    """
    result = read_point(path)
    if result is None or result.config_hash != config_hash or result.status != "ok":
        return None
    return result


def job_provenance() -> dict[str, Any]:
    """Where this process runs: host, pid and the SLURM job ids ("" outside SLURM)."""
    env = os.environ
    return {"host": socket.gethostname(), "pid": os.getpid(), **{k.lower(): env.get(k, "") for k in SLURM_KEYS}}


class ScanInterrupted(HpsBayesError):
    """A scan stopped by SIGTERM or SIGUSR2; ``frame`` holds the mass points done so far."""

    def __init__(self, signum: int, frame: Any, previous_handler: Any = None) -> None:
        super().__init__(
            f"scan stopped by {signal.Signals(signum).name} after {len(frame)} mass points (all written); "
            "rerun the same command to compute the missing ones"
        )
        self.signum = signum
        self.frame = frame
        self.previous_handler = previous_handler


class _AbandonPoint(BaseException):
    """Raised by a second signal inside a point: leave it unfinished (nothing of it is written)."""


class _StopOnSignals:
    """SIGTERM/SIGUSR2 during a scan: finish the point in progress, then stop; a second one abandons it.

    Only installed in the main thread; the previous handlers come back on exit.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR2)

    def __init__(self) -> None:
        self.signum: int | None = None
        self.in_point = False
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _StopOnSignals:  # noqa: PYI034
        if threading.current_thread() is threading.main_thread():
            self.previous = {int(s): signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None and self.in_point:
            log.warning("second %s: abandoning the mass point in progress", name)
            raise _AbandonPoint(signum)
        self.signum = signum
        log.warning("caught %s: finishing the mass point in progress, then stopping "
                    "(send it again to stop at once)", name)


def _fault_hook(mass: float) -> None:
    """Testing hook, env ``HPS_BAYES_FAULT``: comma-separated ``sleep=<s>`` (before each point),
    ``kill_at=<GeV>`` (SIGKILL this process there), ``fail_at=<GeV>`` (raise there)."""
    for item in filter(None, os.environ.get(FAULT_ENV, "").split(",")):
        key, _, value = item.partition("=")
        if key == "sleep":
            time.sleep(float(value))
        elif key in ("kill_at", "fail_at") and abs(float(value) - mass) < 1e-9:
            log.error("%s=%s: injected fault at m=%.2f MeV (%s)", FAULT_ENV, item, mass * 1e3, key)
            if key == "fail_at":
                raise RuntimeError(f"injected failure ({FAULT_ENV}={item})")
            os.kill(os.getpid(), signal.SIGKILL)


def run_manifest_path(run_dir: str | Path, dataset: str) -> Path:
    """``<run_dir>/scan_<dataset>.json``: the settings and grid of a (chunked) scan, for ``task=merge``."""
    return Path(run_dir) / f"scan_{dataset}.json"


def write_run_manifest(run_dir: str | Path, settings: AnalysisSettings) -> Path:
    """Record the scan's settings, config hash and full grid in the run folder (atomic, same for every chunk)."""
    return write_json(run_manifest_path(run_dir, settings.dataset.name), {
        "dataset": settings.dataset.name, "config_hash": settings.config_hash(),
        "masses": mass_grid(settings).tolist(), "n_chunks": settings.scan.n_chunks,
        "settings": settings.to_dict(), "version": __version__})


def collect_points(run_dir: str | Path, settings: AnalysisSettings,
                   masses: Iterable[float] | None = None) -> tuple[Any, dict[str, Any]]:
    """Read every grid point's ``numbers.json`` under ``run_dir``.

    Returns a frame with one row per mass (status "missing" where no result
    with these settings exists) and a report: counts, missing masses, failed
    points with their message, points computed with other settings ("stale").
    """
    grid = mass_grid(settings) if masses is None else np.asarray(list(masses), dtype=float)
    name, chash = settings.dataset.name, settings.config_hash()
    results: list[MassPointResult] = []
    missing: list[float] = []
    stale: list[float] = []
    failed: list[dict[str, Any]] = []
    for mass in grid:
        path = point_path(run_dir, float(mass), name)
        result = read_point(path)
        if result is None or result.config_hash != chash:
            (missing if result is None else stale).append(float(mass))
            why = "no numbers.json" if result is None else f"computed with other settings ({result.config_hash})"
            result = MassPointResult(dataset=name, mass=float(mass), status="missing", message=why,
                                     seed=settings.seed, config_hash=chash, version=__version__)
        elif result.status != "ok":
            failed.append({"mass": result.mass, "status": result.status, "message": result.message})
        results.append(result)
    n_ok = len(grid) - len(missing) - len(stale) - len(failed)
    report = {"dataset": name, "config_hash": chash, "n_points": len(grid), "n_ok": n_ok,
              "n_missing": len(missing) + len(stale), "n_failed": len(failed), "complete": n_ok == len(grid),
              "missing": missing, "stale": stale, "failed": failed}
    return results_frame(results), report
