"""The mass grid, chunks and the spectrum as analysed (rebinning, fit range, turn-on guard)."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from hps_bayes.analysis.settings import AnalysisSettings
from hps_bayes.core import FloatArray
from hps_bayes.errors import InputError
from hps_bayes.inputs.spectrum import Spectrum, crop, rebin
from hps_bayes.inputs.turnon import TurnOn, measure_turn_on
from hps_bayes.inputs.validation import check_rebin, check_resolution, dead_runs
from hps_bayes.model.selection import load_selection
from hps_bayes.physics.presets import DatasetPreset
from hps_bayes.physics.signal import sigma_m
from hps_bayes.results.files import content_hash


def check_binning(spectrum: Spectrum, preset: DatasetPreset) -> None:
    """The analysis bins the dataset's ``rebin`` makes of ``spectrum``: :func:`~hps_bayes.inputs.validation.check_rebin`
    and, with the preset's σ(m), :func:`~hps_bayes.inputs.validation.check_resolution`."""
    check_rebin(spectrum, preset.rebin)
    check_resolution(spectrum, mass_range=preset.mass_range, rebin=preset.rebin, sigma=lambda m: sigma_m(m, preset))


def fit_range(settings: AnalysisSettings) -> tuple[float, float]:
    """The background fit range (GeV): the dataset's ``mass_range``, starting at
    ``background.fit_range_min`` (the turn-on guard, :func:`guard_turn_on`) when that is higher."""
    lo, hi = settings.dataset.mass_range
    start = settings.background.fit_range_min
    return (max(float(lo), float(start)) if start is not None else float(lo)), float(hi)


def live_range(spectrum: Spectrum, mass: float) -> tuple[float, float]:
    """The ends (GeV; ±inf where none) that ``spectrum``'s dead runs (:func:`~hps_bayes.inputs.validation.dead_runs`:
    empty bins where the neighbours predict events) set to a window around ``mass``: a window stops at missing
    data as at a range end, so one gap costs only the masses whose signal reaches into it."""
    lo, hi = -math.inf, math.inf
    for first, stop, expected in dead_runs(np.asarray(spectrum.counts, dtype=float)):
        a, b = float(spectrum.edges[first]), float(spectrum.edges[stop])
        if a <= mass <= b:
            raise InputError(
                f"mass {mass * 1e3:.2f} MeV lies in bins {a * 1e3:.2f}-{b * 1e3:.2f} MeV that are empty where their "
                f"neighbours predict {expected:.3g} events (missing data): nothing can be searched there; fill the "
                "histogram, or leave these masses out (scan.mass_min/mass_max)")
        lo, hi = (max(lo, b), hi) if b < mass else (lo, min(hi, a))
    return lo, hi


def default_grid_ends(settings: AnalysisSettings) -> tuple[float, float]:
    """Where the grid starts and ends without ``scan.mass_min``/``mass_max``: the fit range
    (:func:`fit_range`) shrunk by ``scan.edge_sigmas``·σ(m) at each end."""
    preset, edge = settings.dataset, settings.scan.edge_sigmas
    lo, hi = fit_range(settings)
    return float(lo + edge * sigma_m(lo, preset)), float(hi - edge * sigma_m(hi, preset))


def search_range(settings: AnalysisSettings) -> tuple[float, float]:
    """The masses a scan of this dataset searches (GeV): ``scan.mass_min``..``mass_max``, an unset
    end at :func:`default_grid_ends` (inside the grid of ``background.selection`` when one is used)."""
    lo, hi = default_grid_ends(settings)
    if settings.background.selection:  # a background selection: the masses it was made for
        chosen = load_selection(settings.background.selection)
        lo, hi = max(lo, float(chosen.mass[0])), min(hi, float(chosen.mass[-1]))
    scan = settings.scan
    return (lo if scan.mass_min is None else float(scan.mass_min),
            hi if scan.mass_max is None else float(scan.mass_max))


def mass_grid(settings: AnalysisSettings) -> FloatArray:
    """The scan's masses (GeV): ``scan.mass_min``..``mass_max`` in ``scan.step``.

    Unset ends default to the fit range (:func:`fit_range`) shrunk by ``scan.edge_sigmas``·σ(m)
    at each end, so that no window loses more than half its width to the range end.
    """
    scan = settings.scan
    lo, hi = search_range(settings)
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
    if bkg.selection and bkg.fit_range_min is None:  # each chosen model carries its own range and turn-on
        chosen = load_selection(bkg.selection)
        if not prepared:
            chosen.check_use(settings.dataset.name, content_hash(spectrum.edges, spectrum.counts, spectrum.variances))
        return replace(settings, background=replace(bkg, fit_range_min=chosen.range_lo)), None
    if bkg.turn_on == "off" or bkg.fit_range_min is not None \
            or (bkg.turn_on == "factor" and bkg.turn_on_mass is not None):
        return settings, None
    whole = whole_range_spectrum(spectrum, settings, prepared=prepared)
    turn = _measure_turn_on(whole, settings)
    if bkg.turn_on == "factor":  # the range is kept; the turn-on multiplies every window's background
        return replace(settings, background=replace(bkg, turn_on_mass=turn.m_on, turn_on_width=turn.width)), turn
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
    it, and a mass below it is refused with the reason.  With ``background.turn_on="factor"`` the
    range is kept and the measured m_on, w go into ``background.turn_on_mass``/``turn_on_width``
    (:func:`hps_bayes.model.window.turn_on_log_factor`).  Idempotent: settings whose
    ``fit_range_min`` (or factor turn-on) is set (measured before, or by hand) come back unchanged.
    """
    return turn_on_guard(spectrum, settings, prepared=prepared)[0]
