"""Look-elsewhere effect: the global significance of the largest local excess of a mass scan.

Three estimates of the global p-value of the largest observed local significance
Z = max_m Z(m) (Z(m) = √q0(m), arXiv:1007.1727 Eq. 12, one-sided):

* **toy scans** — the fraction of background-only toy scans of the whole mass range whose
  maximum local Z reaches the observed one, with its binomial Monte Carlo error
  (:func:`global_pvalue_from_toys`);
* **Gross–Vitells** (E. Gross, O. Vitells, Eur. Phys. J. C 70 (2010) 525, arXiv:1005.1891,
  Eq. 4 with q = Z², one degree of freedom):

      p_global ≈ p_local + ⟨N(c0)⟩ · exp(−(Z² − c0²)/2),

  with ⟨N(c0)⟩ the mean number of upcrossings of a low level c0 (in Z units) by the
  toy scans' Z(m) curves (:func:`mean_upcrossings`, :func:`gross_vitells`).  It is an upper
  bound that becomes accurate at large Z, and it needs only a few toy scans;
* **trials factor** — N_trials = ∫ dm / (k·σ(m)) over the scanned range, the number of
  independent resolution elements (k = ``sigmas_per_trial``: 1 by default, i.e. the
  mass range over the resolution; k = 2 counts windows of ±σ), and
  p_global = 1 − (1 − p_local)^N_trials (:func:`trials_factor`);
* **regions** — the recipe of the published HPS searches: p_global ≈ N_reg · p_local with
  N_reg = W / σ̄, the scanned width over the mean resolution (:func:`regions_global_pvalue`);
  it needs no toys and is close to the trials factor where p_local ≪ 1/N_reg.

Only numpy and scipy: the toy scans themselves are made in the scan layer
(:func:`hps_bayes.scan.toy_scans`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import ndtr, ndtri

from hps_bayes.errors import InputError
from hps_bayes.results.objects import record_from_dict, record_to_dict

__all__ = ["LookElsewhere", "global_pvalue_from_toys", "gross_vitells", "look_elsewhere", "mean_upcrossings",
           "n_regions", "regions_global_pvalue", "trials_factor", "upcrossings"]

#: Default level c0 (Z units) of the upcrossings counted for Gross–Vitells.
DEFAULT_C0 = 1.0


@dataclass(frozen=True)
class LookElsewhere:
    """Global significance of the largest local excess of a scan.

    Attributes
    ----------
    z_local_max : largest observed local Z over the scan.
    mass_at_max : its mass (GeV).
    p_local : 1 − Φ(z_local_max).
    p_global_toys : fraction of toy scans with max Z ≥ z_local_max (NaN without toy scans).
    p_global_toys_error : its binomial error; 1/N when no toy scan reached it (p is then only bounded).
    p_global_gv : Gross–Vitells estimate, p_local + ⟨N(c0)⟩ e^{−(Z² − c0²)/2} (capped at 1).
    n_upcrossings_mean : ⟨N(c0)⟩ from the toy scans.
    c0 : the upcrossing level (Z units).
    trials_factor : ∫ dm / (k σ(m)) with k = ``sigmas_per_trial``.
    p_global_trials : 1 − (1 − p_local)^trials_factor.
    n_toy_scans : number of toy scans used.
    sigmas_per_trial : k of the trials factor.
    n_regions : N_reg = W / σ̄ of the published recipe (:func:`n_regions`).
    p_global_regions : min(1, N_reg · p_local).
    """

    z_local_max: float
    mass_at_max: float
    p_local: float
    p_global_toys: float
    p_global_toys_error: float
    p_global_gv: float
    n_upcrossings_mean: float
    c0: float
    trials_factor: float
    p_global_trials: float
    n_toy_scans: int
    sigmas_per_trial: float = 1.0
    n_regions: float = float("nan")
    p_global_regions: float = float("nan")

    @property
    def z_global_toys(self) -> float:
        """Φ⁻¹(1 − p_global_toys) (inf when no toy scan reached the observed Z)."""
        return _z_of(self.p_global_toys)

    @property
    def z_global_gv(self) -> float:
        return _z_of(self.p_global_gv)

    def to_dict(self) -> dict[str, Any]:
        out = record_to_dict(self)
        out.update(z_global_toys=self.z_global_toys, z_global_gv=self.z_global_gv,
                   method="toy scans (background-only fit as truth, asymptotic local Z); Gross-Vitells "
                          "arXiv:1005.1891; trials factor = integral dm / (k sigma(m)); regions = "
                          "N_reg p_local with N_reg = W / mean sigma(m)")
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LookElsewhere:
        return record_from_dict(cls, d)


def _z_of(p: float) -> float:
    """Φ⁻¹(1 − p): inf for p = 0, NaN for NaN."""
    return float(-ndtri(p))


def _curves(z_scans: ArrayLike) -> np.ndarray:
    z = np.atleast_2d(np.asarray(z_scans, dtype=float))
    if z.ndim != 2 or z.shape[1] < 1:
        raise InputError(f"toy scans of local Z must have shape (n_scans, n_masses); got {z.shape}")
    return z


def global_pvalue_from_toys(z_max_toys: ArrayLike, z_observed: float) -> tuple[float, float]:
    """Fraction of toy scans whose maximum local Z is ≥ ``z_observed``, and its binomial error.

    Parameters
    ----------
    z_max_toys : the maximum local Z of each background-only toy scan (NaN scans are dropped).
    z_observed : the largest observed local Z.

    Returns
    -------
    (p, error) with error = √(p(1 − p)/N); when no toy reaches ``z_observed`` p = 0 and the
    error is 1/N (p is only bounded).

    Examples
    --------
    >>> global_pvalue_from_toys([0.5, 1.5, 2.5, 3.5], 2.0)
    (0.5, 0.25)
    """
    values = np.asarray(z_max_toys, dtype=float)
    values = values[np.isfinite(values)]
    n = values.size
    if n == 0:
        return float("nan"), float("nan")
    k = int(np.count_nonzero(values >= z_observed))
    p = k / n
    return p, (float(np.sqrt(p * (1.0 - p) / n)) if k else 1.0 / n)


def upcrossings(z_scans: ArrayLike, level: float) -> np.ndarray:
    """Number of upcrossings of ``level`` by each curve Z(m): steps from below ``level`` to ≥ it.

    A curve that starts above the level is not counted for its start (that case is the
    p_local term of Gross–Vitells).  NaN points break a curve (no crossing is counted across them).

    >>> upcrossings([[0.0, 2.0, 0.5, 1.5, 3.0], [2.0, 2.0, 0.0, 0.0, 0.0]], 1.0).tolist()
    [2, 0]
    """
    z = _curves(z_scans)
    below, above = z[:, :-1] < level, z[:, 1:] >= level
    return np.count_nonzero(below & above, axis=1)


def mean_upcrossings(z_scans: ArrayLike, level: float) -> float:
    """⟨N(level)⟩ over the toy scans."""
    return float(np.mean(upcrossings(z_scans, level)))


def gross_vitells(z_local: float, n_upcrossings_mean: float, c0: float) -> float:
    """p_global ≈ p_local + ⟨N(c0)⟩ exp(−(Z² − c0²)/2) (arXiv:1005.1891, Eq. 4; q = Z², one dof).

    p_local = 1 − Φ(Z) (one-sided, q0 of arXiv:1007.1727 Eq. 12).  Capped at 1.

    >>> round(gross_vitells(3.0, 5.0, 1.0), 5)
    0.09293
    """
    p_local = float(ndtr(-z_local))
    return float(min(1.0, p_local + n_upcrossings_mean * np.exp(-0.5 * (z_local**2 - c0**2))))


def trials_factor(masses: ArrayLike, sigma_m: ArrayLike, *, sigmas_per_trial: float = 1.0) -> float:
    """N_trials = ∫ dm / (k σ(m)) over the scanned masses (trapezoid rule), at least 1.

    With constant σ this is (mass range)/(k σ); k = 1 by default (one trial per resolution
    element), k = 2 for independent ±σ windows.

    >>> round(trials_factor([0.02, 0.12], [0.001, 0.001]), 6)
    100.0
    """
    m, s = np.asarray(masses, dtype=float), np.asarray(sigma_m, dtype=float)
    if m.shape != s.shape or np.any(s <= 0) or sigmas_per_trial <= 0:
        raise InputError(f"trials_factor needs masses and sigma_m of the same shape, sigma_m > 0 and "
                         f"sigmas_per_trial > 0; got shapes {m.shape}, {s.shape}, k = {sigmas_per_trial}")
    order = np.argsort(m)
    m, inv = m[order], 1.0 / s[order]
    integral = float(np.sum(0.5 * (inv[1:] + inv[:-1]) * np.diff(m))) if m.size > 1 else 0.0
    return max(1.0, integral / sigmas_per_trial)


def n_regions(masses: ArrayLike, sigma_m: ArrayLike) -> float:
    """N_reg = W / σ̄: the scanned mass width over the mean resolution of the scanned masses, at least 1.

    >>> round(n_regions([0.039, 0.179], [0.002, 0.0065]), 2)
    32.94
    """
    m, s = np.asarray(masses, dtype=float), np.asarray(sigma_m, dtype=float)
    if m.shape != s.shape or m.size == 0 or np.any(s <= 0):
        raise InputError(f"n_regions needs masses and sigma_m of the same non-empty shape and sigma_m > 0; "
                         f"got shapes {m.shape}, {s.shape}")
    return max(1.0, float((m.max() - m.min()) / s.mean()))


def regions_global_pvalue(p_local: float, masses: ArrayLike, sigma_m: ArrayLike) -> tuple[float, float]:
    """The published recipe p_global ≈ N_reg · p_local (capped at 1), with N_reg = :func:`n_regions`.

    Returns
    -------
    (N_reg, p_global)

    Examples
    --------
    >>> regions_global_pvalue(1e-3, [0.02, 0.08], [0.002, 0.002])
    (30.0, 0.03)
    """
    n_reg = n_regions(masses, sigma_m)
    return n_reg, float(min(1.0, n_reg * p_local))


def look_elsewhere(masses: ArrayLike, z_observed: ArrayLike, z_toy_scans: ArrayLike, sigma_m: ArrayLike, *,
                   c0: float = DEFAULT_C0, sigmas_per_trial: float = 1.0) -> LookElsewhere:
    """All four global p-value estimates of the scan's largest local excess.

    Parameters
    ----------
    masses : the scanned masses (GeV), shape (n,).
    z_observed : observed local Z(m), shape (n,) (NaN where a point failed: ignored).
    z_toy_scans : local Z of background-only toy scans on the same masses, shape (n_scans, n).
    sigma_m : mass resolution at each mass (GeV), shape (n,).
    c0 : upcrossing level (Z units) for Gross–Vitells; low enough that most toy scans cross it.
    sigmas_per_trial : k of the trials factor ∫ dm / (k σ(m)).

    Returns
    -------
    LookElsewhere
    """
    m, z = np.asarray(masses, dtype=float), np.asarray(z_observed, dtype=float)
    toys = _curves(z_toy_scans) if np.size(z_toy_scans) else np.zeros((0, m.size))
    if z.shape != m.shape or toys.shape[1] != m.size:
        raise InputError(f"masses {m.shape}, observed Z {z.shape} and toy scans {toys.shape} do not match: "
                         "the toy scans must be made on the observed scan's masses")
    if not np.isfinite(z).any():
        raise InputError("no finite observed local Z: nothing to correct for the look-elsewhere effect")
    i = int(np.nanargmax(z))
    z_max, p_local = float(z[i]), float(ndtr(-z[i]))
    p_toys, p_err = global_pvalue_from_toys(np.nanmax(toys, axis=1) if len(toys) else [], z_max)
    n_up = mean_upcrossings(toys, c0) if len(toys) else float("nan")
    n_trials = trials_factor(m, sigma_m, sigmas_per_trial=sigmas_per_trial)
    ok = np.isfinite(z)
    n_reg, p_regions = regions_global_pvalue(p_local, m[ok], np.asarray(sigma_m, dtype=float)[ok])
    return LookElsewhere(
        z_local_max=z_max, mass_at_max=float(m[i]), p_local=p_local, p_global_toys=p_toys,
        p_global_toys_error=p_err, p_global_gv=gross_vitells(z_max, n_up, c0) if len(toys) else float("nan"),
        n_upcrossings_mean=n_up, c0=float(c0), trials_factor=n_trials,
        p_global_trials=float(-np.expm1(n_trials * np.log1p(-p_local))), n_toy_scans=len(toys),
        sigmas_per_trial=float(sigmas_per_trial), n_regions=n_reg, p_global_regions=p_regions)
