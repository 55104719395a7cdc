"""Reading and writing ROOT TH1 histograms (uproot): sub-directories, cycles, F/D, variable bins.

This is the ``io`` layer of :mod:`hps_bayes`: it is the only module that
touches ROOT files (through :mod:`uproot`) and it imports nothing from the
rest of the package except :mod:`hps_bayes.errors`.

A spectrum is a 1-D histogram of the e+e− invariant mass, with bin edges in
GeV.  HPS histograms are fine-binned (0.05 MeV), have millions of entries and
are stored as ``TH1F`` or ``TH1D``, sometimes inside a ``TDirectory`` and
sometimes with several cycles of one key (``name;1``, ``name;2``).

A histogram read once is kept in a small cache (:func:`~hps_bayes.results.files.user_cache_dir`), under the hash of the
file's bytes and the histogram's name, so that later processes read it without importing uproot
(with awkward and pyarrow, a quarter of a second of every process's start).  The key is the
content, so a changed file is never served from the cache; files over
:data:`CACHE_MAX_BYTES` are read directly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hps_bayes.errors import ConfigError, InputError
from hps_bayes.inputs.spectrum import Spectrum
from hps_bayes.results.files import atomic_path, content_hash, user_cache_dir

log = logging.getLogger(__name__)

#: ROOT classes accepted as a 1-D spectrum.
TH1_CLASSES = ("TH1D", "TH1F", "TH1I", "TH1S", "TH1C")
#: How many keys an error message lists at most.
_MAX_LISTED_KEYS = 20
#: Files larger than this are not hashed for the read cache (hashing would cost what it saves).
CACHE_MAX_BYTES = 64 * 2**20
#: Format of a cached histogram; a new format makes new cache names.
_CACHE_FORMAT = 1


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
    import uproot

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


def _read_errors() -> tuple[type[BaseException], ...]:
    """What a damaged or truncated ROOT file raises inside uproot while it is read."""
    import uproot

    return (OSError, ValueError, KeyError, IndexError, EOFError, zlib.error,
            uproot.deserialization.DeserializationError)


def _cache_file(file_path: Path, hist: str) -> Path | None:
    """Where the histogram ``hist`` of ``file_path`` is cached; None when it is not."""
    folder = user_cache_dir("spectra")
    try:
        if folder is None or file_path.stat().st_size > CACHE_MAX_BYTES:
            return None
        stamp = json.dumps([content_hash(file_path), hist.strip(), _CACHE_FORMAT])
    except OSError:
        return None  # the read below reports a missing or unreadable file
    return folder / f"{hashlib.sha256(stamp.encode()).hexdigest()[:32]}.npz"


def _cached_th1(cache: Path) -> tuple[Any, Any, Any, str] | None:
    """A cached read, or None when there is none or it cannot be read."""
    try:
        with np.load(cache, allow_pickle=False) as stored:
            return stored["edges"], stored["counts"], stored["sumw2"], str(stored["key"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def _store_th1(cache: Path, edges: Any, counts: Any, sumw2: Any, key: str) -> None:
    """Keep a read in the cache; a cache that cannot be written is skipped."""
    try:
        with atomic_path(cache) as tmp, tmp.open("wb") as fh:
            np.savez(fh, edges=edges, counts=counts, sumw2=sumw2, key=np.array(key))
    except OSError as err:
        log.debug("spectrum cache %s not written (%s)", cache, err)


def _read_th1(file_path: Path, name: str, cycle: int | None) -> tuple[Any, Any, Any, str]:
    """Edges, counts, Σw² (with flow bins) and the key of the TH1 ``name;cycle`` in ``file_path``."""
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
    return edges, counts, sumw2, key


def _read_checked(file_path: Path, name: str, cycle: int | None) -> tuple[Any, Any, Any, str]:
    """:func:`_read_th1`, with a damaged file's errors turned into an :class:`InputError`."""
    try:
        return _read_th1(file_path, name, cycle)
    except InputError:  # a missing file or histogram: its own message names the fix, the file is not damaged
        raise
    except _read_errors() as err:
        raise InputError(
            f"'{file_path}' could not be read ({type(err).__name__}: {str(err).splitlines()[0]}): the file is "
            "damaged or truncated (an unfinished copy?); copy it again or give another dataset.path") from err


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
        If the file is missing, not a ROOT file or damaged (e.g. truncated), the
        histogram is not there (the message lists the 1-D histograms the file
        holds), or the object is not a 1-D histogram.
    """
    file_path = Path(path)
    name, cycle = _split_cycle(hist)
    cache = _cache_file(file_path, hist)
    cached = _cached_th1(cache) if cache is not None and cache.is_file() else None
    if cached is not None:
        edges, counts, sumw2, key = cached
    else:
        edges, counts, sumw2, key = _read_checked(file_path, name, cycle)
        if cache is not None:
            _store_th1(cache, edges, counts, sumw2, key)
    variances = sumw2[1:-1] if sumw2.size == counts.size + 2 else counts.copy()
    log.debug("read %s from %s: %d bins, %.6g entries", key, file_path, counts.size, counts.sum())
    return Spectrum(edges=edges, counts=counts, variances=variances, name=name, source=f"{file_path}:{key}")


def _to_th1(spectrum: Spectrum, *, as_float: bool) -> Any:
    """Build an uproot TH1D (or TH1F) model carrying counts, Σw² and statistics."""
    import uproot

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
    import uproot

    target = Path(path)
    with atomic_path(target) as tmp, uproot.recreate(tmp) as root_file:
        for key, spectrum in spectra.items():
            root_file[key.strip("/")] = _to_th1(spectrum, as_float=as_float)
    log.info("wrote %d histogram(s) to %s", len(spectra), target)
    return target
