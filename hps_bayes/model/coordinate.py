"""The background's coordinate and starting point: ln m ↔ t ∈ [−1, 1], and the least-squares start.

The background mean and the HSGP live in ``t``, the bin centres' ln m mapped linearly onto
[−1, 1] over a window (or the whole range): t = (ln m − ln m_lo)/h − 1 with the half width
h = ½ (ln m_hi − ln m_lo).  A lengthscale ℓ in ln m is ℓ/h in t.
"""

from __future__ import annotations

import numpy as np

from hps_bayes.core import FloatArray


def lnm_half_width(edges: FloatArray) -> float:
    """The half width h = ½ (ln m_hi − ln m_lo) of the bins ``edges`` span, in ln m.

    >>> round(lnm_half_width(np.array([1.0, np.e**2])), 12)
    1.0
    """
    return float(0.5 * (np.log(edges[-1]) - np.log(edges[0])))


def lnm_coordinate(edges: FloatArray) -> tuple[FloatArray, float]:
    """``(t, h)``: the bin centres' coordinate t ∈ [−1, 1] and the half width h (:func:`lnm_half_width`).

    >>> t, h = lnm_coordinate(np.exp(np.array([0.0, 1.0, 2.0])))  # ln m from 0 to 2: h = 1
    >>> t.round(3).tolist(), round(h, 12)
    ([-0.38, 0.62], 1.0)
    """
    u = np.log(0.5 * (edges[1:] + edges[:-1]))
    half = lnm_half_width(edges)
    return (u - np.log(edges[0])) / half - 1.0, half


def least_squares_start(counts: FloatArray, offset: FloatArray, basis: FloatArray) -> FloatArray:
    """Coefficients c of ln μ = offset + basis·c fitted to ln(n + ½) by weighted least squares
    (weights √(n + ½), the Poisson variance of ln n): the start of every background fit.

    >>> basis = np.ones((3, 1))
    >>> least_squares_start(np.full(3, 99.5), np.zeros(3), basis).round(12).tolist() == [round(np.log(100.0), 12)]
    True
    """
    y = np.log(counts + 0.5) - offset
    weights = np.sqrt(counts + 0.5)
    coef, *_ = np.linalg.lstsq(basis * weights[:, None], y * weights, rcond=None)
    return np.asarray(coef)
