"""Task functions behind ``python -m hps_bayes task=...`` (importable, no Hydra needed).

Each task takes the validated settings, the plain composed config (for
task-specific keys) and the run folder.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hps_bayes.combine import combined_masses, run_combination
from hps_bayes.demo import write_demo_file
from hps_bayes.errors import ConfigError, HpsBayesError, InputError
from hps_bayes.export import limits_table, write_hepdata, write_limits
from hps_bayes.io import Spectrum, check_analysable, load_spectrum, validate_spectrum
from hps_bayes.physics import background_mapping, preset_mapping
from hps_bayes.results import MassPointResult, mass_label, read_json, write_json, write_table
from hps_bayes.scan import (
    ScanInterrupted,
    check_mass,
    chunk_of,
    chunk_seeds,
    collect_points,
    job_provenance,
    mass_grid,
    point_path,
    prepare_spectrum,
    run_scan,
    turn_on_guard,
    window_fit_arrays,
    write_run_manifest,
)
from hps_bayes.settings import AnalysisSettings, settings_from_mapping

log = logging.getLogger("hps_bayes")

PUBLISHED_2015 = Path(__file__).resolve().parent / "data" / "hps2015_published_limit.csv"


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


def chunk_provenance(settings: AnalysisSettings) -> dict[str, Any]:
    """This chunk's place in the run and its seed (``SeedSequence(seed).spawn(n_chunks)[chunk]``)."""
    scan = settings.scan
    return {"chunk": scan.chunk, "n_chunks": scan.n_chunks, "base_seed": settings.seed,
            "chunk_seed": chunk_seeds(settings.seed, scan.n_chunks)[scan.chunk]}


def _chunk_table(settings: AnalysisSettings) -> str:
    scan = settings.scan
    if scan.n_chunks == 1:
        return "results_single.csv"
    return f"results_chunk{scan.chunk}_{settings.dataset.name}.csv"


def _flush_chunk(frame: Any, settings: AnalysisSettings, out: Path, info: dict[str, Any], *,
                 state: str) -> None:
    """The chunk's table and ``chunks/<dataset>_chunk<k>.json`` (counts, SLURM job ids, state)."""
    write_table(out / _chunk_table(settings), frame)
    n_bad = int((frame.status != "ok").sum()) if len(frame) else 0
    write_json(out / "chunks" / f"{settings.dataset.name}_chunk{settings.scan.chunk}.json", {
        **info, **job_provenance(), "state": state, "table": _chunk_table(settings), "n_done": len(frame),
        "n_failed": n_bad, "computed": int(frame.attrs.get("computed", 0)),
        "reused": int(frame.attrs.get("reused", 0))})


def task_scan(settings: AnalysisSettings, cfg: dict[str, Any], out: Path) -> Any:
    """Scan the grid (or chunk ``scan.chunk`` of ``scan.n_chunks``) into the run folder ``out``.

    One chunk: ``results_single.csv`` and summary plots; several: ``results_chunk<k>_<dataset>.csv``
    (``task=merge`` then collects the run).  Per mass: ``m030MeV/<dataset>/numbers.json``.
    """
    spectrum, settings = load_guarded(settings, cfg, out)
    masses = chunk_of(mass_grid(settings), settings.scan.n_chunks, settings.scan.chunk)
    info = chunk_provenance(settings)
    write_run_manifest(out, settings)
    log.info("chunk %d/%d: scanning %d masses of dataset %s (%.1f-%.1f MeV) into %s", settings.scan.chunk + 1,
             settings.scan.n_chunks, len(masses), settings.dataset.name, masses[0] * 1e3, masses[-1] * 1e3, out)
    try:
        frame = run_scan(spectrum, config=settings, masses=masses, out_dir=out, provenance=info,
                         handle_signals=True)
    except ScanInterrupted as exc:
        _flush_chunk(exc.frame, settings, out, info, state="interrupted")
        raise
    _flush_chunk(frame, settings, out, info, state="done")
    log.info("%d mass points computed, %d reused from an earlier run", frame.attrs["computed"],
             frame.attrs["reused"])
    if settings.scan.n_chunks == 1:
        _summary_plots(frame, settings, out)
    _per_mass_plots(spectrum, frame, settings, out)
    _log_summary(frame)
    _look_elsewhere(spectrum, frame, settings, out)
    _scan_posteriors(spectrum, frame, settings, cfg, out)
    return frame


def task_test(settings: AnalysisSettings, cfg: dict[str, Any], out: Path) -> MassPointResult:
    """One mass point (``mass=0.030``): fit, significance, limits; printed and saved."""
    if cfg.get("mass") is None:
        raise ConfigError("task=test needs a mass in GeV, e.g. `python -m hps_bayes task=test mass=0.030`")
    spectrum, settings = load_guarded(settings, cfg, out)
    mass = float(cfg["mass"])
    check_mass(spectrum, mass, settings)
    frame = run_scan(spectrum, config=settings, masses=[mass], out_dir=out, progress=False,
                     provenance={"task": "test"}, handle_signals=True)
    result = MassPointResult.from_dict(_row_to_result(frame.iloc[0].to_dict()))
    _per_mass_plots(spectrum, frame, settings, out, force=True)
    _print_result(result)
    return result


def run_settings(run_dir: Path, settings: AnalysisSettings) -> list[AnalysisSettings]:
    """The settings of every scan recorded in ``run_dir`` (``scan_<dataset>.json``), else the configured one.

    The run's own settings define its grid and config hash; plots follow the current config.
    """
    found = []
    for path in sorted(run_dir.glob("scan_*.json")):
        recorded = settings_from_mapping(read_json(path)["settings"])
        found.append(replace(recorded, plots=settings.plots))
    if not found:
        log.warning("no scan_<dataset>.json in %s: merging the configured grid of dataset %s", run_dir,
                    settings.dataset.name)
    return found or [settings]


def task_merge(settings: AnalysisSettings, cfg: dict[str, Any], out: Path) -> Any:
    """Collect a chunked run's ``numbers.json`` into ``results_single.csv``, summary plots and
    ``merge_report.json``; missing and failed points are reported (an error with ``task.strict=true``)."""
    import pandas as pd

    if not cfg.get("run_dir") or not out.is_dir():
        raise ConfigError(f"task=merge needs the folder of the run to merge, e.g. run_dir=multirun/2026-01-31/"
                          f"12-00-00; got run_dir={cfg.get('run_dir')!r}" + ("" if out.is_dir() else " (not found)"))
    frames, reports = [], []
    for run in run_settings(out, settings):
        frame, report = collect_points(out, run)
        frames.append(frame)
        reports.append(report)
        _summary_plots(frame, run, out)
        _log_merge(report)
    merged = pd.concat(frames, ignore_index=True)
    write_table(out / "results_single.csv", merged)
    complete = all(r["complete"] for r in reports)
    write_json(out / "merge_report.json", {"run_dir": str(out), "complete": complete, "datasets": reports})
    log.info("merged %d mass points into %s (%s)", len(merged), out / "results_single.csv",
             "complete" if complete else "INCOMPLETE: rerun the scan command to fill the gaps")
    if not complete and (cfg.get("task") or {}).get("strict"):
        raise IncompleteRunError(f"run {out} is incomplete (task.strict=true): see merge_report.json")
    return merged


def _log_merge(report: dict[str, Any]) -> None:
    log.info("dataset %s: %d of %d mass points ok, %d missing, %d failed", report["dataset"], report["n_ok"],
             report["n_points"], report["n_missing"], report["n_failed"])
    if report["missing"] or report["stale"]:
        masses = ", ".join(f"{m * 1e3:.2f}" for m in report["missing"] + report["stale"])
        log.warning("dataset %s: missing mass points [MeV]: %s", report["dataset"], masses)
    for bad in report["failed"]:
        log.warning("dataset %s: m=%.2f MeV failed: %s (%s)", report["dataset"], bad["mass"] * 1e3,
                    bad["status"], bad["message"])


def task_simulate(settings: AnalysisSettings, cfg: dict[str, Any], out: Path) -> Path:
    """Write the dataset's demo spectrum (``dataset.demo`` settings) to ``dataset.path``."""
    demo = _demo_options(cfg)
    if not demo:
        raise InputError(f"dataset {settings.dataset.name!r} has no `demo:` block to simulate from")
    path = write_demo_file(Path(settings.dataset.path), settings.dataset, n_events=int(demo["n_events"]),
                           seed=int(demo["seed"]), signal_mass=demo.get("signal_mass"),
                           signal_yield=float(demo.get("signal_yield") or 0), shape=demo.get("shape"))
    log.info("wrote %s (%s, %d events, seed %s)", path, settings.dataset.hist_name, demo["n_events"],
             demo["seed"])
    return path


def _row_to_result(row: dict[str, Any]) -> dict[str, Any]:
    for key in ("A_up_expected", "eps2_up_expected"):
        row[key] = [row.pop(f"{key}_{s}") for s in ("m2", "m1", "median", "p1", "p2")]
    return row


def _summary_plots(frame: Any, settings: AnalysisSettings, out: Path) -> None:
    if not settings.plots.summary or frame.empty:
        return
    import pandas as pd

    from hps_bayes import plots

    label = f"HPS {settings.dataset.name}"
    folder = out / "summary_plots"
    published = None
    if settings.dataset.name in ("2015", "demo") and PUBLISHED_2015.exists():
        published = pd.read_csv(PUBLISHED_2015, comment="#")
    ext = settings.plots.format
    name = settings.dataset.name
    plots.plot_eps2_limits(frame, folder / f"eps2_ul_{name}.{ext}", dataset_label=label, published=published)
    plots.plot_A_limits(frame, folder / f"A_ul_{name}.{ext}", dataset_label=label)
    plots.plot_p0(frame, folder / f"p0_{name}.{ext}", dataset_label=label)
    plots.plot_z_distribution(frame, folder / f"z_distribution_{name}.{ext}", dataset_label=label)


def _per_mass_plots(spectrum: Spectrum, frame: Any, settings: AnalysisSettings, out: Path, *,
                    force: bool = False) -> None:
    wanted = {round(m, 7) for m in settings.plots.per_mass_masses}
    rows = [row for row in frame.itertuples() if row.status == "ok"
            and (force or settings.plots.per_mass or round(row.mass, 7) in wanted)]
    if not rows:
        return  # matplotlib is not even imported (a second off every chunk's start)
    from hps_bayes import plots

    spec = prepare_spectrum(spectrum, settings)
    for row in rows:
        result = MassPointResult.from_dict(_row_to_result(dict(row._asdict())))
        arrays = window_fit_arrays(spec, result, settings)
        folder = point_path(out, result, settings.dataset.name).parent
        ext = settings.plots.format
        plots.plot_fit_full(arrays, folder / f"fit_full.{ext}")
        plots.plot_blind_ul(arrays, folder / f"blind_ul.{ext}")
        plots.plot_s_over_b_ul(arrays, folder / f"s_over_b_ul.{ext}")


def _log_summary(frame: Any) -> None:
    ok = frame[frame.status == "ok"]
    failed = frame[frame.status != "ok"]
    log.info("%d of %d mass points ok", len(ok), len(frame))
    for row in failed.itertuples():
        log.warning("%s m=%.2f MeV: %s (%s)", row.dataset, row.mass * 1e3, row.status, row.message)
    if len(ok):
        best = ok.loc[ok.Z.idxmax()]
        log.info("largest local excess: m=%.2f MeV, Z=%.2f (p0=%.2e); median eps2 limit %.2e",
                 best.mass * 1e3, best.Z, best.p0, float(np.median(ok.eps2_up)))


def _print_result(r: MassPointResult) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"HPS {r.dataset}, m = {r.mass * 1e3:.2f} MeV ({mass_label(r.mass)})")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    rows = [("status", r.status + (f" ({r.message})" if r.message else "")), ("σ(m) [MeV]", f"{r.sigma_m * 1e3:.3f}"),
            ("Â [events]", f"{r.A_hat:.1f} ± {r.sigma_A:.1f}"), ("local Z", f"{r.Z:.2f}"), ("p0", f"{r.p0:.3e}"),
            ("A_up 95% CL [events]", f"{r.A_up:.1f}"),
            ("A_up expected (−2..+2σ)", ", ".join(f"{v:.0f}" for v in r.A_up_expected)),
            ("ε² 95% CL", f"{r.eps2_up:.3e}"), ("ε² expected median", f"{r.eps2_up_expected[2]:.3e}"),
            ("window [MeV]", f"{r.window_lo * 1e3:.1f}–{r.window_hi * 1e3:.1f} ({r.window_bins} bins)")]
    for key, value in rows:
        table.add_row(key, value)
    Console().print(table)


def _merge_chunk(out: Path, stem: str, frame: Any, scan: Any) -> Any:
    """Write this chunk's ``<stem>`` table and, when every chunk of the run is done, merge them into
    ``<stem>.csv`` (under a lock: the last chunk to finish merges).  Returns the merged table, or
    None while other chunks are still running."""
    from hps_bayes import closure

    with _locked(out / f"{stem}.csv"):
        write_table(out / closure.chunk_table(stem, scan.chunk, scan.n_chunks), frame)
        merged = closure.merge_chunks(out, stem, scan.n_chunks)
        if merged is not None and scan.n_chunks > 1:
            write_table(out / f"{stem}.csv", merged)
    if merged is None:
        log.info("%s chunk %d/%d done; the last chunk to finish merges the run", stem, scan.chunk + 1, scan.n_chunks)
    return merged


def task_spurious(settings: AnalysisSettings, cfg: dict[str, Any], out: Path) -> Any:
    """Spurious-signal study (``hps_bayes.studies``): ``spurious.csv``, summary, plots, S(m) table; chunked
    over masses by scan.n_chunks/chunk like ``task=inject`` (each chunk writes ``spurious_chunk<k>of<n>.csv``;
    the last one to finish merges them and writes the rest)."""
    from hps_bayes import plots, studies
    from hps_bayes.model import spurious_table_path

    task, scan, name = cfg.get("task", {}), settings.scan, settings.dataset.name
    data = load_validated(settings, cfg, out) if task.get("reference", "demo") == "data" else None
    families = [f for f in task.get("families", studies.FAMILIES) if data is None or f != "demo"]
    reference = studies.reference_spectrum(settings, _demo_options(cfg), data)
    cells, _ = studies.run_spurious(
        settings, reference, families=families, n_toys=int(task.get("n_toys", 100)),
        step=float(task.get("step", 0.002)), seed=settings.seed, inject_sigmas=float(task.get("inject_sigmas", 5.0)),
        edge_sigmas=task.get("edge_sigmas"), n_chunks=scan.n_chunks, chunk=scan.chunk)
    frame = _merge_chunk(out, "spurious", cells, scan)
    if frame is None:
        return studies.summarise(cells) if len(cells) else {}
    summary = studies.summarise(frame)
    write_json(out / "spurious_summary.json", {"summary": summary, "settings": settings.to_dict(), "task": task})
    fmt = settings.plots.format
    plots.plot_spurious(frame, out / f"spurious_{name}.{fmt}", dataset_label=f"HPS {name}")
    plots.plot_spurious_nuisance(frame, out / f"spurious_nuisance_{name}.{fmt}", dataset_label=f"HPS {name}")
    masses, relative = studies.spurious_relative(frame)
    note = f"S/(rho sigma) from task=spurious on {name} (config {settings.config_hash()}, {task.get('n_toys')} toys)"
    studies.write_spurious_table(out / f"spurious_{name}.csv", masses, relative, note=note)
    if task.get("write_table"):
        target = studies.write_spurious_table(spurious_table_path(name), masses, relative, note=note)
        log.info("spurious-signal table written to %s", target)
    log.info("spurious-signal study of %s:\n%s", name, studies.summary_table(summary))
    log.info("bias criterion alone (|mean A_hat| - S <= 0.2 sigma_A, any width): %s", "; ".join(
        f"{k} {v['cells_bias_ok']}/{v['cells']} (noise-free uncovered max {v['worst_asimov_resid_z']:.2f})"
        for k, v in summary.items()))
    return summary


def task_posterior(settings: AnalysisSettings, cfg: dict[str, Any], out: Path) -> Any:
    """Bayesian cross-check (:mod:`hps_bayes.posterior`) at ``task.masses`` (or ``mass``), GeV.

    Per mass in ``m030MeV/<dataset>/``: the CLs point (``numbers.json``, which also gets the posterior
    summary under ``"posterior"``), the NUTS posterior (``posterior.nc``, ``posterior.json``) and its
    plots; ``posterior_comparison_<dataset>.csv`` (CLs vs credible limits, diagnostics) in the run
    folder and ``summary_plots/posterior_vs_cls_<dataset>`` (limits and their ratio versus mass).
    """
    from hps_bayes import posterior

    task = cfg.get("task") or {}
    masses = [float(m) for m in task.get("masses") or ([cfg["mass"]] if cfg.get("mass") is not None else [])]
    if not masses:
        raise ConfigError("task=posterior needs masses in GeV: `task.masses=[0.030,0.050]` or `mass=0.030`")
    prior = posterior.PosteriorSettings.from_dict(cfg.get("posterior"))
    spectrum, settings = load_guarded(settings, cfg, out)
    for mass in masses:
        check_mass(spectrum, mass, settings)
    frame = run_scan(spectrum, config=settings, masses=masses, out_dir=out, progress=False,
                     provenance={"task": "posterior"}, handle_signals=True)
    return _sample_posteriors(spectrum, frame, settings, prior, out, plots=bool(task.get("plots", True)))


def _scan_posteriors(spectrum: Spectrum, frame: Any, settings: AnalysisSettings, cfg: dict[str, Any],
                     out: Path) -> Any:
    """After a scan: sample ``posterior.scan_top_z`` most significant and ``posterior.scan_masses`` points.

    Top-Z selection needs the whole grid: in a chunked scan only the explicit masses of this chunk
    are sampled (a one-chunk rerun reuses the finished points and samples the top ones).
    """
    from hps_bayes import posterior

    prior = posterior.PosteriorSettings.from_dict(cfg.get("posterior"))
    if (prior.scan_top_z <= 0 and not prior.scan_masses) or frame.empty:
        return None
    top_z = prior.scan_top_z
    if top_z > 0 and settings.scan.n_chunks > 1:
        log.warning("posterior.scan_top_z=%d needs the whole grid: skipped in chunk %d of %d; rerun with "
                    "scan.n_chunks=1 (reuses the finished points) or task=posterior", top_z,
                    settings.scan.chunk + 1, settings.scan.n_chunks)
        top_z = 0
    selected, unmatched = posterior.select_scan_masses(
        frame.mass.to_numpy(), frame.Z.to_numpy(), (frame.status == "ok").to_numpy(), top_z=top_z,
        explicit=prior.scan_masses, tolerance=0.5 * settings.scan.step)
    if unmatched and settings.scan.n_chunks == 1:
        log.warning("posterior.scan_masses %s MeV: no scanned mass within half a step; use task=posterior "
                    "'task.masses=[...]' for masses off the grid", [round(m * 1e3, 3) for m in unmatched])
    if not selected:
        return None
    log.info("sampling the posterior at %d scanned masses: %s MeV", len(selected),
             ", ".join(f"{m * 1e3:.2f}" for m in selected))
    rows = frame[np.isin(frame.mass.to_numpy(), selected)]
    tag = settings.dataset.name if settings.scan.n_chunks == 1 else f"chunk{settings.scan.chunk}_{settings.dataset.name}"
    return _sample_posteriors(spectrum, rows, settings, prior, out, plots=settings.plots.summary, scan=frame, tag=tag)


def _sample_posteriors(spectrum: Spectrum, frame: Any, settings: AnalysisSettings, prior: Any, out: Path, *,
                       plots: bool, scan: Any = None, tag: str | None = None) -> Any:
    """Sample every row of ``frame`` (points of a scan) and write the posterior outputs (see task_posterior).

    ``tag`` names the comparison CSV and plot (default: the dataset; ``chunk<k>_<dataset>`` in a chunked scan).

    A point whose ``numbers.json`` already holds a posterior of the same sampler settings and config
    hash (and whose ``posterior.nc`` exists) is read back instead of sampled again.
    """
    import pandas as pd

    from hps_bayes import posterior, posterior_plots
    from hps_bayes.scan import build_window

    spec, name, rows = prepare_spectrum(spectrum, settings), settings.dataset.name, []
    for r in frame.itertuples():
        window = build_window(spec, r.mass, settings)
        seed = posterior.mass_seed(settings.seed if prior.seed is None else prior.seed, r.mass)
        numbers = point_path(out, r.mass, name)
        folder = numbers.parent
        if numbers.is_file() and posterior.reusable(read_json(numbers), prior, config_hash=settings.config_hash()) and \
                (folder / "posterior.nc").is_file():
            result, _ = posterior.read_posterior(folder)
            log.info("m=%.2f MeV: posterior reused from %s", r.mass * 1e3, folder)
        else:
            k = r.A_up / r.eps2_up if r.status == "ok" and r.eps2_up > 0 else float("nan")
            result = posterior.sample_mass_point(window, settings.background, prior=prior, seed=seed,
                                                 yield_per_eps2=k, dataset=name)
            posterior.write_posterior(result, folder, extra={"posterior": prior.to_dict(),
                                                             "settings": settings.to_dict()})
            with _locked(numbers):
                posterior.merge_into_numbers(numbers, posterior.numbers_entry(
                    result, prior, config_hash=settings.config_hash()))
            if plots:
                arrays = posterior.posterior_arrays(result, window, rng=np.random.default_rng(seed))
                posterior_plots.plot_posterior_point(arrays, folder, A_up_cls=r.A_up, A_hat=r.A_hat,
                                                     fmt=settings.plots.format)
        rows.append(posterior.comparison_row(result, A_up_cls=r.A_up, A_hat=r.A_hat, sigma_A=r.sigma_A,
                                             status=r.status))
        log.info("m=%.2f MeV: A_up CLs %.4g, credible %.4g (ratio %.3f), diagnostics %s", r.mass * 1e3, r.A_up,
                 result.A_up_credible, rows[-1]["ratio"], "passed" if result.passed else "FAILED")
    table = pd.DataFrame(rows)
    tag = tag or name
    write_table(out / f"posterior_comparison_{tag}.csv", table)
    if plots and len(table):
        ok = scan[scan.status == "ok"] if scan is not None else None
        posterior_plots.plot_limit_comparison(
            table.mass.to_numpy(), table.A_up.to_numpy(), table.A_up_credible.to_numpy(), table.passed.to_numpy(),
            out / "summary_plots" / f"posterior_vs_cls_{tag}.{settings.plots.format}", dataset_label=f"HPS {name}",
            scan_mass=None if ok is None else ok.mass.to_numpy(), scan_A_up=None if ok is None else ok.A_up.to_numpy())
    return table


# --- look-elsewhere effect (stats.lee_toys > 0) and task=bands ---------------------------------------

def _look_elsewhere(spectrum: Spectrum, frame: Any, settings: AnalysisSettings, out: Path) -> Any:
    """With ``stats.lee_toys`` > 0 and one chunk: toy scans over the scanned masses, the global
    significance of the largest local excess (:mod:`hps_bayes.stats.lee`) in the log and in
    ``summary.json`` (key ``look_elsewhere`` → dataset)."""
    from hps_bayes.scan import toy_scans
    from hps_bayes.stats.lee import look_elsewhere

    n_scans = settings.stats.lee_toys
    ok = frame[frame.status == "ok"] if len(frame) else frame
    if n_scans <= 0 or len(ok) == 0:
        return None
    if settings.scan.n_chunks > 1:
        log.warning("stats.lee_toys=%d: the look-elsewhere toy scans need the whole grid; run them in a "
                    "one-chunk scan (scan.n_chunks=1), which reuses the finished points", n_scans)
        return None
    rng = np.random.default_rng(np.random.SeedSequence([settings.seed, 0, 2]))
    z_toys = toy_scans(spectrum, settings, n_scans=n_scans, rng=rng, masses=ok.mass.to_numpy())
    lee = look_elsewhere(ok.mass.to_numpy(), ok.Z.to_numpy(), z_toys, ok.sigma_m.to_numpy(),
                         c0=settings.stats.lee_c0)
    path = out / "summary.json"
    with _locked(path):
        summary = read_json(path) if path.exists() else {}
        summary.setdefault("look_elsewhere", {})[settings.dataset.name] = {
            **lee.to_dict(), "seed": settings.seed, "config_hash": settings.config_hash()}
        write_json(path, summary)
    log.info("look-elsewhere (%d toy scans, %d masses): largest local Z = %.2f at %.2f MeV (p_local %.2e); "
             "global p: toys %.3g ± %.2g (Z = %.2f), Gross-Vitells %.3g (<N(c0=%.1f)> = %.2f), trials factor "
             "%.1f → %.3g", lee.n_toy_scans, len(ok), lee.z_local_max, lee.mass_at_max * 1e3, lee.p_local,
             lee.p_global_toys, lee.p_global_toys_error, lee.z_global_toys, lee.p_global_gv, lee.c0,
             lee.n_upcrossings_mean, lee.trials_factor, lee.p_global_trials)
    return lee



def task_bands(settings: AnalysisSettings, cfg: dict[str, Any], out: Path) -> Any:
    """Toy-based expected limits (median, ±1σ, ±2σ) beside the asymptotic ones over the dataset's grid.

    ``task.n_toys`` (null: ``stats.n_toys``, 1000 if that is 0) background-only and s+b toys per
    mass and tested A.  Writes ``bands.csv`` (one row per mass and ``method``, the columns of
    ``results_single.csv``, with ``A_up_error`` the toy limit's MC error) and Brazil plots of A and ε²
    (``summary_plots/bands_{A,eps2}_<dataset>``): toy band and observed limit, asymptotic band over it.
    """
    import pandas as pd

    from hps_bayes import plots

    task = cfg.get("task") or {}
    n_toys = int(task.get("n_toys") or settings.stats.n_toys or 1000)
    needed = int(np.ceil(10.0 / (settings.stats.alpha * 0.02275)))
    if n_toys < needed:  # p_{s+b} ≈ α Φ(−2) at the −2σ expected limit must be resolved by ~10 toys
        log.warning("bands with %d toys: the -2 sigma (and -1 sigma) expected limits are biased low: p_s+b near "
                    "alpha*Phi(-2) = %.1e is resolved only with >= %d toys (stats.n_toys=10000)", n_toys,
                    settings.stats.alpha * 0.02275, needed)
    spectrum, settings = load_guarded(settings, cfg, out)
    masses = mass_grid(settings)
    log.info("bands of dataset %s: %d masses (%.1f-%.1f MeV), %d toys per ensemble", settings.dataset.name,
             len(masses), masses[0] * 1e3, masses[-1] * 1e3, n_toys)
    frames = {method: run_scan(spectrum, masses=masses, config=replace(
        settings, stats=replace(settings.stats, method=method, n_toys=n_toys if method == "toys" else 0)))
        for method in ("asymptotic", "toys")}
    table = pd.concat(list(frames.values()), ignore_index=True).sort_values(["mass", "method"], kind="stable")
    write_table(out / "bands.csv", table)
    name, ext = settings.dataset.name, settings.plots.format
    for quantity, short in (("A_up", "A"), ("eps2_up", "eps2")):
        plots.plot_limit_bands(frames["toys"], frames["asymptotic"], out / "summary_plots" /
                               f"bands_{short}_{name}.{ext}", quantity=quantity,  # type: ignore[arg-type]
                               dataset_label=f"HPS {name}")
    _log_summary(frames["toys"])
    return table


def task_active(settings: AnalysisSettings, cfg: dict[str, Any], out: Path) -> Any:
    """Active learning (``hps_bayes.active``, config ``active:``): history ``active_history.csv`` (resumable),
    ``active_summary.json``, ``active_convergence.csv`` and ``active_plots/``."""
    from hps_bayes import plots_active
    from hps_bayes.active.runner import run_configured

    spec = dict(cfg.get("active") or {})
    target = (spec.get("objective") or {}).get("callable")
    user = None
    if (spec.get("objective") or {}).get("kind") == "callable" and target:
        from hydra.utils import instantiate

        user = instantiate(target)
    def datasets() -> tuple[dict[str, Spectrum], dict[str, AnalysisSettings]]:
        members = combination_members(cfg)  # task.datasets, for active.objective.combined=true
        loaded = {n: load_guarded(s, plain, out) for n, (s, plain) in members.items()}
        return {n: spec for n, (spec, _) in loaded.items()}, {n: s for n, (_, s) in loaded.items()}

    summary = run_configured(spec, settings, out, spectrum=lambda: load_validated(settings, cfg, out),
                             user_objective=user, plotter=plots_active.plot_snapshot, datasets=datasets)
    return summary


def combination_members(cfg: dict[str, Any]) -> dict[str, tuple[AnalysisSettings, dict[str, Any]]]:
    """The enabled datasets of ``task.datasets``: name → (settings, plain config for that dataset).

    An entry's ``background`` gives that dataset its own background model: a config name
    (``background: whole15``, from ``conf/background/``) or a mapping of keys changed from the run's
    ``background`` (``background: {poly_degree: 12}``); without it the run's ``background`` is used.
    """
    members: dict[str, tuple[AnalysisSettings, dict[str, Any]]] = {}
    for entry in cfg["task"].get("datasets") or []:
        if not entry.get("enabled", True):
            continue
        mapping = preset_mapping(str(entry["preset"]))
        background = dict(cfg.get("background") or {})
        for key, value in entry.items():
            if key == "demo":
                mapping["demo"] = {**mapping.get("demo", {}), **value}
            elif key == "background":
                background = (background_mapping(value) if isinstance(value, str)
                              else {**background, **dict(value or {})})
            elif key not in ("preset", "enabled"):
                mapping[key] = value
        plain = {**cfg, "dataset": mapping, "background": background}
        settings = settings_from_mapping({**plain, "dataset": {k: v for k, v in mapping.items() if k != "demo"}})
        if settings.dataset.name in members:
            raise ConfigError(f"task.datasets: two enabled entries are named {settings.dataset.name!r} "
                              f"(preset {entry['preset']!r}); give each dataset its own name")
        members[settings.dataset.name] = (settings, plain)
    if not members:
        raise ConfigError("task=combine: no enabled dataset in task.datasets; enable at least one")
    return members


def task_combine(settings: AnalysisSettings, cfg: dict[str, Any], out: Path) -> Any:
    """Scan every enabled dataset, combine them (shared ε²) where their grids overlap, export.

    Writes ``results_single.csv``, ``results_combined.csv``, ``limits.csv``/``.parquet``,
    ``hepdata/``, per-dataset and combined ``numbers.json`` and the summary plots.
    """
    members = combination_members(cfg)
    loaded = {name: load_guarded(s, plain, out) for name, (s, plain) in members.items()}
    spectra = {name: spec for name, (spec, _) in loaded.items()}
    members = {name: (loaded[name][1], plain) for name, (_, plain) in members.items()}
    grids = {name: mass_grid(s) for name, (s, _) in members.items()}
    frames = {name: run_scan(spectra[name], config=s, masses=grids[name], out_dir=out)
              for name, (s, _) in members.items()}
    single = pd.concat(list(frames.values()), ignore_index=True)
    write_table(out / "results_single.csv", single)
    masses = combined_masses(grids)
    if cfg["task"].get("combine", True) and len(members) > 1 and len(masses) == 0:
        raise ConfigError(f"task=combine: the grids of {sorted(members)} do not overlap; nothing to combine "
                          f"(ranges: { {n: s.dataset.mass_range for n, (s, _) in members.items()} })")
    stats = settings.stats
    combined = run_combination(spectra, {n: s for n, (s, _) in members.items()}, masses, out_dir=out,
                               alpha=stats.alpha, method=stats.method, n_toys=max(stats.n_toys, 10)
                               ) if cfg["task"].get("combine", True) else pd.DataFrame()
    write_table(out / "results_combined.csv", combined)
    _export(single, combined, out, hepdata=bool(cfg["task"].get("hepdata", True)))
    _combination_plots(frames, combined, {n: s for n, (s, _) in members.items()}, out)
    log.info("combined %d masses (%s); results in %s", len(combined),
             ", ".join(sorted(set(combined.datasets))) if len(combined) else "none", out)
    return single, combined


def _export(single: Any, combined: Any, out: Path, *, hepdata: bool) -> None:
    table = limits_table(single, combined)
    write_limits(table, out)
    if hepdata and len(table):
        write_hepdata(table, out)


def _combination_plots(frames: dict[str, Any], combined: Any, settings: dict[str, AnalysisSettings],
                       out: Path) -> None:
    from hps_bayes import plots

    for name, frame in frames.items():
        _summary_plots(frame, settings[name], out)
    folder = out / "summary_plots"
    curves = {f"HPS {name}": frame for name, frame in frames.items()}
    if len(combined):
        plots.plot_eps2_limits(combined, folder / "eps2_ul_combined.png", dataset_label="combined",
                               title="Combination (shared $\\epsilon^2$)")
        plots.plot_p0(combined, folder / "p0_combined.png", dataset_label="combined")
        curves["combined"] = combined
    published = pd.read_csv(PUBLISHED_2015, comment="#") if "2015" in frames else None
    plots.plot_eps2_overlay(curves, folder / "eps2_ul_overlay.png", published=published)
    plots.plot_p0_overlay(curves, folder / "p0_overlay.png")


def task_inject(settings: AnalysisSettings, cfg: dict[str, Any], out: Path) -> Any:
    """Signal injection and extraction (:mod:`hps_bayes.closure`): ``inject.csv`` (one row per mass, truth
    and A_inj), ``inject_toys.csv``, pull and linearity plots; chunked over masses by scan.n_chunks/chunk
    (each chunk writes ``inject_chunk<k>of<n>.csv``; the last one to finish merges them)."""
    from hps_bayes import closure, plots_closure

    task, scan, name = cfg.get("task") or {}, settings.scan, settings.dataset.name
    data, settings = load_guarded(settings, cfg, out)
    masses = closure.study_masses(settings, task.get("masses"), int(task.get("n_masses", 6)))
    closure.check_inputs(data, settings, masses)
    mine = chunk_of(masses, scan.n_chunks, scan.chunk)
    log.info("inject (chunk %d/%d): %d masses %s MeV, truths %s, yields %s %s, %d toys per cell", scan.chunk + 1,
             scan.n_chunks, len(mine), np.round(mine * 1e3, 2).tolist(), task.get("truths"),
             task.get("yields"), task.get("units", "sigma"), int(task.get("n_toys", 500)))
    cells, toys = closure.run_injection(
        data, settings, masses=mine, truths=list(task.get("truths", closure.TRUTHS)),
        yields=[float(v) for v in task.get("yields", (0, 1, 3, 5))], units=task.get("units", "sigma"),
        n_toys=int(task.get("n_toys", 500)), limits=bool(task.get("limits", True)))
    cells["config_hash"], cells["seed"] = settings.config_hash(), settings.seed
    if task.get("write_toys", True):
        write_table(out / closure.chunk_table("inject_toys", scan.chunk, scan.n_chunks), toys)
    frame = _merge_chunk(out, "inject", cells, scan)
    if frame is None:
        return cells
    summary = closure.injection_summary(frame)
    write_json(out / "inject_summary.json", {"summary": summary, "settings": settings.to_dict(), "task": task})
    fmt = settings.plots.format
    plots_closure.plot_injection_pulls(frame, out / f"inject_pulls_{name}.{fmt}", dataset_label=f"HPS {name}")
    plots_closure.plot_injection_linearity(frame, out / f"inject_linearity_{name}.{fmt}", dataset_label=f"HPS {name}")
    log.info("injection closure of %s (pull = (A_hat - A_inj)/sigma_A):\n%s", name, closure.injection_table(summary))
    return frame


def task_coverage(settings: AnalysisSettings, cfg: dict[str, Any], out: Path) -> Any:
    """Coverage of the 95% CL limits (:mod:`hps_bayes.closure`): ``coverage.csv``, ``coverage_<dataset>.png``;
    known-background models and the window model, asymptotic and toy limits; chunked over masses."""
    from hps_bayes import closure, plots_closure

    task, scan, name = cfg.get("task") or {}, settings.scan, settings.dataset.name
    data, settings = load_guarded(settings, cfg, out)
    masses = closure.study_masses(settings, task.get("masses"), int(task.get("n_masses", 1)))
    closure.check_inputs(data, settings, masses)
    mine = chunk_of(masses, scan.n_chunks, scan.chunk)
    n_exp = {"asymptotic": int(task.get("n_experiments", 400)), "toys": int(task.get("n_experiments_toys", 200))}
    log.info("coverage (chunk %d/%d): masses %s MeV, truth %s, A_true/sigma_A %s, methods %s, experiments %s, "
             "%s toys per limit", scan.chunk + 1, scan.n_chunks, np.round(mine * 1e3, 2).tolist(),
             task.get("truth", "fit"), task.get("true_sigmas"), task.get("methods"), n_exp,
             task.get("n_toys"))
    frame = closure.run_coverage(
        data, settings, masses=mine, truth=str(task.get("truth", "fit")),
        true_sigmas=[float(v) for v in task.get("true_sigmas", (0, 1, 2, 3, 5))],
        methods=list(task.get("methods", ("asymptotic", "toys"))), n_experiments=n_exp,
        n_toys=int(task.get("n_toys", 300)), known_scales=[float(v) for v in task.get("known_scales", (1.0,))])
    frame["config_hash"], frame["seed"] = settings.config_hash(), settings.seed
    merged = _merge_chunk(out, "coverage", frame, scan)
    if merged is None:
        return frame
    plots_closure.plot_coverage(merged, out / f"coverage_{name}.{settings.plots.format}", dataset_label=f"HPS {name}",
                                cl=1 - settings.stats.alpha)
    log.info("coverage of the %.0f%% CL limits on %s:\n%s", 100 * (1 - settings.stats.alpha), name,
             closure.coverage_table(merged))
    return merged
