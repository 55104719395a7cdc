"""NUTS sampling of one mass point, ArviZ diagnostics, credible limits and their files.

For one :class:`~hps_bayes.model.Window` a *separate* PyMC model is built (the compiled
frequentist model is not touched) with the same Poisson likelihood

    n_i ~ Poisson(b_i + (A + S·ν) T_i),   ln b_i = o_i + Σ_k c_k P_k(t_i) + Σ_j φ_j(t_i) √S(λ_j; η, ℓ) β_j,

but with the GP hyperparameters integrated over instead of fixed (the Bayesian
cross-check).  Priors:

* A: flat on A ≥ 0 (``HalfFlat``).  With a flat prior the 95% credible upper limit of a
  Gaussian likelihood (μ̂, σ) solves ``(Φ(μ̂/σ) − Φ((μ̂ − A)/σ)) / Φ(μ̂/σ) = 0.95``, the same
  equation as the asymptotic CLs limit with q̃μ for every μ̂, negative included (Cowan et al.,
  arXiv:1007.1727, Eqs. 65-66: for μ̂ < 0, p_{s+b} = Φ((μ̂ − μ)/σ) and CL_b = Φ(μ̂/σ); Read,
  J. Phys. G 28 (2002) 2693).  Sampled and CLs limits differ only where the likelihood is not
  that Gaussian: the posterior integrates η and ℓ (a wider σ′), Poisson tails, σ from Asimov.
  Alternatives (not implemented): a flat prior on A down to the physical boundary
  ``min_i b_i + A T_i > 0`` (credible intervals, no limit), or a reference/Jeffreys prior
  ∝ 1/√(A + B) that pulls limits down.  A flat prior in A is flat in ε² (A = K ε²).
* c (Legendre coefficients): flat (improper; the Poisson data make the posterior proper).
* β_j ~ N(0, 1), as in the frequentist model (``pm.gp.HSGP.prior_linearized``).
* η ~ HalfNormal(``eta_sigma``) in ln(counts): the configured η (0.02) is its 0.3-quantile,
  and it allows GP residuals of a few per cent, well above what the spectra show.
* ℓ = ℓ_min + ℓ_ex, ℓ_ex ~ LogNormal(ln(ℓ₀ − ℓ_min) + s², s), in the window coordinate t:
  its mode is the configured lengthscale ℓ₀ (``background.lengthscale``·σ(m)/m) and
  ℓ ≥ ℓ_min = ``lengthscale_min``·σ(m)/m.  The lower bound keeps the GP from
  swallowing the signal: with ℓ ≈ σ(m) the GP can draw a Gaussian bump of the signal's
  width, A and the GP become degenerate and the posterior of A would spread over whatever
  the GP does not claim (a GP of ℓ ≥ 2σ(m) shares little with a σ-wide peak).  The default
  s = 0.25 puts 95% of the prior in ℓ ∈ [3.2, 5.3]σ(m)/m for ℓ₀ = 4: with s = 0.35–0.5 NUTS
  diverged in the tails of ℓ (near ℓ_min, where GP and signal compete, and at large ℓ, where
  the HSGP with c = 1.5 is at its validity limit c ≥ 3.2 ℓ/S; Riutort-Mayol et al. 2023).

Conditioning: the posterior is sampled in whitened coordinates.  The Newton fit of
(A, c) with the GP off gives (Â, ĉ), the expected Fisher matrix F there and σ_A = √(F⁻¹)_AA; then

    A = σ_A a,  c = ĉ + K_A (A − Â) − W g + L z,   g = φ (√S ∘ β),

with K_A = −F_cc⁻¹ F_cA, L Lᵀ = F_cc⁻¹ and W g the projection of the GP function on the
Legendre basis in the Fisher metric.  The map (a, z, β) → (A, c, β) is linear with a
constant Jacobian, so flat priors on A and c stay flat; the sampler sees unit-scale,
nearly uncorrelated coordinates (a, z) and a GP orthogonal to the polynomial.

Diagnostics (ArviZ 1.x): rank-normalised split R̂, bulk and tail ESS (Vehtari et al. 2021,
arXiv:1903.08008), divergences, E-BFMI (Betancourt 2016, arXiv:1604.00695); a point that
fails a threshold of :class:`PosteriorSettings` is flagged (``passed=False``, ``problems``)
and logged as a warning, never silently reported.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import arviz as az
import numpy as np
import pymc as pm

from hps_bayes import __version__
from hps_bayes.core import FloatArray
from hps_bayes.errors import ConfigError
from hps_bayes.model.settings import BackgroundSettings
from hps_bayes.model.window import Window
from hps_bayes.posterior.model import (
    SAMPLED,
    PosteriorSettings,
    Whitening,
    build_posterior_model,
    reference_fit,
)
from hps_bayes.results.files import atomic_path, write_json
from hps_bayes.results.objects import record_from_dict, record_to_dict

log = logging.getLogger(__name__)

NAN = float("nan")


@dataclass(frozen=True)
class PosteriorResult:
    """The Bayesian cross-check of one (dataset, mass) point.

    ``A_up_credible`` is the ``credibility`` quantile of A (flat prior, A ≥ 0); ``eps2_up_credible``
    is it divided by ``yield_per_eps2`` (NaN when no factor was given).  ``lengthscale_*`` are in
    units of σ(m)/m (as ``background.lengthscale``), ``eta_*`` in ln(counts).  ``b_under_signal``
    is Σ_i b_i T_i (background events under the signal shape).  ``passed`` is False when any
    diagnostic misses its threshold; ``problems`` says which.  ``trace`` (the ArviZ DataTree) is
    not part of :meth:`to_dict`; :func:`write_posterior` saves it as ``posterior.nc``.
    """

    dataset: str
    mass: float
    A_up_credible: float = NAN
    A_mean: float = NAN
    A_sd: float = NAN
    A_median: float = NAN
    A_hdi_low: float = NAN
    A_hdi_high: float = NAN
    eps2_up_credible: float = NAN
    yield_per_eps2: float = NAN
    sigma_A_scale: float = NAN
    eta_mean: float = NAN
    eta_sd: float = NAN
    lengthscale_mean: float = NAN
    lengthscale_sd: float = NAN
    b_under_signal_mean: float = NAN
    b_under_signal_sd: float = NAN
    r_hat_max: float = NAN
    ess_bulk_min: float = NAN
    ess_tail_min: float = NAN
    divergences: int = -1
    bfmi_min: float = NAN
    passed: bool = False
    problems: tuple[str, ...] = ()
    credibility: float = 0.95
    hdi_prob: float = 0.683
    prior_A: str = "flat, A >= 0"
    draws: int = 0
    tune: int = 0
    chains: int = 0
    seed: int = -1
    seconds: float = NAN
    seconds_sampling: float = NAN
    version: str = __version__
    trace: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return record_to_dict(self, exclude=("trace",), lists=True)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PosteriorResult:
        return record_from_dict(cls, d, exclude=("trace",))


# --------------------------------------------------------------------------- diagnostics


def _values(tree: Any) -> FloatArray:
    """All numbers of an ArviZ result (DataTree/Dataset of per-variable diagnostics), flattened."""
    ds = tree.to_dataset() if hasattr(tree, "to_dataset") else tree
    arrays = [np.asarray(v, dtype=float).ravel() for v in ds.data_vars.values()]
    return np.concatenate(arrays) if arrays else np.array([np.nan])


def diagnostics(trace: Any, var_names: list[str], prior: PosteriorSettings) -> dict[str, Any]:
    """Max R̂ (rank-normalised, split), min bulk/tail ESS, divergences, min E-BFMI; ``passed``, ``problems``."""
    n_chains = trace.posterior.sizes["chain"]
    d = {
        "r_hat_max": float(np.nanmax(_values(az.rhat(trace, var_names=var_names)))) if n_chains > 1 else NAN,
        "ess_bulk_min": float(np.nanmin(_values(az.ess(trace, var_names=var_names, method="bulk")))),
        "ess_tail_min": float(np.nanmin(_values(az.ess(trace, var_names=var_names, method="tail")))),
        "divergences": int(np.asarray(trace.sample_stats["diverging"]).sum()),
        "bfmi_min": float(np.nanmin(_values(az.bfmi(trace)))),
    }
    problems = []
    if not d["r_hat_max"] <= prior.r_hat_max:
        problems.append(f"max R-hat {d['r_hat_max']:.4f} > {prior.r_hat_max}")
    if not d["ess_bulk_min"] >= prior.ess_bulk_min:
        problems.append(f"min bulk ESS {d['ess_bulk_min']:.0f} < {prior.ess_bulk_min:.0f}")
    if not d["ess_tail_min"] >= prior.ess_tail_min:
        problems.append(f"min tail ESS {d['ess_tail_min']:.0f} < {prior.ess_tail_min:.0f}")
    if d["divergences"] > prior.max_divergences:
        problems.append(f"{d['divergences']} divergent transitions > {prior.max_divergences}")
    if not d["bfmi_min"] >= prior.bfmi_min:
        problems.append(f"min E-BFMI {d['bfmi_min']:.2f} < {prior.bfmi_min}")
    return {**d, "passed": not problems, "problems": tuple(problems)}


# --------------------------------------------------------------------------- sampling


def _draws(trace: Any, name: str) -> FloatArray:
    return np.asarray(trace.posterior[name], dtype=float)


def sample_mass_point(
    window: Window,
    settings: BackgroundSettings,
    *,
    prior: PosteriorSettings | None = None,
    draws: int | None = None,
    tune: int | None = None,
    chains: int | None = None,
    seed: int = 0,
    yield_per_eps2: float = NAN,
    dataset: str = "",
    progress: bool = False,
) -> PosteriorResult:
    """Sample the posterior of one window with NUTS and summarise it.

    Parameters
    ----------
    window : the mass window (:func:`hps_bayes.scan.build_window`).
    settings : the background settings the window was built with (basis size, c, kernel).
    prior : sampler, prior and threshold settings; ``draws``, ``tune``, ``chains`` override it.
    seed : seed of the sampler (per-point seeds: :func:`hps_bayes.analysis.seeds.posterior_seed`).
    yield_per_eps2 : K(m) = A/ε² (:func:`hps_bayes.physics.yield_per_eps2`) for ``eps2_up_credible``.

    Returns
    -------
    PosteriorResult
        Credible limit, posterior summaries, diagnostics (``passed``/``problems``) and the trace.
    """
    prior = prior or PosteriorSettings()
    over: dict[str, Any] = {k: v for k, v in (("draws", draws), ("tune", tune), ("chains", chains)) if v is not None}
    prior = dataclasses.replace(prior, **over)
    t_start = time.perf_counter()
    wh = reference_fit(window, settings)
    model = build_posterior_model(window, settings, prior, wh)
    t_sample = time.perf_counter()
    with model:
        trace = pm.sample(draws=prior.draws, tune=prior.tune, chains=prior.chains, cores=prior.cores,
                          target_accept=prior.target_accept, random_seed=seed, progressbar=progress,
                          compute_convergence_checks=False, init="jitter+adapt_diag")
    seconds_sampling = time.perf_counter() - t_sample
    names = [n for n in SAMPLED if n in model.named_vars]
    diag = diagnostics(trace, names, prior)
    result = _summarise(trace, window, prior, wh, diag, dataset=dataset, seed=seed, k=yield_per_eps2,
                        seconds=time.perf_counter() - t_start, seconds_sampling=seconds_sampling)
    if not result.passed:
        log.warning("m=%.2f MeV posterior FAILED its diagnostics: %s", window.mass * 1e3, "; ".join(result.problems))
    return result


def _summarise(trace: Any, window: Window, prior: PosteriorSettings, wh: Whitening, diag: dict[str, Any], *,
               dataset: str, seed: int, k: float, seconds: float, seconds_sampling: float) -> PosteriorResult:
    A = _draws(trace, "A").ravel()
    hdi = np.asarray(az.hdi(trace, prob=prior.hdi_prob, var_names=["A"]).to_dataset()["A"], dtype=float)
    a_up = float(np.quantile(A, prior.credibility))
    eta, ell, bsig = (_draws(trace, n).ravel() for n in ("eta", "lengthscale", "b_under_signal"))
    k_ok = math.isfinite(k) and k > 0
    trace.attrs.update({"mass": window.mass, "dataset": dataset, "prior_A": "flat, A >= 0",
                        "sigma_A_scale": wh.sigma_A, "version": __version__})
    return PosteriorResult(
        dataset=dataset, mass=float(window.mass), A_up_credible=a_up, A_mean=float(A.mean()), A_sd=float(A.std()),
        A_median=float(np.median(A)), A_hdi_low=float(hdi.min()), A_hdi_high=float(hdi.max()),
        eps2_up_credible=a_up / k if k_ok else NAN, yield_per_eps2=float(k), sigma_A_scale=wh.sigma_A,
        eta_mean=float(eta.mean()), eta_sd=float(eta.std()), lengthscale_mean=float(ell.mean()),
        lengthscale_sd=float(ell.std()), b_under_signal_mean=float(bsig.mean()),
        b_under_signal_sd=float(bsig.std()), **diag, credibility=prior.credibility, hdi_prob=prior.hdi_prob,
        draws=prior.draws, tune=prior.tune, chains=prior.chains, seed=int(seed), seconds=seconds,
        seconds_sampling=seconds_sampling, trace=trace)


# --------------------------------------------------------------------------- predictive checks


def predictive_counts(trace: Any, window: Window, *, n: int = 500, rng: np.random.Generator,
                      signal: bool = True) -> FloatArray:
    """Poisson pseudo-data (n, bins) from posterior draws, hyperparameters integrated.

    ``signal=False`` gives background-only toys (b_i of each draw): posterior-predictive toys for
    closure studies.  ``signal=True`` adds the draw's A·T_i (the posterior-predictive check).
    """
    b = _draws(trace, "background").reshape(-1, window.n_bins)
    A = _draws(trace, "A").ravel()
    pick = rng.integers(0, len(A), size=n)
    mu = b[pick] + (A[pick, None] * window.template if signal else 0.0)
    return np.asarray(rng.poisson(mu), dtype=float)


def predictive_band(trace: Any, window: Window, *, rng: np.random.Generator, n: int = 2000,
                    quantiles: tuple[float, ...] = (0.025, 0.16, 0.5, 0.84, 0.975)) -> FloatArray:
    """Quantiles (len(quantiles), bins) of the posterior-predictive counts of the window."""
    return np.quantile(predictive_counts(trace, window, n=n, rng=rng), quantiles, axis=0)


# --------------------------------------------------------------------------- output


def write_posterior(result: PosteriorResult, folder: str | Path, *,
                    extra: Mapping[str, Any] | None = None) -> tuple[Path, Path]:
    """Write ``posterior.nc`` (the ArviZ DataTree, NetCDF4) and ``posterior.json`` in ``folder``.

    Both atomically (:func:`hps_bayes.results.files.atomic_path`); ``extra`` goes into the JSON beside
    the result (settings, provenance).  Needs the ``h5netcdf`` (or ``netCDF4``) package.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    nc = folder / "posterior.nc"
    if result.trace is not None:
        try:
            with atomic_path(nc) as tmp:
                result.trace.to_netcdf(tmp)
        except ImportError as exc:
            raise ConfigError(f"writing {nc} needs a NetCDF4 backend: `pip install h5netcdf` ({exc})") from exc
    js = write_json(folder / "posterior.json", {"result": result.to_dict(), **dict(extra or {})})
    return nc, js


def read_posterior(folder: str | Path) -> tuple[PosteriorResult, Any]:
    """The result of ``posterior.json`` and the trace of ``posterior.nc`` in ``folder``."""
    import json

    folder = Path(folder)
    with open(folder / "posterior.json") as fh:
        result = PosteriorResult.from_dict(json.load(fh)["result"])
    trace = az.from_netcdf(folder / "posterior.nc") if (folder / "posterior.nc").exists() else None
    return dataclasses.replace(result, trace=trace), trace
