"""Input files of a task: the demo file made on first use, loading, validation and the turn-on guard."""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hps_bayes.analysis.grid import check_binning, turn_on_guard
from hps_bayes.analysis.settings import AnalysisSettings
from hps_bayes.errors import HpsBayesError, InputError
from hps_bayes.inputs.root_io import load_spectrum
from hps_bayes.inputs.spectrum import Spectrum
from hps_bayes.inputs.validation import check_analysable, validate_spectrum
from hps_bayes.physics.demo import Structure, write_demo_file
from hps_bayes.results.files import content_hash, read_json, write_json

log = logging.getLogger("hps_bayes")

#: The tasks that analyse a weighted histogram (as scaled Poisson counts); the others refuse it.
WEIGHTED_TASKS = ("scan", "test", "merge", "select")


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


def default_demo_paths() -> set[Path]:
    """The files the dataset presets of ``conf/dataset`` name (resolved): the only places where
    a missing demo spectrum is generated."""
    from omegaconf import OmegaConf

    from hps_bayes.cli.config import CONF_DIR

    paths = (OmegaConf.select(OmegaConf.load(f), "path") for f in sorted((CONF_DIR / "dataset").glob("*.yaml")))
    return {Path(str(p)).resolve() for p in paths if p}


def ensure_input(settings: AnalysisSettings, cfg: dict[str, Any]) -> Path:
    """The dataset's ROOT file; the demo spectrum is generated on first use (once, if chunks race),
    only at a preset's own path (anywhere with ``dataset.demo.generate=always``): a missing file
    at a path given by hand is an error.

    A generated demo file has a record beside it (``<file>.json``: the ``dataset.demo`` settings and
    a hash of the generator's source); a demo file there whose record is missing or differs (made
    by another version of the generator or with other demo settings) is generated again, so an old
    checkout's demo spectrum never stands in for the configured one.
    """
    path = Path(settings.dataset.path)
    demo = _demo_options(cfg)
    if not demo or not demo.get("generate", settings.dataset.name == "demo"):
        return path
    own_place = demo.get("generate") == "always" or path.resolve() in default_demo_paths()
    if path.exists() and (not own_place or _demo_record_matches(path, settings, demo)):
        return path
    if not own_place:
        raise InputError(f"ROOT file '{path}' does not exist (dataset.path={path}); a demo spectrum is generated "
                         "only at its preset's own path: fix the path, or write one there with "
                         f"`python -m hps_bayes task=simulate dataset.path={path}` (or dataset.demo.generate=always)")
    with _locked(path):
        if not path.exists() or not _demo_record_matches(path, settings, demo):
            if path.exists():
                log.warning("demo spectrum %s was made by another version of the generator or with other demo "
                            "settings: generating it again (seed %s)", path, demo.get("seed"))
            else:
                log.info("demo spectrum %s not found: generating it (seed %s)", path, demo.get("seed"))
            write_demo(path, settings, demo)
    return path


def write_demo(path: Path, settings: AnalysisSettings, demo: dict[str, Any]) -> Path:
    """Generate the demo spectrum of the ``dataset.demo`` settings ``demo`` into ``path``, with its record."""
    write_demo_file(path, settings.dataset, n_events=int(demo["n_events"]), seed=int(demo["seed"]),
                    signal_mass=demo.get("signal_mass"), signal_yield=float(demo.get("signal_yield") or 0),
                    shape=demo.get("shape"), structured=bool(demo.get("structured", False)),
                    structure=_structure(demo))
    write_json(_demo_record_path(path), _demo_record(settings, demo))
    return path


def _structure(demo: dict[str, Any]) -> Structure | None:
    """The ``dataset.demo.structure_*`` settings as a :class:`~hps_bayes.physics.demo.Structure` (None:
    the bundled demo's structure, or a smooth spectrum)."""
    if not demo.get("structured", False):
        return None
    structure = Structure.from_settings(demo)
    return None if structure == Structure() else structure


def _demo_record_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _demo_record(settings: AnalysisSettings, demo: dict[str, Any]) -> dict[str, Any]:
    """What a generated demo file depends on: the demo settings, the histogram's name, the generator."""
    from hps_bayes.physics import demo as generator

    keys = ("n_events", "seed", "signal_mass", "signal_yield", "shape", "structured")
    structure = _structure(demo)  # recorded only where it is not the bundled demo's
    extra = {} if structure is None else {"structure": [structure.scale, structure.seed, list(structure.wavelengths)]}
    return {"hist_name": settings.dataset.hist_name, **{k: demo.get(k) for k in keys}, **extra,
            "generator": content_hash(generator.__file__)}


def _demo_record_matches(path: Path, settings: AnalysisSettings, demo: dict[str, Any]) -> bool:
    try:
        return read_json(_demo_record_path(path)) == _demo_record(settings, demo)
    except (OSError, ValueError):
        return False


def preflight(settings: AnalysisSettings, cfg: dict[str, Any], out: Path) -> None:
    """Before a scan or test writes anything into ``out``: refuse a run folder whose results (or
    scan manifest) were computed with other settings, data, tables or package version, unless
    ``overwrite=true`` (:func:`hps_bayes.analysis.rundir.check_run_folder`).  Inputs that cannot
    be read are left to the task, which reports them."""
    from hps_bayes.analysis.rundir import RunFolderConflict, check_run_folder, run_manifest_path

    name = settings.dataset.name
    if cfg.get("overwrite") or not (out.is_dir() and (run_manifest_path(out, name).exists()
                                                       or any(out.glob(f"m*/{name}/numbers.json")))):
        return
    from hps_bayes.analysis.scan import prepare_scan

    path = Path(settings.dataset.path)
    try:
        key = prepare_scan(load_spectrum(path, settings.dataset.hist_name), config=settings).key
    except RunFolderConflict:
        raise
    except HpsBayesError:
        return
    check_run_folder(out, name, key)
    manifest = run_manifest_path(out, name)
    if manifest.exists():
        recorded = read_json(manifest)
        if recorded.get("config_hash") != key["config_hash"] or recorded.get("version") != key["version"]:
            raise RunFolderConflict(
                f"run folder {out} holds a scan of dataset {name} with other settings (config "
                f"{recorded.get('config_hash')} -> {key['config_hash']}, version {recorded.get('version')} -> "
                f"{key['version']}); refusing to overwrite it: choose a new run_dir=..., or add overwrite=true")


def _record_validation(out: Path, name: str, report: dict[str, Any], *, merge: bool = False) -> None:
    """Add this dataset's entry to ``validation_report.json`` (chunks and datasets share the file);
    ``merge``: add ``report``'s keys to the entry already there."""
    path = out / "validation_report.json"
    with _locked(path):
        reports = read_json(path) if path.exists() else {}
        reports[name] = {**(reports.get(name) or {}), **report} if merge else report
        write_json(path, reports)


def check_tables(settings: AnalysisSettings) -> None:
    """Raise :class:`~hps_bayes.errors.ConfigError` when the configured ``background.spurious_table``
    cannot be read (before the input is even loaded)."""
    from hps_bayes.model.spurious import load_spurious_table, spurious_table_path

    bkg = settings.background
    if bkg.spurious == "table" and bkg.spurious_table:
        load_spurious_table(str(spurious_table_path(settings.dataset.name, bkg.spurious_table)))


def load_validated(settings: AnalysisSettings, cfg: dict[str, Any], out: Path) -> Spectrum:
    """Read the dataset's histogram, write ``validation_report.json``, stop on what cannot be analysed
    (a configured table that is missing first, :func:`check_tables`)."""
    check_tables(settings)
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
    check_binning(spectrum, settings.dataset)
    task = str(cfg["task"]["name"])
    scale = report.get("weight_scale")
    if scale is not None and abs(scale - 1.0) > 1e-6 and (task not in WEIGHTED_TASKS or settings.stats.lee_toys):
        raise InputError(f"spectrum '{spectrum.name}' is weighted (sum(w^2)/sum(w) = {scale:.4g}); task={task} "
                         f"(stats.lee_toys={settings.stats.lee_toys}) draws Poisson toys of the counts: run "
                         "task=scan or task=test with stats.lee_toys=0 (they analyse weighted histograms as scaled "
                         "Poisson counts), or give an unweighted histogram")
    return spectrum


def warn_without_selection(settings: AnalysisSettings, cfg: dict[str, Any]) -> None:
    """A scan of the user's own file (not a generated demo) without ``background.selection``: S then comes
    from the dataset's shipped table, measured on the run's look-alikes, and the log says what that means."""
    bkg = settings.background
    if bkg.selection or bkg.spurious != "table" or _demo_options(cfg).get("generate"):
        return
    log.warning("dataset %s without background.selection: the fixed default background (%s) with S(m) from the "
                "spurious-signal table shipped for this run, measured on simulated look-alikes, not on this file. "
                "On spectra whose structure differs its bias can exceed S (up to 2.8 sigma_A measured on other "
                "draws of the structure): for results on this file run task=select on it and pass "
                "background.selection=<run>/selection_%s.json", settings.dataset.name, bkg.label(),
                settings.dataset.name)


def load_guarded(settings: AnalysisSettings, cfg: dict[str, Any], out: Path) -> tuple[Spectrum, AnalysisSettings]:
    """:func:`load_validated`, then the turn-on guard (:func:`hps_bayes.scan.guard_turn_on`): the spectrum
    and the settings whose background fit range starts above a sharp turn-on.  The measured turn-on
    goes into ``validation_report.json`` (``turn_on``)."""
    spectrum = load_validated(settings, cfg, out)
    guarded, turn = turn_on_guard(spectrum, settings)
    if turn is None:  # guard off, the fit range set by hand, or a selection's (its range set: as the scan has it)
        return spectrum, guarded
    _record_validation(out, settings.dataset.name,
                       {"turn_on": turn.to_dict() | {"fit_range_min": guarded.background.fit_range_min,
                                                     "mode": settings.background.turn_on}}, merge=True)
    if settings.background.turn_on == "factor":
        log.info("dataset %s: turn-on at %.2f MeV (width %.2f MeV) multiplies the background of every window "
                 "(background.turn_on=factor)", settings.dataset.name, turn.m_on * 1e3, turn.width * 1e3)
    elif turn.guarded:
        log.warning("dataset %s: sharp turn-on at %.2f MeV (width %.2f MeV = %.2f sigma(m)); the background fit "
                    "range starts at %.2f MeV and the search %g sigma(m) above it (background.turn_on=off to "
                    "search below, background.fit_range_min to set it by hand)", settings.dataset.name,
                    turn.m_on * 1e3, turn.width * 1e3, turn.width / turn.sigma_at_turn_on,
                    turn.fit_lo * 1e3, settings.scan.edge_sigmas)
    return spectrum, guarded
