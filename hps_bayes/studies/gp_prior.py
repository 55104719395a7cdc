"""How much of a GP-carried background's σ_stat is the GP prior: the sandwich variance, checked by toys.

The HSGP weights β of a GP-carried window have N(β⁰, 1) constraints whose centres β⁰ are global
observables. The toys draw them anew (β⁰ ~ N(β̂, 1)), as HistFactory does for auxiliary measurements,
and σ_A is then the inverse Hessian H⁻¹ of the penalised likelihood. Against a *fixed* true background
— what the spurious-signal study's truths and a coverage study against a known shape assume — the
weights' centres are not measured again: held at the observed values, Â scatters with the sandwich

    σ²_sandwich = [H⁻¹ (H − P) H⁻¹]_AA,   P = the weights' unit constraint,

smaller than [H⁻¹]_AA (the S nuisance's constraint stays in H − P: S is an uncertainty to be covered).
For a window without a GP both are the same. This study computes both at the grid masses of a
selection and, with ``--toys N``, the scatter of Â over N Poisson toys of the background-only fit with
the weights' centres held and with every centre drawn, so that the formula is checked where it would
be used. It changes nothing in the scan: the package's limits keep H⁻¹ (the global observables drawn).

``python -m hps_bayes.studies.gp_prior <spectrum.root> <dataset> <selection.json> [--toys 400]
[--masses 0.032,0.08] [--hist NAME]``

Written with the package's own fits: the penalised Hessian and the batched toy fits are the scan's.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hps_bayes.analysis.point import build_window, model_name
from hps_bayes.analysis.settings import AnalysisSettings
from hps_bayes.core import FloatArray
from hps_bayes.errors import FitError
from hps_bayes.fit.batch import newton_fit_batch
from hps_bayes.inputs.spectrum import Spectrum
from hps_bayes.model.objective import WindowObjective
from hps_bayes.stats.calculators import AsymptoticCalculator
from hps_bayes.stats.toys import draw_toys

__all__ = ["prior_share", "prior_variance", "study", "toy_scatter"]


def prior_share(objective: WindowObjective, covariance: FloatArray) -> float:
    """σ_prior, the part of σ_A that the HSGP weights' unit constraint P holds, from the inverse Hessian C of the
    penalised likelihood: σ_prior² = [C]_AA − [C (H − P) C]_AA = Σ_j C_Aj² over the weights (0 without a GP)."""
    n_basis = objective.model.n_basis
    if not n_basis:
        return 0.0
    start = objective.model.slices["beta"].start
    return float(np.sqrt(np.sum(np.asarray(covariance)[0, start:start + n_basis] ** 2)))


def prior_variance(objective: WindowObjective, theta: FloatArray) -> tuple[float, float]:
    """(σ_A from H⁻¹, σ_A of the sandwich with the HSGP weights' constraint held) at ``theta`` on the
    window's observed counts (``theta``: the free fit)."""
    _, _, hess = objective.nll_grad_hess(np.asarray(theta, dtype=float), objective.observed())
    inverse = np.linalg.inv(hess)
    sigma_h = float(np.sqrt(inverse[0, 0]))
    return sigma_h, float(np.sqrt(sigma_h**2 - prior_share(objective, inverse) ** 2))


def toy_scatter(objective: WindowObjective, theta0: FloatArray, n_toys: int, rng: np.random.Generator, *,
                hold_weights: bool) -> float:
    """Standard deviation of Â over ``n_toys`` Poisson toys of ``theta0``; the centres of the HSGP weights'
    constraints held at ``theta0``'s (``hold_weights``) or drawn ~ N(·, 1) like every other centre."""
    toys = draw_toys(objective, theta0, n_toys, rng)  # the package's toys: every constraint centre drawn
    aux = toys.aux.copy()
    if hold_weights and objective.model.n_basis:
        aux[:, :objective.model.n_basis] = objective.aux_at(theta0)[:objective.model.n_basis]  # aux: the weights, then ν
    fits = newton_fit_batch(objective, toys.counts, aux, init=theta0)
    if not np.all(fits.converged):
        raise FitError(f"{int(np.sum(~fits.converged))} of {n_toys} toy fits did not converge")
    return float(np.std(fits.theta[:, 0], ddof=1))


def study(spectrum: Spectrum, settings: AnalysisSettings, masses: list[float], *, n_toys: int = 0,
          seed: int = 1) -> list[dict[str, Any]]:
    """One row per mass: the model, its HSGP size and η, S, σ_A (H⁻¹) and the sandwich σ_A; with toys, the
    scatter of Â with the weights' centres held and drawn.  ``spectrum`` is prepared for ``settings``
    (:func:`hps_bayes.analysis.scan.prepare_scan`)."""
    rng = np.random.default_rng(seed)
    rows = []
    for mass in masses:
        window = build_window(spectrum, mass, settings)
        objective = WindowObjective(window, settings.background)
        calc = AsymptoticCalculator(objective, objective.observed())
        sigma_h, sigma_sandwich = prior_variance(objective, calc.free_fit.theta)
        row: dict[str, Any] = {"mass": mass, "model": model_name(settings, mass), "n_basis": objective.model.n_basis,
                               "eta": window.eta, "spurious": window.spurious, "sigma_A": calc.sigma_mu(),
                               "sigma_inverse_hessian": sigma_h, "sigma_sandwich": sigma_sandwich}
        if n_toys:
            theta0 = calc.fit_at_zero.theta
            row["toys_weights_held"] = toy_scatter(objective, theta0, n_toys, rng, hold_weights=True)
            row["toys_all_drawn"] = toy_scatter(objective, theta0, n_toys, rng, hold_weights=False)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    """The study on a spectrum with its selection; prints one line per mass and the medians."""
    import argparse

    from hps_bayes.analysis.scan import prepare_scan
    from hps_bayes.analysis.settings import resolve_settings
    from hps_bayes.inputs.root_io import load_spectrum
    from hps_bayes.model.selection import read_selection

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spectrum", help="ROOT file")
    parser.add_argument("dataset", help="dataset preset, e.g. demo2015 or hps2016")
    parser.add_argument("selection", help="selection_<dataset>.json of task=select on that spectrum")
    parser.add_argument("--toys", type=int, default=0, help="Poisson toys per mass for the check (e.g. 400)")
    parser.add_argument("--masses", default="", help="GeV, comma-separated; default: the selection's grid")
    parser.add_argument("--hist", default="", help="the histogram; default: the dataset preset's")
    args = parser.parse_args(argv)
    settings = resolve_settings(args.dataset, {"background": {"selection": args.selection}})
    prep = prepare_scan(load_spectrum(args.spectrum, args.hist or settings.dataset.hist_name), dataset=args.dataset,
                        config=settings)
    masses = ([float(m) for m in args.masses.split(",")] if args.masses else
              [float(r["mass"]) for r in read_selection(args.selection)["rows"] if r.get("model")])
    rows = study(prep.spectrum, prep.settings, masses, n_toys=args.toys)
    for r in rows:
        toys = (f"; toys: weights held {r['toys_weights_held']:.0f}, all drawn {r['toys_all_drawn']:.0f}"
                if args.toys else "")
        print(f"{r['mass'] * 1e3:6.1f} MeV {r['model']:16s} GP {r['n_basis']:2d} "
              f"σ_A {r['sigma_A']:.0f} (H⁻¹ {r['sigma_inverse_hessian']:.0f}), sandwich {r['sigma_sandwich']:.0f} "
              f"({r['sigma_sandwich'] / r['sigma_inverse_hessian'] - 1:+.1%}), S {r['spurious']:.0f}{toys}")
    gp = [r["sigma_sandwich"] / r["sigma_inverse_hessian"] for r in rows if r["n_basis"]]
    print(f"{len(gp)} of {len(rows)} masses with a GP: sandwich / H⁻¹ median "
          f"{np.median(gp) if gp else float('nan'):.3f}, range {min(gp, default=float('nan')):.3f}-"
          f"{max(gp, default=float('nan')):.3f}")


if __name__ == "__main__":
    main()
