"""Combination of datasets where their mass ranges overlap: one likelihood, shared ε².

For a mass m covered by datasets d = 1..D the joint likelihood is the product
of the window likelihoods, with the signal yield of each dataset tied to the
shared kinetic mixing:

    A_d = ε² · K_d(m),   K_d = 3π m f_rad,d(m) ρ_d(m) / (2 N_eff α_em)

(ρ_d the background-only fit's dN/dm of dataset d at m).  The
nuisances (Legendre coefficients, HSGP weights, spurious-signal nuisance)
stay per dataset.  The POI of the combined objective is ``μ = ε² / scale``
with ``scale`` chosen so that μ is of order one standard deviation; limits
and significances come from the same calculators as for one dataset.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from hps_bayes import __version__
from hps_bayes.analysis.checks import PointNumbers, check_point, point_status, sigma_hesse_asimov
from hps_bayes.analysis.grid import prepare_spectrum, search_range
from hps_bayes.analysis.point import POINT_FAILURES, TOY_SCAN_POINTS, background_density
from hps_bayes.analysis.seeds import COMBINED, point_rng
from hps_bayes.analysis.settings import AnalysisSettings
from hps_bayes.analysis.windows import build_window, window_notes
from hps_bayes.core import FitData, FloatArray
from hps_bayes.errors import InputError
from hps_bayes.fit.protocol import Objective
from hps_bayes.inputs.spectrum import Spectrum
from hps_bayes.model.objective import WindowObjective
from hps_bayes.physics.signal import f_rad, yield_per_eps2
from hps_bayes.results.files import write_json
from hps_bayes.results.objects import CombinedResult, mass_label
from hps_bayes.results.progress import progress_bar
from hps_bayes.stats import AsymptoticCalculator, ToyCalculator, upper_limit


class CombinedObjective:
    """Sum of per-dataset NLLs with ``A_d = μ · scale · K_d`` (POI μ at index 0).

    ``θ = (μ, θ_1[1:], ..., θ_D[1:])``: each dataset's parameters without its
    own A.  Counts and constraint centres are concatenated in dataset order.
    """

    poi_index = 0

    def __init__(self, objectives: Sequence[Objective], k_factors: Sequence[float], *, scale: float) -> None:
        if len(objectives) != len(k_factors) or not objectives:
            raise InputError(f"{len(objectives)} objectives and {len(k_factors)} K factors: need equal, >= 1")
        self.objectives = list(objectives)
        self.coupling = np.asarray(k_factors, dtype=float) * scale
        self.scale = scale
        sizes = [o.n_params - 1 for o in self.objectives]
        self._p = np.cumsum([1, *sizes])
        self.n_params = int(self._p[-1])
        self._n = np.cumsum([0, *[len(o.expected_counts(o.initial(_empty(o)))) for o in self.objectives]])
        self._q = np.cumsum([0, *[len(o.aux_at(o.initial(_empty(o)))) for o in self.objectives]])

    def _split_theta(self, theta: FloatArray) -> list[FloatArray]:
        return [np.concatenate([[theta[0] * c], theta[lo:hi]])
                for c, lo, hi in zip(self.coupling, self._p[:-1], self._p[1:], strict=True)]

    def split_data(self, data: FitData) -> list[FitData]:
        return [FitData(data.counts[n0:n1], data.aux[q0:q1]) for n0, n1, q0, q1
                in zip(self._n[:-1], self._n[1:], self._q[:-1], self._q[1:], strict=True)]

    def nll(self, theta: FloatArray, data: FitData) -> float:
        return float(sum(o.nll(t, d) for o, t, d in
                         zip(self.objectives, self._split_theta(theta), self.split_data(data), strict=True)))

    def nll_grad_hess(self, theta: FloatArray, data: FitData) -> tuple[float, FloatArray, FloatArray]:
        """Chain rule through ``A_d = μ c_d``: ∂/∂μ = Σ c_d ∂/∂A_d, ∂²/∂μ² = Σ c_d² ∂²/∂A_d²."""
        grad = np.zeros(self.n_params)
        hess = np.zeros((self.n_params, self.n_params))
        total = 0.0
        for o, t, d, c, lo, hi in zip(self.objectives, self._split_theta(theta), self.split_data(data),
                                      self.coupling, self._p[:-1], self._p[1:], strict=True):
            f, g, h = o.nll_grad_hess(t, d)
            total += f
            grad[0] += c * g[0]
            grad[lo:hi] = g[1:]
            hess[0, 0] += c * c * h[0, 0]
            hess[0, lo:hi] = hess[lo:hi, 0] = c * h[0, 1:]
            hess[lo:hi, lo:hi] = h[1:, 1:]
        return float(total), grad, hess

    def expected_counts(self, theta: FloatArray) -> FloatArray:
        return np.concatenate([o.expected_counts(t) for o, t in zip(self.objectives, self._split_theta(theta),
                                                                    strict=True)])

    def aux_at(self, theta: FloatArray) -> FloatArray:
        return np.concatenate([o.aux_at(t) for o, t in zip(self.objectives, self._split_theta(theta),
                                                            strict=True)])

    def initial(self, data: FitData) -> FloatArray:
        parts = [o.initial(d)[1:] for o, d in zip(self.objectives, self.split_data(data), strict=True)]
        return np.concatenate([[0.0], *parts])

    # ---- batched evaluation (K toys at once), for the toy calculator ----
    def _split_batch(self, thetas: FloatArray, counts: FloatArray, aux: FloatArray
                     ) -> list[tuple[Any, FloatArray, FloatArray, FloatArray, float, int, int]]:
        parts = []
        for k, (o, c) in enumerate(zip(self.objectives, self.coupling, strict=True)):
            lo, hi = int(self._p[k]), int(self._p[k + 1])
            th = np.concatenate([thetas[:, :1] * c, thetas[:, lo:hi]], axis=1)
            parts.append((o, th, counts[:, self._n[k]:self._n[k + 1]], aux[:, self._q[k]:self._q[k + 1]],
                          float(c), lo, hi))
        return parts

    def nll_batch(self, thetas: FloatArray, counts: FloatArray, aux: FloatArray) -> FloatArray:
        return np.asarray(sum(o.nll_batch(th, n, q) for o, th, n, q, *_ in
                              self._split_batch(thetas, counts, aux)))

    def nll_grad_batch(self, thetas: FloatArray, counts: FloatArray,
                       aux: FloatArray) -> tuple[FloatArray, FloatArray]:
        f = np.zeros(len(thetas))
        g = np.zeros_like(thetas, dtype=float)
        for o, th, n, q, c, lo, hi in self._split_batch(thetas, counts, aux):
            fd, gd = o.nll_grad_batch(th, n, q)
            f += fd
            g[:, 0] += c * gd[:, 0]
            g[:, lo:hi] = gd[:, 1:]
        return f, g

    def nll_grad_hess_batch(self, thetas: FloatArray, counts: FloatArray,
                            aux: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """The chain rule of :meth:`nll_grad_hess`, row by row."""
        f = np.zeros(len(thetas))
        g = np.zeros_like(thetas, dtype=float)
        h = np.zeros((len(thetas), self.n_params, self.n_params))
        for o, th, n, q, c, lo, hi in self._split_batch(thetas, counts, aux):
            fd, gd, hd = o.nll_grad_hess_batch(th, n, q)
            f += fd
            g[:, 0] += c * gd[:, 0]
            g[:, lo:hi] = gd[:, 1:]
            h[:, 0, 0] += c * c * hd[:, 0, 0]
            h[:, 0, lo:hi] = c * hd[:, 0, 1:]
            h[:, lo:hi, 0] = c * hd[:, 1:, 0]
            h[:, lo:hi, lo:hi] = hd[:, 1:, 1:]
        return f, g, h

    def expected_counts_batch(self, thetas: FloatArray) -> FloatArray:
        empty = np.zeros((len(thetas), 0))
        return np.concatenate([o.expected_counts_batch(th) for o, th, *_ in
                               self._split_batch(thetas, np.zeros((len(thetas), int(self._n[-1]))),
                                                 np.zeros((len(thetas), int(self._q[-1]))))] or [empty], axis=1)

    def join_data(self, parts: Sequence[FitData]) -> FitData:
        return FitData(np.concatenate([p.counts for p in parts]), np.concatenate([p.aux for p in parts]))


def _empty(objective: Objective) -> FitData:
    observed = getattr(objective, "observed", None)
    if observed is None:
        raise InputError("combined objectives need per-dataset objectives with observed data")
    data: FitData = observed()
    return data


@dataclass(frozen=True)
class _Member:
    name: str
    objective: WindowObjective
    k: float
    sigma_eps2: float
    notes: tuple[str, ...] = ()


def datasets_covering(mass: float, settings: Mapping[str, AnalysisSettings]) -> list[str]:
    """Names of the datasets whose search range (:func:`~hps_bayes.analysis.grid.search_range`: the
    range its own scan searches, ``scan.edge_sigmas``·σ(m) inside the fit range above a sharp turn-on)
    contains ``mass``: a dataset joins the combination only where its own window is whole."""
    ranges = {name: search_range(s) for name, s in settings.items()}
    return [name for name, (lo, hi) in ranges.items() if lo - 1e-9 <= mass <= hi + 1e-9]


def _member(spectrum: Spectrum, mass: float, settings: AnalysisSettings) -> _Member:
    window = build_window(prepare_spectrum(spectrum, settings), mass, settings)
    objective = WindowObjective(window, settings.background)
    calc = AsymptoticCalculator(objective, objective.observed())
    preset = settings.dataset
    rho = background_density(objective, calc.fit_at_zero.theta, at=preset.rho_at)
    k = float(yield_per_eps2(mass, f_rad=float(f_rad(mass, preset)), rho=rho, n_eff=preset.n_eff,
                             alpha_em=preset.alpha_em))
    notes = tuple(f"{preset.name}: {n}" for n in window_notes(window, settings))
    return _Member(preset.name, objective, k, calc.sigma_hesse / k, notes)


def evaluate_combined(
    spectra: Mapping[str, Spectrum],
    mass: float,
    settings: Mapping[str, AnalysisSettings],
    *,
    alpha: float = 0.05,
    method: Literal["asymptotic", "toys"] = "asymptotic",
    n_toys: int = 1000,
    rng: np.random.Generator | None = None,
) -> CombinedResult:
    """Combined fit of every dataset covering ``mass``: ε̂², σ(ε²), q0, Z and CLs limits on ε².

    ``spectra`` and ``settings`` are keyed by the same dataset names.  ``method="toys"``
    uses the toy calculator (all datasets' counts and constraint centres drawn together
    from the joint fit, both fits batched over the toys); ``rng`` defaults to one seeded by
    the first dataset's seed and the mass.
    """
    t_start = time.perf_counter()
    names = datasets_covering(mass, settings)
    if not names:
        raise InputError(f"no dataset covers m = {mass * 1e3:.2f} MeV; ranges: "
                         f"{ {n: search_range(s) for n, s in settings.items()} }")
    members = [_member(spectra[n], mass, settings[n]) for n in names]
    scale = 1.0 / float(np.sqrt(np.sum([1.0 / m.sigma_eps2**2 for m in members])))
    objective = CombinedObjective([m.objective for m in members], [m.k for m in members], scale=scale)
    data = objective.join_data([m.objective.observed() for m in members])
    asymptotic = AsymptoticCalculator(objective, data)
    if method == "toys":
        toys = ToyCalculator(objective, data, n_toys=n_toys,
                             rng=rng if rng is not None else point_rng(settings[names[0]], mass, purpose=COMBINED))
        disc = toys.discovery()
        limit = upper_limit(toys, alpha=alpha, rtol=1e-3, scan=TOY_SCAN_POINTS)
        converged = toys.converged and limit.converged
    else:
        disc = asymptotic.discovery()
        limit = upper_limit(asymptotic, alpha=alpha)
        converged = asymptotic.converged and limit.converged
    # the same self-consistency checks as a single dataset's point (in units of the scaled ε²; the
    # spurious-signal nuisances are inside the joint fit, so its Hessian error already holds them)
    consistency = check_point(PointNumbers(
        a_hat=asymptotic.mu_hat, sigma_a=asymptotic.sigma_mu(), sigma_hesse_asimov=sigma_hesse_asimov(asymptotic),
        sigma_stat=asymptotic.free_fit.poi_error(objective), spurious=0.0, a_up=limit.mu_up,
        a_up_error=limit.mu_up_error if limit.n_toys else 0.0, a_up_expected=limit.mu_up_expected,
        alpha=alpha, limit=limit.method, toys=limit.n_toys > 0, n_toys=limit.n_toys))
    status, message = point_status(converged, limit.message, consistency, [n for m in members for n in m.notes])
    return CombinedResult(
        mass=float(mass), datasets="+".join(m.name for m in members), status=status,
        message=message, eps2_hat=asymptotic.mu_hat * scale,
        sigma_eps2=asymptotic.sigma_mu() * scale, q0=disc.q0, p0=disc.p0, Z=disc.z0, eps2_up=limit.mu_up * scale,
        eps2_up_expected=tuple(v * scale for v in limit.mu_up_expected),
        k_factors=tuple(m.k for m in members), sigma_eps2_single=tuple(m.sigma_eps2 for m in members),
        method=method, version=__version__, seconds=time.perf_counter() - t_start,
    )


def combined_masses(grids: Mapping[str, FloatArray], *, decimals: int = 7) -> FloatArray:
    """Masses that lie on the grids of two or more datasets (the overlap regions)."""
    counts: dict[float, int] = {}
    for grid in grids.values():
        for m in np.round(np.asarray(grid, dtype=float), decimals):
            counts[float(m)] = counts.get(float(m), 0) + 1
    return np.array(sorted(m for m, n in counts.items() if n >= 2))


def run_combination(
    spectra: Mapping[str, Spectrum],
    settings: Mapping[str, AnalysisSettings],
    masses: Sequence[float] | FloatArray,
    *,
    out_dir: str | Path | None = None,
    alpha: float = 0.05,
    method: Literal["asymptotic", "toys"] = "asymptotic",
    n_toys: int = 1000,
    progress: bool | None = None,
) -> Any:
    """:func:`evaluate_combined` at every mass; with ``out_dir`` each result goes atomically to
    ``<out_dir>/m070MeV/combined/numbers.json`` (with the settings of every dataset used).

    A mass where the combination fails gets a row with its status and message.
    """
    rows = []
    for mass in progress_bar(list(masses), progress, desc="combination", unit="mass", leave=False):
        covering = {n: settings[n] for n in datasets_covering(float(mass), settings)}
        try:
            result = evaluate_combined(spectra, float(mass), covering, alpha=alpha, method=method, n_toys=n_toys)
        except POINT_FAILURES as exc:
            result = CombinedResult(mass=float(mass), datasets="+".join(covering), status="fit_failed",
                                    message=str(exc), version=__version__)
        if out_dir is not None:
            write_json(Path(out_dir) / mass_label(float(mass)) / "combined" / "numbers.json",
                       {"result": result.to_dict(), "settings": {n: s.to_dict() for n, s in covering.items()}})
        rows.append(result.to_row())
    import pandas as pd

    return pd.DataFrame(rows)
