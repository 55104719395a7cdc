"""Does a selection's spurious signal cover the bias on the spectrum's true shape?

``task=select`` measures S on truths fitted to the data. On a demo spectrum the true shape is
known: the generator's noise-free expected counts. This study fits, at every grid mass of a
selection, the chosen model with the scan's settings (:meth:`BackgroundSettings.at_mass`, the
selection's η and ℓ included) to that true shape. The fitted Â is the model's bias there, the
mean of Â over Poisson realisations. It then compares |bias| with S, both in units of σ_tot.
Structure that the data's own fit does not resolve shows up here as bias beyond S.

What a bias b does to the results, in the Gaussian approximation (Â ~ N(A + b, σ_stat²), limits and
Z computed with σ_tot): the one-sided 95 % upper limit Â + 1.645 σ_tot covers with probability
Φ((b + 1.645 σ_tot)/σ_stat), and a local Z above 2 comes with probability 1 − Φ((2 σ_tot − b)/σ_stat)
(2.3 % for b = 0 and σ_tot = σ_stat). CLs limits are more conservative than this one-sided limit.

``python -m hps_bayes.studies.true_shape <selection_<dataset>.json> 2015 [--smooth] [--scan results_single.csv]``
(``--scan``: every `ok` mass of a scan made with the selection, with the S and σ_A it used there); a file
written by ``task=simulate`` with other ``dataset.demo`` settings takes them as ``--n-events``, ``--scale``,
``--law-seed``, ``--wavelengths`` (and ``--preset`` for the preset the selection used).

Written with the package's own fits: no library compares a selection with a known truth.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import ndtr, ndtri

from hps_bayes.analysis.grid import prepare_spectrum
from hps_bayes.analysis.point import build_window
from hps_bayes.analysis.settings import AnalysisSettings
from hps_bayes.errors import FitError, HpsBayesError
from hps_bayes.fit.newton import newton_fit
from hps_bayes.inputs.spectrum import Spectrum
from hps_bayes.model.objective import WindowObjective
from hps_bayes.model.selection import read_selection

__all__ = ["bias_on_true_shape", "summary"]

#: The one-sided 95 % quantile of the standard normal.
UPPER_95 = float(ndtri(0.95))


def bias_on_true_shape(true: Spectrum, settings: AnalysisSettings, selection: str | Path,
                       scan_results: str | Path | None = None) -> Any:
    """One row per served grid mass of ``selection``: the chosen model, its noise-free Â on ``true``
    (``bias``), S and σ_tot of the selection, and ``uncovered`` = max(|bias| − S, 0)/σ_tot.  With
    ``scan_results`` (a scan's ``results_single.csv`` made with that selection) one row per `ok` mass of the
    scan instead, with the S, σ_A and σ_stat the scan reported there (between grid masses too)."""
    import pandas as pd

    content = read_selection(selection)  # a clear error where the file is missing or not a selection
    scan = replace(settings, background=replace(settings.background, selection=str(selection)))
    rows_in = content["rows"]
    if scan_results is not None:
        done = pd.read_csv(scan_results)
        done = done[done.status == "ok"]
        rows_in = [{"mass": r.mass, "model": r.background_model, "spurious": r.spurious_signal, "sigma_tot": r.sigma_A,
                    "sigma_stat": r.sigma_A_stat} for r in done.itertuples()]
    rows = []
    for row in rows_in:
        if not row.get("model"):
            continue
        at_mass = replace(scan, background=scan.background.at_mass(float(row["mass"])))
        window = build_window(prepare_spectrum(true, at_mass), float(row["mass"]), at_mass)
        objective = WindowObjective(window, at_mass.background)
        fit = newton_fit(objective, objective.observed())
        if not fit.converged:
            raise FitError(f"the fit of the true shape did not converge at m = {row['mass'] * 1e3:.2f} MeV")
        rows.append({"mass": float(row["mass"]), "model": row["model"], "bias": float(fit.theta[0]),
                     "spurious": float(row["spurious"]), "sigma_tot": float(row["sigma_tot"]),
                     "sigma_stat": float(row["sigma_stat"])})
    frame = pd.DataFrame(rows)
    frame["uncovered"] = np.maximum(np.abs(frame.bias) - frame.spurious, 0.0) / frame.sigma_tot
    frame["coverage"] = ndtr((frame.bias + UPPER_95 * frame.sigma_tot) / frame.sigma_stat)
    frame["rate_z2"] = ndtr((frame.bias - 2.0 * frame.sigma_tot) / frame.sigma_stat)
    return frame


def summary(frame: Any) -> str:
    """One line: how often and by how much the bias on the true shape exceeds S."""
    relative = np.abs(frame.bias) / frame.sigma_tot
    beyond = frame.uncovered > 0
    return (f"{len(frame)} masses: |bias|/σ_tot median {np.median(relative):.2f}, largest {relative.max():.2f}; "
            f"S/σ_tot median {np.median(frame.spurious / frame.sigma_tot):.2f}; bias beyond S at {int(beyond.sum())}, "
            f"by up to {frame.uncovered.max():.2f} σ_tot (median of those {np.median(frame.uncovered[beyond]) if beyond.any() else 0.0:.2f}); "
            f"coverage of the 95 % upper limit mean {frame.coverage.mean():.3f}, lowest {frame.coverage.min():.3f}; "
            f"P(Z > 2) mean {frame.rate_z2.mean():.3f}, highest {frame.rate_z2.max():.3f}")


def main(argv: list[str] | None = None) -> None:
    """The study on a bundled demo shape; prints the masses beyond S and the summary line."""
    import argparse

    from hps_bayes.analysis.settings import resolve_settings
    from hps_bayes.physics.demo import DEFAULT_N_EVENTS, expected_spectrum
    from hps_bayes.studies.structure_floor import add_structure_arguments, structure_from_arguments

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("selection", help="selection_<dataset>.json of task=select on that demo spectrum")
    parser.add_argument("shape", choices=sorted(DEFAULT_N_EVENTS))
    parser.add_argument("--smooth", action="store_true", help="the smooth variant (dataset.demo.structured=false)")
    parser.add_argument("--scan", help="results_single.csv of a scan with that selection: every ok mass of it, with "
                        "the S and sigma_A the scan used, instead of the selection's grid masses")
    parser.add_argument("--preset", help="the dataset preset the selection was made with (default: demo, "
                        "demo2016, demo2021)")
    parser.add_argument("--n-events", type=float, help="dataset.demo.n_events of a file made with task=simulate")
    add_structure_arguments(parser)
    args = parser.parse_args(argv)
    preset = args.preset or ("demo" if args.shape == "2015" else f"demo{args.shape}")
    settings = resolve_settings(preset)
    structure = None if args.smooth else structure_from_arguments(parser, args)
    true = expected_spectrum(args.shape, n_events=args.n_events or DEFAULT_N_EVENTS[args.shape],  # type: ignore[arg-type]
                             structured=not args.smooth, structure=structure)
    try:
        frame = bias_on_true_shape(true, settings, args.selection, args.scan)
    except HpsBayesError as exc:
        raise SystemExit(f"hps_bayes.studies.true_shape: {exc}") from exc
    for row in frame[frame.uncovered > 0].itertuples():
        print(f"{row.mass * 1e3:6.1f} MeV {row.model:16s} bias {row.bias / row.sigma_tot:+.2f} σ_tot, "
              f"S {row.spurious / row.sigma_tot:.2f} σ_tot")
    print(summary(frame))


if __name__ == "__main__":
    main()
