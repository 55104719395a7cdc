"""Mass-point evaluation and scans over a mass grid.

``evaluate_mass`` fits one window (free fit, fit at A = 0), computes the local
significance and the CLs upper limits on A (observed and expected band), and
converts them to ε².  ``run_scan`` does this over a grid, with a progress bar,
optionally writing each point's ``numbers.json`` atomically as soon as it is
done and skipping points whose results already exist (resume).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from hps_bayes import __version__
from hps_bayes.core import FloatArray
from hps_bayes.errors import ConfigError, FitError, HpsBayesError, InputError
from hps_bayes.fit import newton_fit
from hps_bayes.io import Spectrum, crop, rebin
from hps_bayes.model import (
    Window,
    WindowObjective,
    load_spurious_table,
    make_window,
    spurious_table_path,
    with_spurious,
)
from hps_bayes.physics import f_rad, sigma_m, signal_template, yield_per_eps2
from hps_bayes.results import (
    MassPointResult,
    WindowFitArrays,
    mass_label,
    read_json,
    results_frame,
    write_json,
)
from hps_bayes.settings import AnalysisSettings, resolve_settings
from hps_bayes.stats import AsymptoticCalculator, Discovery, ToyCalculator, upper_limit
from hps_bayes.turnon import TurnOn, measure_turn_on

log = logging.getLogger(__name__)


def fit_range(settings: AnalysisSettings) -> tuple[float, float]:
    """The background fit range (GeV): the dataset's ``mass_range``, starting at
    ``background.fit_range_min`` (the turn-on guard, :func:`guard_turn_on`) when that is higher."""
    lo, hi = settings.dataset.mass_range
    start = settings.background.fit_range_min
    return (max(float(lo), float(start)) if start is not None else float(lo)), float(hi)


def default_grid_ends(settings: AnalysisSettings) -> tuple[float, float]:
    """Where the grid starts and ends without ``scan.mass_min``/``mass_max``: the fit range
    (:func:`fit_range`) shrunk by ``scan.edge_sigmas``·σ(m) at each end."""
    preset, edge = settings.dataset, settings.scan.edge_sigmas
    lo, hi = fit_range(settings)
    return float(lo + edge * sigma_m(lo, preset)), float(hi - edge * sigma_m(hi, preset))


def mass_grid(settings: AnalysisSettings) -> FloatArray:
    """The scan's masses (GeV): ``scan.mass_min``..``mass_max`` in ``scan.step``.

    Unset ends default to the fit range (:func:`fit_range`) shrunk by ``scan.edge_sigmas``·σ(m)
    at each end, so that no window loses more than half its width to the range end.
    """
    scan = settings.scan
    lo, hi = default_grid_ends(settings)
    lo = lo if scan.mass_min is None else scan.mass_min
    hi = hi if scan.mass_max is None else scan.mass_max
    # start on a multiple of the step so that grids of different runs line up
    start = math.ceil(round(lo / scan.step, 9)) * scan.step
    masses = np.arange(start, hi + 1e-9, scan.step)
    if len(masses) == 0:
        raise InputError(f"the mass grid [{lo:.4f}, {hi:.4f}] GeV with step {scan.step} is empty; "
                         f"check scan.mass_min/mass_max and the dataset's mass_range")
    return np.round(masses, 7)


def chunk_of(masses: FloatArray, n_chunks: int, chunk: int) -> FloatArray:
    """Contiguous ``chunk``-th of ``n_chunks`` pieces of the grid."""
    return np.array_split(np.asarray(masses), n_chunks)[chunk]


def prepare_spectrum(spectrum: Spectrum, settings: AnalysisSettings) -> Spectrum:
    """Rebin by the dataset's factor and crop to its fit range (:func:`fit_range`)."""
    return crop(_rebinned(spectrum, settings), *fit_range(settings))


def _rebinned(spectrum: Spectrum, settings: AnalysisSettings, *, prepared: bool = False) -> Spectrum:
    """``spectrum`` in the dataset's bins (as it is when ``prepared``: already rebinned)."""
    rebin_by = settings.dataset.rebin
    return spectrum if prepared or rebin_by <= 1 else rebin(spectrum, rebin_by)


def whole_range_spectrum(spectrum: Spectrum, settings: AnalysisSettings, *, prepared: bool = False) -> Spectrum:
    """``spectrum`` rebinned and cropped to the dataset's whole ``mass_range`` (turn-on included,
    whatever the guard says): what the turn-on and the closure truths are fitted to."""
    return crop(_rebinned(spectrum, settings, prepared=prepared), *settings.dataset.mass_range)


def measure_spectrum_turn_on(spectrum: Spectrum, settings: AnalysisSettings, *, prepared: bool = False) -> TurnOn:
    """The turn-on of ``spectrum`` over the dataset's whole ``mass_range`` (:func:`hps_bayes.turnon.measure_turn_on`).

    ``prepared``: the spectrum is already rebinned (e.g. a truth of the spurious-signal study).
    """
    return _measure_turn_on(whole_range_spectrum(spectrum, settings, prepared=prepared), settings)


def _measure_turn_on(whole: Spectrum, settings: AnalysisSettings) -> TurnOn:
    preset, bkg = settings.dataset, settings.background
    return measure_turn_on(whole.edges, whole.counts, lambda m: float(sigma_m(m, preset)),
                           widths=bkg.turn_on_widths, sharpness=bkg.turn_on_sharpness)


def turn_on_guard(spectrum: Spectrum, settings: AnalysisSettings, *,
                  prepared: bool = False) -> tuple[AnalysisSettings, TurnOn | None]:
    """:func:`guard_turn_on` and the measurement it used (None when nothing was measured)."""
    bkg = settings.background
    if bkg.turn_on == "off" or bkg.fit_range_min is not None:
        return settings, None
    whole = whole_range_spectrum(spectrum, settings, prepared=prepared)
    turn = _measure_turn_on(whole, settings)
    start = float(turn.fit_lo)
    if turn.guarded:  # the first bin edge at or above the turn-on end
        edges = np.asarray(whole.edges, float)
        tol = 1e-6 * float(np.min(np.abs(np.diff(edges))))
        above = edges[edges >= start - tol]
        start = float(above[0]) if len(above) else start
    return replace(settings, background=replace(bkg, fit_range_min=start)), turn


def guard_turn_on(spectrum: Spectrum, settings: AnalysisSettings, *, prepared: bool = False) -> AnalysisSettings:
    """Settings whose background fit range starts above a sharp turn-on of ``spectrum``.

    With ``background.turn_on="guard"`` and ``background.fit_range_min`` unset, the turn-on is
    measured (:func:`measure_spectrum_turn_on`); where it is sharp, ``fit_range_min`` becomes
    the first bin edge at or above m_on + n_w·w, else the range start.  The scan grid
    (:func:`mass_grid`) then keeps ``scan.edge_sigmas``·σ(m) from it, windows never reach below
    it, and a mass below it is refused with the reason.  Idempotent: settings whose
    ``fit_range_min`` is set (measured before, or by hand) come back unchanged.
    """
    return turn_on_guard(spectrum, settings, prepared=prepared)[0]


def _check_mass(spectrum: Spectrum, mass: float, settings: AnalysisSettings) -> None:
    lo, hi = settings.dataset.mass_range
    start = fit_range(settings)[0]
    if start > lo and lo <= mass < start:
        raise InputError(
            f"mass {mass * 1e3:.2f} MeV is below the background fit range of dataset {settings.dataset.name!r}, "
            f"which starts at {start * 1e3:.2f} MeV above the spectrum's sharp turn-on (background.turn_on=guard): "
            f"a smooth background cannot tell a turn-on as sharp as the resolution from a signal there. "
            f"Choose a mass above {start * 1e3:.2f} MeV, or set background.turn_on=off (or "
            f"background.fit_range_min=<GeV>) and carry the spurious signal measured there"
        )
    if not (lo <= mass <= hi) or not (spectrum.edges[0] <= mass <= spectrum.edges[-1]):
        raise InputError(
            f"mass {mass * 1e3:.2f} MeV is outside dataset {settings.dataset.name!r}'s range "
            f"[{lo * 1e3:.1f}, {hi * 1e3:.1f}] MeV (spectrum covers [{spectrum.edges[0] * 1e3:.1f}, "
            f"{spectrum.edges[-1] * 1e3:.1f}] MeV); choose a mass inside it or change dataset.mass_range"
        )


def build_window(spectrum: Spectrum, mass: float, settings: AnalysisSettings) -> Window:
    """The fit window around ``mass`` with its signal template.

    With ``background.spurious="table"`` the window carries the spurious-signal nuisance
    of size S(m) from the dataset's table (:func:`hps_bayes.model.with_spurious`).
    """
    _check_mass(spectrum, mass, settings)
    sigma = float(sigma_m(mass, settings.dataset))
    template = signal_template(spectrum.edges, mass, sigma)
    lo, hi = fit_range(settings)
    bkg = settings.background
    window = make_window(spectrum.edges, spectrum.counts, mass=mass, sigma=sigma, template=template,
                         settings=bkg, range_lo=lo, range_hi=hi)
    if bkg.spurious == "table":
        path = spurious_table_path(settings.dataset.name, bkg.spurious_table)
        if bkg.spurious_table or path.is_file():
            table = load_spurious_table(str(path))
            if not table.covers(mass):
                _warn_outside_table(str(path), "below" if mass < table.mass[0] else "above",
                                    float(table.mass[0] if mass < table.mass[0] else table.mass[-1]))
            window = with_spurious(window, table)
        else:
            _warn_no_table(str(path))
    return window


@functools.lru_cache(maxsize=32)
def _warn_outside_table(path: str, side: str, end: float) -> None:
    log.warning("masses %s %.1f MeV lie outside the spurious-signal table %s (measured over the fit range of its "
                "settings, e.g. above the turn-on guard): S there is the table's end value, not a measurement; "
                "rerun `python -m hps_bayes task=spurious task.write_table=true` with these settings", side,
                end * 1e3, path)


@functools.lru_cache(maxsize=32)
def _warn_no_table(path: str) -> None:
    log.warning("no spurious-signal table %s for this dataset: the spurious-signal nuisance is off (S = 0); "
                "make one with `python -m hps_bayes task=spurious task.write_table=true` or set "
                "background.spurious=off to silence this", path)


def background_density(objective: WindowObjective, theta: FloatArray) -> float:
    """ρ(m) = dN/dm (counts/GeV) of the background under the signal.

    The background-only fit's expected counts per bin divided by the bin
    width, averaged with the signal template as weight.
    """
    w = objective.window
    density = objective.background(theta) / w.widths
    weights = w.template / w.template.sum()
    return float(density @ weights)


def _evaluate(spectrum: Spectrum, mass: float, settings: AnalysisSettings) -> MassPointResult:
    t_start = time.perf_counter()
    preset = settings.dataset
    window = build_window(spectrum, mass, settings)
    objective = WindowObjective(window, settings.background)
    calc = _calculator(objective, mass, settings)
    disc = calc.discovery()  # toys: p0 from the background-only toys where any reaches q0
    p0_asymptotic = calc.asymptotic.discovery().p0 if isinstance(calc, ToyCalculator) else disc.p0
    if 0 < settings.stats.toy_p0_above_z <= disc.z0 and disc.n_toys == 0:
        disc = _toy_discovery(objective, mass, settings, disc)
    if isinstance(calc, ToyCalculator):
        limit = upper_limit(calc, alpha=settings.stats.alpha, rtol=1e-3, scan=TOY_SCAN_POINTS)
        calc = calc.asymptotic  # observed fits and σ for the columns below
    else:
        limit = upper_limit(calc, alpha=settings.stats.alpha)
    free, null = calc.free_fit, calc.fit_at_zero
    rho = background_density(objective, null.theta)
    frad = float(f_rad(mass, preset))
    k = float(yield_per_eps2(mass, f_rad=frad, rho=rho, n_eff=preset.n_eff, alpha_em=preset.alpha_em))
    converged = calc.converged and limit.converged
    status = "ok" if converged else "fit_failed"
    message = "" if converged else limit.message
    return MassPointResult(
        dataset=preset.name, mass=float(mass), status=status, message=message,
        sigma_m=window.sigma, f_rad=frad, A_hat=free.poi(objective), sigma_A=calc.sigma_mu(),
        sigma_A_stat=free.poi_error(objective), q0=disc.q0, p0=disc.p0, Z=disc.z0,
        p0_method="toys" if disc.n_toys else "asymptotic", p0_asymptotic=p0_asymptotic,
        A_up=limit.mu_up, A_up_error=limit.mu_up_error if limit.n_toys else float("nan"),
        A_up_expected=tuple(limit.mu_up_expected),
        eps2_up=limit.mu_up / k, eps2_up_expected=tuple(v / k for v in limit.mu_up_expected),
        rho=rho, spurious_signal=window.spurious, window_lo=float(window.edges[0]),
        window_hi=float(window.edges[-1]), window_bins=window.n_bins, window_clipped=window.clipped_low or window.clipped_high,
        converged=converged, n_iter=free.n_iter, eta=window.eta,
        lengthscale=window.lengthscale_sigma, method=settings.stats.method, n_toys=limit.n_toys,
        seed=settings.seed, config_hash=settings.config_hash(), version=__version__,
        seconds=time.perf_counter() - t_start,
    )


def _toy_discovery(objective: WindowObjective, mass: float, settings: AnalysisSettings,
                   asymptotic: Discovery) -> Discovery:
    """p0 from ``stats.toy_p0_toys`` background-only toys (q0 of each, batched), for an excess
    whose asymptotic Z reached ``stats.toy_p0_above_z``; the asymptotic p0 where no toy reaches
    the observed q0 (then p0 < 1/N and the log says so)."""
    toys = ToyCalculator(objective, objective.observed(), n_toys=settings.stats.toy_p0_toys,
                         rng=point_rng(settings, mass, purpose=3))
    disc = toys.discovery()
    if disc.n_toys == 0:
        log.info("m=%.2f MeV: no toy of %d reaches q0 = %.1f; p0 < %.1e, the asymptotic p0 is kept",
                 mass * 1e3, settings.stats.toy_p0_toys, asymptotic.q0, 1 / settings.stats.toy_p0_toys)
    return disc


def evaluate_point(spectrum: Spectrum, mass: float, settings: AnalysisSettings) -> MassPointResult:
    """:func:`_evaluate`, turning a failure at this mass into a result with a status."""
    try:
        return _evaluate(spectrum, mass, settings)
    except (HpsBayesError, FloatingPointError, np.linalg.LinAlgError, ArithmeticError) as exc:
        kind = "input_error" if isinstance(exc, InputError) else "fit_failed"
        if isinstance(exc, FitError):
            kind = "fit_failed"
        log.warning("m=%.2f MeV: %s", mass * 1e3, exc)
        return MassPointResult(dataset=settings.dataset.name, mass=float(mass), status=kind,
                               message=str(exc), seed=settings.seed, config_hash=settings.config_hash(),
                               version=__version__)


def evaluate_mass(
    spectrum: Spectrum,
    mass: float,
    dataset: Any = "2015",
    config: AnalysisSettings | Mapping[str, Any] | None = None,
) -> MassPointResult:
    """Fit one mass hypothesis and return significance and CLs limits.

    Parameters
    ----------
    spectrum : the full spectrum (as read by :func:`hps_bayes.load_spectrum`);
        it is rebinned and cropped as the dataset preset says.
    mass : mass hypothesis in GeV.
    dataset : a preset name ("2015", "2016", "2021", "demo") or a
        :class:`~hps_bayes.physics.DatasetPreset`.
    config : :class:`~hps_bayes.settings.AnalysisSettings`, or a mapping of
        overrides such as ``{"background": {"poly_degree": 5}}``; defaults when None.

    Returns
    -------
    MassPointResult
        ``A_hat, sigma_A, p0, Z, A_up, eps2_up, A_up_expected`` (N = -2..2) and ``status``.
    """
    settings = guard_turn_on(spectrum, resolve_settings(dataset, config))
    spec = prepare_spectrum(spectrum, settings)
    _check_mass(spec, mass, settings)
    return evaluate_point(spec, mass, settings)


def point_path(out_dir: str | Path, result_or_mass: MassPointResult | float, dataset: str) -> Path:
    """``<out_dir>/m030MeV/<dataset>/numbers.json``: where one mass point's results live."""
    mass = result_or_mass.mass if isinstance(result_or_mass, MassPointResult) else result_or_mass
    return Path(out_dir) / mass_label(mass) / dataset / "numbers.json"


def check_mass(spectrum: Spectrum, mass: float, settings: AnalysisSettings) -> None:
    """Raise :class:`~hps_bayes.errors.InputError` when ``mass`` is outside the dataset's range."""
    _check_mass(prepare_spectrum(spectrum, settings), mass, settings)


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


def chunk_seeds(seed: int, n_chunks: int) -> list[int]:
    """One seed per chunk from the base seed: ``numpy.random.SeedSequence(seed).spawn(n_chunks)``."""
    children = np.random.SeedSequence(seed).spawn(n_chunks)
    return [int(child.generate_state(1, dtype=np.uint32)[0]) for child in children]


def point_seed(seed: int, mass: float) -> int:
    """A seed for one mass point that does not depend on how the grid is chunked.

    ``SeedSequence(seed, spawn_key=(mass in keV,))``: a point draws the same
    toys in a chunked run, a single-process run and a rerun.
    """
    sequence = np.random.SeedSequence(seed, spawn_key=(round(mass * 1e6),))
    return int(sequence.generate_state(1, dtype=np.uint32)[0])


SLURM_KEYS = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT",
              "SLURM_CLUSTER_NAME", "SLURM_JOB_PARTITION")


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


FAULT_ENV = "HPS_BAYES_FAULT"


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


def _compute_point(spec: Spectrum, mass: float, settings: AnalysisSettings) -> tuple[MassPointResult, str]:
    """:func:`evaluate_point`, with any unexpected error turned into status "error" plus its traceback."""
    try:
        _fault_hook(mass)
        return evaluate_point(spec, mass, settings), ""
    except Exception as exc:  # noqa: BLE001 - recorded in numbers.json and retried by the next run
        log.error("m=%.2f MeV failed: %s: %s", mass * 1e3, type(exc).__name__, exc)
        result = MassPointResult(dataset=settings.dataset.name, mass=float(mass), status="error",
                                 message=f"{type(exc).__name__}: {exc}", seed=settings.seed,
                                 config_hash=settings.config_hash(), version=__version__)
        return result, traceback.format_exc()


def _scan_point(spec: Spectrum, mass: float, settings: AnalysisSettings, *, out_dir: str | Path | None,
                provenance: Mapping[str, Any] | None, counts: dict[str, int]) -> MassPointResult:
    path = point_path(out_dir, mass, settings.dataset.name) if out_dir else None
    result = load_finished(path, settings.config_hash()) if path else None
    if result is not None:
        counts["reused"] += 1
        return result
    started = time.time()
    result, error = _compute_point(spec, mass, settings)
    counts["computed"] += 1
    if path:
        prov = {**(provenance or {}), **job_provenance(), "point_seed": point_seed(settings.seed, mass),
                "started": started, "finished": time.time()}
        if error:
            prov["traceback"] = error
        write_json(path, {"result": result.to_dict(), "settings": settings.to_dict(), "provenance": prov})
    return result


def run_scan(
    spectrum: Spectrum,
    *,
    dataset: Any = "demo",
    config: AnalysisSettings | Mapping[str, Any] | None = None,
    masses: Iterable[float] | None = None,
    out_dir: str | Path | None = None,
    progress: bool | None = None,
    on_result: Callable[[MassPointResult], None] | None = None,
    provenance: Mapping[str, Any] | None = None,
    handle_signals: bool = False,
) -> Any:
    """Evaluate every mass of the grid (or ``masses``) and return a pandas DataFrame.

    With ``out_dir``, each point's ``<out_dir>/m030MeV/<dataset>/numbers.json``
    (result, settings, and ``provenance``: the given keys plus host, pid, SLURM
    job ids, the point's seed) is written atomically when it is done; points
    already there with the same config hash and status "ok" are read back
    instead of recomputed, failed ones are computed again.  ``frame.attrs``
    counts the points ``computed`` and ``reused``.

    With ``handle_signals``, SIGTERM and SIGUSR2 (SLURM's pre-emption and
    time-limit signal) stop the scan after the point in progress (a second
    signal abandons that point) and raise :class:`ScanInterrupted` with the
    points done so far.
    """
    from tqdm.auto import tqdm

    settings = guard_turn_on(spectrum, resolve_settings(dataset, config))
    spec = prepare_spectrum(spectrum, settings)
    grid = mass_grid(settings) if masses is None else np.asarray(list(masses), dtype=float)
    results: list[MassPointResult] = []
    counts = {"computed": 0, "reused": 0}
    disable = None if progress is None else not progress  # None: off when not a terminal
    with _StopOnSignals() if handle_signals else contextlib.nullcontext() as stop:
        try:
            for mass in tqdm(grid, desc=f"scan {settings.dataset.name}", unit="mass", disable=disable, leave=False):
                if stop is not None and stop.signum is not None:
                    break
                if stop is not None:
                    stop.in_point = True
                result = _scan_point(spec, float(mass), settings, out_dir=out_dir, provenance=provenance,
                                     counts=counts)
                if stop is not None:
                    stop.in_point = False
                results.append(result)
                if on_result is not None:
                    on_result(result)
        except _AbandonPoint:
            pass
        frame = results_frame(results)
        frame.attrs.update(counts)
        if stop is not None and stop.signum is not None:
            raise ScanInterrupted(stop.signum, frame, stop.previous.get(stop.signum))
    return frame


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


def with_mass_range(settings: AnalysisSettings, lo: float, hi: float) -> AnalysisSettings:
    """Settings whose scan covers [lo, hi] GeV."""
    return replace(settings, scan=replace(settings.scan, mass_min=lo, mass_max=hi))


def window_fit_arrays(spectrum: Spectrum, result: MassPointResult, settings: AnalysisSettings) -> WindowFitArrays:
    """Refit one finished point (free and at A = A_up) and return the arrays its plots draw."""
    window = build_window(spectrum, result.mass, settings)
    objective = WindowObjective(window, settings.background)
    data = objective.observed()
    free = newton_fit(objective, data)
    at_limit = newton_fit(objective, data, poi_fixed=result.A_up, init=free.theta)
    return WindowFitArrays(
        dataset=result.dataset, mass=result.mass, sigma_m=window.sigma, edges=window.edges,
        counts=window.counts, background_free=objective.background(free.theta),
        signal_free=free.theta[0] * window.template, background_limit=objective.background(at_limit.theta),
        signal_limit=result.A_up * window.template, A_hat=result.A_hat, A_up=result.A_up, Z=result.Z,
    )


# --- toys: calculator choice, per-point seeds, look-elsewhere toy scans ---------------------------------

#: μ values of the CLs scan of a toy limit (see :func:`hps_bayes.stats.upper_limit`).
TOY_SCAN_POINTS = 12


def point_rng(settings: AnalysisSettings, mass: float, *, purpose: int = 0) -> np.random.Generator:
    """The generator of one mass point: from ``settings.seed`` and the mass (in 0.1 keV), so that
    results do not depend on chunking or order (``numpy.random.SeedSequence``)."""
    return np.random.default_rng(np.random.SeedSequence([settings.seed, round(mass * 1e7), purpose]))


def _calculator(objective: WindowObjective, mass: float,
                settings: AnalysisSettings) -> AsymptoticCalculator | ToyCalculator:
    """The calculator ``settings.stats.method`` names."""
    if settings.stats.method == "asymptotic":
        return AsymptoticCalculator(objective, objective.observed())
    if settings.stats.n_toys < 10:
        raise ConfigError(f"stats.method=toys with stats.n_toys={settings.stats.n_toys}: set stats.n_toys "
                          "(e.g. 1000 for limits, 10000 for bands), or use stats=toys")
    return ToyCalculator(objective, objective.observed(), n_toys=settings.stats.n_toys,
                         rng=point_rng(settings, mass))


def _null_truth(spec: Spectrum, grid: FloatArray, settings: AnalysisSettings) -> tuple[FloatArray, list[Any]]:
    """Background-only truth per bin and, per mass, (objective, θ̂̂(0), first bin) or None.

    Bin i's truth is the background of the A = 0 fit of the observed window whose mass is
    nearest to the bin centre among the windows that contain the bin; bins in no window
    keep their observed counts (no fit ever sees them).
    """
    centers = 0.5 * (spec.edges[1:] + spec.edges[:-1])
    fits: list[Any] = []
    for mass in grid:
        try:
            obj = WindowObjective(build_window(spec, float(mass), settings), settings.background)
        except InputError as exc:
            log.warning("toy scans: m=%.2f MeV left out (%s)", mass * 1e3, exc)
            fits.append(None)
            continue
        fit = newton_fit(obj, obj.observed(), poi_fixed=0.0)
        first = int(np.searchsorted(spec.edges, obj.window.edges[0] + 1e-12 * abs(obj.window.edges[0])) - 1)
        fits.append((obj, fit.theta, first) if fit.converged else None)
    truth = np.array(spec.counts, dtype=float)
    best = np.full(len(centers), np.inf)
    for mass, item in zip(grid, fits, strict=True):
        if item is None:
            continue
        obj, theta, first = item
        rows = np.arange(first, first + obj.window.n_bins)
        closer = np.abs(centers[rows] - mass) < best[rows]
        truth[rows[closer]] = obj.background(theta)[closer]
        best[rows[closer]] = np.abs(centers[rows[closer]] - mass)
    return truth, fits


def toy_scans(spectrum: Spectrum, settings: AnalysisSettings, *, n_scans: int, rng: np.random.Generator,
              masses: Iterable[float] | None = None, progress: bool | None = None) -> FloatArray:
    """Local significance Z(m) = √q0(m) of background-only toy spectra, shape (n_scans, n_masses).

    The toy spectra are Poisson draws, over the whole (rebinned, cropped) spectrum, from the
    background-only fit of the observed data: per bin, the A = 0 fit of the window centred
    nearest to that bin (:func:`_null_truth`).  Each toy is then analysed like the data at every
    mass of the grid (or ``masses``): the window's fits at A = 0 and free, with the constraint
    centres of the observed analysis, give the asymptotic q0 (arXiv:1007.1727, Eq. 12); all toy
    scans at one mass form one batched fit (:func:`hps_bayes.stats.toys.q0_batch`).  Points
    whose fit failed are NaN (counted in the log); masses whose window cannot be built are NaN.

    Parameters
    ----------
    spectrum : the spectrum as read (rebinned and cropped here, as :func:`run_scan` does).
    settings : the scan's settings.
    n_scans : number of toy scans.
    rng : the source of the toys (same seed, same scans).
    masses : the masses (GeV); the scan grid when None.
    progress : progress bar (None: only on a terminal).
    """
    from tqdm.auto import tqdm

    from hps_bayes.stats.toys import q0_batch

    if n_scans < 1:
        raise ConfigError(f"toy_scans: n_scans = {n_scans}; use at least 1 (e.g. stats.lee_toys=1000)")
    spec = prepare_spectrum(spectrum, settings)
    grid = mass_grid(settings) if masses is None else np.asarray(list(masses), dtype=float)
    truth, fits = _null_truth(spec, grid, settings)
    toys = rng.poisson(truth, size=(n_scans, truth.size)).astype(np.int32)
    z = np.full((n_scans, grid.size), np.nan)
    n_failed = 0
    disable = None if progress is None else not progress
    for j, item in enumerate(tqdm(fits, desc="toy scans", unit="mass", disable=disable, leave=False)):
        if item is None:
            continue
        obj, theta, first = item
        counts = toys[:, first:first + obj.window.n_bins].astype(float)
        aux = np.broadcast_to(obj.observed().aux, (n_scans, obj.model.n_aux))
        q0, failed = q0_batch(obj, counts, aux, init=theta)
        z[:, j] = np.where(failed, np.nan, np.sqrt(q0))
        n_failed += int(np.count_nonzero(failed))
    if n_failed:
        log.warning("toy scans: %d of %d toy fits failed (left out as NaN)", n_failed, z.size)
    return z
