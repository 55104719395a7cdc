"""The fit window of one mass point as the analysis builds it: inside the dataset's range and the background's
fit range, stopped at missing data, with its spurious-signal nuisance (the dataset's table or a selection's S),
and the notes that make its numbers untrustworthy although every fit converged."""

from __future__ import annotations

import functools
import logging
from dataclasses import replace

import numpy as np

from hps_bayes.analysis.grid import fit_range, live_range
from hps_bayes.analysis.settings import AnalysisSettings
from hps_bayes.errors import InputError
from hps_bayes.inputs.spectrum import Spectrum
from hps_bayes.inputs.validation import check_dead_bins
from hps_bayes.model.selection import load_selection
from hps_bayes.model.spurious import SpuriousTable, load_spurious_table, spurious_table_path, with_spurious
from hps_bayes.model.window import Window, make_window
from hps_bayes.physics.signal import sigma_m, signal_template

__all__ = ["MIN_SIGNAL_CONTAINED", "build_window", "check_mass_range", "spurious_table", "window_notes"]

log = logging.getLogger(__name__)


def check_mass_range(spectrum: Spectrum, mass: float, settings: AnalysisSettings) -> None:
    """Raise :class:`InputError` where ``mass`` lies below the guarded start of the background fit range or
    outside the dataset's range and the (prepared) spectrum, naming the setting that changes it."""
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
            f"[{lo * 1e3:.1f}, {hi * 1e3:.1f}] MeV (the part of the spectrum analysed, from the background fit "
            f"range's start: [{spectrum.edges[0] * 1e3:.1f}, {spectrum.edges[-1] * 1e3:.1f}] MeV); choose a mass "
            f"inside it or change dataset.mass_range"
        )


def build_window(spectrum: Spectrum, mass: float, settings: AnalysisSettings, *,
                 live_from: Spectrum | None = None) -> Window:
    """The fit window around ``mass`` with its signal template, inside the part of the spectrum (``live_from``'s
    where given: the data a truth stands in for) that no missing data cut (:func:`live_range`), with the
    spurious-signal nuisance S(m) of the dataset's table (``background.spurious="table"``,
    :func:`hps_bayes.model.with_spurious`) or the model chosen at ``mass``, in its own fit range, and its S
    (``background.selection``, :mod:`hps_bayes.model.selection`)."""
    check_mass_range(spectrum, mass, settings)
    sigma = float(sigma_m(mass, settings.dataset))
    template = signal_template(spectrum.edges, mass, sigma)
    bkg = settings.background
    own = bkg.at_mass(mass)
    lo, hi = fit_range(replace(settings, background=own))
    live_lo, live_hi = live_range(spectrum if live_from is None else live_from, mass)
    window = make_window(spectrum.edges, spectrum.counts, mass=mass, sigma=sigma, template=template,
                         settings=own, range_lo=max(lo, float(spectrum.edges[0]), live_lo), range_hi=min(hi, live_hi))
    if window.edges[0] <= live_lo or window.edges[-1] >= live_hi:
        window = replace(window, at_gap=True)
    check_dead_bins(window.edges, window.counts, where=f"the window around m={mass * 1e3:.2f} MeV")
    if bkg.selection:
        selection = load_selection(bkg.selection)
        window = with_spurious(window, SpuriousTable(np.array([mass]), np.array([selection.spurious_relative(mass)]),
                                                     source=selection.source))
    table = spurious_table(settings)
    if table is not None:
        window = with_spurious(window, table)
    return window


def spurious_table(settings: AnalysisSettings) -> SpuriousTable | None:
    """The spurious-signal table S(m) the settings use; None when ``background.spurious=off`` or
    when the dataset ships none (logged once).  A configured table that is missing raises
    :class:`~hps_bayes.errors.ConfigError`."""
    bkg = settings.background
    if bkg.spurious != "table" or bkg.selection:  # a selection carries its own S
        return None
    path = spurious_table_path(settings.dataset.name, bkg.spurious_table)
    if bkg.spurious_table or path.is_file():
        return load_spurious_table(str(path))
    _warn_no_table(str(path))
    return None


#: Smallest fraction of the signal (its Gaussian template) that must lie inside the window;
#: below it the background absorbs the signal at the range end and σ_A loses its meaning.
MIN_SIGNAL_CONTAINED = 0.9


def window_notes(window: Window, settings: AnalysisSettings) -> list[str]:
    """Why a window's numbers are not trustworthy although every fit converged: the signal is cut by the
    range end, the spurious-signal table was measured for another background or for windows that missing
    data do not stop, or S(m) lies outside it (it is not extrapolated: the table's end value is used and
    the point is flagged)."""
    notes = []
    contained = float(np.sum(window.template))
    if contained < MIN_SIGNAL_CONTAINED:
        notes.append(f"only {contained:.0%} of the signal lies inside the window [{window.edges[0] * 1e3:.1f}, "
                     f"{window.edges[-1] * 1e3:.1f}] MeV (< {MIN_SIGNAL_CONTAINED:.0%}): the mass is too close to "
                     f"the range end; choose a mass at least {settings.scan.edge_sigmas:g} sigma(m) inside it")
    table = spurious_table(settings)
    if table is not None and window.at_gap:
        notes.append(f"the window stops at missing data ([{window.edges[0] * 1e3:.1f}, {window.edges[-1] * 1e3:.1f}] "
                     f"MeV), and the spurious-signal table {table.source} was measured with windows that do not: "
                     "its S does not apply here; run task=select, which measures S with the windows the scan uses")
    label = settings.background.at_mass(window.mass).label() if table is not None and table.background else ""
    if label and table is not None and table.background != label:
        notes.append(f"the spurious-signal table {table.source} was measured for the background {table.background}, "
                     f"not for this one ({label}): its S does not apply; run `hps-bayes task=spurious "
                     "task.write_table=true` with these settings and pass its table (background.spurious_table=<run "
                     "folder>/spurious_<dataset>.csv), or run task=select")
    if table is not None and not table.covers(window.mass):
        notes.append(f"m = {window.mass * 1e3:.2f} MeV is outside the spurious-signal table {table.source} "
                     f"([{table.mass[0] * 1e3:.1f}, {table.mass[-1] * 1e3:.1f}] MeV): S is not measured there; "
                     "rerun `hps-bayes task=spurious task.write_table=true` with these settings and pass its "
                     "table: background.spurious_table=<run folder>/spurious_<dataset>.csv")
    return notes


@functools.lru_cache(maxsize=32)
def _warn_no_table(path: str) -> None:
    log.warning("no spurious-signal table %s for this dataset: the spurious-signal nuisance is off (S = 0); "
                "make one with `hps-bayes task=spurious task.write_table=true` and pass it with "
                "background.spurious_table=<run folder>/spurious_<dataset>.csv, or set "
                "background.spurious=off to silence this", path)
