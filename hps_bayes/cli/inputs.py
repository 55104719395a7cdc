"""Input files of a task: the demo file made on first use, loading, validation and the turn-on guard."""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hps_bayes.analysis.grid import turn_on_guard
from hps_bayes.analysis.settings import AnalysisSettings
from hps_bayes.errors import HpsBayesError, InputError
from hps_bayes.inputs.root_io import load_spectrum
from hps_bayes.inputs.spectrum import Spectrum
from hps_bayes.inputs.validation import check_analysable, validate_spectrum
from hps_bayes.physics.demo import write_demo_file
from hps_bayes.results.files import read_json, write_json

log = logging.getLogger("hps_bayes")

class IncompleteRunError(HpsBayesError):
    """``task=merge task.strict=true`` found missing or failed mass points."""

    exit_code = 3


def _demo_options(cfg: dict[str, Any]) -> dict[str, Any]:
    return dict(cfg.get("dataset", {}).get("demo") or {})


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``<path>.lock``: chunks of one run share its files."""
    lock = path.with_name(f".{path.name}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_input(settings: AnalysisSettings, cfg: dict[str, Any]) -> Path:
    """The dataset's ROOT file; the demo spectrum is generated on first use (once, if chunks race)."""
    path = Path(settings.dataset.path)
    demo = _demo_options(cfg)
    if path.exists() or not demo or not demo.get("generate", settings.dataset.name == "demo"):
        return path
    with _locked(path):
        if not path.exists():
            log.info("demo spectrum %s not found: generating it (seed %s)", path, demo.get("seed"))
            write_demo_file(path, settings.dataset, n_events=int(demo["n_events"]), seed=int(demo["seed"]),
                            signal_mass=demo.get("signal_mass"), signal_yield=float(demo.get("signal_yield") or 0),
                            shape=demo.get("shape"))
    return path


def _record_validation(out: Path, name: str, report: dict[str, Any], *, merge: bool = False) -> None:
    """Add this dataset's entry to ``validation_report.json`` (chunks and datasets share the file);
    ``merge``: add ``report``'s keys to the entry already there."""
    path = out / "validation_report.json"
    with _locked(path):
        reports = read_json(path) if path.exists() else {}
        reports[name] = {**(reports.get(name) or {}), **report} if merge else report
        write_json(path, reports)


def load_validated(settings: AnalysisSettings, cfg: dict[str, Any], out: Path) -> Spectrum:
    """Read the dataset's histogram, write ``validation_report.json``, stop on what cannot be analysed."""
    path = ensure_input(settings, cfg)
    report: dict[str, Any] = {"file": str(path), "file_found": path.exists(),
                              "histogram": settings.dataset.hist_name}
    try:
        spectrum = load_spectrum(path, settings.dataset.hist_name)
    except InputError as exc:
        report.update(histogram_found=False, ok=False, problems=[str(exc)])
        _record_validation(out, settings.dataset.name, report)
        raise
    report.update(histogram_found=True, **validate_spectrum(spectrum, mass_range=settings.dataset.mass_range))
    _record_validation(out, settings.dataset.name, report)
    check_analysable(report)
    return spectrum


def load_guarded(settings: AnalysisSettings, cfg: dict[str, Any], out: Path) -> tuple[Spectrum, AnalysisSettings]:
    """:func:`load_validated`, then the turn-on guard (:func:`hps_bayes.scan.guard_turn_on`): the spectrum
    and the settings whose background fit range starts above a sharp turn-on.  The measured turn-on
    goes into ``validation_report.json`` (``turn_on``)."""
    spectrum = load_validated(settings, cfg, out)
    guarded, turn = turn_on_guard(spectrum, settings)
    if turn is None:  # guard off, or the fit range set by hand
        return spectrum, settings
    _record_validation(out, settings.dataset.name,
                       {"turn_on": turn.to_dict() | {"fit_range_min": guarded.background.fit_range_min}}, merge=True)
    if turn.guarded:
        log.warning("dataset %s: sharp turn-on at %.2f MeV (width %.2f MeV = %.2f sigma(m)); the background fit "
                    "range starts at %.2f MeV and the search %g sigma(m) above it (background.turn_on=off to "
                    "search below, background.fit_range_min to set it by hand)", settings.dataset.name,
                    turn.m_on * 1e3, turn.width * 1e3, turn.width / turn.sigma_at_turn_on,
                    turn.fit_lo * 1e3, settings.scan.edge_sigmas)
    return spectrum, guarded
