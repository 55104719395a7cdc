"""Task functions behind ``python -m hps_bayes task=...`` (importable, no Hydra needed).

Each task takes the validated settings, the plain composed config (for
task-specific keys) and the run folder.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from hps_bayes.demo import write_demo_file
from hps_bayes.errors import InputError
from hps_bayes.io import Spectrum, check_analysable, load_spectrum, validate_spectrum, write_validation_report
from hps_bayes.results import MassPointResult, mass_label, write_table
from hps_bayes.scan import (
    chunk_of,
    mass_grid,
    point_path,
    prepare_spectrum,
    run_scan,
    window_fit_arrays,
)
from hps_bayes.settings import AnalysisSettings

log = logging.getLogger("hps_bayes")

PUBLISHED_2015 = Path(__file__).resolve().parent / "data" / "hps2015_published_limit.csv"


def _demo_options(cfg: dict[str, Any]) -> dict[str, Any]:
    return dict(cfg.get("dataset", {}).get("demo") or {})


def ensure_input(settings: AnalysisSettings, cfg: dict[str, Any]) -> Path:
    """The dataset's ROOT file; the demo spectrum is generated on first use."""
    path = Path(settings.dataset.path)
    demo = _demo_options(cfg)
    if not path.exists() and demo and settings.dataset.name == "demo":
        log.info("demo spectrum %s not found: generating it (seed %s)", path, demo.get("seed"))
        write_demo_file(path, settings.dataset, n_events=int(demo["n_events"]), seed=int(demo["seed"]),
                        signal_mass=demo.get("signal_mass"), signal_yield=float(demo.get("signal_yield") or 0),
                        shape=demo.get("shape"))
    return path


def load_validated(settings: AnalysisSettings, cfg: dict[str, Any], out: Path) -> Spectrum:
    """Read the dataset's histogram, write ``validation_report.json``, stop on what cannot be analysed."""
    path = ensure_input(settings, cfg)
    report: dict[str, Any] = {"file": str(path), "file_found": path.exists(),
                              "histogram": settings.dataset.hist_name}
    try:
        spectrum = load_spectrum(path, settings.dataset.hist_name)
    except InputError as exc:
        report.update(histogram_found=False, ok=False, problems=[str(exc)])
        write_validation_report(out / "validation_report.json", {settings.dataset.name: report})
        raise
    report.update(histogram_found=True, **validate_spectrum(spectrum, mass_range=settings.dataset.mass_range))
    write_validation_report(out / "validation_report.json", {settings.dataset.name: report})
    check_analysable(report)
    return spectrum


def task_scan(settings: AnalysisSettings, cfg: dict[str, Any], out: Path) -> Any:
    """Scan the mass grid: ``results_single.csv``, per-mass ``numbers.json``, plots."""
    spectrum = load_validated(settings, cfg, out)
    masses = chunk_of(mass_grid(settings), settings.scan.n_chunks, settings.scan.chunk)
    log.info("scanning %d masses of dataset %s (%.1f-%.1f MeV) into %s", len(masses),
             settings.dataset.name, masses[0] * 1e3, masses[-1] * 1e3, out)
    frame = run_scan(spectrum, config=settings, masses=masses, out_dir=out)
    write_table(out / "results_single.csv", frame)
    _summary_plots(frame, settings, out)
    _per_mass_plots(spectrum, frame, settings, out)
    _log_summary(frame)
    return frame


def task_test(settings: AnalysisSettings, cfg: dict[str, Any], out: Path) -> MassPointResult:
    """One mass point (``mass=0.030``): fit, significance, limits; printed and saved."""
    if cfg.get("mass") is None:
        raise InputError("task=test needs a mass in GeV, e.g. `python -m hps_bayes task=test mass=0.030`")
    spectrum = load_validated(settings, cfg, out)
    frame = run_scan(spectrum, config=settings, masses=[float(cfg["mass"])], out_dir=out, progress=False)
    result = MassPointResult.from_dict(_row_to_result(frame.iloc[0].to_dict()))
    _per_mass_plots(spectrum, frame, settings, out, force=True)
    _print_result(result)
    return result


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
    from hps_bayes import plots

    wanted = {round(m, 7) for m in settings.plots.per_mass_masses}
    spec = prepare_spectrum(spectrum, settings)
    for row in frame.itertuples():
        if not (force or settings.plots.per_mass or round(row.mass, 7) in wanted) or row.status != "ok":
            continue
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
