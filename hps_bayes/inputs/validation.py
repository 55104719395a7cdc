"""Input checks of a spectrum and the validation report."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hps_bayes.errors import InputError
from hps_bayes.inputs.spectrum import Spectrum
from hps_bayes.results.files import atomic_write_text

log = logging.getLogger(__name__)

#: How many bin indices a validation report lists per problem.
_MAX_LISTED_INDICES = 5
#: An upper edge above this many GeV suggests an axis in MeV.
_SUSPICIOUS_UPPER_EDGE_GEV = 10.0


# --------------------------------------------------------------------------- validation


def _json_float(value: float) -> float | None:
    """A finite float, or None (JSON has no NaN or infinity)."""
    value = float(value)
    return value if np.isfinite(value) else None


def _bad_bins(mask: NDArray[np.bool_], centers: NDArray[np.float64] | None = None) -> dict[str, Any]:
    """Count of flagged bins, the first few indices and (with the bin ``centers``) their masses in MeV."""
    index = np.flatnonzero(mask)
    out: dict[str, Any] = {"count": int(index.size), "first_indices": [int(i) for i in index[:_MAX_LISTED_INDICES]]}
    if centers is not None:
        out["first_mev"] = [round(float(centers[i]) * 1e3, 3) for i in index[:_MAX_LISTED_INDICES]]
    return out


def _count_checks(spectrum: Spectrum, mass_range: tuple[float, float] | None) -> dict[str, Any]:
    """Per-bin checks of counts and variances.  NaN, infinite or negative counts and bad variances are problems
    inside ``mass_range`` (the whole histogram without one); outside it they are counted
    (``unusable_outside_range``) and left out of the analysis, which never reads those bins."""
    counts, variances = spectrum.counts, spectrum.variances
    finite = np.isfinite(counts)
    safe = np.where(finite, counts, 0.0)
    inside = np.ones(counts.size, dtype=bool)
    edges = spectrum.edges
    if mass_range is not None and np.all(np.isfinite(edges)):
        inside = (edges[1:] > mass_range[0] + 1e-12) & (edges[:-1] < mass_range[1] - 1e-12)
    centers = spectrum.centers
    unusable = ~finite | (safe < 0) | ~np.isfinite(variances) | (variances < 0)
    return {
        "entries": float(np.sum(safe)),
        "empty_bins": int(np.sum(safe == 0.0)),
        "nan_bins": _bad_bins(np.isnan(counts) & inside, centers),
        "inf_bins": _bad_bins(np.isinf(counts) & inside, centers),
        "negative_bins": _bad_bins((safe < 0) & inside, centers),
        "non_integer_bins": _bad_bins(finite & (safe != np.round(safe))),
        "bad_variance_bins": _bad_bins((~np.isfinite(variances) | (variances < 0)) & inside, centers),
        "unusable_outside_range": _bad_bins(unusable & ~inside, centers),
    }


def _binning_checks(edges: NDArray[np.float64]) -> dict[str, Any]:
    """Checks of the bin edges."""
    widths = np.diff(edges)
    finite = bool(np.all(np.isfinite(edges)))
    increasing = finite and bool(np.all(widths > 0))
    uniform = increasing and bool(np.allclose(widths, widths[0], rtol=1e-6, atol=0.0))
    return {
        "range": [_json_float(edges[0]), _json_float(edges[-1])],
        "bin_width": {
            "min": _json_float(np.min(widths)),
            "max": _json_float(np.max(widths)),
            "uniform": uniform,
        },
        "edges_increasing": increasing,
    }


def _fit_checks(spectrum: Spectrum, mass_range: tuple[float, float] | None) -> dict[str, Any]:
    """What breaks window fits, inside ``mass_range`` (the whole histogram without one): dead runs
    of empty bins (MeV ranges), one-bin spikes (masses in MeV), entries, the weight scale Σw²/Σw."""
    edges, counts = spectrum.edges, np.where(np.isfinite(spectrum.counts), spectrum.counts, 0.0)
    inside = np.ones(counts.size, dtype=bool)
    if mass_range is not None:
        inside = (edges[:-1] >= mass_range[0] - 1e-12) & (edges[1:] <= mass_range[1] + 1e-12)
    index = np.flatnonzero(inside)
    if index.size == 0 or not np.all(np.diff(edges) > 0):
        return {"entries_in_range": 0.0, "dead_runs_mev": [], "spikes_mev": [], "weight_scale": None}
    lo, hi = int(index[0]), int(index[-1]) + 1
    sub = counts[lo:hi]
    variances = np.where(np.isfinite(spectrum.variances[lo:hi]), spectrum.variances[lo:hi], 0.0)
    runs = [[round(float(edges[lo + a]) * 1e3, 3), round(float(edges[lo + b]) * 1e3, 3)] for a, b, _ in dead_runs(sub)]
    centers = spectrum.centers[lo:hi]
    total = float(np.sum(sub))
    return {"entries_in_range": total, "dead_runs_mev": runs,
            "spikes_mev": [round(float(centers[i]) * 1e3, 3) for i in spikes(sub)[:_MAX_LISTED_INDICES]],
            "weight_scale": _json_float(np.sum(variances) / total) if total > 0 else None}


def _problems(report: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """Problems (the spectrum cannot be analysed) and warnings (it can, with care)."""
    problems: list[str] = []
    warns: list[str] = []
    inside = " in the analysed range" if report["mass_range_requested"] is not None else ""
    for key, what in (("nan_bins", "NaN"), ("inf_bins", "infinite"), ("negative_bins", "negative")):
        bad = report[key]
        if bad["count"]:
            problems.append(f"{bad['count']} bins with {what} counts{inside} (first at {bad['first_mev']} MeV, "
                            f"bin indices {bad['first_indices']})")
    if report["bad_variance_bins"]["count"]:
        bad = report["bad_variance_bins"]
        problems.append(f"{bad['count']} bins with negative or non-finite variances{inside} (first at "
                        f"{bad['first_mev']} MeV, bin indices {bad['first_indices']})")
    outside = report["unusable_outside_range"]
    if outside["count"]:
        warns.append(f"{outside['count']} bins with NaN, infinite or negative counts or variances outside the analysed "
                     f"range (first at {outside['first_mev']} MeV): not used")
    if not report["edges_increasing"]:
        problems.append("bin edges are not finite and strictly increasing")
    if report["entries"] <= 0:
        problems.append("the histogram has zero entries")
    if report["mass_range_covered"] is False:
        (lo, hi), (want_lo, want_hi) = report["range"], report["mass_range_requested"]
        problems.append(
            f"histogram range [{lo:.6g}, {hi:.6g}] GeV does not cover the requested mass_range [{want_lo:.6g}, "
            f"{want_hi:.6g}] GeV: set dataset.mass_range=[{max(lo, want_lo):.6g},{min(hi, want_hi):.6g}] to analyse "
            "the part it covers"
        )
    if report["spikes_mev"]:
        problems.append(f"one-bin spikes at {report['spikes_mev']} MeV (a bin {SPIKE_FACTOR:g}x and "
                        f"{SPIKE_SIGMAS:g} sigma above both neighbours; a signal spans many bins)")
    if report["mass_range_requested"] is not None and 0 < report["entries_in_range"] < MIN_ENTRIES:
        problems.append(f"only {report['entries_in_range']:.6g} entries in the analysed range (< {MIN_ENTRIES:g}): "
                        "too few to fit a background")
    if report["dead_runs_mev"]:
        warns.append(f"runs of empty bins where the neighbours predict events (missing data) at "
                     f"{report['dead_runs_mev'][:_MAX_LISTED_INDICES]} MeV: windows stop at them as at a range "
                     "end; masses inside them are refused, those whose signal reaches into them flagged")
    scale = report["weight_scale"]
    if report["non_integer_bins"]["count"] and (scale is None or abs(scale - 1.0) <= 1e-6):
        warns.append(f"{report['non_integer_bins']['count']} bins with non-integer counts but no separate sum of "
                     "squared weights: analysed as Poisson counts")
    if scale is not None and abs(scale - 1.0) > 1e-6:
        warns.append(f"weighted histogram (sum(w^2)/sum(w) = {scale:.4g}): analysed as scaled Poisson counts "
                     "(effective counts n/s; yields converted back by s)")
    upper = report["range"][1]
    if upper is not None and upper > _SUSPICIOUS_UPPER_EDGE_GEV:  # every bin would look 1000 times too wide
        problems.append(f"its bin edges reach {upper:.6g}, which looks like MeV; masses are read in GeV: write the "
                        "histogram with its axis in GeV (the edges divided by 1000)")
    return problems, warns


def validate_spectrum(spectrum: Spectrum, *, mass_range: tuple[float, float] | None = None) -> dict[str, Any]:
    """Check a spectrum and describe it in a JSON-able report.

    Parameters
    ----------
    spectrum : Spectrum
        The spectrum to check.
    mass_range : (float, float), optional
        The analysis range [lo, hi] in GeV that the histogram must cover.

    Returns
    -------
    dict
        ``source``, ``name``, ``n_bins``, ``range``, ``bin_width`` (min, max,
        uniform), ``edges_increasing``, ``entries`` (sum of finite counts), ``entries_in_range``,
        ``dead_runs_mev`` (runs of empty bins that cannot be fluctuations, :func:`dead_runs`),
        ``spikes_mev`` (one-bin spikes, :func:`spikes`), ``weight_scale`` (Σw²/Σw),
        ``empty_bins``, ``nan_bins``/``inf_bins``/``negative_bins``/
        ``non_integer_bins``/``bad_variance_bins`` (count and first indices),
        ``mass_range_requested``, ``mass_range_covered`` (None without a range),
        ``problems`` and ``warnings`` (lists of sentences) and ``ok`` (no problems).
        Problems also include one-bin spikes and (with a ``mass_range``) fewer than :data:`MIN_ENTRIES` entries
        in the range; dead runs and weights are warnings (the points they spoil are refused,
        weights are analysed as scaled Poisson counts, :func:`poisson_equivalent`).
    """
    report: dict[str, Any] = {"source": spectrum.source, "name": spectrum.name, "n_bins": spectrum.n_bins}
    report |= _binning_checks(spectrum.edges)
    report |= _count_checks(spectrum, mass_range)
    report["mass_range_requested"] = None if mass_range is None else [float(v) for v in mass_range]
    report["mass_range_covered"] = None
    if mass_range is not None:
        lo, hi = report["range"]
        tol = 1e-9 * max(1.0, abs(float(mass_range[1])))
        report["mass_range_covered"] = (
            lo is not None and hi is not None and lo <= mass_range[0] + tol and hi >= mass_range[1] - tol
        )
    report |= _fit_checks(spectrum, mass_range)
    problems, warns = _problems(report)
    report |= {"ok": not problems, "problems": problems, "warnings": warns}
    return report


def check_rebin(spectrum: Spectrum, rebin: int) -> None:
    """Refuse to merge groups of variable-width bins (``dataset.rebin`` > 1 on a variable binning).

    Raises
    ------
    InputError
        Naming the spectrum's widths and the fix ``dataset.rebin=1``.
    """
    widths = spectrum.widths
    if rebin > 1 and widths.size and not np.allclose(widths, widths[0], rtol=1e-6, atol=0.0):
        raise InputError(
            f"spectrum '{spectrum.name}' has variable bin widths ({widths.min() * 1e3:.4g}-{widths.max() * 1e3:.4g} "
            f"MeV) and dataset.rebin={rebin} would merge unequal bins; set dataset.rebin=1 to analyse the bins "
            "as they are (or give a uniformly binned histogram)")


#: Analysis bins wider than this many σ(m) are refused (:func:`check_resolution`); wider than one σ(m), warned about.
MAX_BIN_SIGMAS = 2.0
_RESOLUTION_WARNED: set[str] = set()


def check_resolution(spectrum: Spectrum, *, mass_range: tuple[float, float], rebin: int,
                     sigma: Callable[[NDArray[np.float64]], NDArray[np.float64]]) -> None:
    """Refuse analysis bins wider than :data:`MAX_BIN_SIGMAS` times the mass resolution ``sigma(m)`` (GeV)
    inside ``mass_range``; warn about bins wider than σ(m).

    The analysis bins are the histogram's bins merged ``rebin`` at a time. A bin wider than
    σ(m) holds most of a signal at its centre: the fit cannot tell the signal's shape from the
    background's and σ_A grows several-fold (a histogram already in 0.5 MeV bins with the presets'
    ``rebin: 10`` gives 5 MeV bins, 7 σ(m) at 15 MeV for 2015).

    Raises
    ------
    InputError
        Naming the widths, σ(m) where they are worst, and the ``dataset.rebin`` that makes them narrower than σ(m)
        (or a finer histogram, or a later range start, where the stored bins are already too wide). An axis
        in MeV, which makes every bin look too wide, is refused before, by :func:`check_analysable`.
    """
    lo, hi = mass_range
    centres = 0.5 * (spectrum.edges[1:] + spectrum.edges[:-1])
    inside = (centres >= lo) & (centres <= hi)
    if not inside.any():
        return
    stored = spectrum.widths[inside]
    resolution = np.asarray(sigma(centres[inside]), dtype=float)
    ratio = stored * rebin / resolution
    worst = int(np.argmax(ratio))
    if ratio[worst] <= 1.0:
        return
    where = f"σ(m) = {resolution[worst] * 1e3:.3g} MeV at {centres[inside][worst] * 1e3:.4g} MeV"
    fits = int(np.floor(np.min(resolution / stored) + 1e-9))
    if fits >= 1:
        fix = f"set dataset.rebin={min(fits, rebin)} (bins of {stored[worst] * min(fits, rebin) * 1e3:.3g} MeV)"
    else:
        above = centres[inside][resolution >= stored]
        start = ""
        if above.size:  # the histogram's own bins are narrower than σ(m) there: unmerged, from there on
            start = (f", or start dataset.mass_range at {above[0]:.4g} GeV or above"
                     + (" with dataset.rebin=1" if rebin > 1 else ""))
        fix = f"give a histogram with finer bins{start}"
    what = (f"spectrum '{spectrum.name}': analysis bins of {stored[worst] * rebin * 1e3:.3g} MeV (the histogram's "
            f"{stored[worst] * 1e3:.3g} MeV bins x dataset.rebin={rebin}) are wider than the mass resolution, {where}")
    if ratio[worst] > MAX_BIN_SIGMAS:
        raise InputError(f"{what}: a signal would fall into one bin; {fix}")
    if what not in _RESOLUTION_WARNED:  # the command line checks the input, then the scan it runs does again
        _RESOLUTION_WARNED.add(what)
        log.warning("%s: the signal's shape is barely resolved there and sigma_A grows; %s", what, fix)


def check_analysable(report: Mapping[str, Any], *, warn: bool = True) -> None:
    """Raise if a :func:`validate_spectrum` report lists problems.

    Raises
    ------
    InputError
        Naming the spectrum, its source and every problem (NaN, infinite or
        negative counts, bad variances, edges not increasing, zero entries,
        mass range not covered, spikes, too few entries).  ``warn``: log the warnings.
    """
    if report["problems"]:
        listing = "; ".join(report["problems"])
        bad_bins = any(report[k]["count"] for k in ("nan_bins", "inf_bins", "negative_bins", "bad_variance_bins"))
        fix = "Fix the input histogram" + (" or choose a dataset.mass_range that leaves those bins out" if bad_bins
                                           and report["mass_range_requested"] is not None else "")
        raise InputError(f"spectrum '{report['name']}' from {report['source']} cannot be analysed: {listing}. {fix}")
    for message in report.get("warnings", []) if warn else []:
        log.warning("spectrum '%s': %s", report["name"], message)


# --------------------------------------------------------------------------- what breaks fits

#: A run of empty bins is "dead" (missing data, not a fluctuation) when the counts its
#: neighbours predict for it exceed this: P(all empty) < e^-20 ≈ 2e-9.
DEAD_RUN_EXPECTED = 20.0
#: A one-bin spike exceeds both neighbours by this many standard deviations ...
SPIKE_SIGMAS = 10.0
#: ... and is at least this many times as high as the higher neighbour.
SPIKE_FACTOR = 3.0
#: Fewest entries in the analysed range: below it the window fits have too few events to
#: constrain a smooth background (100-event spectra give NaN limits).
MIN_ENTRIES = 1000.0
#: Largest spread (max/min) of the per-bin weight scale Σw²/Σw for the scaled-Poisson analysis.
MAX_SCALE_SPREAD = 1.5


def dead_runs(counts: NDArray[np.float64]) -> list[tuple[int, int, float]]:
    """Runs of empty bins that their neighbours say cannot be a fluctuation.

    Returns ``(first, stop, expected)`` per run of zero bins ``counts[first:stop]`` whose
    expected total, (stop − first) times the mean count of up to as many bins on each side,
    exceeds :data:`DEAD_RUN_EXPECTED`.  Runs at the ends use the one side there is.
    """
    c = np.where(np.isfinite(counts), counts, 0.0)
    empty = np.concatenate([[False], c == 0, [False]])
    starts = np.flatnonzero(empty[1:] & ~empty[:-1])
    stops = np.flatnonzero(~empty[1:] & empty[:-1])
    runs = []
    for first, stop in zip(starts, stops, strict=True):
        length = stop - first
        side = np.concatenate([c[max(first - length, 0):first], c[stop:stop + length]])
        expected = float(length * side.mean()) if side.size else 0.0
        if expected > DEAD_RUN_EXPECTED:
            runs.append((int(first), int(stop), expected))
    return runs


def check_dead_bins(edges: NDArray[np.float64], counts: NDArray[np.float64], *, where: str) -> None:
    """Raise :class:`InputError` when ``counts`` hold a dead run of empty bins (:func:`dead_runs`)."""
    runs = dead_runs(counts)
    if runs:
        first, stop, expected = runs[0]
        raise InputError(
            f"{where}: bins {edges[first] * 1e3:.2f}-{edges[stop] * 1e3:.2f} MeV are empty where their "
            f"neighbours predict {expected:.3g} events (missing data, not a fluctuation); a fit across "
            "them is meaningless: fill the histogram, or choose masses (scan.mass_min/mass_max) and a "
            "dataset.mass_range whose windows avoid them")


def spikes(counts: NDArray[np.float64]) -> NDArray[np.intp]:
    """Indices of one-bin spikes: above both neighbours by :data:`SPIKE_SIGMAS` Poisson
    standard deviations (of the higher neighbour, at least 1) and :data:`SPIKE_FACTOR` times."""
    c = np.where(np.isfinite(counts), counts, 0.0)
    if c.size < 3:
        return np.zeros(0, dtype=np.intp)
    nb = np.maximum(c[:-2], c[2:])
    mid = c[1:-1]
    bad = (mid - nb > SPIKE_SIGMAS * np.sqrt(np.maximum(nb, 1.0))) & (mid > SPIKE_FACTOR * np.maximum(nb, 1.0))
    return np.flatnonzero(bad) + 1


def weight_scale(spectrum: Spectrum, *, mass_range: tuple[float, float] | None = None) -> float:
    """The scale s = Σw²/Σw of a weighted histogram (1.0 for Poisson counts, Σw² = Σw).

    A histogram of events with weights is analysed as a scaled Poisson one: its effective
    counts n_i/s follow Poisson statistics with the same relative errors, and yields in
    effective events convert back by s.  One s serves the analysed range: a per-bin scale
    Σw²_i/Σw_i that varies by more than :data:`MAX_SCALE_SPREAD` is refused.  With
    ``mass_range``, only the bins inside it count.

    Raises
    ------
    InputError
        If the scale varies too much over the analysed bins.
    """
    counts, variances = spectrum.counts, spectrum.variances
    if mass_range is not None:
        inside = (spectrum.edges[:-1] >= mass_range[0] - 1e-12) & (spectrum.edges[1:] <= mass_range[1] + 1e-12)
        counts, variances = counts[inside], variances[inside]
    if np.allclose(variances, counts, rtol=1e-6, atol=1e-9):
        return 1.0
    filled = counts > 0
    per_bin = variances[filled] / counts[filled]
    spread = float(per_bin.max() / per_bin.min()) if per_bin.size and per_bin.min() > 0 else float("inf")
    if spread > MAX_SCALE_SPREAD:
        raise InputError(
            f"spectrum '{spectrum.name}' is weighted with a weight scale sum(w^2)/sum(w) that varies by a factor "
            f"{spread:.3g} over the analysed range (allowed {MAX_SCALE_SPREAD}); one scale cannot describe it: "
            "fill the histogram with unit weights (counts) or with weights constant over the range")
    return float(np.sum(variances) / np.sum(counts))


def poisson_equivalent(spectrum: Spectrum, *, mass_range: tuple[float, float] | None = None
                       ) -> tuple[Spectrum, float]:
    """The spectrum in effective counts n_i/s with variances Σw²_i/s², and the scale s
    (:func:`weight_scale` over ``mass_range``); a Poisson spectrum comes back unchanged with s = 1."""
    scale = weight_scale(spectrum, mass_range=mass_range)
    if scale == 1.0:
        return spectrum, 1.0
    log.info("spectrum '%s' is weighted (sum(w^2)/sum(w) = %.4g): analysed as scaled Poisson counts n/%.4g",
             spectrum.name, scale, scale)
    return Spectrum(edges=spectrum.edges, counts=spectrum.counts / scale, variances=spectrum.variances / scale**2,
                    name=spectrum.name, source=f"{spectrum.source} (effective counts, weight scale {scale:.6g})"), scale


# --------------------------------------------------------------------------- writing


def write_validation_report(path: str | os.PathLike[str], reports: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write ``{dataset: report}`` as JSON, atomically (:func:`hps_bayes.results.files.atomic_path`).

    Returns
    -------
    Path
        The written file.
    """
    return atomic_write_text(path, json.dumps(dict(reports), indent=2, sort_keys=True, allow_nan=False) + "\n")
