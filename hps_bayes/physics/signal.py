"""σ(m), f_rad(m), the binned signal template and the A ↔ ε² conversion.

Examples
--------
>>> import numpy as np
>>> t = signal_template(np.linspace(-1.0, 1.0, 201), 0.0, 0.01)
>>> round(float(t.sum()), 12)
1.0
"""

from __future__ import annotations

import math

import numpy as np
from numpy.polynomial import polynomial
from numpy.typing import ArrayLike, NDArray
from scipy.special import ndtr

from hps_bayes.errors import ConfigError, InputError
from hps_bayes.physics.presets import ALPHA_EM, DatasetPreset

# --------------------------------------------------------------------------- resolution, f_rad


def _positive(
    values: NDArray[np.float64], mass: NDArray[np.float64], what: str, preset: DatasetPreset
) -> None:
    """Raise a ConfigError if ``values`` has a non-positive entry."""
    bad = ~(values > 0)
    if np.any(bad):
        at = float(np.ravel(mass)[np.flatnonzero(np.ravel(bad))[0]])
        raise ConfigError(
            f"{what} of dataset '{preset.name}' is {float(np.ravel(values)[np.ravel(bad)][0]):.6g} "
            f"(not > 0) at m = {at:.6g} GeV; fix its coefficients or keep the mass inside the range "
            f"where they are valid (mass_range {list(preset.mass_range)})"
        )


def sigma_m(mass: ArrayLike, preset: DatasetPreset) -> NDArray[np.float64]:
    """Invariant-mass resolution σ(m) in GeV.

    σ(m) = Σ_i c_i m^i, and, when ``preset.sigma_linear_above`` = m₀ is set,
    σ(m) = σ(m₀) + s·(m − m₀) for m > m₀ (s = ``preset.sigma_linear_slope``;
    the 2016 parametrisation).

    Parameters
    ----------
    mass : array_like
        Mass(es) in GeV.
    preset : DatasetPreset
        The dataset.

    Returns
    -------
    ndarray
        σ in GeV, same shape as ``mass``.

    Raises
    ------
    ConfigError
        If σ ≤ 0 at a requested mass.
    """
    m = np.asarray(mass, dtype=np.float64)
    sigma = np.asarray(polynomial.polyval(m, preset.sigma_coeffs), dtype=np.float64)
    above, slope = preset.sigma_linear_above, preset.sigma_linear_slope
    if above is not None and slope is not None:
        at_knee = float(polynomial.polyval(above, preset.sigma_coeffs))
        sigma = np.where(m > above, at_knee + slope * (m - above), sigma)
    _positive(sigma, m, "sigma_m", preset)
    return sigma


def f_rad(mass: ArrayLike, preset: DatasetPreset) -> NDArray[np.float64]:
    """Radiative fraction f_rad(m) = Σ_i a_i m^i (a constant when one coefficient is given).

    Raises
    ------
    ConfigError
        If f_rad ≤ 0 at a requested mass (the ε² conversion divides by it).
    """
    m = np.asarray(mass, dtype=np.float64)
    value = np.asarray(polynomial.polyval(m, preset.f_rad_coeffs), dtype=np.float64)
    value = np.broadcast_to(value, m.shape).copy()
    _positive(value, m, "f_rad", preset)
    return value


# --------------------------------------------------------------------------- signal template


def signal_template(edges: ArrayLike, mass: float, sigma: float) -> NDArray[np.float64]:
    """Gaussian signal shape integrated over each bin.

    T_i = Φ((e_{i+1} − m)/σ) − Φ((e_i − m)/σ), with Φ the standard normal CDF.
    The template is normalised to the full Gaussian, so Σ_i T_i < 1 when the
    bins do not cover the tails, and a signal of total yield A contributes
    A·T_i events to bin i.

    Parameters
    ----------
    edges : array_like, shape (n + 1,)
        Increasing bin edges in GeV.
    mass : float
        Signal mass m in GeV.
    sigma : float
        Mass resolution σ in GeV (> 0).

    Returns
    -------
    ndarray, shape (n,)
        The template T.

    Raises
    ------
    ConfigError
        If σ ≤ 0 or not finite.
    InputError
        If the edges are not 1-D and strictly increasing.
    """
    e = np.asarray(edges, dtype=np.float64)
    if not (math.isfinite(sigma) and sigma > 0):
        raise ConfigError(f"signal width sigma must be finite and > 0 GeV, got {sigma!r}")
    if e.ndim != 1 or e.size < 2 or not np.all(np.diff(e) > 0):
        raise InputError(f"template edges must be a 1-D increasing array of >= 2 values, got shape {e.shape}")
    cdf = ndtr((e - float(mass)) / float(sigma))
    return np.asarray(np.diff(cdf), dtype=np.float64)


# --------------------------------------------------------------------------- A <-> eps2


def _check_conversion_inputs(**values: ArrayLike) -> None:
    """Raise an InputError naming the first non-positive or non-finite input."""
    for key, value in values.items():
        array = np.asarray(value, dtype=np.float64)
        if not np.all(np.isfinite(array) & (array > 0)):
            raise InputError(
                f"{key} must be finite and > 0 for the A <-> eps2 conversion, got {value!r}; "
                "check the background density (counts per GeV) and the dataset preset"
            )


def yield_per_eps2(
    mass: ArrayLike,
    f_rad: ArrayLike,
    rho: ArrayLike,
    *,
    n_eff: float = 1.0,
    alpha_em: float = ALPHA_EM,
) -> NDArray[np.float64]:
    """Signal yield per unit ε²: K(m) = 3π m f_rad(m) ρ(m) / (2 N_eff α), so A = ε² K.

    From the HPS radiative-tridents normalisation (arXiv:1807.11530, Eq. 1;
    arXiv:2212.10629).

    Parameters
    ----------
    mass : array_like
        A' mass m in GeV.
    f_rad : array_like
        Radiative fraction f_rad(m).
    rho : array_like
        Background density ρ = dN/dm at m, in counts per GeV (e.g. the fitted
        background in the bin containing m divided by its width).
    n_eff : float, optional
        Number of open decay channels N_eff (1 below the dimuon threshold).
    alpha_em : float, optional
        Fine-structure constant α.

    Returns
    -------
    ndarray
        K in events (broadcast shape of the inputs).
    """
    _check_conversion_inputs(mass=mass, f_rad=f_rad, rho=rho, n_eff=n_eff, alpha_em=alpha_em)
    m, fr, density = (np.asarray(v, dtype=np.float64) for v in (mass, f_rad, rho))
    return np.asarray(3.0 * np.pi * m * fr * density / (2.0 * n_eff * alpha_em), dtype=np.float64)


def eps2_from_yield(
    A: ArrayLike,
    *,
    mass: ArrayLike,
    f_rad: ArrayLike,
    rho: ArrayLike,
    n_eff: float = 1.0,
    alpha_em: float = ALPHA_EM,
) -> NDArray[np.float64]:
    """Kinetic mixing ε² for a signal yield A.

    ε² = 2 N_eff α A / (3π m f_rad(m) ρ(m)) = A / K(m)
    (HPS, arXiv:1807.11530, Eq. 1), with ρ = dN/dm in counts per GeV.
    A may be negative (a downward fluctuation); ε² then is too.

    Parameters
    ----------
    A : array_like
        Total signal yield (the template's full integral), e.g. an upper limit.
    mass, f_rad, rho, n_eff, alpha_em
        As in :func:`yield_per_eps2`.

    Returns
    -------
    ndarray
        ε² (broadcast shape of the inputs).

    Examples
    --------
    >>> float(eps2_from_yield(1.0, mass=0.05, f_rad=0.1, rho=1.0e9, alpha_em=1 / 137.036)) > 0
    True
    """
    k = yield_per_eps2(mass, f_rad, rho, n_eff=n_eff, alpha_em=alpha_em)
    return np.asarray(np.asarray(A, dtype=np.float64) / k, dtype=np.float64)
