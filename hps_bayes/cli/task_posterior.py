"""``task=posterior``: NUTS posteriors at selected masses."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from hps_bayes.analysis.grid import prepare_spectrum
from hps_bayes.analysis.point import check_mass
from hps_bayes.analysis.rundir import (
    point_path,
)
from hps_bayes.analysis.scan import run_scan
from hps_bayes.analysis.seeds import posterior_seed
from hps_bayes.analysis.settings import AnalysisSettings
from hps_bayes.cli.inputs import _locked, load_guarded
from hps_bayes.cli.task_settings import PosteriorTask
from hps_bayes.errors import ConfigError
from hps_bayes.inputs.spectrum import Spectrum
from hps_bayes.results.files import read_json, write_table
from hps_bayes.results.objects import ScanResults
from hps_bayes.results.progress import progress_bar

log = logging.getLogger("hps_bayes")

def task_posterior(settings: AnalysisSettings, task: PosteriorTask, cfg: dict[str, Any], out: Path) -> Any:
    """Bayesian cross-check (:mod:`hps_bayes.posterior`) at ``task.masses`` (or ``mass``), GeV.

    Per mass in ``m030MeV/<dataset>/``: the CLs point (``numbers.json``, which also gets the posterior
    summary under ``"posterior"``), the NUTS posterior (``posterior.nc``, ``posterior.json``) and its
    plots; ``posterior_comparison_<dataset>.csv`` (CLs vs credible limits, diagnostics) in the run
    folder and ``summary_plots/posterior_vs_cls_<dataset>`` (limits and their ratio versus mass).
    """
    from hps_bayes.posterior import model as posterior_model

    masses = [float(m) for m in task.masses or ([cfg["mass"]] if cfg["mass"] is not None else [])]
    if not masses:
        raise ConfigError("task=posterior needs masses in GeV: `task.masses=[0.030,0.050]` or `mass=0.030`")
    prior = posterior_model.PosteriorSettings.from_dict(cfg.get("posterior"))
    spectrum, settings = load_guarded(settings, cfg, out)
    for mass in masses:
        check_mass(spectrum, mass, settings)
    frame = run_scan(spectrum, config=settings, masses=masses, out_dir=out, progress=False,
                     provenance={"task": "posterior"}, handle_signals=True)
    return _sample_posteriors(spectrum, frame, settings, prior, out, plots=task.plots)


def _scan_posteriors(spectrum: Spectrum, scanned: ScanResults, settings: AnalysisSettings, cfg: dict[str, Any],
                     out: Path) -> Any:
    """After a scan: sample ``posterior.scan_top_z`` most significant and ``posterior.scan_masses`` points.

    Top-Z selection needs the whole grid: in a chunked scan only the explicit masses of this chunk
    are sampled (a one-chunk rerun reuses the finished points and samples the top ones).
    """
    from hps_bayes.posterior import model as posterior_model

    prior = posterior_model.PosteriorSettings.from_dict(cfg.get("posterior"))
    if (prior.scan_top_z <= 0 and not prior.scan_masses) or not scanned:
        return None
    frame = scanned.frame()
    from hps_bayes.posterior import compare as posterior_compare  # imports ArviZ: only when sampling

    top_z = prior.scan_top_z
    if top_z > 0 and settings.scan.n_chunks > 1:
        log.warning("posterior.scan_top_z=%d needs the whole grid: skipped in chunk %d of %d; rerun with "
                    "scan.n_chunks=1 (reuses the finished points) or task=posterior", top_z,
                    settings.scan.chunk + 1, settings.scan.n_chunks)
        top_z = 0
    selected, unmatched = posterior_compare.select_scan_masses(
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

    from hps_bayes.analysis.point import build_window
    from hps_bayes.plots import posterior as posterior_plots
    from hps_bayes.posterior import compare as posterior_compare
    from hps_bayes.posterior import sampling as posterior_sampling

    spec, name, rows = prepare_spectrum(spectrum, settings), settings.dataset.name, []
    interactive = sys.stderr.isatty()  # progress bars (masses, NUTS) only on a terminal
    for r in progress_bar(list(frame.itertuples()), interactive, desc=f"posterior {name}", unit="mass",
                          leave=False):
        window = build_window(spec, r.mass, settings)
        seed = posterior_seed(settings.seed if prior.seed is None else prior.seed, r.mass)
        numbers = point_path(out, r.mass, name)
        folder = numbers.parent
        if numbers.is_file() and posterior_compare.reusable(read_json(numbers), prior, config_hash=settings.config_hash()) and \
                (folder / "posterior.nc").is_file():
            result, _ = posterior_sampling.read_posterior(folder)
            log.info("m=%.2f MeV: posterior reused from %s", r.mass * 1e3, folder)
        else:
            k = r.A_up / r.eps2_up if r.status == "ok" and r.eps2_up > 0 else float("nan")
            result = posterior_sampling.sample_mass_point(window, settings.background, prior=prior, seed=seed,
                                                 yield_per_eps2=k, dataset=name, progress=interactive)
            posterior_sampling.write_posterior(result, folder, extra={"posterior": prior.to_dict(),
                                                             "settings": settings.to_dict()})
            with _locked(numbers):
                posterior_compare.merge_into_numbers(numbers, posterior_compare.numbers_entry(
                    result, prior, config_hash=settings.config_hash()))
            if plots:
                arrays = posterior_compare.posterior_arrays(result, window, rng=np.random.default_rng(seed))
                posterior_plots.plot_posterior_point(arrays, folder, A_up_cls=r.A_up, A_hat=r.A_hat,
                                                     fmt=settings.plots.format)
        rows.append(posterior_compare.comparison_row(result, A_up_cls=r.A_up, A_hat=r.A_hat, sigma_A=r.sigma_A,
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
