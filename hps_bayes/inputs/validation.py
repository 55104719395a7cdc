"""Input checks of a spectrum and the validation report."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hps_bayes.errors import InputError
from hps_bayes.inputs.spectrum import Spectrum

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


def _bad_bins(mask: NDArray[np.bool_]) -> dict[str, Any]:
    """Count of flagged bins and the first few indices."""
    index = np.flatnonzero(mask)
    return {"count": int(index.size), "first_indices": [int(i) for i in index[:_MAX_LISTED_INDICES]]}


def _count_checks(counts: NDArray[np.float64], variances: NDArray[np.float64]) -> dict[str, Any]:
    """Per-bin checks of counts and variances."""
    finite = np.isfinite(counts)
    safe = np.where(finite, counts, 0.0)
    return {
        "entries": float(np.sum(safe)),
        "empty_bins": int(np.sum(safe == 0.0)),
        "nan_bins": _bad_bins(np.isnan(counts)),
        "inf_bins": _bad_bins(np.isinf(counts)),
        "negative_bins": _bad_bins(safe < 0),
        "non_integer_bins": _bad_bins(finite & (safe != np.round(safe))),
        "bad_variance_bins": _bad_bins(~np.isfinite(variances) | (variances < 0)),
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


def _problems(report: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """Problems (the spectrum cannot be analysed) and warnings (it can, with care)."""
    problems: list[str] = []
    warns: list[str] = []
    for key, what in (("nan_bins", "NaN"), ("inf_bins", "infinite"), ("negative_bins", "negative")):
        bad = report[key]
        if bad["count"]:
            problems.append(
                f"{bad['count']} bins with {what} counts (first at indices {bad['first_indices']})"
            )
    if report["bad_variance_bins"]["count"]:
        bad = report["bad_variance_bins"]
        problems.append(
            f"{bad['count']} bins with negative or non-finite variances (first {bad['first_indices']})"
        )
    if not report["edges_increasing"]:
        problems.append("bin edges are not finite and strictly increasing")
    if report["entries"] <= 0:
        problems.append("the histogram has zero entries")
    if report["mass_range_covered"] is False:
        problems.append(
            f"histogram range {report['range']} GeV does not cover the requested mass_range "
            f"{report['mass_range_requested']} GeV"
        )
    if report["non_integer_bins"]["count"]:
        warns.append(
            f"{report['non_integer_bins']['count']} bins with non-integer counts (weighted histogram?)"
        )
    upper = report["range"][1]
    if upper is not None and upper > _SUSPICIOUS_UPPER_EDGE_GEV:
        warns.append(f"upper edge {upper:.6g} looks like MeV; bin edges must be in GeV")
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
        uniform), ``edges_increasing``, ``entries`` (sum of finite counts),
        ``empty_bins``, ``nan_bins``/``inf_bins``/``negative_bins``/
        ``non_integer_bins``/``bad_variance_bins`` (count and first indices),
        ``mass_range_requested``, ``mass_range_covered`` (None without a range),
        ``problems`` and ``warnings`` (lists of sentences) and ``ok`` (no problems).
        Non-integer counts are a warning only: weighted histograms have them.
    """
    report: dict[str, Any] = {"source": spectrum.source, "name": spectrum.name, "n_bins": spectrum.n_bins}
    report |= _binning_checks(spectrum.edges)
    report |= _count_checks(spectrum.counts, spectrum.variances)
    report["mass_range_requested"] = None if mass_range is None else [float(v) for v in mass_range]
    report["mass_range_covered"] = None
    if mass_range is not None:
        lo, hi = report["range"]
        tol = 1e-9 * max(1.0, abs(float(mass_range[1])))
        report["mass_range_covered"] = (
            lo is not None and hi is not None and lo <= mass_range[0] + tol and hi >= mass_range[1] - tol
        )
    problems, warns = _problems(report)
    report |= {"ok": not problems, "problems": problems, "warnings": warns}
    return report


def check_analysable(report: Mapping[str, Any]) -> None:
    """Raise if a :func:`validate_spectrum` report lists problems.

    Raises
    ------
    InputError
        Naming the spectrum, its source and every problem (NaN, infinite or
        negative counts, bad variances, edges not increasing, zero entries,
        mass range not covered).
    """
    if report["problems"]:
        listing = "; ".join(report["problems"])
        raise InputError(
            f"spectrum '{report['name']}' from {report['source']} cannot be analysed: {listing}. "
            "Fix the input histogram or choose a dataset.mass_range inside it"
        )
    for message in report.get("warnings", []):
        log.warning("spectrum '%s': %s", report["name"], message)


# --------------------------------------------------------------------------- writing


def _atomic_target(path: Path) -> Path:
    """A temporary file beside ``path`` (same filesystem, so os.replace is atomic)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_validation_report(path: str | os.PathLike[str], reports: Mapping[str, Mapping[str, Any]]) -> Path:
    """Write ``{dataset: report}`` as JSON, atomically (temporary file, then :func:`os.replace`).

    Returns
    -------
    Path
        The written file.
    """
    target = Path(path)
    tmp = _atomic_target(target)
    try:
        with tmp.open("w", encoding="utf-8") as stream:
            json.dump(dict(reports), stream, indent=2, sort_keys=True, allow_nan=False)
            stream.write("\n")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
