"""Bayesian cross-check: NUTS sampling of the window model with η and ℓ free.

For one :class:`~hps_bayes.model.Window` a *separate* PyMC model is built (the compiled
frequentist model is not touched) with the same Poisson likelihood

    n_i ~ Poisson(b_i + (A + S·ν) T_i),   ln b_i = o_i + Σ_k c_k P_k(t_i) + Σ_j φ_j(t_i) √S(λ_j; η, ℓ) β_j,

but with the GP hyperparameters integrated over instead of fixed (DESIGN.md, "Bayesian
cross-check").  Priors:

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

Conditioning: the posterior is sampled in whitened coordinates.  A Fisher-scoring fit of
(A, c) with the GP off gives (Â, ĉ), the Fisher matrix F and σ_A = √(F⁻¹)_AA; then

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
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import arviz as az
import numpy as np
import pymc as pm
import pytensor.tensor as pt

from hps_bayes import __version__
from hps_bayes.core import FloatArray
from hps_bayes.errors import ConfigError, FitError
from hps_bayes.model import BackgroundSettings, Window, _cov_func
from hps_bayes.results import mass_label, write_json

log = logging.getLogger(__name__)

NAN = float("nan")
#: Free parameters whose diagnostics decide ``passed`` (``nu`` only with a spurious-signal nuisance).
SAMPLED = ("a", "z", "beta", "eta", "ell_excess", "nu")


@dataclass(frozen=True)
class PosteriorSettings:
    """Sampler, priors and diagnostic thresholds of the Bayesian cross-check (``conf/posterior``).

    Attributes
    ----------
    draws, tune, chains : NUTS draws and tuning steps per chain, number of chains.
    cores : chains run in parallel processes when > 1 (1: one after the other).
    target_accept : NUTS target acceptance rate.
    seed : base seed (None: the run's ``seed``); each mass point derives its own from it.
    credibility : probability of the credible upper limit (0.95).
    hdi_prob : probability of the reported highest-density interval of A.
    eta_sigma : scale of the HalfNormal prior of η (ln counts).
    lengthscale_min : hard lower bound ℓ_min of ℓ, in units of σ(m)/m.
    lengthscale_log_sd : log-sd s of the LogNormal prior of ℓ − ℓ_min.
    r_hat_max, ess_bulk_min, ess_tail_min, max_divergences, bfmi_min : diagnostic thresholds.
    scan_top_z : after ``task=scan``, sample the ``scan_top_z`` masses of largest local Z (0: off).
    scan_masses : after ``task=scan``, also sample these masses (GeV; the nearest grid point).
    """

    draws: int = 1500
    tune: int = 1000
    chains: int = 2
    cores: int = 1
    target_accept: float = 0.95
    seed: int | None = None
    credibility: float = 0.95
    hdi_prob: float = 0.683
    eta_sigma: float = 0.05
    lengthscale_min: float = 2.0
    lengthscale_log_sd: float = 0.25
    r_hat_max: float = 1.01
    ess_bulk_min: float = 400.0
    ess_tail_min: float = 400.0
    max_divergences: int = 0
    bfmi_min: float = 0.3
    scan_top_z: int = 0
    scan_masses: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "scan_masses", tuple(float(m) for m in self.scan_masses or ()))
        if self.scan_top_z < 0 or any(not m > 0 for m in self.scan_masses):
            raise ConfigError(f"posterior.scan_top_z={self.scan_top_z}, scan_masses={list(self.scan_masses)}: "
                              f"need scan_top_z >= 0 (0: off) and masses > 0 in GeV, e.g. [0.030, 0.050]")
        if self.draws < 10 or self.tune < 0 or self.chains < 1 or self.cores < 1:
            raise ConfigError(f"posterior.draws={self.draws}, tune={self.tune}, chains={self.chains}, "
                              f"cores={self.cores}: need draws >= 10, tune >= 0, chains >= 1, cores >= 1 "
                              f"(R̂ needs chains >= 2; 1000/1000/2 is the default)")
        for key in ("target_accept", "credibility", "hdi_prob"):
            if not 0.0 < getattr(self, key) < 1.0:
                raise ConfigError(f"posterior.{key}={getattr(self, key)}: must be in (0, 1)")
        if self.eta_sigma <= 0 or self.lengthscale_min <= 0 or self.lengthscale_log_sd <= 0:
            raise ConfigError(f"posterior.eta_sigma={self.eta_sigma}, lengthscale_min={self.lengthscale_min}, "
                              f"lengthscale_log_sd={self.lengthscale_log_sd}: all must be > 0")
        if self.chains < 2:
            log.warning("posterior.chains=%d: R̂ cannot detect chains that disagree; use chains >= 2",
                        self.chains)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> PosteriorSettings:
        """Validate a mapping (``cfg["posterior"]``); unknown keys raise :class:`ConfigError`."""
        d = dict(d or {})
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(f"posterior: unknown key(s) {unknown}; allowed are {sorted(cls.__dataclass_fields__)}")
        try:
            return cls(**d)
        except TypeError as exc:
            raise ConfigError(f"posterior: {exc}") from exc

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["scan_masses"] = list(self.scan_masses)
        return d

    def sampler_dict(self) -> dict[str, Any]:
        """The settings that change a posterior (all but the ``scan_*`` selection): a reuse key."""
        return {k: v for k, v in self.to_dict().items() if not k.startswith("scan_")}


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
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "trace"}
        d["problems"] = list(self.problems)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PosteriorResult:
        kwargs = {k: d[k] for k in cls.__dataclass_fields__ if k in d and k != "trace"}
        kwargs["problems"] = tuple(kwargs.get("problems", ()))
        return cls(**kwargs)


# --------------------------------------------------------------------------- conditioning


@dataclass(frozen=True)
class Whitening:
    """The reference fit (A, c; GP off) and the linear map to whitened coordinates (module doc)."""

    A_hat: float
    c_hat: FloatArray
    sigma_A: float
    K_A: FloatArray
    L: FloatArray
    W: FloatArray


def _loglike(window: Window, A: float, c: FloatArray) -> tuple[float, FloatArray, FloatArray]:
    b = np.exp(window.log_offset + window.legendre @ c)
    mu = b + A * window.template
    if np.any(mu <= 0):
        return -math.inf, b, mu
    return float(np.sum(window.counts * np.log(mu) - mu)), b, mu


def reference_fit(window: Window, *, max_iter: int = 50) -> Whitening:
    """Fisher scoring of the Poisson likelihood in (A, c) with the GP off, and the whitening map.

    F = Jᵀ diag(1/μ) J with J = ∂μ/∂(A, c) = (T, b·P) is the expected Fisher information.
    """
    P, T, n = window.legendre, window.template, window.counts
    y = np.log(n + 0.5) - window.log_offset
    wts = np.sqrt(n + 0.5)
    c = np.linalg.lstsq(P * wts[:, None], y * wts, rcond=None)[0]
    A = 0.0
    ll, b, mu = _loglike(window, A, c)
    for _ in range(max_iter):
        J = np.hstack([T[:, None], b[:, None] * P])
        F = J.T @ (J / mu[:, None])
        step = np.linalg.solve(F, J.T @ (n / mu - 1.0))
        for _halving in range(30):
            ll_new, b_new, mu_new = _loglike(window, A + step[0], c + step[1:])
            if ll_new >= ll - 1e-9:
                break
            step = 0.5 * step
        else:
            raise FitError(f"m={window.mass * 1e3:.2f} MeV: the reference fit of the posterior's "
                           f"whitening did not improve the likelihood; check the window's counts")
        A, c, ll, b, mu = A + step[0], c + step[1:], ll_new, b_new, mu_new
        if np.max(np.abs(step) * np.sqrt(np.diag(F))) < 1e-6:
            break
    J = np.hstack([T[:, None], b[:, None] * P])
    F = J.T @ (J / mu[:, None])
    F_cc_inv = np.linalg.inv(F[1:, 1:])
    return Whitening(A_hat=float(A), c_hat=c, sigma_A=float(np.sqrt(np.linalg.inv(F)[0, 0])),
                     K_A=-F_cc_inv @ F[1:, 0], L=np.linalg.cholesky(F_cc_inv),
                     W=F_cc_inv @ (P.T * (b**2 / mu)))


# --------------------------------------------------------------------------- the model


def _t_per_sigma(window: Window) -> float:
    """σ(m)/m (the unit of ``background.lengthscale``) in the window coordinate t."""
    half_u = 0.5 * (np.log(window.edges[-1]) - np.log(window.edges[0]))
    return float(window.sigma / window.mass / half_u)


def build_posterior_model(window: Window, settings: BackgroundSettings, prior: PosteriorSettings,
                          whitening: Whitening | None = None) -> pm.Model:
    """The PyMC model of ``window`` with η and ℓ free and whitened (A, c) (see the module doc)."""
    wh = whitening or reference_fit(window)
    unit = _t_per_sigma(window)
    ell_min, ell_0 = prior.lengthscale_min * unit, window.lengthscale_t
    if ell_0 <= ell_min:
        raise ConfigError(f"background.lengthscale={ell_0 / unit:.3g} (σ(m)/m) must exceed "
                          f"posterior.lengthscale_min={prior.lengthscale_min}: the prior's mode sits at "
                          f"the configured lengthscale; lower posterior.lengthscale_min")
    P = window.legendre
    s = prior.lengthscale_log_sd
    with pm.Model() as model:
        a = pm.HalfFlat("a", initval=max(wh.A_hat / wh.sigma_A, 0.5))
        A = pm.Deterministic("A", wh.sigma_A * a)
        z = pm.Flat("z", shape=P.shape[1], initval=np.zeros(P.shape[1]))
        eta = pm.HalfNormal("eta", sigma=prior.eta_sigma, initval=min(window.eta, prior.eta_sigma) or 0.01)
        ell_ex = pm.LogNormal("ell_excess", mu=np.log(ell_0 - ell_min) + s**2, sigma=s, initval=ell_0 - ell_min)
        ell = ell_min + ell_ex
        pm.Deterministic("lengthscale", ell / unit)
        gp = pm.gp.HSGP(m=[settings.n_basis], L=[settings.c], cov_func=_cov_func(settings.kernel, eta, ell))
        phi, sqrt_psd = gp.prior_linearized(X=window.t[:, None])
        beta = pm.Normal("beta", 0.0, 1.0, shape=settings.n_basis)
        g = phi @ (beta * sqrt_psd)
        projected = np.eye(window.n_bins) - P @ wh.W
        log_b = (window.log_offset + P @ wh.c_hat + (P @ wh.K_A) * (A - wh.A_hat) + pt.dot(P @ wh.L, z)
                 + pt.dot(projected, g))
        b = pm.Deterministic("background", pt.exp(log_b))
        pm.Deterministic("b_under_signal", pt.dot(b, window.template))
        strength = A
        if window.spurious > 0:
            strength = A + window.spurious * pm.Normal("nu", 0.0, 1.0)
        pm.Poisson("n", mu=b + strength * window.template, observed=window.counts)
    return model


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


def mass_seed(seed: int, mass: float) -> int:
    """The sampler seed of one mass point: ``SeedSequence([seed, mass in 0.1 keV, 6])``."""
    sequence = np.random.SeedSequence([int(seed), round(mass * 1e7), 6])
    return int(sequence.generate_state(1, dtype=np.uint32)[0])


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
    seed : seed of the sampler (use :func:`mass_seed` for per-point seeds).
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
    wh = reference_fit(window)
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

    Both atomically (temporary file + ``os.replace``); ``extra`` goes into the JSON beside
    the result (settings, provenance).  Needs the ``h5netcdf`` (or ``netCDF4``) package.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    nc = folder / "posterior.nc"
    if result.trace is not None:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".posterior.nc.", suffix=".tmp")
        os.close(fd)
        try:
            result.trace.to_netcdf(tmp)
            os.replace(tmp, nc)
        except ImportError as exc:
            raise ConfigError(f"writing {nc} needs a NetCDF4 backend: `pip install h5netcdf` ({exc})") from exc
        finally:
            Path(tmp).unlink(missing_ok=True)
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


def select_scan_masses(masses: FloatArray, z: FloatArray, ok: Any, *, top_z: int = 0,
                       explicit: tuple[float, ...] = (), tolerance: float = 0.0) -> tuple[list[float], list[float]]:
    """The scanned masses to sample: the ``top_z`` of largest local Z (``ok`` points only) and the
    grid point nearest each ``explicit`` mass within ``tolerance`` (GeV).

    Returns (selected masses, ascending; explicit masses with no grid point within ``tolerance``).

    >>> select_scan_masses(np.array([0.03, 0.04, 0.05]), np.array([0.5, 2.1, 1.0]), np.ones(3, bool),
    ...                    top_z=1, explicit=(0.0301,), tolerance=0.0005)
    ([0.03, 0.04], [])
    """
    masses, z, ok = np.asarray(masses, dtype=float), np.asarray(z, dtype=float), np.asarray(ok, dtype=bool)
    chosen: set[float] = set()
    if top_z > 0 and ok.any():
        order = np.argsort(-np.where(ok & np.isfinite(z), z, -np.inf), kind="stable")[:min(top_z, int(ok.sum()))]
        chosen.update(float(masses[i]) for i in order)
    unmatched = []
    for m in explicit:
        i = int(np.argmin(np.abs(masses - m))) if masses.size else -1
        if i >= 0 and abs(masses[i] - m) <= tolerance + 1e-12:
            chosen.add(float(masses[i]))
        else:
            unmatched.append(float(m))
    return sorted(chosen), unmatched


def numbers_entry(result: PosteriorResult, prior: PosteriorSettings, *, config_hash: str) -> dict[str, Any]:
    """The ``"posterior"`` entry of a point's ``numbers.json``: the summary, the sampler settings
    (:meth:`PosteriorSettings.sampler_dict`) and the frequentist config hash it was sampled with."""
    return {"result": result.to_dict(), "settings": prior.sampler_dict(), "config_hash": config_hash,
            "files": ["posterior.nc", "posterior.json"]}


def merge_into_numbers(path: str | Path, entry: Mapping[str, Any]) -> Path:
    """Add ``entry`` as key ``"posterior"`` of the ``numbers.json`` at ``path``, atomically.

    The rest of the file (the CLs result, its settings and provenance) is kept as it is.  Callers
    that share the file between processes hold a lock around this read-modify-write.
    """
    import json

    path = Path(path)
    if not path.is_file():
        raise FitError(f"{path} does not exist: the frequentist point must be written before its posterior")
    with open(path) as fh:
        payload = json.load(fh)
    payload["posterior"] = dict(entry)
    return write_json(path, payload)


def reusable(numbers: Mapping[str, Any], prior: PosteriorSettings, *, config_hash: str) -> bool:
    """Whether a point's ``numbers.json`` already holds a posterior of these settings and config hash."""
    entry = numbers.get("posterior") or {}
    return bool(entry) and entry.get("settings") == prior.sampler_dict() and entry.get("config_hash") == config_hash


def comparison_row(result: PosteriorResult, *, A_up_cls: float, A_hat: float, sigma_A: float,
                   status: str) -> dict[str, Any]:
    """One row of ``posterior_comparison.csv``: CLs and credible limits, their ratio, diagnostics.

    ``A_up_flat_gauss`` is the flat-prior limit of a Gaussian likelihood with the frequentist
    (Â, σ_A), ``(Φ(μ̂/σ) − Φ((μ̂ − A)/σ))/Φ(μ̂/σ) = credibility``: what the sampled limit should be
    with η, ℓ fixed and a Gaussian likelihood (equal to the asymptotic CLs limit for any Â).
    ``width_ratio`` = σ′/σ_A (:func:`effective_width`); to first order
    ``ratio − 1 ≈ e(Â/σ_A) (σ′/σ_A − 1)`` with e(x) = 1 − x g′(x)/g(x), g(x) = x − Φ⁻¹(0.05 Φ(x)).
    """
    return {"dataset": result.dataset, "mass": result.mass, "folder": mass_label(result.mass),
            "status": status, "A_hat": A_hat, "sigma_A": sigma_A, "A_up": A_up_cls,
            "A_up_flat_gauss": flat_prior_limit(A_hat, sigma_A, credibility=result.credibility),
            "A_up_credible": result.A_up_credible,
            "ratio": result.A_up_credible / A_up_cls if A_up_cls > 0 else NAN,
            "width_ratio": effective_width(A_hat, result.A_up_credible, credibility=result.credibility) / sigma_A
            if sigma_A > 0 else NAN,
            "A_mean": result.A_mean, "A_sd": result.A_sd, "eps2_up_credible": result.eps2_up_credible,
            "eta_mean": result.eta_mean, "lengthscale_mean": result.lengthscale_mean,
            "r_hat_max": result.r_hat_max, "ess_bulk_min": result.ess_bulk_min,
            "ess_tail_min": result.ess_tail_min, "divergences": result.divergences, "bfmi_min": result.bfmi_min,
            "passed": result.passed, "problems": "; ".join(result.problems), "seconds": result.seconds}


def effective_width(mu_hat: float, mu_up: float, *, credibility: float = 0.95) -> float:
    """The σ′ for which :func:`flat_prior_limit` (μ̂, σ′) equals ``mu_up``: the Gaussian width the
    posterior behaves as.  σ′/σ_A > 1 measures how much integrating η and ℓ widened it.

    >>> round(effective_width(0.0, 3.92), 3)
    2.0
    """
    from scipy.optimize import brentq

    if not (math.isfinite(mu_hat) and math.isfinite(mu_up) and mu_up > max(mu_hat, 0.0)):
        return NAN
    lo, hi = max(1e-6 * mu_up, abs(mu_hat) / 30.0), 10.0 * (mu_up + abs(mu_hat))  # Φ(μ̂/σ) > 0 at lo
    return float(brentq(lambda s: flat_prior_limit(mu_hat, s, credibility=credibility) - mu_up, lo, hi))


def flat_prior_limit(mu_hat: float, sigma: float, *, credibility: float = 0.95) -> float:
    """Credible upper limit of a Gaussian likelihood N(μ̂, σ) with a flat prior on μ ≥ 0.

    Solves ``(Φ(μ̂/σ) − Φ((μ̂ − μ)/σ)) / Φ(μ̂/σ) = credibility``; for μ̂ ≥ 0 this is also the
    asymptotic CLs limit (arXiv:1007.1727, Eqs. 59, 65).  μ̂ = 0: μ_up = σ Φ⁻¹(1 − (1 − cl)/2).

    >>> round(flat_prior_limit(0.0, 1.0), 4)
    1.96
    """
    from scipy.special import ndtr, ndtri

    if not (math.isfinite(mu_hat) and math.isfinite(sigma) and sigma > 0):
        return NAN
    p0 = float(ndtr(mu_hat / sigma))
    return float(mu_hat - sigma * ndtri(p0 * (1.0 - credibility)))


@dataclass(frozen=True)
class PosteriorArrays:
    """What the figures of one sampled point draw (:mod:`hps_bayes.posterior_plots`)."""

    dataset: str
    mass: float
    edges: FloatArray
    counts: FloatArray
    band: FloatArray
    trace_draws: dict[str, FloatArray]
    A: FloatArray
    A_up_credible: float
    passed: bool


def posterior_arrays(result: PosteriorResult, window: Window, *, rng: np.random.Generator) -> PosteriorArrays:
    """Unpack a sampled point for plotting: draws (chain, draw) of A, η, ℓ and the predictive band."""
    if result.trace is None:
        raise FitError(f"m={result.mass * 1e3:.2f} MeV: the result holds no trace to plot (read it with "
                       f"read_posterior or sample again)")
    tr = result.trace
    draws = {"$A$ [events]": _draws(tr, "A"), r"$\eta$ [ln counts]": _draws(tr, "eta"),
             r"$\ell$ [$\sigma(m)/m$]": _draws(tr, "lengthscale")}
    return PosteriorArrays(dataset=result.dataset, mass=result.mass, edges=window.edges, counts=window.counts,
                           band=predictive_band(tr, window, rng=rng), trace_draws=draws,
                           A=_draws(tr, "A").ravel(), A_up_credible=result.A_up_credible, passed=result.passed)
