"""The PyMC model sampled by NUTS, its whitening and its settings."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from hps_bayes.core import FloatArray
from hps_bayes.errors import ConfigError, FitError
from hps_bayes.fit.newton import newton_fit
from hps_bayes.model.compiled import _cov_func
from hps_bayes.model.coordinate import lnm_half_width
from hps_bayes.model.objective import WindowObjective
from hps_bayes.model.settings import BackgroundSettings
from hps_bayes.model.window import Window

if TYPE_CHECKING:  # PyMC is imported where a posterior model is built, not by a scan reading its settings
    import pymc as pm

log = logging.getLogger(__name__)

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


def reference_fit(window: Window, settings: BackgroundSettings) -> Whitening:
    """The maximum-likelihood fit in (A, c) with the GP and the spurious-signal nuisance off, and the
    whitening map from the expected Fisher information there.

    The fit is :func:`hps_bayes.fit.newton.newton_fit` of the window's own objective; F = Jᵀ diag(1/μ) J
    with J = ∂μ/∂(A, c) = (T, b·P).
    """
    objective = WindowObjective(dataclasses.replace(window, eta=0.0, spurious=0.0), settings)
    fit = newton_fit(objective, objective.observed())
    if not fit.converged:
        raise FitError(f"m={window.mass * 1e3:.2f} MeV: the reference fit of the posterior's whitening "
                       f"failed ({fit.message}); check the window's counts")
    P, T = window.legendre, window.template
    A, c = float(fit.theta[0]), np.array(fit.theta[objective.model.slices["coef"]])
    b = objective.background(fit.theta)
    mu = b + A * T
    J = np.hstack([T[:, None], b[:, None] * P])
    F = J.T @ (J / mu[:, None])
    F_cc_inv = np.linalg.inv(F[1:, 1:])
    return Whitening(A_hat=A, c_hat=c, sigma_A=float(np.sqrt(np.linalg.inv(F)[0, 0])),
                     K_A=-F_cc_inv @ F[1:, 0], L=np.linalg.cholesky(F_cc_inv),
                     W=F_cc_inv @ (P.T * (b**2 / mu)))


# --------------------------------------------------------------------------- the model


def _t_per_sigma(window: Window) -> float:
    """σ(m)/m (the unit of ``background.lengthscale``) in the window coordinate t."""
    return float(window.sigma / window.mass / lnm_half_width(window.edges))


def build_posterior_model(window: Window, settings: BackgroundSettings, prior: PosteriorSettings,
                          whitening: Whitening | None = None) -> pm.Model:
    """The PyMC model of ``window`` with η and ℓ free and whitened (A, c) (see the module doc)."""
    import pymc as pm
    import pytensor.tensor as pt

    wh = whitening or reference_fit(window, settings)
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
