"""Reading, checking, reshaping and writing binned invariant-mass spectra.

This is the ``io`` layer of :mod:`hps_bayes`: it is the only module that
touches ROOT files (through :mod:`uproot`) and it imports nothing from the
rest of the package except :mod:`hps_bayes.errors`.

A spectrum is a 1-D histogram of the e+e− invariant mass, with bin edges in
GeV.  HPS histograms are fine-binned (0.05 MeV), have millions of entries and
are stored as ``TH1F`` or ``TH1D``, sometimes inside a ``TDirectory`` and
sometimes with several cycles of one key (``name;1``, ``name;2``).

Examples
--------
>>> import numpy as np
>>> s = Spectrum(edges=np.array([0.0, 0.1, 0.2]), counts=np.array([3.0, 5.0]),
...              variances=np.array([3.0, 5.0]), name="h", source="example")
>>> s.n_bins, float(s.total)
(2, 8.0)
>>> rebin(s, 2).counts.tolist()
[8.0]
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import uproot
from numpy.typing import NDArray

from hps_bayes.errors import ConfigError, HpsBayesWarning, InputError

__all__ = [
    "Spectrum",
    "check_analysable",
    "crop",
    "load_spectrum",
    "rebin",
    "validate_spectrum",
    "write_spectra_root",
    "write_validation_report",
]

log = logging.getLogger(__name__)

#: ROOT classes accepted as a 1-D spectrum.
TH1_CLASSES = ("TH1D", "TH1F", "TH1I", "TH1S", "TH1C")
#: How many keys an error message lists at most.
_MAX_LISTED_KEYS = 20
#: How many bin indices a validation report lists per problem.
_MAX_LISTED_INDICES = 5
#: An upper edge above this many GeV suggests an axis in MeV.
_SUSPICIOUS_UPPER_EDGE_GEV = 10.0


@dataclass(frozen=True, eq=False)
class Spectrum:
    """A binned invariant-mass spectrum.

    Parameters
    ----------
    edges : ndarray of float64, shape (n + 1,)
        Bin edges in GeV; increasing for an analysable spectrum (checked by
        :func:`validate_spectrum`, not here, so that a bad file can be reported).
    counts : ndarray of float64, shape (n,)
        Bin contents n_i (event counts, or sums of weights).
    variances : ndarray of float64, shape (n,)
        Variance of each bin: the histogram's sum of squared weights Σw², or the
        counts themselves (Poisson) when the histogram has none.
    name : str
        The histogram's name (path inside the file, without cycle).
    source : str
        Where the spectrum came from (``"file.root:dir/name;cycle"``, ``"simulated ..."``).

    Raises
    ------
    InputError
        If the arrays are not 1-D or their lengths do not match.

    Notes
    -----
    The arrays are copied to float64 and made read-only, so a spectrum never
    changes after it is made.
    """

    edges: NDArray[np.float64]
    counts: NDArray[np.float64]
    variances: NDArray[np.float64]
    name: str
    source: str

    def __post_init__(self) -> None:
        arrays = {}
        for field in ("edges", "counts", "variances"):
            array = np.array(getattr(self, field), dtype=np.float64)
            if array.ndim != 1:
                raise InputError(
                    f"spectrum '{self.name}' ({self.source}): {field} must be 1-D, got shape {array.shape}; "
                    "pass a flat array"
                )
            array.setflags(write=False)
            arrays[field] = array
        n_bins = arrays["counts"].size
        if n_bins < 1 or arrays["edges"].size != n_bins + 1 or arrays["variances"].size != n_bins:
            raise InputError(
                f"spectrum '{self.name}' ({self.source}): need len(edges) = len(counts) + 1 = "
                f"len(variances) + 1 with at least one bin, got {arrays['edges'].size} edges, "
                f"{n_bins} counts, {arrays['variances'].size} variances"
            )
        for field, array in arrays.items():
            object.__setattr__(self, field, array)

    @property
    def centers(self) -> NDArray[np.float64]:
        """Bin centres (e_i + e_{i+1}) / 2 in GeV."""
        return 0.5 * (self.edges[:-1] + self.edges[1:])

    @property
    def widths(self) -> NDArray[np.float64]:
        """Bin widths e_{i+1} − e_i in GeV."""
        return np.diff(self.edges)

    @property
    def n_bins(self) -> int:
        """Number of bins n."""
        return int(self.counts.size)

    @property
    def total(self) -> float:
        """Sum of the counts Σ n_i."""
        return float(np.sum(self.counts))


# --------------------------------------------------------------------------- reading


def _split_cycle(hist: str) -> tuple[str, int | None]:
    """Split ``"dir/name;2"`` into ``("dir/name", 2)``; no cycle gives ``None``."""
    name, sep, cycle_text = hist.strip().strip("/").partition(";")
    if not name:
        raise InputError(f"histogram name {hist!r} is empty; give e.g. 'invariant_mass' or 'dir/name;1'")
    if not sep:
        return name, None
    if not cycle_text.isdigit():
        raise InputError(
            f"histogram name {hist!r} has cycle {cycle_text!r}, which is not a positive integer; "
            "write it as 'name;2' or leave the cycle out to take the highest"
        )
    return name, int(cycle_text)


def _th1_keys(classnames: Mapping[str, str]) -> list[str]:
    """The keys (with cycles) of all 1-D histograms, at most ``_MAX_LISTED_KEYS``."""
    keys = [key for key, cls in classnames.items() if cls in TH1_CLASSES]
    return keys[:_MAX_LISTED_KEYS]


def _open_root(path: Path) -> Any:
    """Open ``path`` with uproot, turning every failure into an :class:`InputError`."""
    if not path.is_file():
        raise InputError(
            f"ROOT file '{path}' does not exist; check the path (dataset.path=...) "
            "or create demo data with task=simulate"
        )
    try:
        return uproot.open(path)
    except (OSError, ValueError) as err:
        raise InputError(f"'{path}' could not be read as a ROOT file ({err}); give a .root file") from err


def _resolve_key(classnames: Mapping[str, str], name: str, cycle: int | None, path: Path) -> str:
    """Find the key ``name;cycle`` (highest cycle when ``cycle`` is None)."""
    cycles = sorted(int(key.rpartition(";")[2]) for key in classnames if key.rpartition(";")[0] == name)
    if not cycles or (cycle is not None and cycle not in cycles):
        wanted = name if cycle is None else f"{name};{cycle}"
        found = f" (cycles present: {cycles})" if cycles else ""
        listing = ", ".join(_th1_keys(classnames)) or "none"
        raise InputError(
            f"histogram '{wanted}' not found in '{path}'{found}; 1-D histograms in the file: {listing}. "
            "Set dataset.hist_name to one of them"
        )
    return f"{name};{cycle if cycle is not None else cycles[-1]}"


def load_spectrum(path: str | os.PathLike[str], hist: str) -> Spectrum:
    """Read a 1-D histogram (``TH1F``, ``TH1D``, ...) from a ROOT file.

    Parameters
    ----------
    path : str or path-like
        The ROOT file.
    hist : str
        The histogram's key, possibly inside directories (``"preselection/h_invM_8000"``)
        and possibly with a cycle (``"invariant_mass;2"``).  Without a cycle the
        highest cycle is read, as ROOT does.

    Returns
    -------
    Spectrum
        Edges (fixed or variable binning) from the x axis, counts without the
        under/overflow bins, and variances Σw² when the histogram stores them
        (``fSumw2``), the counts otherwise.

    Raises
    ------
    InputError
        If the file is missing or not a ROOT file, the histogram is not there
        (the message lists the 1-D histograms the file holds), or the object is
        not a 1-D histogram.
    """
    file_path = Path(path)
    name, cycle = _split_cycle(hist)
    with _open_root(file_path) as root_file:
        classnames = root_file.classnames(recursive=True)
        key = _resolve_key(classnames, name, cycle, file_path)
        if classnames[key] not in TH1_CLASSES:
            raise InputError(
                f"'{key}' in '{file_path}' is a {classnames[key]}, not a 1-D histogram "
                f"({', '.join(TH1_CLASSES)}); set dataset.hist_name to a TH1"
            )
        histogram = root_file[key]
        edges = np.asarray(histogram.axis().edges(flow=False), dtype=np.float64)
        counts = np.asarray(histogram.values(flow=False), dtype=np.float64)
        sumw2 = np.asarray(histogram.member("fSumw2"), dtype=np.float64)
    variances = sumw2[1:-1] if sumw2.size == counts.size + 2 else counts.copy()
    log.debug("read %s from %s: %d bins, %.6g entries", key, file_path, counts.size, counts.sum())
    return Spectrum(edges=edges, counts=counts, variances=variances, name=name, source=f"{file_path}:{key}")


# --------------------------------------------------------------------------- reshaping


def rebin(spectrum: Spectrum, factor: int) -> Spectrum:
    """Merge groups of ``factor`` adjacent bins.

    The new bin j holds N_j = Σ_{i = j·k}^{j·k + k − 1} n_i (and the same sum of
    variances), with k = ``factor``.

    Parameters
    ----------
    spectrum : Spectrum
        The spectrum to rebin.
    factor : int
        Number of bins k merged into one; 1 returns the spectrum unchanged.

    Returns
    -------
    Spectrum
        The rebinned spectrum.  When n_bins is not a multiple of k the last
        n_bins mod k bins are dropped, with an :class:`HpsBayesWarning`.

    Raises
    ------
    ConfigError
        If ``factor`` is not an integer ≥ 1 or is larger than the number of bins.
    """
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise ConfigError(f"rebin factor must be an integer >= 1, got {factor!r}; use e.g. rebin=10")
    k = int(factor)
    if k > spectrum.n_bins:
        raise ConfigError(
            f"rebin factor {k} is larger than the {spectrum.n_bins} bins of '{spectrum.name}'; use a smaller one"
        )
    n_kept = (spectrum.n_bins // k) * k
    if n_kept < spectrum.n_bins:
        warnings.warn(
            f"'{spectrum.name}' has {spectrum.n_bins} bins, not a multiple of rebin factor {k}: "
            f"dropping the last {spectrum.n_bins - n_kept} bins above {spectrum.edges[n_kept]:.6g} GeV",
            HpsBayesWarning,
            stacklevel=2,
        )
    return Spectrum(
        edges=spectrum.edges[: n_kept + 1 : k],
        counts=spectrum.counts[:n_kept].reshape(-1, k).sum(axis=1),
        variances=spectrum.variances[:n_kept].reshape(-1, k).sum(axis=1),
        name=spectrum.name,
        source=spectrum.source,
    )


def crop(spectrum: Spectrum, lo: float, hi: float) -> Spectrum:
    """Keep the bins that lie entirely inside [lo, hi] (GeV).

    A bin [e_i, e_{i+1}] is kept when e_i ≥ lo − τ and e_{i+1} ≤ hi + τ, with
    a tolerance τ = 10⁻⁶ of the narrowest bin so that a range given at a bin
    edge keeps that bin despite rounding.

    Raises
    ------
    ConfigError
        If lo ≥ hi.
    InputError
        If no bin lies inside the range.
    """
    if not lo < hi:
        raise ConfigError(f"crop range [{lo}, {hi}] is empty; need lo < hi (GeV)")
    tol = 1e-6 * float(np.min(np.abs(spectrum.widths)))
    keep = (spectrum.edges[:-1] >= lo - tol) & (spectrum.edges[1:] <= hi + tol)
    index = np.flatnonzero(keep)
    if index.size == 0:
        raise InputError(
            f"no bin of '{spectrum.name}' (range {spectrum.edges[0]:.6g}–{spectrum.edges[-1]:.6g} GeV) "
            f"lies inside [{lo:.6g}, {hi:.6g}] GeV; choose a mass range inside the histogram (in GeV)"
        )
    first, last = int(index[0]), int(index[-1])
    return Spectrum(
        edges=spectrum.edges[first : last + 2],
        counts=spectrum.counts[first : last + 1],
        variances=spectrum.variances[first : last + 1],
        name=spectrum.name,
        source=spectrum.source,
    )


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


def _to_th1(spectrum: Spectrum, *, as_float: bool) -> Any:
    """Build an uproot TH1D (or TH1F) model carrying counts, Σw² and statistics."""
    counts, variances, edges = spectrum.counts, spectrum.variances, spectrum.edges
    centers = spectrum.centers
    widths = spectrum.widths
    uniform = bool(np.allclose(widths, widths[0], rtol=1e-9, atol=0.0))
    axis = uproot.writing.identify.to_TAxis(
        "xaxis", "", spectrum.n_bins, float(edges[0]), float(edges[-1]), fXbins=None if uniform else edges
    )
    data = np.concatenate([[0.0], counts, [0.0]]).astype(np.float32 if as_float else np.float64)
    return uproot.writing.identify.to_TH1x(
        fName=None,
        fTitle=spectrum.name,
        data=data,
        fEntries=float(np.sum(counts)),
        fTsumw=float(np.sum(counts)),
        fTsumw2=float(np.sum(variances)),
        fTsumwx=float(np.sum(counts * centers)),
        fTsumwx2=float(np.sum(counts * centers**2)),
        fSumw2=np.concatenate([[0.0], variances, [0.0]]),
        fXaxis=axis,
    )


def write_spectra_root(
    path: str | os.PathLike[str], spectra: Mapping[str, Spectrum], *, as_float: bool = False
) -> Path:
    """Write spectra as ROOT histograms, atomically.

    Parameters
    ----------
    path : str or path-like
        The ROOT file to create (replaced if it exists; parent folders are made).
    spectra : mapping of str to Spectrum
        Key → spectrum.  A key may contain ``/`` to place the histogram in
        TDirectories (``"preselection/h_invM_8000"``); it may not carry a cycle.
    as_float : bool, optional
        Write ``TH1F`` (float32 contents) instead of ``TH1D``.

    Returns
    -------
    Path
        The written file.  Variances are stored as ``fSumw2``, so
        :func:`load_spectrum` gives them back.

    Raises
    ------
    ConfigError
        If ``spectra`` is empty or a key is empty or contains ``;``.
    """
    if not spectra:
        raise ConfigError("write_spectra_root got no spectra; pass {key: Spectrum}")
    for key in spectra:
        if not key.strip("/") or ";" in key:
            raise ConfigError(f"histogram key {key!r} must be a non-empty path without ';' (e.g. 'dir/name')")
    target = Path(path)
    tmp = _atomic_target(target)
    try:
        with uproot.recreate(tmp) as root_file:
            for key, spectrum in spectra.items():
                root_file[key.strip("/")] = _to_th1(spectrum, as_float=as_float)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    log.info("wrote %d histogram(s) to %s", len(spectra), target)
    return target
