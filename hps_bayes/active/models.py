"""Signal models in (m, ε²) for the exclusion-contour search, and the per-mass exact baseline.

The shipped model (:class:`WedgeSignalModel`) has a lifetime-dependent
acceptance, so its exclusion in (log m, log ε²) is a wedge (two branches that
meet at a tip), not the single line of a prompt search:

    N(m, ε²) = ε² · K(m) · L · acc(m, ε²),
    K(m)     = 3π m f_rad(m) ρ(m) / (2 N_eff α)                (physics.yield_per_eps2),
    acc      = exp(−z_min/γcτ) − exp(−z_max/γcτ)                (decay inside [z_min, z_max]),
    γcτ      = 0.8 cm · (E_beam/10 GeV) · (10⁻⁸/ε²) · (100 MeV/m)²  (A' → e+e−; Bjorken et al.,
               arXiv:0906.0580, Eq. 9, with the A' energy ≈ E_beam),

with L (``lumi_scale``) the displaced search's luminosity × efficiency relative to
the demo spectrum's, ρ(m) the demo background density (:func:`hps_bayes.demo.demo_density`) and
A_up(m) the per-mass 95% CL upper limit on the yield: a smooth function
A_up = a_scale·sqrt(ρ(m)·σ(m)) + a_floor, or interpolated (in log) from a scan's
``(mass, A_up)`` table.  A point is excluded when N/A_up ≥ 1.

The surrogate's target is the capped log of the signal-strength limit,
    g(m, ε²) = min(log10(A_up/N), cap),     excluded ⇔ g ≤ 0,
which is far easier to model than log CLs.

Where N is a pure ε² scaling (``lifetime=False``: a prompt search), the
contour is solved exactly per mass (ε²_up = A_up/(K·L)) and no active
learning is needed: :func:`is_pure_eps2_scaling`, :func:`per_mass_eps2_limit`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from hps_bayes.core import FloatArray
from hps_bayes.errors import ConfigError
from hps_bayes.physics.demo import demo_density
from hps_bayes.physics.presets import load_preset
from hps_bayes.physics.signal import f_rad, sigma_m, yield_per_eps2

_preset = functools.lru_cache(maxsize=8)(load_preset)

YieldFunction = Callable[[FloatArray, FloatArray], FloatArray]


@dataclass(frozen=True)
class WedgeSignalModel:
    """Expected displaced-vertex signal yield N(m, ε²) and the per-mass limit A_up(m) (module docstring)."""

    dataset: str = "demo"
    shape: str = "2015"
    e_beam_gev: float = 1.056
    z_min_mm: float = 10.0
    z_max_mm: float = 80.0
    lumi_scale: float = 400.0
    a_scale: float = 0.1
    a_floor: float = 3.0
    cap: float = 2.0
    lifetime: bool = True
    a_up_masses: tuple[float, ...] = ()
    a_up_values: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not 0 < self.z_min_mm < self.z_max_mm:
            raise ConfigError(f"need 0 < z_min_mm < z_max_mm, got {self.z_min_mm}, {self.z_max_mm}")
        if not (self.lumi_scale > 0 and self.e_beam_gev > 0 and self.cap > 0):
            raise ConfigError(f"lumi_scale, e_beam_gev and cap must be > 0, got {self.lumi_scale}, {self.e_beam_gev}, {self.cap}")
        if len(self.a_up_masses) != len(self.a_up_values) or len(self.a_up_masses) == 1:
            raise ConfigError("a_up_masses and a_up_values must have the same length (>= 2, or both empty)")

    def k_per_eps2(self, mass: FloatArray) -> FloatArray:
        """K(m): prompt signal yield per unit ε² (events)."""
        m = np.asarray(mass, dtype=np.float64)
        preset = _preset(self.dataset)
        rho = demo_density(self.shape)(m)  # type: ignore[arg-type]
        return yield_per_eps2(m, f_rad(m, preset), rho, n_eff=preset.n_eff, alpha_em=preset.alpha_em)

    def gamma_ctau_mm(self, mass: FloatArray, eps2: FloatArray) -> FloatArray:
        """Lab-frame decay length γcτ in mm (module docstring)."""
        m, e2 = np.asarray(mass, dtype=np.float64), np.asarray(eps2, dtype=np.float64)
        return np.asarray(8.0 * (self.e_beam_gev / 10.0) * (1e-8 / e2) * (0.1 / m) ** 2, dtype=np.float64)

    def acceptance(self, mass: FloatArray, eps2: FloatArray) -> FloatArray:
        """Fraction of decays inside [z_min, z_max] (1 for a prompt model)."""
        if not self.lifetime:
            return np.ones(np.broadcast(np.asarray(mass), np.asarray(eps2)).shape)
        decay = self.gamma_ctau_mm(mass, eps2)
        return np.asarray(np.exp(-self.z_min_mm / decay) - np.exp(-self.z_max_mm / decay), dtype=np.float64)

    def expected_yield(self, mass: FloatArray, eps2: FloatArray) -> FloatArray:
        """N(m, ε²) = ε² K(m) L acc(m, ε²)."""
        e2 = np.asarray(eps2, dtype=np.float64)
        return np.asarray(e2 * self.k_per_eps2(mass) * self.lumi_scale * self.acceptance(mass, e2), dtype=np.float64)

    def a_up(self, mass: FloatArray) -> FloatArray:
        """A_up(m): interpolated in log from the table when given, else a·sqrt(ρσ) + floor."""
        m = np.asarray(mass, dtype=np.float64)
        if self.a_up_masses:
            xs, ys = np.log(self.a_up_masses), np.log(self.a_up_values)
            return np.asarray(np.exp(np.interp(np.log(m), xs, ys)), dtype=np.float64)
        rho = demo_density(self.shape)(m)  # type: ignore[arg-type]
        return np.asarray(self.a_scale * np.sqrt(rho * sigma_m(m, _preset(self.dataset))) + self.a_floor)

    def log_mu95(self, mass: FloatArray, eps2: FloatArray) -> FloatArray:
        """g = min(log10(A_up/N), cap): the surrogate's target; excluded where g ≤ 0."""
        n = self.expected_yield(mass, eps2)
        with np.errstate(divide="ignore"):
            g = np.log10(self.a_up(mass)) - np.log10(np.maximum(n, 1e-300))
        return np.asarray(np.minimum(g, self.cap), dtype=np.float64)

    def __call__(self, point: Sequence[float]) -> float:
        """The objective of one point (m [GeV], ε²)."""
        return float(self.log_mu95(np.array(point[0]), np.array(point[1])))


def is_pure_eps2_scaling(yield_fn: YieldFunction, masses: ArrayLike, eps2: ArrayLike, *,
                         rtol: float = 1e-6) -> bool:
    """True when N(m, c·ε²) = c·N(m, ε²) at every probed (m, ε²) (c = 3.7): a prompt model.

    Then one limit per mass fixes the ε² crossing exactly (:func:`per_mass_eps2_limit`);
    active learning in (m, ε²) cannot beat it.
    """
    m, e2 = np.meshgrid(np.asarray(masses, float), np.asarray(eps2, float), indexing="ij")
    base = np.asarray(yield_fn(m, e2), float)
    scaled = np.asarray(yield_fn(m, 3.7 * e2), float)
    ok = np.isfinite(base) & (base > 0)
    return bool(ok.any() and np.allclose(scaled[ok], 3.7 * base[ok], rtol=rtol, atol=0.0))


def per_mass_eps2_limit(yield_fn: YieldFunction, a_up: Callable[[FloatArray], FloatArray],
                        masses: ArrayLike) -> FloatArray:
    """Exact ε² limit per mass for a pure-scaling yield: ε²_up(m) = A_up(m) / N(m, ε²=1)."""
    m = np.asarray(masses, dtype=np.float64)
    return np.asarray(a_up(m) / yield_fn(m, np.ones_like(m)), dtype=np.float64)


def truth_grid(model: Any, bounds: Sequence[tuple[float, float]], n: int = 60) -> tuple[FloatArray, ...]:
    """A log-spaced n×n grid over the (m, ε²) box and the model's target on it: (masses, eps2, g[i_m, i_eps2])."""
    (m_lo, m_hi), (e_lo, e_hi) = bounds
    masses = np.geomspace(m_lo, m_hi, n)
    eps2 = np.geomspace(e_lo, e_hi, n)
    mm, ee = np.meshgrid(masses, eps2, indexing="ij")
    return masses, eps2, np.asarray(model.log_mu95(mm, ee), dtype=np.float64)


def contour_error_decades(truth: FloatArray, estimate: FloatArray, eps2: FloatArray, *,
                          threshold: float = 0.0) -> FloatArray:
    """Per mass (rows), the length in decades of ε² where the two excluded sets differ.

    For a wedge this sums both branches' errors; 0 where both agree.
    """
    wrong = (truth <= threshold) != (estimate <= threshold)
    step = math.log10(float(eps2[-1]) / float(eps2[0])) / (len(eps2) - 1)
    return np.asarray(wrong.sum(axis=1) * step, dtype=np.float64)
