"""Profile-likelihood test statistics q0 and q̃μ (Cowan, Cranmer, Gross, Vitells, arXiv:1007.1727).

μ is the parameter of interest (the signal yield ``A``), θ the nuisances,
(μ̂, θ̂) the free fit and θ̂̂(μ) the fit with μ held fixed.  With the
profile likelihood ratio (Eq. 7)

.. math:: \\lambda(\\mu) = L(\\mu, \\hat{\\hat\\theta}(\\mu)) / L(\\hat\\mu, \\hat\\theta)

every statistic here is a difference of two NLL minima, so this module only
needs the fit layer.  The ``*_from_fits`` functions take the fits as
:class:`~hps_bayes.fit.FitResult` objects, so that a caller (a calculator,
a scan) can fit once, warm-start the next fit and reuse the free fit for
every μ; :func:`q0` and :func:`q_mu_tilde` are the one-call versions.

The free fit must be allowed to reach μ̂ < 0 (down to where some expected
count reaches zero): the branch of Eq. 16 depends on the sign of μ̂.
"""

from __future__ import annotations

import numpy as np

from hps_bayes.core import FitData, FloatArray
from hps_bayes.errors import FitError
from hps_bayes.fit.newton import newton_fit
from hps_bayes.fit.protocol import FitResult, Objective

__all__ = ["fit_fixed", "fit_free", "q0", "q0_from_fits", "q_mu_tilde", "q_mu_tilde_from_fits"]


def _require_finite(fit: FitResult, what: str) -> FitResult:
    """Raise :class:`FitError` when a fit ended with a non-finite NLL."""
    if not np.isfinite(fit.nll):
        raise FitError(
            f"the {what} fit ended with NLL = {fit.nll} ({fit.message}); the expected counts are not "
            "positive at the start: pass an `init` where every expected count is > 0"
        )
    return fit


def fit_free(objective: Objective, data: FitData, *, init: FloatArray | None = None) -> FitResult:
    """Free fit (μ̂, θ̂): minimise the NLL over every parameter, μ̂ < 0 allowed.

    Parameters
    ----------
    objective : the likelihood.
    data : counts and constraint centres.
    init : warm start; ``objective.initial(data)`` when None.

    Returns
    -------
    FitResult
        Check ``converged``; raises :class:`~hps_bayes.errors.FitError` when the NLL is not finite.
    """
    return _require_finite(newton_fit(objective, data, init=init), "free")


def fit_fixed(
    objective: Objective, data: FitData, mu: float, *, init: FloatArray | None = None
) -> FitResult:
    """Conditional fit θ̂̂(μ): minimise the NLL over the nuisances with the POI held at ``mu``.

    Parameters
    ----------
    objective : the likelihood.
    data : counts and constraint centres.
    mu : the fixed POI value.
    init : warm start (its POI entry is replaced by ``mu``).

    Returns
    -------
    FitResult
    """
    fit = newton_fit(objective, data, poi_fixed=float(mu), init=init)
    return _require_finite(fit, f"fixed-POI (mu = {mu:g})")


def q0_from_fits(objective: Objective, *, free: FitResult, at_zero: FitResult | None) -> float:
    """Discovery test statistic q0 from the free fit and the fit at μ = 0.

    arXiv:1007.1727, Eq. 12:

    .. math:: q_0 = -2\\ln\\lambda(0) = 2\\,[\\mathrm{NLL}(0, \\hat{\\hat\\theta}(0))
              - \\mathrm{NLL}(\\hat\\mu, \\hat\\theta)] \\text{ if } \\hat\\mu \\ge 0, \\text{ else } 0.

    Parameters
    ----------
    objective : the likelihood (for the POI index).
    free : the free fit.
    at_zero : the fit with μ fixed at 0; may be None when μ̂ < 0.

    Returns
    -------
    float
        q0 ≥ 0 (rounding below zero is clipped).
    """
    if free.poi(objective) < 0:
        return 0.0
    if at_zero is None:
        raise FitError("q0 needs the fit at mu = 0 when mu_hat >= 0: pass `at_zero`")
    return max(0.0, 2.0 * (at_zero.nll - free.nll))


def q_mu_tilde_from_fits(
    objective: Objective,
    mu: float,
    *,
    free: FitResult,
    at_mu: FitResult | None,
    at_zero: FitResult | None,
) -> float:
    """Upper-limit test statistic q̃μ from already-made fits.

    arXiv:1007.1727, Eq. 16 (with λ̃ of Eq. 10):

    .. math::
        \\tilde q_\\mu = \\begin{cases}
        -2\\ln \\dfrac{L(\\mu, \\hat{\\hat\\theta}(\\mu))}{L(0, \\hat{\\hat\\theta}(0))} & \\hat\\mu < 0 \\\\
        -2\\ln \\dfrac{L(\\mu, \\hat{\\hat\\theta}(\\mu))}{L(\\hat\\mu, \\hat\\theta)} & 0 \\le \\hat\\mu \\le \\mu \\\\
        0 & \\hat\\mu > \\mu
        \\end{cases}

    Parameters
    ----------
    objective : the likelihood (for the POI index).
    mu : the tested POI value (≥ 0).
    free : the free fit (μ̂, θ̂).
    at_mu : the fit at fixed ``mu``; may be None when μ̂ > μ.
    at_zero : the fit at μ = 0; may be None unless μ̂ < 0.

    Returns
    -------
    float
        q̃μ ≥ 0 (rounding below zero is clipped).
    """
    mu_hat = free.poi(objective)
    if mu_hat > mu:
        return 0.0
    if at_mu is None:
        raise FitError(f"q_mu_tilde at mu = {mu:g} needs the fit at fixed mu (mu_hat = {mu_hat:g}): pass `at_mu`")
    if mu_hat < 0:
        if at_zero is None:
            raise FitError(f"mu_hat = {mu_hat:g} < 0: q_mu_tilde needs the fit at mu = 0, pass `at_zero`")
        return max(0.0, 2.0 * (at_mu.nll - at_zero.nll))
    return max(0.0, 2.0 * (at_mu.nll - free.nll))


def q0(
    objective: Objective,
    data: FitData,
    *,
    free: FitResult | None = None,
    at_zero: FitResult | None = None,
    init: FloatArray | None = None,
) -> float:
    """Discovery test statistic q0 (arXiv:1007.1727, Eq. 12), fitting what is not given.

    Parameters
    ----------
    objective : the likelihood.
    data : counts and constraint centres.
    free : a free fit of ``data`` to reuse; fitted when None.
    at_zero : a fit of ``data`` at μ = 0 to reuse; fitted (warm-started from ``free``) when None.
    init : starting point of the free fit.

    Returns
    -------
    float
        ``q0 = -2 ln λ(0)`` if μ̂ ≥ 0 else 0.  Asymptotically ``p0 = 1 - Φ(√q0)``
        and ``Z0 = √q0`` (Eqs. 52-54).

    Examples
    --------
    >>> import numpy as np
    >>> from hps_bayes.stats import KnownBackgroundObjective
    >>> obj = KnownBackgroundObjective(np.array([100.0]), np.array([1.0]))
    >>> round(q0(obj, obj.fit_data(np.array([130.0]))), 4)  # 2(n ln(n/b) - (n - b))
    8.2147
    """
    free = fit_free(objective, data, init=init) if free is None else free
    if free.poi(objective) >= 0 and at_zero is None:
        at_zero = fit_fixed(objective, data, 0.0, init=free.theta)
    return q0_from_fits(objective, free=free, at_zero=at_zero)


def q_mu_tilde(
    objective: Objective,
    data: FitData,
    mu: float,
    *,
    free: FitResult | None = None,
    at_zero: FitResult | None = None,
    init: FloatArray | None = None,
) -> float:
    """Upper-limit test statistic q̃μ (arXiv:1007.1727, Eq. 16), fitting what is not given.

    Parameters
    ----------
    objective : the likelihood.
    data : counts and constraint centres.
    mu : the tested POI value (≥ 0).
    free : a free fit of ``data`` to reuse; fitted when None.
    at_zero : a fit of ``data`` at μ = 0 to reuse (only needed when μ̂ < 0).
    init : starting point of the free fit.

    Returns
    -------
    float
        q̃μ ≥ 0; see :func:`q_mu_tilde_from_fits` for the three branches.

    Examples
    --------
    >>> import numpy as np
    >>> from hps_bayes.stats import KnownBackgroundObjective
    >>> obj = KnownBackgroundObjective(np.array([100.0]), np.array([1.0]))
    >>> data = obj.fit_data(np.array([100.0]))
    >>> round(q_mu_tilde(obj, data, 20.0), 4)  # 2(mu - n ln(1 + mu/b)) at n = b
    3.5357
    """
    free = fit_free(objective, data, init=init) if free is None else free
    mu_hat = free.poi(objective)
    if mu_hat > mu:
        return 0.0
    if mu_hat < 0 and at_zero is None:
        at_zero = fit_fixed(objective, data, 0.0, init=free.theta)
    at_mu = fit_fixed(objective, data, mu, init=free.theta)
    return q_mu_tilde_from_fits(objective, mu, free=free, at_mu=at_mu, at_zero=at_zero)
