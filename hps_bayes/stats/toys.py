"""Toy-based calculator: the distributions of q̃μ and q0 from pseudo-experiments.

Pseudo-data ("toys") are drawn as in pyhf's ``ToyCalculator`` and the LHC
Higgs-combination procedure (ATLAS/CMS, ATL-PHYS-PUB-2011-11): counts
``n_i ~ Poisson(ν_i(θ̂̂(μ)))`` and constraint centres (global observables)
``aux_j ~ N(θ̂̂_j(μ), 1)``, with θ̂̂(μ) the conditional fit of the *observed*
data at the tested μ (the s+b ensemble) and at μ = 0 (the background-only
ensemble).  For every toy both fits are made as one batch over all toys
(:func:`hps_bayes.fit.newton_fit_batch`), and the test statistics follow
arXiv:1007.1727 (Eq. 12 for q0, Eq. 16 for q̃μ).  Then, as in pyhf,

* p_{s+b} = #{q̃μ,toy(s+b) ≥ q̃μ,obs} / N,  CL_b = #{q̃μ,toy(b) ≥ q̃μ,obs} / N,  CLs = p_{s+b} / CL_b,
  with Monte Carlo errors from the binomial errors of both fractions;
* expected CLs (band N = −2..2): the CLs value every background-only toy would
  have as observation, at the percentiles Φ(N) of those values;
* p0 = #{q0,toy(b) ≥ q0,obs} / N from the same background-only toys.

The background-only toys do not depend on μ: they are drawn and fitted (free,
μ = 0) once; each tested μ adds one batched fit of them and the s+b toys.  The
s+b toys at every μ reuse one random stream (common random numbers), which
keeps CLs(μ) smooth enough for the limit search.

Toys of one mass can be made in batches by separate jobs: each batch is a
:class:`ToyCalculator` with its own stream whose test statistics at the tested μ
(:meth:`ToyCalculator.batch`, a :class:`ToyBatch`) are stored; a
:class:`~hps_bayes.stats.pooled.PooledToyCalculator` stacks the batches' toys and answers as one calculator
with all of them (the same p-values as one ensemble made of the same toys).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import ndtr, ndtri

from hps_bayes.core import FitData, FloatArray
from hps_bayes.errors import ConfigError
from hps_bayes.fit.batch import newton_fit_batch
from hps_bayes.fit.protocol import BatchFitResult, BatchObjective
from hps_bayes.stats.calculators import AsymptoticCalculator, Discovery, ExpectedCLs, PValues, _check_mu

__all__ = ["ToyBatch", "ToyCalculator", "ToyEnsemble", "draw_toys", "empirical_pvalue", "q0_batch",
           "q_mu_tilde_batch"]

#: Seed of the bootstrap resamplings behind the expected band's Monte Carlo errors.
BOOTSTRAP_SEED = 20151

#: Percentiles Φ(N) (in %) of N = −2..2, as pyhf's ToyCalculator.expected_pvalues.
BAND_PERCENTILES = tuple(float(100.0 * ndtr(n)) for n in (-2, -1, 0, 1, 2))


@dataclass(frozen=True)
class ToyEnsemble:
    """Pseudo-data drawn around one parameter point: counts (K, n) and constraint centres (K, q)."""

    counts: FloatArray
    aux: FloatArray
    theta: FloatArray

    @property
    def n_toys(self) -> int:
        return int(self.counts.shape[0])


def draw_toys(objective: BatchObjective, theta: FloatArray, n_toys: int,
              rng: np.random.Generator) -> ToyEnsemble:
    """Draw ``n_toys`` pseudo-experiments at ``theta``.

    n_i ~ Poisson(ν_i(θ)) and aux_j ~ N(aux_at(θ)_j, 1) (the global observables).
    """
    nu = objective.expected_counts(theta)
    centre = objective.aux_at(theta)
    counts = rng.poisson(nu, size=(n_toys, nu.size)).astype(float)
    aux = centre + rng.standard_normal((n_toys, centre.size))
    return ToyEnsemble(counts=counts, aux=aux, theta=np.array(theta, dtype=float))


#: Test statistics closer than this count as equal: discrete (Poisson) data give exactly tied q
#: values in theory, which fits reproduce only to their precision (~1e-8).
Q_TIE_TOLERANCE = 1e-6


def empirical_pvalue(samples: FloatArray, value: float, *, tol: float = Q_TIE_TOLERANCE) -> float:
    """Fraction of ``samples`` ≥ ``value`` − ``tol`` (pyhf's ``EmpiricalDistribution.pvalue``,
    with ties within the fits' precision counted as ≥)."""
    return float(np.count_nonzero(samples >= value - tol)) / max(len(samples), 1)


@dataclass(frozen=True)
class ToyBatch:
    """One batch of a mass point's toys, as :class:`~hps_bayes.stats.pooled.PooledToyCalculator` stacks them.

    ``mu``: the tested μ (G,); ``sb`` and ``b``: q̃μ of the batch's s+b and background-only toys at
    each of them (G, n); ``q0``: q0 of its background-only toys (n,); ``failures``: toys whose fits
    failed, per ensemble and μ (as :attr:`ToyCalculator.failures`).
    """

    mu: FloatArray
    sb: FloatArray
    b: FloatArray
    q0: FloatArray
    failures: dict[str, int]

    @property
    def n_toys(self) -> int:
        return int(self.q0.size)


def binomial_error(p: float, n: int) -> float:
    """√(p(1 − p)/n): the Monte Carlo error of a fraction p estimated from n toys."""
    return float(np.sqrt(max(p * (1.0 - p), 0.0) / max(n, 1)))


class _NullFits:
    """Fits at μ = 0 and the free fits of one ensemble, made once; reference NLLs of q̃μ and q0.

    For each toy the slope ∂NLL/∂μ at (0, θ̂̂(0)) gives the sign of μ̂ (the profile
    likelihood is convex in μ): positive slope → μ̂ < 0 and the free fit is not needed.
    """

    def __init__(self, objective: BatchObjective, toys: ToyEnsemble, *, init: FloatArray,
                 shared_hessian: bool) -> None:
        poi = objective.poi_index
        self.at_zero = newton_fit_batch(objective, toys.counts, toys.aux, poi_fixed=0.0, init=init,
                                        shared_hessian=shared_hessian)
        _, grad = objective.nll_grad_batch(self.at_zero.theta, toys.counts, toys.aux)
        self.mu_hat = np.zeros(toys.n_toys)
        self.ref_nll = self.at_zero.nll.copy()
        self.failed = ~self.at_zero.converged
        self.free_theta = self.at_zero.theta.copy()
        positive = np.flatnonzero(grad[:, poi] < 0)
        self.mu_hat[grad[:, poi] >= 0] = -1.0  # only the sign matters: μ̂ < 0
        if positive.size:
            free = newton_fit_batch(objective, toys.counts[positive], toys.aux[positive],
                                    init=self.at_zero.theta[positive], shared_hessian=shared_hessian)
            self.mu_hat[positive] = np.maximum(free.theta[:, poi], 0.0)
            self.ref_nll[positive] = np.minimum(free.nll, self.at_zero.nll[positive])
            self.free_theta[positive] = free.theta
            self.failed[positive] |= ~free.converged
        self.q0 = np.maximum(0.0, 2.0 * (self.at_zero.nll - self.ref_nll))
        self.q0[self.mu_hat < 0] = 0.0


def q_mu_tilde_batch(objective: BatchObjective, toys: ToyEnsemble, mu: float, null: Any, *,
                     init: FloatArray, shared_hessian: bool = True) -> tuple[FloatArray, int, BatchFitResult]:
    """q̃μ of every toy (arXiv:1007.1727, Eq. 16) given the ensemble's μ = 0 / free fits.

    q̃μ = 0 where μ̂ > μ; else 2 [NLL(μ, θ̂̂(μ)) − NLL_ref], NLL_ref the free fit's
    (0 ≤ μ̂ ≤ μ) or the μ = 0 fit's (μ̂ < 0).

    Returns
    -------
    (q, n_failed, fits at μ)
    """
    fits = newton_fit_batch(objective, toys.counts, toys.aux, poi_fixed=mu, init=init,
                            shared_hessian=shared_hessian)
    q = np.maximum(0.0, 2.0 * (fits.nll - null.ref_nll))
    q[null.mu_hat > mu] = 0.0
    failed = (null.failed | ~fits.converged) & (null.mu_hat <= mu)
    return q, int(np.count_nonzero(failed)), fits


class ToyCalculator:
    """Toy-based calculator with the :class:`~hps_bayes.stats.calculators.Calculator` interface.

    Parameters
    ----------
    objective : the likelihood; it must implement :class:`hps_bayes.fit.BatchObjective`.
    data : observed counts and constraint centres.
    n_toys : toys per ensemble (s+b at each tested μ, and background-only).
    rng : the source of randomness; the same seed gives the same results.
    init : start of the observed free fit.
    shared_hessian : use the shared-Hessian phase of the batched fits.

    Examples
    --------
    >>> import numpy as np
    >>> from hps_bayes.stats import KnownBackgroundObjective
    >>> obj = KnownBackgroundObjective(np.full(3, 100.0), np.array([0.2, 0.6, 0.2]))
    >>> calc = ToyCalculator(obj, obj.fit_data([95.0, 110.0, 102.0]), n_toys=2000,
    ...                      rng=np.random.default_rng(1))
    >>> 0.1 < calc.pvalues(30.0).cls < 0.25
    True
    """

    def __init__(self, objective: BatchObjective, data: FitData, *, n_toys: int, rng: np.random.Generator,
                 init: FloatArray | None = None, shared_hessian: bool = True) -> None:
        if n_toys < 10:
            raise ConfigError(f"n_toys = {n_toys}: use at least 10 toys (1000 for a limit, 10000 for bands)")
        for name in ("nll_grad_batch", "nll_grad_hess_batch", "nll_batch"):
            if not hasattr(objective, name):
                raise ConfigError(f"{type(objective).__name__} has no {name}(): toys need a BatchObjective")
        self._objective = objective
        self._asym = AsymptoticCalculator(objective, data, init=init)
        self._n_toys = int(n_toys)
        self._shared = shared_hessian
        self._seed_sb, self._seed_b = (int(s) for s in rng.integers(0, 2**63 - 1, size=2))
        theta0 = self._asym.fit_at_zero.theta
        self._b_toys = draw_toys(objective, theta0, self._n_toys, np.random.default_rng(self._seed_b))
        self._b_null = _NullFits(objective, self._b_toys, init=theta0, shared_hessian=shared_hessian)
        self._b_q0 = self._b_null.q0
        self._b_at_mu: dict[float, FloatArray] = {}
        self._sb: dict[float, FloatArray] = {}
        self._failures: dict[str, int] = {"b-only, mu = 0 / free": int(np.count_nonzero(self._b_null.failed))}

    # --- Calculator interface ----------------------------------------------------------------
    @property
    def mu_hat(self) -> float:
        return self._asym.mu_hat

    @property
    def n_toys(self) -> int:
        return self._n_toys

    @property
    def asymptotic(self) -> AsymptoticCalculator:
        """The asymptotic calculator of the same data (observed fits, σ)."""
        return self._asym

    @property
    def failures(self) -> dict[str, int]:
        """Toys whose q could not be made exact (non-converged fits), per ensemble and μ."""
        return dict(self._failures)

    @property
    def converged(self) -> bool:
        """Observed fits converged and no toy fit failed."""
        return self._asym.converged and not any(self._failures.values())

    @property
    def messages(self) -> tuple[str, ...]:
        toys = [f"{n} of {self._n_toys} toys failed ({what})" for what, n in self._failures.items() if n]
        return self._asym.messages + tuple(toys)

    def batch(self) -> ToyBatch:
        """The test statistics of these toys at every μ tested so far (in increasing μ), for
        :class:`~hps_bayes.stats.pooled.PooledToyCalculator`."""
        mus = sorted(set(self._sb) & set(self._b_at_mu))
        shape = (len(mus), self._n_toys)
        return ToyBatch(mu=np.array(mus, dtype=float), sb=np.array([self._sb[m] for m in mus]).reshape(shape),
                        b=np.array([self._b_at_mu[m] for m in mus]).reshape(shape), q0=np.array(self._b_q0),
                        failures=dict(self._failures))

    def sigma_mu(self, mu: float | None = None) -> float:
        """The asymptotic σ (starts the limit search)."""
        return self._asym.sigma_mu(mu)

    def teststat(self, mu: float) -> float:
        """Observed q̃μ."""
        return self._asym.teststat(mu)

    def distributions(self, mu: float) -> tuple[FloatArray, FloatArray]:
        """q̃μ of the s+b toys and of the background-only toys at ``mu``."""
        mu = _check_mu(mu)
        if mu not in self._sb:
            self._sb[mu] = self._sb_teststats(mu)
        if mu not in self._b_at_mu:
            q, failed, _ = q_mu_tilde_batch(self._objective, self._b_toys, mu, self._b_null,
                                            init=self._b_null.free_theta, shared_hessian=self._shared)
            self._b_at_mu[mu] = q
            self._failures[f"b-only, mu = {mu:g}"] = failed
        return self._sb[mu], self._b_at_mu[mu]

    def _sb_teststats(self, mu: float) -> FloatArray:
        """q̃μ of s+b toys at ``mu``: the fit at μ first; its slope ∂NLL/∂μ < 0 means μ̂ > μ (q̃μ = 0),
        and only the other toys need the μ = 0 and free fits."""
        theta_mu = self._asym_fit_at(mu)
        obj, poi = self._objective, self._objective.poi_index
        toys = draw_toys(obj, theta_mu, self._n_toys, np.random.default_rng(self._seed_sb))
        at_mu = newton_fit_batch(obj, toys.counts, toys.aux, poi_fixed=mu, init=theta_mu,
                                 shared_hessian=self._shared)
        _, grad = obj.nll_grad_batch(at_mu.theta, toys.counts, toys.aux)
        q = np.zeros(self._n_toys)
        rows = np.flatnonzero(grad[:, poi] >= 0)
        failed = 0
        if rows.size:
            sub = ToyEnsemble(toys.counts[rows], toys.aux[rows], theta_mu)
            null = _NullFits(obj, sub, init=at_mu.theta[rows], shared_hessian=self._shared)
            q[rows] = np.maximum(0.0, 2.0 * (at_mu.nll[rows] - null.ref_nll))
            q[rows[null.mu_hat > mu]] = 0.0
            failed = int(np.count_nonzero(null.failed | ~at_mu.converged[rows]))
        self._failures[f"s+b, mu = {mu:g}"] = failed
        return q

    def _asym_fit_at(self, mu: float) -> FloatArray:
        """θ̂̂(μ) of the observed data (cached in the asymptotic calculator)."""
        return self._asym._fit(self._asym._observed_fits, self._asym._data, mu, "observed").theta

    def pvalues(self, mu: float) -> PValues:
        """Observed p_{s+b}, CL_b, CLs from toys with their binomial MC errors."""
        q = self.teststat(mu)
        sb, b = self.distributions(mu)
        clsb, clb = empirical_pvalue(sb, q), empirical_pvalue(b, q)
        cls = clsb / clb if clb > 0 else (0.0 if clsb == 0 else 1.0)
        e_sb, e_b = binomial_error(clsb, len(sb)), binomial_error(clb, len(b))
        rel = np.hypot(e_sb / clsb if clsb > 0 else 0.0, e_b / clb if clb > 0 else 0.0)
        cls_err = cls * rel if clsb > 0 else 1.0 / (len(sb) * max(clb, 1.0 / len(b)))
        return PValues(mu=float(mu), teststat=q, teststat_asimov=self._asym.teststat_asimov(mu), clsb=clsb, clb=clb, cls=cls,
                       clsb_error=e_sb, clb_error=e_b, cls_error=float(cls_err), n_toys=self._n_toys)

    def _toy_pvalues(self, mu: float) -> tuple[FloatArray, FloatArray]:
        """p_{s+b} and CL_b that each background-only toy would give as the observation."""
        return _toy_pvalues(*self.distributions(mu))

    def expected_pvalues(self, mu: float) -> ExpectedCLs:
        """Expected CLs (N = −2..2): percentiles Φ(N) of the CLs each b-only toy would give (pyhf)."""
        clsb, clb = self._toy_pvalues(mu)
        return _band(clsb / clb)  # clb ≥ 1/N: each toy counts itself

    def expected_clsb(self, mu: float) -> ExpectedCLs:
        """Expected p_{s+b} (N = −2..2): percentiles Φ(N) of the p_{s+b} each b-only toy would give."""
        return _band(self._toy_pvalues(mu)[0])

    def expected_errors(self, mu: float, *, one_sided: bool = False, n_boot: int = 40) -> ExpectedCLs:
        """Monte Carlo errors of :meth:`expected_pvalues` (or :meth:`expected_clsb`) at ``mu``: the standard
        deviation over ``n_boot`` bootstrap resamplings of both ensembles (the s+b toys set each
        band's p_{s+b}, the background-only toys its percentile; a fixed seed keeps it reproducible)."""
        sb, b = self.distributions(mu)
        rng = np.random.default_rng(BOOTSTRAP_SEED)
        bands = []
        for _ in range(n_boot):
            clsb, clb = _toy_pvalues(sb[rng.integers(0, len(sb), len(sb))], b[rng.integers(0, len(b), len(b))])
            bands.append(_band(clsb if one_sided else clsb / clb))
        err = np.std(np.asarray(bands), axis=0, ddof=1)
        return (float(err[0]), float(err[1]), float(err[2]), float(err[3]), float(err[4]))

    def discovery(self) -> Discovery:
        """q0 of the observed data; p0 = fraction of background-only toys with q0 ≥ q0,obs.

        When no toy reaches q0,obs the toy p0 is only bounded (< 1/N): the asymptotic p0
        (Eqs. 52-54) is returned and ``n_toys`` says 0 toys were used.  Without an excess
        (μ̂ ≤ 0, q0 = 0) p0 = ½ by convention, as asymptotically, not the fraction of toys with
        q0 ≥ 0 (which is 1).
        """
        obs = self._asym.discovery()
        if obs.q0 <= 0.0:
            return obs
        n_above = int(np.count_nonzero(self._b_q0 >= obs.q0 - Q_TIE_TOLERANCE))
        if n_above == 0:
            return obs
        p0 = n_above / self._n_toys
        return Discovery(q0=obs.q0, p0=p0, z0=float(-ndtri(p0)) if p0 < 1 else 0.0, mu_hat=obs.mu_hat,
                         p0_error=binomial_error(p0, self._n_toys), n_toys=self._n_toys)


def _band(values: FloatArray) -> ExpectedCLs:
    """The percentiles Φ(N), N = −2..2, of ``values``."""
    band = np.percentile(values, BAND_PERCENTILES)
    return (float(band[0]), float(band[1]), float(band[2]), float(band[3]), float(band[4]))


def _toy_pvalues(sb: FloatArray, b: FloatArray) -> tuple[FloatArray, FloatArray]:
    """p_{s+b} and CL_b that each background-only toy (q̃μ in ``b``) would give as the observation, in
    increasing order of the toys' q̃μ (every caller takes percentiles; sorted queries search 3-4× faster)."""
    sb_sorted, b_sorted = np.sort(sb), np.sort(b)
    queries = b_sorted - Q_TIE_TOLERANCE
    clsb = 1.0 - np.searchsorted(sb_sorted, queries, side="left") / len(sb)
    clb = 1.0 - np.searchsorted(b_sorted, queries, side="left") / len(b)
    return clsb, clb


def q0_batch(objective: BatchObjective, counts: FloatArray, aux: FloatArray, *, init: FloatArray,
             shared_hessian: bool = True) -> tuple[FloatArray, Any]:
    """q0 (arXiv:1007.1727, Eq. 12) of K data sets at once, and which of them had a failed fit.

    The fit at μ = 0 of every data set, then the free fit only where ∂NLL/∂μ < 0 there
    (μ̂ > 0; elsewhere q0 = 0), both batched (:func:`hps_bayes.fit.newton_fit_batch`).

    Returns
    -------
    (q0 of shape (K,), failed of shape (K,), bool)
    """
    counts = np.atleast_2d(np.asarray(counts, dtype=float))
    aux = np.asarray(aux, dtype=float).reshape(len(counts), -1)
    null = _NullFits(objective, ToyEnsemble(counts, aux, np.asarray(init, dtype=float)), init=init,
                     shared_hessian=shared_hessian)
    return null.q0, null.failed
