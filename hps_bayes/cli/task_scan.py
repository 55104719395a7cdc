"""``task=scan`` and ``task=test``: scan a spectrum, or one mass with its plots.

Each task takes the validated analysis settings, its typed task settings
(:mod:`hps_bayes.cli.task_settings`), the plain composed config (``dataset.demo``,
``background``, ``posterior``, ``mass``) and the run folder.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import ndtri

from hps_bayes.analysis.grid import chunk_of, mass_grid, prepare_spectrum
from hps_bayes.analysis.point import EXCESS_NOTE, EXCESS_STAT_Z, check_mass, window_fit_arrays
from hps_bayes.analysis.rundir import (
    ScanInterrupted,
    job_provenance,
    point_path,
    write_run_manifest,
)
from hps_bayes.analysis.scan import scan_points
from hps_bayes.analysis.seeds import LEE_SCANS, chunk_seeds, run_rng
from hps_bayes.analysis.settings import AnalysisSettings
from hps_bayes.cli.inputs import _locked, load_guarded, warn_without_selection
from hps_bayes.cli.task_posterior import _scan_posteriors
from hps_bayes.cli.task_settings import ScanTask, TestTask
from hps_bayes.errors import ConfigError
from hps_bayes.inputs.spectrum import Spectrum
from hps_bayes.results.export import export_scan
from hps_bayes.results.files import read_json, write_json, write_table
from hps_bayes.results.objects import MassPointResult, ScanResults, mass_label, result_rows

log = logging.getLogger("hps_bayes")

PUBLISHED_2015 = Path(__file__).resolve().parents[1] / "data" / "hps2015_published_limit.csv"


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


def _flush_chunk(rows: list[dict[str, Any]], counts: Mapping[str, int], settings: AnalysisSettings, out: Path,
                 info: dict[str, Any], *, state: str) -> None:
    """The chunk's table and ``chunks/<dataset>_chunk<k>.json`` (counts, SLURM job ids, state)."""
    write_table(out / _chunk_table(settings), rows)
    write_json(out / "chunks" / f"{settings.dataset.name}_chunk{settings.scan.chunk}.json", {
        **info, **job_provenance(), "state": state, "table": _chunk_table(settings), "n_done": len(rows),
        "n_failed": sum(row["status"] != "ok" for row in rows), "computed": int(counts.get("computed", 0)),
        "reused": int(counts.get("reused", 0))})


def task_scan(settings: AnalysisSettings, task: ScanTask, cfg: dict[str, Any], out: Path) -> ScanResults:
    """Scan the grid (or chunk ``scan.chunk`` of ``scan.n_chunks``) into the run folder ``out``.

    One chunk: ``results_single.csv`` (+ ``.parquet`` and the HEPData record ``hepdata/``) and summary
    plots; several: ``results_chunk<k>_<dataset>.csv``
    (``task=merge`` then collects the run).  Per mass: ``m030MeV/<dataset>/numbers.json``.  The tables
    and figures are made from the rows; pandas is imported only for look-elsewhere toys or posteriors.
    """
    spectrum, settings = load_guarded(settings, cfg, out)
    warn_without_selection(settings, cfg)
    masses = chunk_of(mass_grid(settings), settings.scan.n_chunks, settings.scan.chunk)
    info = chunk_provenance(settings)
    write_run_manifest(out, settings, overwrite=bool(cfg.get("overwrite")))
    log.info("chunk %d/%d: scanning %d masses of dataset %s (%.1f-%.1f MeV) into %s", settings.scan.chunk + 1,
             settings.scan.n_chunks, len(masses), settings.dataset.name, masses[0] * 1e3, masses[-1] * 1e3, out)
    try:
        results, counts = scan_points(spectrum, config=settings, masses=masses, out_dir=out, provenance=info,
                                      handle_signals=True, overwrite=bool(cfg.get("overwrite")))
    except ScanInterrupted as exc:
        _flush_chunk(exc.frame.to_dict("records"), exc.frame.attrs, settings, out, info, state="interrupted")
        raise
    scanned = ScanResults(results, counts)
    rows = scanned.rows()
    _flush_chunk(rows, counts, settings, out, info, state="done")
    log.info("%d mass points computed, %d reused from an earlier run", counts["computed"], counts["reused"])

    def whole_scan_outputs() -> None:
        if settings.scan.n_chunks == 1:
            _export_in_child(rows, out)
            _summary_plots(rows, settings, out)

    _per_mass_plots(spectrum, rows, settings, out, meanwhile=whole_scan_outputs)  # while its workers draw
    _log_summary(rows, whole_grid=settings.scan.n_chunks == 1)
    _look_elsewhere(spectrum, scanned, settings, out)
    _scan_posteriors(spectrum, scanned, settings, cfg, out)
    return scanned


def _export_in_child(rows: list[dict[str, Any]], out: Path) -> None:
    """:func:`~hps_bayes.results.export.export_scan` (the Parquet copy and the HEPData record) in a forked
    child process, waited for; here where the platform cannot fork.

    The two writers need pyarrow and hepdata_lib with its validator (requests, jsonschema): about 45 MB and
    150 modules that the scan never uses again.  In a child they are freed when it ends, before the summary
    figures are drawn here, so the job's peak memory is the larger of the two instead of their sum.  An
    error in the child is raised here (the process pool sends it back).
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if "fork" not in multiprocessing.get_all_start_methods():
        export_scan(rows, out)
        return
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("fork")) as pool:
        pool.submit(export_scan, rows, out).result()


def task_test(settings: AnalysisSettings, task: TestTask, cfg: dict[str, Any], out: Path) -> MassPointResult:
    """One mass point (``mass=0.030``): fit, significance, limits; printed and saved."""
    if cfg["mass"] is None:
        raise ConfigError("task=test needs a mass in GeV, e.g. `python -m hps_bayes task=test mass=0.030`")
    spectrum, settings = load_guarded(settings, cfg, out)
    warn_without_selection(settings, cfg)
    mass = float(cfg["mass"])
    check_mass(spectrum, mass, settings)
    results, _ = scan_points(spectrum, config=settings, masses=[mass], out_dir=out, progress=False,
                             provenance={"task": "test"}, handle_signals=True, overwrite=bool(cfg.get("overwrite")))
    result = results[0]
    if task.plots:
        _per_mass_plots(spectrum, result_rows(results), settings, out, force=True)
    _print_result(result)
    return result


def published_2015() -> list[dict[str, float]]:
    """The published HPS 2015 ε² curve, one dict per row (``mass_GeV``, ``epsilon``, ``epsilon2``)."""
    with PUBLISHED_2015.open(encoding="utf-8") as fh:
        return [{key: float(value) for key, value in row.items()}
                for row in csv.DictReader(line for line in fh if not line.startswith("#"))]


def _summary_plots(frame: Any, settings: AnalysisSettings, out: Path) -> None:
    """The scan's summary figures, from its table (a DataFrame or its rows)."""
    if not settings.plots.summary or not len(frame):
        return
    from hps_bayes.plots import scan as plots_scan

    label = f"HPS {settings.dataset.name}"
    folder = out / "summary_plots"
    published = None
    if settings.dataset.name in ("2015", "demo") and PUBLISHED_2015.exists():
        published = published_2015()
    ext = settings.plots.format
    name = settings.dataset.name
    plots_scan.plot_eps2_limits(frame, folder / f"eps2_ul_{name}.{ext}", dataset_label=label, published=published)
    plots_scan.plot_A_limits(frame, folder / f"A_ul_{name}.{ext}", dataset_label=label)
    plots_scan.plot_p0(frame, folder / f"p0_{name}.{ext}", dataset_label=label)
    plots_scan.plot_z_distribution(frame, folder / f"z_distribution_{name}.{ext}", dataset_label=label)


def _per_mass_plots(spectrum: Spectrum, rows: list[dict[str, Any]], settings: AnalysisSettings, out: Path, *,
                    force: bool = False, meanwhile: Callable[[], None] | None = None) -> None:
    """The per-mass figures; ``meanwhile`` (other outputs) runs in this process while plot workers draw."""
    wanted = {round(m, 7) for m in settings.plots.per_mass_masses}
    chosen = [row for row in rows if row["status"] == "ok"
              and (force or settings.plots.per_mass or round(row["mass"], 7) in wanted)]
    if not chosen:
        if meanwhile is not None:
            meanwhile()
        return  # matplotlib is not even imported (a second off every chunk's start)
    from hps_bayes.plots.parallel import plot_windows

    spec = prepare_spectrum(spectrum, settings)
    items = []
    for row in chosen:
        result = MassPointResult.from_row(row)
        items.append((window_fit_arrays(spec, result, settings), point_path(out, result, settings.dataset.name).parent))
    # one figure per kind, its artists moved from mass to mass; in worker processes for many masses
    plot_windows(items, ext=settings.plots.format, workers=settings.plots.workers, meanwhile=meanwhile)


def _log_summary(rows: list[dict[str, Any]], *, whole_grid: bool = True) -> None:
    """How many points are ok, a warning per other point, the largest excess (with its global p where ``rows`` are
    the whole grid, not one chunk of it: :func:`_global_estimate`) and the median ε² limit."""
    ok = [row for row in rows if row["status"] == "ok"]
    log.info("%d of %d mass points ok", len(ok), len(rows))
    for row in rows:
        if row["status"] != "ok":
            log.warning("%s m=%.2f MeV: %s (%s)", row["dataset"], row["mass"] * 1e3, row["status"], row["message"])
    if ok:
        best = max(ok, key=lambda row: -np.inf if np.isnan(row["Z"]) else row["Z"])  # the first of equal ones
        log.info("largest local excess: m=%.2f MeV, Z=%.2f (p0=%.2e)%s; median eps2 limit %.2e",
                 best["mass"] * 1e3, best["Z"], best["p0"], _global_estimate(rows, float(best["Z"])) if whole_grid else "",
                 float(np.median([row["eps2_up"] for row in ok])))
    reduced = [f"{row['mass'] * 1e3:.1f}" for row in ok if EXCESS_NOTE in str(row["message"])]
    if reduced:
        log.warning("excesses of A_hat/sigma_stat >= %g that the selection's S reduces at %s MeV (their rows' message "
                    "says how much): a signal in the data the selection was made on raises S there; make the "
                    "selection on a control spectrum and scan with it to tell", EXCESS_STAT_Z, ", ".join(reduced))
    _warn_z_spread(rows)


def _global_estimate(rows: list[dict[str, Any]], z_local: float) -> str:
    """Gross–Vitells for the largest excess with this scan's own Z(m) = Â/σ_A as the one curve that counts the
    upcrossings of Z = 0 (:func:`hps_bayes.stats.lee.gross_vitells`, c0 = 0): no toys, so that the log never shows
    a local significance without its look-elsewhere effect.  Against 2000 toy scans (``stats.lee_toys``) it is
    within a factor of 2 either way, as Gross–Vitells with the toys' own upcrossings is (docs/validation.md); the
    trials factor ∫dm/σ(m) and the published N_reg·p_local came out 3.7 and 4.6 times lower at Z = 3.6.
    Empty below two ok masses or without a finite Z."""
    from hps_bayes.stats.lee import gross_vitells, upcrossings

    ordered = sorted(rows, key=lambda row: row["mass"])
    curve = [row["A_hat"] / row["sigma_A"] if row["status"] == "ok" and row["sigma_A"] > 0 else np.nan
             for row in ordered]
    if sum(np.isfinite(curve)) < 2 or not np.isfinite(z_local):
        return ""
    n_up = int(upcrossings([curve], 0.0)[0])
    p_global = gross_vitells(max(z_local, 0.0), n_up, 0.0)
    z_global = float(-ndtri(p_global)) if p_global < 0.5 else 0.0
    return (f"; global p ≈ {p_global:.2g} (Z ≈ {z_global:.1f}; Gross–Vitells with this scan's {n_up} upcrossings "
            "of Z = 0: stats.lee_toys or task=lee give it from toy scans)")


#: A scan whose Â/σ_A over its ok masses spread by more than this is warned about: about 1 is expected where the
#: background describes the data (the bundled demos 0.5-1.2, three times their structure 1.5); a spectrum whose
#: structure the default background does not follow gave 4.7, with local Z up to 7.7.
MAX_Z_SPREAD = 2.0


def _warn_z_spread(rows: list[dict[str, Any]]) -> None:
    pulls = np.array([row["A_hat"] / row["sigma_A"] for row in rows if row["status"] == "ok" and row["sigma_A"] > 0])
    spread = float(np.std(pulls, ddof=1)) if pulls.size >= 10 else 0.0
    if spread > MAX_Z_SPREAD:
        log.warning("A_hat/sigma_A spreads by %.2f over the %d ok masses (about 1 where the background describes the "
                    "data; largest |A_hat/sigma_A| %.1f): the background model does not follow this spectrum's shape, "
                    "and its local significances and limits are not to be trusted. Run task=select on this spectrum "
                    "and scan with background.selection", spread, pulls.size,
                    float(np.max(np.abs(pulls))))


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


# --- look-elsewhere effect (stats.lee_toys > 0) and task=bands ---------------------------------------

def _look_elsewhere(spectrum: Spectrum, scanned: ScanResults, settings: AnalysisSettings, out: Path) -> Any:
    """With ``stats.lee_toys`` > 0 and one chunk: toy scans over the scanned masses, the global
    significance of the largest local excess (:mod:`hps_bayes.stats.lee`) in the log and in
    ``summary.json`` (key ``look_elsewhere`` → dataset)."""
    n_scans = settings.stats.lee_toys
    if n_scans <= 0 or "ok" not in scanned.status:
        return None
    from hps_bayes.analysis.toyscans import toy_scans
    from hps_bayes.stats.lee import look_elsewhere

    frame = scanned.frame()
    ok = frame[frame.status == "ok"]
    if settings.scan.n_chunks > 1:
        log.warning("stats.lee_toys=%d: the look-elsewhere toy scans need the whole grid; in a chunked run make "
                    "them in batches (task=lee, 'task.batch=range(N)') and merge them with task=merge", n_scans)
        return None
    rng = run_rng(settings.seed, LEE_SCANS)
    z_toys = toy_scans(spectrum, settings, n_scans=n_scans, rng=rng, masses=ok.mass.to_numpy())
    lee = look_elsewhere(ok.mass.to_numpy(), ok.Z.to_numpy(), z_toys, ok.sigma_m.to_numpy(),
                         c0=settings.stats.lee_c0)
    record_look_elsewhere(out, settings, lee, n_masses=len(ok), source={"seed": settings.seed})
    return lee


def record_look_elsewhere(out: Path, settings: AnalysisSettings, lee: Any, *, n_masses: int,
                          source: dict[str, Any]) -> None:
    """The global significance in ``summary.json`` (key ``look_elsewhere`` → dataset, with ``source``:
    how the toy scans were made) and in the log."""
    path = out / "summary.json"
    with _locked(path):
        summary = read_json(path) if path.exists() else {}
        summary.setdefault("look_elsewhere", {})[settings.dataset.name] = {
            **lee.to_dict(), **source, "config_hash": settings.config_hash()}
        write_json(path, summary)
    if lee.p_global_toys > 0:
        by_toys = f"{lee.p_global_toys:.3g} ± {lee.p_global_toys_error:.2g} (Z = {lee.z_global_toys:.2f})"
    else:  # no toy scan reached the largest local Z: only a bound
        bound = 1.0 / max(lee.n_toy_scans, 1)
        by_toys = f"< {bound:.2g} (Z > {float(-ndtri(bound)):.2f}; no toy scan reached the local Z)"
    log.info("look-elsewhere (%d toy scans, %d masses): largest local Z = %.2f at %.2f MeV (p_local %.2e); "
             "global p: toys %s, Gross-Vitells %.3g (<N(c0=%.1f)> = %.2f), trials factor %.1f → %.3g",
             lee.n_toy_scans, n_masses, lee.z_local_max, lee.mass_at_max * 1e3, lee.p_local, by_toys,
             lee.p_global_gv, lee.c0, lee.n_upcrossings_mean, lee.trials_factor, lee.p_global_trials)
