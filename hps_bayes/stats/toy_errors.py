"""Evaluations of a calculator's CLs curves for the limit search, and the Monte Carlo errors of toy limits.

A toy limit is the root of a noisy curve; its Monte Carlo error is σ(CLs) at the crossing over the curve's
slope there.  The slope is taken from the asymptotic calculator's curve (the toys estimate that curve; the
slope between the toys' own scan points is orders of magnitude off wherever a scan point's toy CLs is 0),
σ(CLs) from the binomial error where p_{s+b} = α·CL_b.  Written by hand: pyhf and the other CLs tools
quote no Monte Carlo error of a toy limit.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtri

from hps_bayes.stats.asymptotics import expected_cls, expected_clsb
from hps_bayes.stats.calculators import AsymptoticCalculator, Calculator, ExpectedCLs, PValues
from hps_bayes.stats.toys import binomial_error

__all__ = ["Evaluations", "asymptotic_slopes", "expected_errors_of", "limit_error", "probit"]


class Evaluations:
    """Caches the calculator's observed and expected CLs (or p_{s+b}) per μ and counts the μ values asked."""

    def __init__(self, calculator: Calculator, *, one_sided: bool = False) -> None:
        self._calc = calculator
        self._one_sided = one_sided
        self._obs: dict[float, PValues] = {}
        self._exp: dict[float, ExpectedCLs] = {}

    @property
    def count(self) -> int:
        return len(set(self._obs) | set(self._exp))

    def pvalues(self, mu: float) -> PValues:
        if mu not in self._obs:
            self._obs[mu] = self._calc.pvalues(mu)
        return self._obs[mu]

    def observed(self, mu: float) -> float:
        pv = self.pvalues(mu)
        return pv.clsb if self._one_sided else pv.cls

    def expected(self, mu: float, index: int) -> float:
        if mu not in self._exp:
            calc = self._calc
            self._exp[mu] = calc.expected_clsb(mu) if self._one_sided else calc.expected_pvalues(mu)
        return self._exp[mu][index]

    def tested_expected(self) -> list[float]:
        """The μ values at which the expected curves were evaluated."""
        return list(self._exp)

    def sqrt_q_asimov(self, mu: float) -> float:
        """√q_{μ,A} of an asymptotic calculator (the expected values at ``mu`` are cached alongside)."""
        calc = self._calc
        assert isinstance(calc, AsymptoticCalculator)
        q_asimov = calc.teststat_asimov(mu)
        if mu not in self._exp:
            self._exp[mu] = (expected_clsb if self._one_sided else expected_cls)(q_asimov)
        return float(np.sqrt(q_asimov))


def probit(p: float) -> float:
    """Φ⁻¹(p), clipped to stay finite: CLs − α and Φ⁻¹(CLs) − Φ⁻¹(α) share their root,
    and the latter is close to linear in μ (Φ⁻¹(CLs) ≈ N − √q_{μ,A}), so Brent's method needs few steps."""
    return float(ndtri(min(max(p, 1e-300), 1.0 - 1e-16)))


#: An expected limit's Monte Carlo error is taken in probit space at the tested μ nearest it; where the toys'
#: CLs_N there lies beyond this many probit units (CLs_N < 3e-7 or > 1 − 3e-7) it is not estimable (NaN): its
#: bootstrap error over the normal density there would be 0/0 or astronomically large.
MAX_ERROR_PROBIT = 5.0


def asymptotic_slopes(ev: Evaluations, roots: list[float]) -> list[float]:
    """dΦ⁻¹(CLs)/dμ of the observed curve (first root) and of the expected ones (N = −2..2) at each root, by
    central differences of an asymptotic calculator's curves (NaN where a root is not positive and finite).

    A toy limit's Monte Carlo error is σ(CLs) over this slope.  The slope of the toys' own curve, interpolated
    between scan points, is steeper by orders of magnitude wherever a scan point's toy CLs is 0 (its probit
    clipped at −37) — with 100 toys it made errors of 0.003 σ_A; the asymptotic curve has the slope the toys
    estimate, without their noise."""
    slopes = []
    for index, root in enumerate(roots):
        if not (np.isfinite(root) and root > 0):
            slopes.append(float("nan"))
            continue
        step = 0.02 * root

        def curve(m: float, i: int = index - 1) -> float:
            return probit(ev.observed(m) if i < 0 else ev.expected(m, i))

        slopes.append(float((curve(root + step) - curve(root - step)) / (2.0 * step)))
    return slopes


def limit_error(pv: PValues | None, slope: float, *, alpha: float, one_sided: bool) -> float:
    """σ(μ_up) = σ(CLs) / |dCLs/dμ| at the limit, in probit space: σ(CLs)/φ(Φ⁻¹(α)) / |dΦ⁻¹(CLs)/dμ|; 0 for
    asymptotic p-values.

    σ(CLs) is the binomial error at the crossing, where p_{s+b} = α·CL_b (one-sided: α), with CL_b as the
    toys measured it at the limit: the toys' own p_{s+b} there is a noisy estimate of α·CL_b, and where it
    came out 0 (no s+b toy beyond the observation) its error would be 0 or, divided by the normal density
    at its probit, astronomically large.  ``slope``: :func:`asymptotic_slopes`; NaN where it is not finite and
    non-zero."""
    if pv is None or not pv.n_toys:
        return 0.0
    if slope == 0 or not np.isfinite(slope):
        return float("nan")
    n = pv.n_toys
    if one_sided:
        sigma_cls = binomial_error(alpha, n)
    else:
        clb = min(max(pv.clb, 1.0 / n), 1.0)
        clsb = min(alpha * clb, 1.0)
        sigma_cls = alpha * float(np.hypot(binomial_error(clsb, n) / clsb, binomial_error(clb, n) / clb))
    z = float(ndtri(alpha))
    return float(sigma_cls / (np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)) / abs(slope))


def expected_errors_of(calculator: Calculator, ev: Evaluations, roots: list[float], slopes: list[float], *,
                     one_sided: bool) -> tuple[float, float, float, float, float]:
    """Monte Carlo errors of the expected limits of a toy calculator (zeros otherwise): at the tested μ
    nearest each root, σ(CLs_N) (:meth:`~hps_bayes.stats.toys.ToyCalculator.expected_errors`) in probit
    units, over the slope of Φ⁻¹(CLs_N) there (as the observed limit's :func:`limit_error`)."""
    errors = getattr(calculator, "expected_errors", None)
    out = [0.0] * 5
    tested = np.array(sorted(ev.tested_expected()))
    if errors is None or not tested.size:
        return (0.0, 0.0, 0.0, 0.0, 0.0)
    at_mu: dict[float, ExpectedCLs] = {}  # one bootstrap per tested μ serves every band near it
    for i, (root, slope) in enumerate(zip(roots, slopes, strict=True)):
        if not (np.isfinite(root) and root > 0 and np.isfinite(slope) and slope != 0):
            continue
        mu = float(tested[np.argmin(np.abs(tested - root))])
        if mu not in at_mu:
            at_mu[mu] = errors(mu, one_sided=one_sided)
        z = probit(ev.expected(mu, i))
        if at_mu[mu][i] <= 0 or abs(z) > MAX_ERROR_PROBIT:
            out[i] = float("nan")  # as the observed limit's: not estimable from these toys
            continue
        density = float(np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi))
        out[i] = float(at_mu[mu][i] / density / abs(slope))
    return (out[0], out[1], out[2], out[3], out[4])
