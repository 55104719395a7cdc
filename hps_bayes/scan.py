"""Mass-point evaluation and scans over a mass grid.

``evaluate_mass`` fits one window (free fit, fit at A = 0), computes the local
significance and the CLs upper limits on A (observed and expected band), and
converts them to ε².  ``run_scan`` does this over a grid, with a progress bar,
optionally writing each point's ``numbers.json`` atomically as soon as it is
done and skipping points whose results already exist (resume).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from hps_bayes import __version__
from hps_bayes.core import FloatArray
from hps_bayes.errors import FitError, HpsBayesError, InputError
from hps_bayes.fit import newton_fit
from hps_bayes.io import Spectrum, crop, rebin
from hps_bayes.model import Window, WindowObjective, make_window
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
from hps_bayes.stats import AsymptoticCalculator, upper_limit

log = logging.getLogger(__name__)


def mass_grid(settings: AnalysisSettings) -> FloatArray:
    """The scan's masses (GeV): ``scan.mass_min``..``mass_max`` in ``scan.step``.

    Unset ends default to the dataset's range shrunk by ``scan.edge_sigmas``·σ(m)
    at each end, so that no window loses more than half its width to the range end.
    """
    preset, scan = settings.dataset, settings.scan
    lo, hi = preset.mass_range
    if scan.mass_min is None:
        lo = float(lo + scan.edge_sigmas * sigma_m(lo, preset))
    else:
        lo = scan.mass_min
    if scan.mass_max is None:
        hi = float(hi - scan.edge_sigmas * sigma_m(hi, preset))
    else:
        hi = scan.mass_max
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
    """Rebin by the dataset's factor and crop to its mass range."""
    preset = settings.dataset
    out = rebin(spectrum, preset.rebin) if preset.rebin > 1 else spectrum
    return crop(out, *preset.mass_range)


def _check_mass(spectrum: Spectrum, mass: float, settings: AnalysisSettings) -> None:
    lo, hi = settings.dataset.mass_range
    if not (lo <= mass <= hi) or not (spectrum.edges[0] <= mass <= spectrum.edges[-1]):
        raise InputError(
            f"mass {mass * 1e3:.2f} MeV is outside dataset {settings.dataset.name!r}'s range "
            f"[{lo * 1e3:.1f}, {hi * 1e3:.1f}] MeV (spectrum covers [{spectrum.edges[0] * 1e3:.1f}, "
            f"{spectrum.edges[-1] * 1e3:.1f}] MeV); choose a mass inside it or change dataset.mass_range"
        )


def build_window(spectrum: Spectrum, mass: float, settings: AnalysisSettings) -> Window:
    """The fit window around ``mass`` with its signal template."""
    _check_mass(spectrum, mass, settings)
    sigma = float(sigma_m(mass, settings.dataset))
    template = signal_template(spectrum.edges, mass, sigma)
    lo, hi = settings.dataset.mass_range
    return make_window(spectrum.edges, spectrum.counts, mass=mass, sigma=sigma, template=template,
                       settings=settings.background, range_lo=lo, range_hi=hi)


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
    calc = AsymptoticCalculator(objective, objective.observed())
    disc = calc.discovery()
    free, null = calc.free_fit, calc.fit_at_zero
    limit = upper_limit(calc, alpha=settings.stats.alpha)
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
        A_up=limit.mu_up, A_up_expected=tuple(limit.mu_up_expected),
        eps2_up=limit.mu_up / k, eps2_up_expected=tuple(v / k for v in limit.mu_up_expected),
        rho=rho, window_lo=float(window.edges[0]), window_hi=float(window.edges[-1]),
        window_bins=window.n_bins, window_clipped=window.clipped_low or window.clipped_high,
        converged=converged, n_iter=free.n_iter, eta=window.eta,
        lengthscale=settings.background.lengthscale, method=settings.stats.method, n_toys=0,
        seed=settings.seed, config_hash=settings.config_hash(), version=__version__,
        seconds=time.perf_counter() - t_start,
    )


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
    settings = resolve_settings(dataset, config)
    spec = prepare_spectrum(spectrum, settings)
    _check_mass(spec, mass, settings)
    return evaluate_point(spec, mass, settings)


def point_path(out_dir: str | Path, result_or_mass: MassPointResult | float, dataset: str) -> Path:
    mass = result_or_mass.mass if isinstance(result_or_mass, MassPointResult) else result_or_mass
    return Path(out_dir) / mass_label(mass) / dataset / "numbers.json"


def load_finished(path: Path, config_hash: str) -> MassPointResult | None:
    """A finished result at ``path`` computed with the same settings, else None."""
    if not path.exists():
        return None
    try:
        payload = read_json(path)
        result = MassPointResult.from_dict(payload["result"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable %s (%s); the point is recomputed", path, exc)
        return None
    if result.config_hash != config_hash or result.status != "ok":
        return None
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
) -> Any:
    """Evaluate every mass of the grid (or ``masses``) and return a pandas DataFrame.

    With ``out_dir``, each point's ``<out_dir>/m030MeV/<dataset>/numbers.json``
    is written atomically when it is done, and points already there with the
    same config hash and status "ok" are read back instead of recomputed.
    """
    from tqdm.auto import tqdm

    settings = resolve_settings(dataset, config)
    spec = prepare_spectrum(spectrum, settings)
    grid = mass_grid(settings) if masses is None else np.asarray(list(masses), dtype=float)
    chash = settings.config_hash()
    results: list[MassPointResult] = []
    disable = None if progress is None else not progress  # None: off when not a terminal
    for mass in tqdm(grid, desc=f"scan {settings.dataset.name}", unit="mass", disable=disable, leave=False):
        path = point_path(out_dir, float(mass), settings.dataset.name) if out_dir else None
        result = load_finished(path, chash) if path else None
        if result is None:
            result = evaluate_point(spec, float(mass), settings)
            if path:
                write_json(path, {"result": result.to_dict(), "settings": settings.to_dict()})
        results.append(result)
        if on_result is not None:
            on_result(result)
    return results_frame(results)


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
