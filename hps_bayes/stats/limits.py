"""Upper limits (CLs, one-sided profile likelihood, power-constrained) and hypothesis tests.

All three work on top of any :class:`~hps_bayes.stats.calculators.Calculator`
(asymptotic or toys); ``method`` of :func:`upper_limit` picks the limit:

* ``"cls"``: the observed limit μ_up solves CLs(μ) = α; each expected limit solves
  CLs_N(μ) = α on the expected-CLs curve of band position N = −2..2;
* ``"pl"``: the one-sided profile-likelihood limit solves p_{s+b}(μ) = α (q̃μ, no
  division by CL_b), and its band p_{s+b,N}(μ) = α; asymptotically
  μ_up = μ̂ + σ Φ⁻¹(1 − α) (arXiv:1007.1727, Eq. 89), clipped at 0 where that is
  negative (every μ > 0 is then excluded);
* ``"pcl"``: the power-constrained limit (Cowan, Cranmer, Gross, Vitells,
  arXiv:1105.3166): the one-sided limit, but never below its −1σ expected limit
  (μ_up = max(μ_up,pl, μ_up,pl(N = −1)), the band likewise).

Each root starts from a first guess from the calculator's σ and the CLs form of Eq. 89 of
arXiv:1007.1727, σ (Φ⁻¹(1 − αΦ(N)) + N) (the expected limits at N = −2..2, the observed one at
N = μ̂/σ, its Wald approximation).  With an asymptotic calculator, secant steps settle it
(:mod:`hps_bayes.stats.roots`): each expected limit on √q_{μ,A}(μ) = Φ⁻¹(1 − αΦ(N)) + N, which is
exactly CLs_N(μ) = α, the observed one on Φ⁻¹(CLs) − Φ⁻¹(α); both are nearly linear in μ.  Otherwise
(toys, or a secant that does not settle) the bracket is widened geometrically until CLs − α changes
sign, and the root is polished with :func:`scipy.optimize.brentq` applied to Φ⁻¹(CLs) − Φ⁻¹(α),
which has the same root and is nearly linear in μ.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
from scipy.special import ndtr, ndtri

from hps_bayes.errors import ConfigError, InputError
from hps_bayes.results.objects import record_from_dict, record_to_dict
from hps_bayes.stats import roots
from hps_bayes.stats.calculators import N_SIGMA, AsymptoticCalculator, Calculator, ExpectedCLs, PValues
from hps_bayes.stats.toy_errors import (
    Evaluations,
    asymptotic_slopes,
    expected_errors_of,
    limit_error,
    probit,
)

__all__ = ["LIMIT_METHODS", "HypoTestResult", "LimitMethod", "UpperLimit", "eq89_expected_limits", "hypotest",
           "upper_limit"]

#: The limit kinds of :func:`upper_limit`.
LimitMethod = Literal["cls", "pl", "pcl"]
LIMIT_METHODS: tuple[LimitMethod, ...] = ("cls", "pl", "pcl")

#: One-sided limits below this fraction of σ are reported as 0 (p_{s+b} < α already there).
MU_FLOOR_SIGMAS = 1e-3


@dataclass(frozen=True)
class UpperLimit:
    """An upper limit on the POI (CLs, one-sided or power-constrained) with its expected band.

    Attributes
    ----------
    mu_up : observed upper limit (CLs(mu_up) = alpha, or p_{s+b}(mu_up) = alpha); NaN when not found.
    mu_up_expected : expected limits for N = −2, −1, 0, 1, 2, in that order (N = 0 is the median).
    cls_at_limit : observed CLs (``method="cls"``) or p_{s+b} (``"pl"``, ``"pcl"``: at the
        one-sided limit before the power constraint) there (≈ alpha).
    n_evaluations : number of distinct μ at which the calculator was asked for CLs.
    converged : True when every root was found and every fit converged.
    message : what went wrong, or "converged".
    alpha : the CLs level (0.05 for a 95% CL limit).
    mu_up_error : Monte Carlo error of ``mu_up`` (toys): σ(CLs) at the limit over |dCLs/dμ|; 0 when asymptotic.
    mu_up_expected_error : the same for the expected limits (toys: the bootstrap error of each band's
        CLs at the tested μ nearest the limit, over the slope of that band's curve); zeros when asymptotic.
    n_toys : toys per ensemble behind the CLs values; 0 when asymptotic.
    method : ``"cls"``, ``"pl"`` or ``"pcl"`` (see :func:`upper_limit`).
    power_constrained : ``"pcl"`` only: True when the one-sided observed limit lay below the −1σ
        expected limit and was replaced by it.
    """

    mu_up: float
    mu_up_expected: tuple[float, float, float, float, float]
    cls_at_limit: float
    n_evaluations: int
    converged: bool
    message: str
    alpha: float = 0.05
    mu_up_error: float = 0.0
    mu_up_expected_error: tuple[float, float, float, float, float] = (0.0, 0.0, 0.0, 0.0, 0.0)
    n_toys: int = 0
    method: str = "cls"
    power_constrained: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (JSON-ready); ``mu_up_expected`` becomes a list."""
        return record_to_dict(self, lists=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UpperLimit:
        """Inverse of :meth:`to_dict`."""
        if len(data["mu_up_expected"]) != 5:
            raise InputError(f"mu_up_expected has {len(data['mu_up_expected'])} entries {data['mu_up_expected']}; "
                             "it needs 5 (N = -2..2)")
        return record_from_dict(cls, data)


@dataclass(frozen=True)
class HypoTestResult:
    """CLs test of one μ: observed p-values and the expected CLs band (N = −2..2)."""

    mu: float
    observed: PValues
    cls_expected: ExpectedCLs

    @property
    def cls(self) -> float:
        """Observed CLs."""
        return self.observed.cls


def hypotest(calculator: Calculator, mu: float) -> HypoTestResult:
    """Test the signal hypothesis ``mu``: observed CLs = p_{s+b}/CL_b and expected CLs.

    Parameters
    ----------
    calculator : an asymptotic or toy calculator built on the observed data.
    mu : the tested POI value (≥ 0).

    Returns
    -------
    HypoTestResult
    """
    return HypoTestResult(mu=float(mu), observed=calculator.pvalues(mu),
                          cls_expected=calculator.expected_pvalues(mu))


def eq89_expected_limits(sigma: float, *, alpha: float = 0.05) -> tuple[float, ...]:
    """Expected CLs limits for constant σ: μ_up(N) = σ (Φ⁻¹(1 − α Φ(N)) + N), N = −2..2.

    The CLs analogue of arXiv:1007.1727, Eq. 89 (which gives the band of the
    p_{s+b} limit, σ (Φ⁻¹(1 − α) ± N)).

    Parameters
    ----------
    sigma : σ of μ̂ (Asimov).
    alpha : the CLs level.

    Returns
    -------
    tuple of 5 float
        For N = −2, −1, 0, 1, 2; N = 0 gives σ Φ⁻¹(1 − α/2).

    Examples
    --------
    >>> [round(v, 3) for v in eq89_expected_limits(1.0)]
    [1.052, 1.412, 1.96, 2.727, 3.656]
    """
    _check_alpha(alpha)
    return tuple(_eq89(sigma, float(n), alpha) for n in N_SIGMA)


def _eq89(sigma: float, n: float, alpha: float) -> float:
    """σ (Φ⁻¹(1 − α Φ(N)) + N): the Wald-approximation CLs limit of data with μ̂ = N σ.

    Written as σ (N − Φ⁻¹(α Φ(N))) so that it stays finite and positive for
    large deficits (N ≪ 0, where 1 − αΦ(N) rounds to 1).
    """
    n = max(n, -30.0)
    return float(sigma * (n - ndtri(alpha * ndtr(n))))


def upper_limit(calculator: Calculator, *, alpha: float = 0.05, rtol: float = 1e-4,
                scan: int | None = None, method: LimitMethod = "cls") -> UpperLimit:
    """Upper limit on μ and its expected band, by bracketing and Brent's method (or a μ scan).

    ``method="cls"`` solves CLs(μ) = p_{s+b}(μ)/CL_b(μ) = α for the observed data and
    CLs_N(μ) = α for N = −2..2 (see :func:`~hps_bayes.stats.asymptotics.expected_cls`);
    ``"pl"`` solves p_{s+b}(μ) = α and p_{s+b,N}(μ) = α
    (:func:`~hps_bayes.stats.asymptotics.expected_clsb`); ``"pcl"`` is ``"pl"`` with every
    limit raised to at least the −1σ expected one.

    Parameters
    ----------
    calculator : built on the observed data (asymptotic or toys).
    alpha : CLs level, 0 < alpha < 1 (0.05: 95% CL).
    rtol : relative tolerance on every limit (Brent's method).
    scan : instead of Brent's method, evaluate CLs on ``scan`` μ values spanning the Wald
        guesses of all six limits (extended where a crossing lies outside) and interpolate
        Φ⁻¹(CLs) linearly at each crossing, as pyhf does for toys.  Far fewer μ values
        (each one an ensemble of toys), at the price of the interpolation error.
    method : ``"cls"`` (default), ``"pl"`` (one-sided profile likelihood) or ``"pcl"``
        (power-constrained at the −1σ expected limit).

    Returns
    -------
    UpperLimit
        ``converged`` is False (with the reason in ``message``) when a root
        was not found or a fit did not converge; unfound limits are NaN.
        With toys, ``mu_up_error`` is σ(CLs)/|dCLs/dμ| at the limit.

    Examples
    --------
    >>> import numpy as np
    >>> from hps_bayes.stats import AsymptoticCalculator, KnownBackgroundObjective
    >>> obj = KnownBackgroundObjective(np.full(3, 100.0), np.array([0.2, 0.6, 0.2]))
    >>> calc = AsymptoticCalculator(obj, obj.fit_data(np.array([95.0, 110.0, 102.0])))
    >>> round(upper_limit(calc).mu_up, 2)
    40.59
    >>> round(upper_limit(calc, method="pl").mu_up, 2)
    38.57
    """
    _check_alpha(alpha)
    if not 0 < rtol < 0.1:
        raise ConfigError(f"rtol = {rtol} is not allowed: use a relative tolerance in (0, 0.1), e.g. 1e-4")
    if scan is not None and scan < 3:
        raise ConfigError(f"scan = {scan}: use at least 3 mu values (about 10-15 for toys)")
    if method not in LIMIT_METHODS:
        raise ConfigError(f"method = {method!r} is not allowed: use one of {list(LIMIT_METHODS)}")
    one_sided = method != "cls"
    ev = Evaluations(calculator, one_sided=one_sided)
    sigma = calculator.sigma_mu()
    level = probit(alpha)
    guesses = _first_guesses(calculator.mu_hat, sigma, alpha=alpha, one_sided=one_sided)
    floor = MU_FLOOR_SIGMAS * sigma if one_sided else None
    curves = [lambda m: probit(ev.observed(m)) - level]
    curves += [_expected_curve(ev, index, level) for index in range(len(N_SIGMA))]
    names = ["observed limit"] + [f"expected limit N = {n}" for n in N_SIGMA]
    if scan is None:
        asymptotic = isinstance(calculator, AsymptoticCalculator)
        observed = (roots.solve_secant(curves[0], guesses[0], sigma, rtol=rtol, floor=floor)
                    if asymptotic else None)
        found = [(observed, "") if observed is not None else
                 roots.solve_bracketed(curves[0], guesses[0], rtol=rtol, what=names[0], floor=floor)]
        for index, (f, g, w) in enumerate(zip(curves[1:], guesses[1:], names[1:], strict=True)):
            target = _wald_root(N_SIGMA[index], alpha, one_sided)
            root = roots.solve_increasing(ev.sqrt_q_asimov, target, g, rtol=rtol) if asymptotic else None
            found.append((root, "") if root is not None else
                         roots.solve_bracketed(f, g, rtol=rtol, what=w, floor=floor))
        slopes = [float("nan")] * 6
    else:
        grid = _scan_grid(guesses, sigma, floor, scan)
        found, slopes = [], []
        for f, w in zip(curves, names, strict=True):
            root, why, slope = roots.scan_root(f, grid, what=w, floor=floor)
            found.append((root, why))
            slopes.append(slope)
    mu_up = found[0][0]
    problems = [why for _, why in found if why]
    at = max(mu_up, floor or 0.0) if np.isfinite(mu_up) else float("nan")
    nearest = getattr(calculator, "nearest_tested", None)  # pooled toy batches: only their tested μ
    if nearest is not None and np.isfinite(at):
        at = nearest(at)
    cls_at = ev.observed(at) if np.isfinite(at) else float("nan")
    pv = ev.pvalues(at) if np.isfinite(at) else None
    problems += list(calculator.messages)
    exp = [root for root, _ in found[1:]]
    asymptotic_twin = getattr(calculator, "asymptotic", None)
    if asymptotic_twin is not None:  # toys: the slopes of the Monte Carlo errors from the asymptotic curves
        slopes = asymptotic_slopes(Evaluations(asymptotic_twin, one_sided=one_sided), [mu_up, *exp])
    limit = UpperLimit(
        mu_up=mu_up,
        mu_up_expected=(exp[0], exp[1], exp[2], exp[3], exp[4]),
        cls_at_limit=cls_at,
        n_evaluations=ev.count,
        converged=not problems,
        message="; ".join(problems) if problems else "converged",
        alpha=float(alpha),
        mu_up_error=limit_error(pv, slopes[0], alpha=alpha, one_sided=one_sided) if mu_up != 0 else 0.0,
        mu_up_expected_error=expected_errors_of(calculator, ev, exp, slopes[1:], one_sided=one_sided),
        n_toys=pv.n_toys if pv is not None else 0,
        method="pl" if one_sided else "cls",
    )
    return _power_constrain(limit) if method == "pcl" else limit


def _scan_grid(guesses: list[float], sigma: float, floor: float | None, scan: int) -> list[float]:
    positive = [g for g in guesses if g > 0] or [sigma]
    return [float(m) for m in np.linspace(max(0.5 * min(positive), floor or 0.0), 1.3 * max(positive), scan)]


def scan_mu_values(calculator: Calculator, *, alpha: float = 0.05, scan: int, method: LimitMethod = "cls",
                   extend: int = 2) -> list[float]:
    """The μ that :func:`upper_limit` with ``scan`` tests first, and the ``extend`` values on each side it would
    add where a crossing lies outside (:func:`~hps_bayes.stats.roots.scan_root`'s own steps: below
    :func:`~hps_bayes.stats.roots.grid_below`, above × :data:`~hps_bayes.stats.roots.GRID_GROWTH`): toy
    batches made by separate jobs test all of them, so that the pooled limit finds every value it needs
    (:class:`~hps_bayes.stats.pooled.PooledToyCalculator`)."""
    one_sided = method != "cls"
    sigma = calculator.sigma_mu()
    floor = MU_FLOOR_SIGMAS * sigma if one_sided else None
    grid = _scan_grid(_first_guesses(calculator.mu_hat, sigma, alpha=alpha, one_sided=one_sided), sigma, floor, scan)
    low, high = [grid[0]], [grid[-1]]
    for _ in range(extend):
        below = roots.grid_below(low[0], floor)  # a one-sided search adds its floor once, then stops
        if below is not None:
            low.insert(0, below)
        high.append(high[-1] * roots.GRID_GROWTH)
    return low[:-1] + grid + high[1:]


def _first_guesses(mu_hat: float, sigma: float, *, alpha: float, one_sided: bool) -> list[float]:
    """Wald-approximation limits (observed, then N = −2..2) that start the root searches.

    CLs: σ (Φ⁻¹(1 − αΦ(N)) + N) with N = μ̂/σ for the observed limit (Eq. 89, CLs form);
    one-sided: σ (Φ⁻¹(1 − α) + N), negative where every μ > 0 is excluded.
    """
    if not one_sided:
        return [_eq89(sigma, mu_hat / sigma, alpha), *eq89_expected_limits(sigma, alpha=alpha)]
    z = float(-ndtri(alpha))
    return [mu_hat + sigma * z, *(sigma * (n + z) for n in N_SIGMA)]


def _power_constrain(limit: UpperLimit) -> UpperLimit:
    """The power-constrained limit: every limit raised to at least the −1σ expected one-sided limit.

    The expected band becomes max(μ_up(N), μ_up(−1)); the observed limit's Monte Carlo error is 0
    where the constraint replaced it (the expected limit carries no such error here).
    """
    floor = limit.mu_up_expected[1]
    constrained = bool(limit.mu_up < floor)
    exp = tuple(v if not v < floor else floor for v in limit.mu_up_expected)
    err = tuple(e if not v < floor else limit.mu_up_expected_error[1]
                for v, e in zip(limit.mu_up_expected, limit.mu_up_expected_error, strict=True))
    return replace(limit, mu_up=floor if constrained else limit.mu_up,
                   mu_up_expected=(exp[0], exp[1], exp[2], exp[3], exp[4]),
                   mu_up_expected_error=(err[0], err[1], err[2], err[3], err[4]), method="pcl",
                   power_constrained=constrained, mu_up_error=0.0 if constrained else limit.mu_up_error)


def _wald_root(n: float, alpha: float, one_sided: bool) -> float:
    """The √q_{μ,A} at which the asymptotic expected CLs (or p_{s+b}) of band position N equals α:
    N − Φ⁻¹(αΦ(N)) (:func:`~hps_bayes.stats.asymptotics.expected_cls`), or N + Φ⁻¹(1 − α) one-sided
    (:func:`~hps_bayes.stats.asymptotics.expected_clsb`)."""
    return float(n - ndtri(alpha)) if one_sided else _eq89(1.0, n, alpha)


def _expected_curve(ev: Evaluations, index: int, level: float) -> Callable[[float], float]:
    """μ ↦ Φ⁻¹(CLs_N(μ)) − Φ⁻¹(α) for band position ``N_SIGMA[index]``."""
    return lambda mu: probit(ev.expected(mu, index)) - level


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha = {alpha} is not allowed: the CLs level must lie in (0, 1), e.g. 0.05")
