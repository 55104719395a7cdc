"""Asymptotic formulae of q̃μ (arXiv:1007.1727): observed p-values and the expected CLs and p_{s+b} band.

Pure functions of the observed q̃μ and of q_{μ,A} (the Asimov value), used by
:class:`~hps_bayes.stats.calculators.AsymptoticCalculator`.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_ndtr, ndtr

__all__ = ["N_SIGMA", "ExpectedCLs", "asymptotic_pvalues", "expected_cls", "expected_clsb"]

#: The band positions N of the expected CLs values and limits, in this order.
N_SIGMA: tuple[int, int, int, int, int] = (-2, -1, 0, 1, 2)

ExpectedCLs = tuple[float, float, float, float, float]


def asymptotic_pvalues(q: float, q_asimov: float) -> tuple[float, float, float]:
    """Asymptotic p_{s+b}, CL_b and CLs of an observed q̃μ.

    With q = q̃μ and qA = q_{μ,A} = μ²/σ² (arXiv:1007.1727, Eqs. 65-66):

    ==========  ==============================  ====================================
    branch      p_{s+b} = 1 − F(q | μ)          CL_b = 1 − F(q | 0)
    ==========  ==============================  ====================================
    q ≤ qA      1 − Φ(√q)                       Φ(√qA − √q)
    q > qA      1 − Φ((q + qA) / (2√qA))        1 − Φ((q − qA) / (2√qA))
    ==========  ==============================  ====================================

    and CLs = p_{s+b} / CL_b, formed in log space so that it stays finite where
    both tails underflow.  Both branches meet at q = qA.  At qA = 0 (μ = 0)
    nothing can be excluded: (0.5, 0.5, 1.0).

    Parameters
    ----------
    q : observed q̃μ (≥ 0).
    q_asimov : q_{μ,A} (≥ 0).

    Returns
    -------
    tuple of float
        (clsb, clb, cls).

    Examples
    --------
    >>> [round(v, 4) for v in asymptotic_pvalues(2.0, 4.0)]
    [0.0786, 0.721, 0.1091]
    """
    q, qa = max(float(q), 0.0), max(float(q_asimov), 0.0)
    if qa <= 0.0:
        return 0.5, 0.5, 1.0
    sq, sqa = np.sqrt(q), np.sqrt(qa)
    if q <= qa:
        x_sb, x_b = sq, sq - sqa
    else:
        x_sb, x_b = (q + qa) / (2.0 * sqa), (q - qa) / (2.0 * sqa)
    log_clsb, log_clb = float(log_ndtr(-x_sb)), float(log_ndtr(-x_b))
    return float(np.exp(log_clsb)), float(np.exp(log_clb)), float(np.exp(log_clsb - log_clb))


def expected_cls(q_asimov: float) -> ExpectedCLs:
    """Expected CLs at the band positions N = −2..2, from q_{μ,A} alone.

    The background-only experiment that sits N standard deviations above the
    median in μ̂ (N > 0: a deficit, the weaker limit) has, in the Wald
    approximation, √q̃μ-space statistic t = −N, so (pyhf's convention,
    ``AsymptoticCalculator.expected_pvalues`` with ``calc_base_dist="normal"``)

    .. math:: \\mathrm{CL_s}(N) = \\Phi(N - \\sqrt{q_{\\mu,A}}) / \\Phi(N).

    Solving CLs(N) = α gives the CLs form of Eq. 89 of arXiv:1007.1727,
    μ_up(N) = σ (Φ⁻¹(1 − α Φ(N)) + N).

    Parameters
    ----------
    q_asimov : q_{μ,A} (≥ 0).

    Returns
    -------
    tuple of 5 float
        CLs for N = −2, −1, 0, 1, 2 (increasing).

    Examples
    --------
    >>> [round(v, 4) for v in expected_cls(1.959964 ** 2)]
    [0.0016, 0.0097, 0.05, 0.2003, 0.528]
    """
    sqa = np.sqrt(max(float(q_asimov), 0.0))
    n = np.asarray(N_SIGMA, dtype=float)
    cls = np.exp(log_ndtr(n - sqa) - log_ndtr(n))
    return (float(cls[0]), float(cls[1]), float(cls[2]), float(cls[3]), float(cls[4]))


def expected_clsb(q_asimov: float) -> ExpectedCLs:
    """Expected p_{s+b} at the band positions N = −2..2, from q_{μ,A} alone.

    As in :func:`expected_cls`, the background-only experiment at band position N
    has √q̃μ = √q_{μ,A} − N in the Wald approximation, on both branches of
    arXiv:1007.1727, Eq. 66, so

    .. math:: p_{s+b}(N) = \\Phi(N - \\sqrt{q_{\\mu,A}}).

    Solving p_{s+b}(N) = α gives the one-sided band of Eq. 89, μ_up(N) = σ (Φ⁻¹(1 − α) + N).

    Parameters
    ----------
    q_asimov : q_{μ,A} (≥ 0).

    Returns
    -------
    tuple of 5 float
        p_{s+b} for N = −2, −1, 0, 1, 2 (increasing).

    Examples
    --------
    >>> [round(v, 4) for v in expected_clsb(1.644854 ** 2)]
    [0.0001, 0.0041, 0.05, 0.2595, 0.6388]
    """
    sqa = np.sqrt(max(float(q_asimov), 0.0))
    p = ndtr(np.asarray(N_SIGMA, dtype=float) - sqa)
    return (float(p[0]), float(p[1]), float(p[2]), float(p[3]), float(p[4]))
