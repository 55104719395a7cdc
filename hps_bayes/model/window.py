"""The mass window: its bins, signal template, ln m ↔ t mapping and background settings in use."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.special import log_ndtr

from hps_bayes.core import FloatArray
from hps_bayes.errors import InputError
from hps_bayes.model.basis import mean_design
from hps_bayes.model.coordinate import lnm_coordinate
from hps_bayes.model.evidence import marginal_likelihood_hyperparameters, spectrum_hyperparameters
from hps_bayes.model.settings import BackgroundSettings, EdgeMode

#: Half-width, in σ(m), of the region where a signal at the tested mass lies (95 % of it).  Its complement in a
#: window, the sidebands, is where the selection judges its truths and the scan checks the residuals.
SIGNAL_REGION = 2.0


@dataclass(frozen=True)
class Window:
    """The bins of one mass window and the fixed inputs of its likelihood."""

    mass: float
    sigma: float
    edges: FloatArray
    counts: FloatArray
    t: FloatArray
    legendre: FloatArray
    template: FloatArray
    log_offset: FloatArray
    eta: float
    lengthscale_t: float
    clipped_low: bool
    clipped_high: bool
    spurious: float = 0.0
    #: the window ends at a run of missing data (:func:`hps_bayes.analysis.grid.live_range`), not where it would
    at_gap: bool = False

    @property
    def lengthscale_sigma(self) -> float:
        """The GP lengthscale in units of σ(m)/m (``lengthscale_t`` is in the window's t ∈ [−1, 1]).

        The half width is taken as ½ ln(m_hi/m_lo), which equals
        :func:`hps_bayes.model.coordinate.lnm_half_width` up to rounding; the reported ``lengthscale``
        column is computed this way and keeps its last digits.
        """
        return float(self.lengthscale_t * 0.5 * math.log(self.edges[-1] / self.edges[0]) / (self.sigma / self.mass))

    @property
    def n_bins(self) -> int:
        return len(self.counts)

    @property
    def centers(self) -> FloatArray:
        return 0.5 * (self.edges[1:] + self.edges[:-1])

    @property
    def widths(self) -> FloatArray:
        return np.diff(self.edges)

    @property
    def sidebands(self) -> NDArray[np.bool_]:
        """The bins outside the signal region, |m_i − m| > :data:`SIGNAL_REGION` σ(m)."""
        return np.asarray(np.abs(self.centers - self.mass) > SIGNAL_REGION * self.sigma)


def window_bounds(mass: float, half_width: float, range_lo: float, range_hi: float, *,
                  edge: EdgeMode) -> tuple[float, float, bool, bool]:
    """``(lo, hi, clipped_low, clipped_high)`` of the window ``mass ± half_width`` in the range.

    ``edge="shift"`` moves a window that crosses a range end inward so that it keeps
    its full width (``mass`` then sits off-centre); only a window wider than the range
    is cut, and flagged.  ``edge="clip"`` cuts it at the range end, flagged.
    """
    lo, hi = mass - half_width, mass + half_width
    if edge == "shift" and hi - lo < range_hi - range_lo:
        if lo < range_lo:
            lo, hi = range_lo, range_lo + 2.0 * half_width
        elif hi > range_hi:
            lo, hi = range_hi - 2.0 * half_width, range_hi
    clipped_low, clipped_high = lo < range_lo, hi > range_hi
    return max(lo, range_lo), min(hi, range_hi), clipped_low, clipped_high


def turn_on_log_factor(edges: FloatArray, settings: BackgroundSettings) -> FloatArray:
    """ln Φ((m_i − m_on)/w) at the bin centres for ``turn_on="factor"`` (zeros otherwise).

    Floored at ln 1e-12: a bin far below the turn-on keeps a finite offset (its counts are ~0).
    """
    centers = 0.5 * (edges[1:] + edges[:-1])
    if settings.turn_on != "factor":
        return np.zeros(len(centers))
    if settings.turn_on_mass is None or settings.turn_on_width is None:
        raise InputError("background.turn_on=factor needs the turn-on measured first "
                         "(hps_bayes.analysis.grid.guard_turn_on) or background.turn_on_mass/turn_on_width set")
    return np.asarray(np.maximum(log_ndtr((centers - settings.turn_on_mass) / settings.turn_on_width),
                                 math.log(1e-12)))


def make_window(
    edges: FloatArray,
    counts: FloatArray,
    *,
    mass: float,
    sigma: float,
    template: FloatArray,
    settings: BackgroundSettings,
    range_lo: float,
    range_hi: float,
    spurious: float = 0.0,
) -> Window:
    """Select the bins of the window around ``mass`` and build its fixed inputs.

    ``template`` is the full-spectrum signal template; it is cut to the window.
    The window is ``[mass - k σ, mass + k σ]`` inside ``[range_lo, range_hi]``,
    shifted or clipped at the range ends as ``settings.edge`` says (:func:`window_bounds`).
    ``spurious`` is the size S (events) of the spurious-signal nuisance (0: off).
    The polynomial degree and window half-width are ``settings.at_mass(mass)``'s
    (``background.degree_table``); the mean's basis is ``settings.mean_basis``.
    """
    settings = settings.at_mass(mass)
    centers = 0.5 * (edges[1:] + edges[:-1])
    lo, hi, clipped_low, clipped_high = window_bounds(mass, settings.window_sigmas * sigma, range_lo,
                                                      range_hi, edge=settings.edge)
    sel = (centers >= lo) & (centers <= hi)
    idx = np.flatnonzero(sel)
    if len(idx) < settings.min_bins:
        raise InputError(
            f"the window around m={mass * 1e3:.2f} MeV holds {len(idx)} bins (< background.min_bins="
            f"{settings.min_bins}; the window is ±{settings.window_sigmas:g} sigma(m) = ±{settings.window_sigmas * sigma * 1e3:.2f} "
            f"MeV): use a larger background.window_sigmas, finer bins (a smaller dataset.rebin), or a mass inside "
            f"the analysed range [{range_lo * 1e3:.2f}, {range_hi * 1e3:.2f}] MeV"
        )
    w_edges = edges[idx[0]: idx[-1] + 2]
    t, half = lnm_coordinate(w_edges)
    widths = np.diff(w_edges)
    ell_u, eta = settings.lengthscale * sigma / mass, settings.eta
    log_offset = np.log(widths / widths.mean()) + turn_on_log_factor(w_edges, settings)
    w_counts = np.asarray(counts[idx], dtype=float)
    if settings.hyper == "marginal":
        ell_min = settings.lengthscale_min * sigma / mass
        if settings.hyper_scope == "spectrum":
            eta, ell_u = spectrum_hyperparameters(edges, counts, range_lo, range_hi, settings,
                                                  ell_min=settings.lengthscale_min_lnm, ell_fixed=ell_u)
        else:
            # with a signal at the tested mass free: it must not switch the GP on to absorb it
            fit = marginal_likelihood_hyperparameters(
                t, w_counts, log_offset, degree=settings.poly_degree, settings=settings,
                ell_min=ell_min / half, ell_fixed=ell_u / half if settings.hyper_free == "eta" else None,
                signal=np.asarray(template[idx], float))
            eta, ell_u = fit.eta, fit.lengthscale * half
    return Window(
        mass=mass, sigma=sigma, edges=w_edges, counts=w_counts, t=t,
        legendre=mean_design(w_edges, settings.poly_degree, settings.mean_basis), template=np.asarray(template[idx], float),
        log_offset=log_offset, eta=eta,
        lengthscale_t=ell_u / half,
        clipped_low=clipped_low, clipped_high=clipped_high, spurious=float(spurious),
    )
