"""The run folder: per-point files, resume, job provenance and signal handling."""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hps_bayes import __version__
from hps_bayes.analysis.grid import mass_grid
from hps_bayes.analysis.settings import AnalysisSettings
from hps_bayes.errors import ConfigError, HpsBayesError
from hps_bayes.inputs.spectrum import Spectrum
from hps_bayes.results.files import content_hash, read_json, write_json
from hps_bayes.results.objects import MassPointResult, mass_label, results_frame

#: The columns of a mass point today: a stored point lacking one was written by an earlier version.
RESULT_FIELDS = frozenset(f.name for f in dataclasses.fields(MassPointResult))

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


def result_key(settings: AnalysisSettings, spectrum: Spectrum, tables: Iterable[str] = ()) -> dict[str, Any]:
    """What a finished point's numbers depend on: the settings' hash, the analysed spectrum's
    content (edges, counts and variances, as fitted), every table's content and the package version.
    A point is reused only when its stored key is this one."""
    return {"config_hash": settings.config_hash(),
            "input_hash": content_hash(spectrum.edges, spectrum.counts, spectrum.variances),
            "tables": {str(t): content_hash(t) for t in tables}, "version": __version__}


def stored_key(payload: Mapping[str, Any]) -> dict[str, Any]:
    """The key a ``numbers.json`` was written with (files without one: its result's hash and version only)."""
    if "key" in payload:
        return dict(payload["key"])
    result = payload.get("result") or {}
    return {"config_hash": result.get("config_hash"), "input_hash": None, "tables": None,
            "version": result.get("version")}


def _read_payload(path: Path) -> dict[str, Any] | None:
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def load_finished(path: Path, key: Mapping[str, Any]) -> MassPointResult | None:
    """A finished result at ``path`` computed with the same key (:func:`result_key`), else None.

    Failed points (status other than "ok") and points of another key return None, so that a
    rerun computes them again.
    """
    payload = _read_payload(path) if path.exists() else None
    if payload is None or stored_key(payload) != dict(key) or not RESULT_FIELDS <= set(payload.get("result") or {}):
        return None  # another key, or written before one of today's columns existed: computed again
    result = read_point(path)
    return result if result is not None and result.status == "ok" else None


class RunFolderConflict(ConfigError):
    """A run folder already holds results of other settings, data, tables or package version."""


def _differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    names = {"config_hash": "settings", "input_hash": "spectrum content", "tables": "tables", "version": "version"}
    return ", ".join(f"{names.get(k, k)} {old.get(k)} -> {new.get(k)}" if k != "tables" else names[k]
                     for k in names if old.get(k) != new.get(k))


def check_run_folder(run_dir: str | Path, dataset: str, key: Mapping[str, Any], *, overwrite: bool = False) -> None:
    """Refuse to write into a run folder whose ``numbers.json`` of ``dataset`` hold another key.

    Raises
    ------
    RunFolderConflict
        Naming the folder, how many results differ and in what, and the fixes: a new
        ``run_dir``, or ``overwrite=true`` to recompute and replace them.
    """
    if overwrite:
        return
    other: list[dict[str, Any]] = []
    for path in sorted(Path(run_dir).glob(f"m*/{dataset}/numbers.json")):
        payload = _read_payload(path)
        if payload is not None and stored_key(payload) != dict(key):
            other.append(stored_key(payload))
    if other:
        raise RunFolderConflict(
            f"run folder {run_dir} holds {len(other)} results of dataset {dataset} computed with other inputs "
            f"({_differences(other[0], key)}); refusing to overwrite them: choose a new run_dir=..., or add "
            "overwrite=true to recompute and replace them")


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


def write_run_manifest(run_dir: str | Path, settings: AnalysisSettings, *, overwrite: bool = False,
                       keep_existing: bool = False) -> Path:
    """Record the scan's settings, config hash and full grid in the run folder (atomic, same for every chunk).

    With ``keep_existing`` a manifest of the same settings is left as it is (a job that only adds to
    the run, such as a batch of toy scans, keeps the scan's record of its chunking).

    Raises
    ------
    RunFolderConflict
        If the folder's manifest records other settings or another version (unless ``overwrite``).
    """
    path = run_manifest_path(run_dir, settings.dataset.name)
    old = _read_payload(path) if path.exists() else None
    new = {"config_hash": settings.config_hash(), "version": __version__}
    if old is not None and not overwrite and {k: old.get(k) for k in new} != new:
        raise RunFolderConflict(
            f"run folder {run_dir} holds a scan of dataset {settings.dataset.name} with other settings "
            f"({_differences(old, new)}); refusing to overwrite it: choose a new run_dir=..., or add "
            "overwrite=true to replace it")
    if keep_existing and old is not None and {k: old.get(k) for k in new} == new:
        return path
    return write_json(path, {
        "dataset": settings.dataset.name, "config_hash": settings.config_hash(),
        "masses": mass_grid(settings).tolist(), "n_chunks": settings.scan.n_chunks,
        "settings": settings.to_dict(), "version": __version__})


def collect_points(run_dir: str | Path, settings: AnalysisSettings,
                   masses: Iterable[float] | None = None) -> tuple[Any, dict[str, Any]]:
    """Read every grid point's ``numbers.json`` under ``run_dir``.

    Returns a frame with one row per mass (status "missing" where no result
    with these settings exists) and a report: counts, missing masses, failed
    points with their message, points computed with other settings ("stale"),
    and the distinct keys (:func:`result_key`) of the points with these settings ("keys").
    """
    grid = mass_grid(settings) if masses is None else np.asarray(list(masses), dtype=float)
    name, chash = settings.dataset.name, settings.config_hash()
    results: list[MassPointResult] = []
    missing: list[float] = []
    stale: list[float] = []
    failed: list[dict[str, Any]] = []
    keys: list[dict[str, Any]] = []
    for mass in grid:
        path = point_path(run_dir, float(mass), name)
        result = read_point(path)
        if result is not None and result.config_hash == chash:
            payload = _read_payload(path) or {}
            if stored_key(payload) not in keys:
                keys.append(stored_key(payload))
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
              "missing": missing, "stale": stale, "failed": failed, "keys": keys}
    return results_frame(results), report
