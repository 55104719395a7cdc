"""Calculators: the distribution of q̃μ under s+b and b, CLs, expected CLs and discovery p0.

A calculator is built for one data set and answers, for any tested POI μ,
the observed q̃μ and its p-values, the expected CLs values of the
background-only band, and the discovery significance.  The limit search
(:mod:`hps_bayes.stats.limits`) sees only the :class:`Calculator` protocol,
so the asymptotic calculator here and a toy calculator can be swapped.

Conventions (arXiv:1007.1727, Cowan, Cranmer, Gross, Vitells):

* p_{s+b} = 1 − F(q̃μ | μ)  (Eq. 66), CL_b = 1 − p_b = 1 − F(q̃μ | 0)  (Eq. 65 with μ' = 0),
  CLs = p_{s+b} / CL_b.
* σ from the background-only Asimov data set: q_{μ,A} = q̃μ(Asimov), σ² = μ² / q_{μ,A}
  (Sec. 3.2, Eqs. 29-30), with the constraint centres moved to the
  background-only fitted nuisances.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from scipy.special import ndtr, ndtri

from hps_bayes.core import FitData, FloatArray
from hps_bayes.errors import ConfigError, FitError
from hps_bayes.fit.protocol import FitResult, Objective
from hps_bayes.stats.asymptotics import N_SIGMA, ExpectedCLs, asymptotic_pvalues, expected_cls, expected_clsb
from hps_bayes.stats.teststat import fit_fixed, fit_free, q0_from_fits, q_mu_tilde_from_fits

__all__ = [
    "N_SIGMA",
    "AsymptoticCalculator",
    "Calculator",
    "Discovery",
    "PValues",
    "asymptotic_pvalues",
    "expected_cls",
    "expected_clsb",
]


@dataclass(frozen=True)
class PValues:
    """Observed p-values at one tested μ.

    Attributes
    ----------
    mu : the tested POI value.
    teststat : observed q̃μ.
    teststat_asimov : q_{μ,A}, q̃μ on the background-only Asimov data.
    clsb : p_{s+b} = 1 − F(q̃μ | μ).
    clb : CL_b = 1 − p_b = 1 − F(q̃μ | 0).
    cls : CLs = clsb / clb.
    clsb_error, clb_error, cls_error : Monte Carlo (binomial) errors; 0 for asymptotic p-values.
    n_toys : toys per ensemble; 0 for asymptotic p-values.
    """

    mu: float
    teststat: float
    teststat_asimov: float
    clsb: float
    clb: float
    cls: float
    clsb_error: float = 0.0
    clb_error: float = 0.0
    cls_error: float = 0.0
    n_toys: int = 0


@dataclass(frozen=True)
class Discovery:
    """Discovery test of μ = 0 (arXiv:1007.1727).

    Attributes
    ----------
    q0 : −2 ln λ(0) if μ̂ ≥ 0 else 0 (Eq. 12).
    p0 : 1 − F(q0 | 0) = 1 − Φ(√q0) (Eqs. 52-53).
    z0 : Φ⁻¹(1 − p0) = √q0 (Eq. 54).
    mu_hat : the free-fit μ̂.
    p0_error : Monte Carlo (binomial) error of a toy p0; 0 when asymptotic.
    n_toys : background-only toys behind p0; 0 when asymptotic.
    """

    q0: float
    p0: float
    z0: float
    mu_hat: float
    p0_error: float = 0.0
    n_toys: int = 0


class Calculator(Protocol):
    """What the limit search needs from a calculator (asymptotic or toys)."""

    @property
    def mu_hat(self) -> float:
        """Best-fit POI μ̂ of the observed data (may be negative)."""
        ...

    @property
    def converged(self) -> bool:
        """True when every fit this calculator made converged."""
        ...

    @property
    def messages(self) -> tuple[str, ...]:
        """Why fits did not converge; empty when all did."""
        ...

    def sigma_mu(self, mu: float | None = None) -> float:
        """The scale σ of μ̂ (used to start the limit search)."""
        ...

    def teststat(self, mu: float) -> float:
        """Observed q̃μ."""
        ...

    def pvalues(self, mu: float) -> PValues:
        """Observed p_{s+b}, CL_b and CLs at ``mu``."""
        ...

    def expected_pvalues(self, mu: float) -> ExpectedCLs:
        """Expected CLs at ``mu`` for the band positions N = −2, −1, 0, 1, 2."""
        ...

    def expected_clsb(self, mu: float) -> ExpectedCLs:
        """Expected p_{s+b} at ``mu`` for the band positions N = −2, −1, 0, 1, 2."""
        ...

    def discovery(self) -> Discovery:
        """The discovery test of μ = 0."""
        ...


def _nearest(cache: dict[float, FitResult], mu: float) -> FloatArray:
    """Parameters of the cached fit whose μ is nearest to ``mu`` (the warm start)."""
    key = min(cache, key=lambda m: abs(m - mu))
    return cache[key].theta


class AsymptoticCalculator:
    """Asymptotic (Asimov) calculator for q̃μ, CLs and q0 of one data set.

    Fits the observed data freely and at μ = 0 once; builds the
    background-only Asimov data set from θ̂̂(0) — counts
    ``objective.expected_counts(θ̂̂(0))`` and constraint centres
    ``objective.aux_at(θ̂̂(0))``, so that (0, θ̂̂(0)) is the Asimov data's
    best fit; then needs, per tested μ, one conditional fit of the observed
    data (none when μ̂ > μ) and one of the Asimov data.  Both are cached by μ
    and warm-started from the nearest μ already fitted.

    Parameters
    ----------
    objective : the likelihood; μ̂ < 0 must be reachable.
    data : observed counts and constraint centres.
    init : starting point of the free fit (e.g. the neighbouring mass point's).

    Examples
    --------
    >>> import numpy as np
    >>> from hps_bayes.stats import KnownBackgroundObjective
    >>> obj = KnownBackgroundObjective(np.full(3, 100.0), np.array([0.2, 0.6, 0.2]))
    >>> calc = AsymptoticCalculator(obj, obj.fit_data(np.array([95.0, 110.0, 102.0])))
    >>> round(calc.pvalues(30.0).cls, 4)
    0.1669
    """

    def __init__(self, objective: Objective, data: FitData, *, init: FloatArray | None = None) -> None:
        self._objective = objective
        self._data = data
        self._free = fit_free(objective, data, init=init)
        self._at_zero = fit_fixed(objective, data, 0.0, init=self._free.theta)
        theta0 = self._at_zero.theta
        self._asimov = FitData(counts=objective.expected_counts(theta0), aux=objective.aux_at(theta0))
        asimov_at_zero = fit_fixed(objective, self._asimov, 0.0, init=theta0)
        self._observed_fits: dict[float, FitResult] = {0.0: self._at_zero}
        if self._free.converged:  # the conditional fit at μ = μ̂ is the free fit
            self._observed_fits.setdefault(self.mu_hat, self._free)
        self._asimov_fits: dict[float, FitResult] = {0.0: asimov_at_zero}
        self._n_fits = 3
        self._issues: list[str] = []
        self._note_free_fit()
        for fit, what in ((self._at_zero, "observed, mu = 0"), (asimov_at_zero, "Asimov, mu = 0")):
            self._note(fit, what)

    # --- bookkeeping -------------------------------------------------------------------------
    def _note(self, fit: FitResult, what: str) -> None:
        if not fit.converged:
            self._issues.append(f"{what} fit: {fit.message}")

    def _note_free_fit(self) -> None:
        """Record a non-converged free fit, unless only its sign matters and is certain.

        For μ̂ < 0 the test statistics use the fit at μ = 0 instead of the free
        fit, so a free fit stuck near the μ boundary is harmless when the
        profile slope ∂NLL/∂μ at (0, θ̂̂(0)) confirms μ̂ < 0.
        """
        if self._free.converged:
            return
        _, grad, _ = self._objective.nll_grad_hess(self._at_zero.theta, self._data)
        if self.mu_hat < 0 and grad[self._objective.poi_index] > 0:
            return
        self._issues.append(f"free fit: {self._free.message}")

    @property
    def converged(self) -> bool:
        """True when every fit made so far converged (see :attr:`messages`)."""
        return not self._issues

    @property
    def messages(self) -> tuple[str, ...]:
        """Why fits did not converge, one entry per failed fit."""
        return tuple(self._issues)

    @property
    def n_fits(self) -> int:
        """Number of Newton fits made so far (3 at construction)."""
        return self._n_fits

    # --- fits --------------------------------------------------------------------------------
    @property
    def free_fit(self) -> FitResult:
        """The free fit (μ̂, θ̂) of the observed data."""
        return self._free

    @property
    def fit_at_zero(self) -> FitResult:
        """The background-only fit θ̂̂(0) of the observed data."""
        return self._at_zero

    @property
    def asimov_data(self) -> FitData:
        """The background-only Asimov data (counts and moved constraint centres)."""
        return self._asimov

    @property
    def mu_hat(self) -> float:
        """μ̂ of the observed data (negative values allowed)."""
        return self._free.poi(self._objective)

    def _fit(self, cache: dict[float, FitResult], data: FitData, mu: float, what: str) -> FitResult:
        if mu not in cache:
            fit = fit_fixed(self._objective, data, mu, init=_nearest(cache, mu))
            self._n_fits += 1
            self._note(fit, f"{what}, mu = {mu:g}")
            cache[mu] = fit
        return cache[mu]

    # --- test statistics ---------------------------------------------------------------------
    def teststat(self, mu: float) -> float:
        """Observed q̃μ (arXiv:1007.1727, Eq. 16); no fit is needed when μ̂ > μ."""
        mu = _check_mu(mu)
        at_mu = None if self.mu_hat > mu else self._fit(self._observed_fits, self._data, mu, "observed")
        return q_mu_tilde_from_fits(
            self._objective, mu, free=self._free, at_mu=at_mu, at_zero=self._at_zero
        )

    def teststat_asimov(self, mu: float) -> float:
        """q_{μ,A}: q̃μ on the background-only Asimov data, 2[NLL_A(μ) − NLL_A(0)] (μ̂_A = 0)."""
        mu = _check_mu(mu)
        at_mu = self._fit(self._asimov_fits, self._asimov, mu, "Asimov")
        return max(0.0, 2.0 * (at_mu.nll - self._asimov_fits[0.0].nll))

    def pvalues(self, mu: float) -> PValues:
        """Observed p_{s+b}, CL_b and CLs at ``mu`` (see :func:`asymptotic_pvalues`)."""
        q, qa = self.teststat(mu), self.teststat_asimov(mu)
        clsb, clb, cls = asymptotic_pvalues(q, qa)
        return PValues(mu=float(mu), teststat=q, teststat_asimov=qa, clsb=clsb, clb=clb, cls=cls)

    def expected_pvalues(self, mu: float) -> ExpectedCLs:
        """Expected CLs at ``mu`` for N = −2, −1, 0, 1, 2 (see :func:`expected_cls`)."""
        return expected_cls(self.teststat_asimov(mu))

    def expected_clsb(self, mu: float) -> ExpectedCLs:
        """Expected p_{s+b} at ``mu`` for N = −2, −1, 0, 1, 2 (see :func:`expected_clsb`)."""
        return expected_clsb(self.teststat_asimov(mu))

    def discovery(self) -> Discovery:
        """q0 (Eq. 12), p0 = 1 − Φ(√q0) (Eqs. 52-53) and Z0 = √q0 (Eq. 54); no new fit."""
        q = q0_from_fits(self._objective, free=self._free, at_zero=self._at_zero)
        return Discovery(q0=q, p0=float(ndtr(-np.sqrt(q))), z0=float(np.sqrt(q)), mu_hat=self.mu_hat)

    # --- scales ------------------------------------------------------------------------------
    @property
    def sigma_hesse(self) -> float:
        """Hessian (inverse-Fisher) error of μ̂ from the free fit of the observed data."""
        return self._free.poi_error(self._objective)

    def sigma_hesse_asimov(self) -> float:
        """Hessian error of μ̂ on the Asimov data, at its best fit (0, θ̂̂(0)): the expected σ at μ = 0."""
        _, _, hess = self._objective.nll_grad_hess(self._asimov_fits[0.0].theta, self._asimov)
        try:
            var = float(np.linalg.inv(hess)[self._objective.poi_index, self._objective.poi_index])
        except np.linalg.LinAlgError as exc:
            raise FitError(f"the Asimov Hessian is singular ({exc}): is the signal template all zero?") from exc
        return float(np.sqrt(var)) if var > 0 else float("nan")

    def sigma_mu(self, mu: float | None = None) -> float:
        """Asimov σ of μ̂ at ``mu``: σ_A = μ / √q_{μ,A} (arXiv:1007.1727, Sec. 3.2, Eqs. 29-30).

        Parameters
        ----------
        mu : where to evaluate it; by default the expected median limit scale
            μ = Φ⁻¹(0.975)·σ_Hesse,A (≈ 1.96 σ), where σ matters for a 95% CL limit.

        Returns
        -------
        float
        """
        if mu is None:
            mu = float(ndtri(0.975)) * self.sigma_hesse_asimov()
        mu = _check_mu(mu)
        qa = self.teststat_asimov(mu)
        if not qa > 0:
            raise FitError(f"q_mu_A = {qa:g} at mu = {mu:g}: the data have no sensitivity to the signal there")
        return mu / float(np.sqrt(qa))


def _check_mu(mu: float) -> float:
    mu = float(mu)
    if not np.isfinite(mu) or mu < 0:
        raise ConfigError(f"tested POI mu = {mu} is not allowed: q_mu_tilde tests mu >= 0 (finite)")
    return mu
