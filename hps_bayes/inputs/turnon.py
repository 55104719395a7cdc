"""The trigger/acceptance turn-on of a spectrum, measured from the spectrum itself.

Every HPS spectrum rises from a turn-on to a peak before it falls.  Where the turn-on
is as sharp as the mass resolution, no smooth background over a ±10σ(m) window can
tell it from a signal: the spurious-signal study (``docs/background_study.md``) measured
fake signals of up to 9 σ_A for a turn-on of width ≈ σ(m) inside the window, and
−0.6…−1 σ_A at the 2016 peak, whose ±10σ window reaches down into the turn-on.

This module fits the form HPS published for its 2015 background,

    ρ(m) = Φ((m − m_on)/w) · exp(Σ_k c_k T_k(x)),   T_k Chebyshev of degree 7 in m,

to the spectrum's counts (χ² with Neyman weights, :func:`fit_shape`) and reports the
turn-on position m_on, its width w and the *turn-on end* m_on + n_w·w.  The background
model's range guard (``background.turn_on``, :func:`hps_bayes.scan.guard_turn_on`) starts
the fit range there when the turn-on is sharp, w < κ·σ(m_on); a wide turn-on (2015:
w ≈ 9σ) is smooth on the scale of the signal and is left to the background model.

The turn-on fit of a spectrum is kept in the user's cache
(:func:`~hps_bayes.results.files.user_cache_dir`) under the hash of the spectrum, this module's
source and the NumPy/SciPy versions, so that later scans of it skip the least-squares fit and the
import of :mod:`scipy.optimize` (0.1 s and 16 MB of every scan's start).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy
from numpy.typing import NDArray
from scipy.special import ndtr

from hps_bayes.core import FloatArray
from hps_bayes.errors import ConfigError, InputError
from hps_bayes.inputs.validation import dead_runs
from hps_bayes.results.files import atomic_write_text, content_hash, user_cache_dir
from hps_bayes.results.objects import record_to_dict

log = logging.getLogger(__name__)

#: Chebyshev degree of the ``expcheb`` form.
EXPCHEB_DEGREE = 7
#: Legendre degree (in ln m) of the ``smooth`` form: flexible enough to follow real spectra's
#: few-percent structure at 5–20 MeV scales, still smooth on the scale of σ(m).
SMOOTH_DEGREE = 16
#: Legendre degree of the ``flexible`` form: the same with more freedom, for structure ``smooth`` resolves in part.
FLEXIBLE_DEGREE = 24
#: Shape families :func:`fit_shape` knows (ln ρ without the bin width; turn-on parameters first).
SHAPES: tuple[str, ...] = ("expcheb", "powerlaw", "dijet", "smooth", "flexible")

_LEGENDRE_DEGREE = {"smooth": SMOOTH_DEGREE, "flexible": FLEXIBLE_DEGREE}


def erf_turn_on(m: FloatArray, m_on: float, log_w: float) -> FloatArray:
    """Φ((m − m_on)/w), w = exp(log_w)."""
    return np.asarray(ndtr((m - m_on) / math.exp(log_w)))


def shape_model(family: str, lo: float, hi: float) -> tuple[Callable[[FloatArray, FloatArray], FloatArray], int]:
    """ln ρ(m; p) of a family on the range [lo, hi] (without the bin width) and its number of shape
    parameters; p = (m_on, ln w, shape parameters...)."""
    mid = 0.5 * (lo + hi)
    if family == "expcheb":
        def expcheb(m: FloatArray, p: FloatArray) -> FloatArray:
            x = 2.0 * (m - lo) / (hi - lo) - 1.0
            return np.asarray(np.polynomial.chebyshev.chebval(x, p[2:]) + np.log(erf_turn_on(m, p[0], p[1]) + 1e-300))
        return expcheb, EXPCHEB_DEGREE + 1
    if family in _LEGENDRE_DEGREE:
        lnlo, lnhi = math.log(lo), math.log(hi)

        def smooth(m: FloatArray, p: FloatArray) -> FloatArray:
            x = 2.0 * (np.log(m) - lnlo) / (lnhi - lnlo) - 1.0
            return np.asarray(np.polynomial.legendre.legval(x, p[2:]) + np.log(erf_turn_on(m, p[0], p[1]) + 1e-300))
        return smooth, _LEGENDRE_DEGREE[family] + 1
    if family == "powerlaw":
        def powerlaw(m: FloatArray, p: FloatArray) -> FloatArray:
            r = m / mid
            poly = p[2] + p[3] * np.log(r) + p[4] * r + p[5] * r**2 + p[6] / r
            return np.asarray(poly + np.log(erf_turn_on(m, p[0], p[1]) + 1e-300))
        return powerlaw, 5
    if family == "dijet":
        def dijet(m: FloatArray, p: FloatArray) -> FloatArray:
            x = m / (2.0 * hi)
            lx = np.log(x)
            on = -np.logaddexp(0.0, -(m - p[0]) / math.exp(p[1]))  # ln of a logistic turn-on
            return np.asarray(p[2] - (p[3] + p[4] * lx) * lx + p[5] * np.log1p(-x) + on)
        return dijet, 4
    raise ConfigError(f"shape family {family!r} is not one of {list(SHAPES)}")


@dataclass(frozen=True)
class ShapeFit:
    """A family fitted to a spectrum: parameters, expected counts on its bins, χ²."""

    family: str
    params: FloatArray
    expected: FloatArray
    chi2: float
    n_bins: int

    @property
    def m_on(self) -> float:
        return float(self.params[0])

    @property
    def width(self) -> float:
        return math.exp(float(self.params[1]))


def turn_on_bounds(lo: float, hi: float) -> tuple[tuple[float, float], tuple[float, float]]:
    """The bounds :func:`fit_shape` puts on the turn-on's m_on and ln w (GeV) on the range [lo, hi]."""
    return (lo - 0.05, hi), (math.log(2e-4), math.log(0.05))


def fit_shape(edges: FloatArray, counts: FloatArray, family: str, *,
              turn_on: tuple[float, float] | None = None) -> ShapeFit:
    """Fit ``family`` (:func:`shape_model`) to binned ``counts`` by least squares (Neyman weights).

    ``turn_on``: starting (m_on, w) in GeV; default 5 MeV below the range start, 2 MeV wide.
    """
    edges, counts = np.asarray(edges, float), np.asarray(counts, float)
    lo, hi = float(edges[0]), float(edges[-1])
    m, w = 0.5 * (edges[1:] + edges[:-1]), np.diff(edges)
    model, n_shape = shape_model(family, lo, hi)
    on = turn_on or (lo - 0.005, 0.002)
    y = np.log(np.maximum(counts, 0.5) / w)
    use = ~missing_bins(counts)
    keep = (m > on[0] + 3 * on[1]) & use
    if family == "expcheb":
        x = 2.0 * (m - lo) / (hi - lo) - 1.0
        start = np.polynomial.chebyshev.chebfit(x[keep], y[keep], EXPCHEB_DEGREE)
    elif family in _LEGENDRE_DEGREE:
        x = 2.0 * (np.log(m) - math.log(lo)) / (math.log(hi) - math.log(lo)) - 1.0
        start = np.polynomial.legendre.legfit(x[keep], y[keep], _LEGENDRE_DEGREE[family])
    elif family == "dijet":
        lx = np.log(m / (2.0 * hi))
        design = np.column_stack([np.ones_like(lx), -lx, -lx**2, np.log1p(-m / (2.0 * hi))])
        start, *_ = np.linalg.lstsq(design[keep], y[keep], rcond=None)
    else:
        r = m / (0.5 * (lo + hi))
        design = np.column_stack([np.ones_like(r), np.log(r), r, r**2, 1.0 / r])
        start, *_ = np.linalg.lstsq(design[keep], y[keep], rcond=None)
    p0 = np.concatenate([[on[0], math.log(on[1])], start])
    err = np.sqrt(np.maximum(counts, 1.0))

    def resid(p: FloatArray) -> FloatArray:
        return np.asarray((w[use] * np.exp(model(m[use], p)) - counts[use]) / err[use])

    from scipy.optimize import least_squares  # 0.1 s: imported only where a fit is made

    (on_lo, on_hi), (w_lo, w_hi) = turn_on_bounds(lo, hi)
    bounds = ([on_lo, w_lo] + [-np.inf] * n_shape, [on_hi, w_hi] + [np.inf] * n_shape)
    # the degree-24 family with tolerances well below the default 1e-8: it otherwise stops early on a flat
    # stretch, at a χ² one unit above the minimum, and a rounding-level change of the input moved the shape by
    # 0.4 % (tests/studies/test_selection.py); the other families converge to 1e-6 with the defaults
    tight = {"ftol": 1e-14, "xtol": 1e-14, "gtol": 1e-12} if family == "flexible" else {}
    fit = least_squares(resid, p0, bounds=bounds, x_scale="jac", max_nfev=4000, **tight)
    return shape_fit(edges, counts, family, np.array(fit.x))


def shape_fit(edges: FloatArray, counts: FloatArray, family: str, params: FloatArray) -> ShapeFit:
    """The :class:`ShapeFit` of ``family`` with parameters ``params`` (expected counts, Neyman χ²)."""
    edges, counts = np.asarray(edges, float), np.asarray(counts, float)
    m, w = 0.5 * (edges[1:] + edges[:-1]), np.diff(edges)
    model, _ = shape_model(family, float(edges[0]), float(edges[-1]))
    expected = w * np.exp(model(m, params))
    use = ~missing_bins(counts)
    chi2 = float(np.sum(((expected - counts)[use] / np.sqrt(np.maximum(counts[use], 1.0))) ** 2))
    return ShapeFit(family, np.asarray(params, float), expected, chi2, int(use.sum()))


def missing_bins(counts: FloatArray) -> NDArray[np.bool_]:
    """The bins of interior runs of empty bins that their neighbours say are missing data
    (:func:`hps_bayes.inputs.validation.dead_runs`): left out of the shape fits, which would otherwise
    bend the whole shape towards them (an empty bin weighs as much as one with one count). Runs at
    either end are kept: below a turn-on the spectrum is empty, and those zeros place the turn-on."""
    out = np.zeros(len(counts), dtype=bool)
    for first, stop, _ in dead_runs(np.asarray(counts, dtype=float)):
        if first > 0 and stop < len(counts):
            out[first:stop] = True
    return out


def _cache_key(edges: FloatArray, counts: FloatArray) -> str:
    stamp = json.dumps([content_hash(__file__), content_hash(edges, counts), np.__version__, scipy.__version__])
    return hashlib.sha256(stamp.encode()).hexdigest()[:32]


#: Largest distance between the half-maximum points of the data's rising edge and of the fitted turn-on
#: (:func:`rising_edge` of each) before the turn-on fit is refused.  Measured on the bundled demos, their
#: smooth and structured variants and spectra with a second turn-on at 22-35 MeV: at most 0.5 MeV (one bin).
TURN_ON_MISS = 0.002


def rising_edge(edges: FloatArray, counts: FloatArray) -> float | None:
    """Where the spectrum's density (smoothed over 5 bins) first reaches half its maximum, when it starts below
    that and peaks inside the range (a turn-on the data show); None when it falls from the range start."""
    density = np.asarray(counts, float) / np.diff(edges)
    if density.size < 10:
        return None
    smooth = np.convolve(density, np.ones(5) / 5.0, mode="same")[2:-2]
    peak = int(np.argmax(smooth))
    if peak == 0 or smooth[0] >= 0.5 * smooth[peak]:
        return None
    first = int(np.argmax(smooth >= 0.5 * smooth[peak])) + 2
    return float(0.5 * (edges[first] + edges[first + 1]))


def turn_on_fit(edges: FloatArray, counts: FloatArray) -> ShapeFit:
    """``fit_shape(edges, counts, "expcheb")``, from the user's cache when this spectrum was fitted before.

    The fit starts from a turn-on 5 MeV below the range and, where the data show a rising edge inside the
    range (:func:`rising_edge`), also from there; the smaller χ² is kept.  From below the range alone a
    turn-on at 25-35 MeV of a spectrum starting at 15 MeV was fitted at m_on = −35 to −2 MeV (χ²/bin 20-230)."""
    folder = user_cache_dir("turnon")
    path = None if folder is None else folder / f"expcheb_{_cache_key(edges, counts)}.json"
    if path is not None and path.is_file():
        try:
            params = np.asarray(json.loads(path.read_text())["params"], dtype=float)
            return shape_fit(edges, counts, "expcheb", params)
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable: fitted again below
    fit = fit_shape(edges, counts, "expcheb")
    edge = rising_edge(edges, counts)
    if edge is not None:
        other = fit_shape(edges, counts, "expcheb", turn_on=(edge, 0.002))
        if other.chi2 < fit.chi2:
            fit = other
    if path is not None:
        try:
            atomic_write_text(path, json.dumps({"params": fit.params.tolist()}))
        except OSError as err:
            log.debug("turn-on fit not cached in %s (%s)", path, err)
    return fit


@dataclass(frozen=True)
class TurnOn:
    """The measured turn-on and what the range guard makes of it (GeV).

    ``end`` = m_on + widths·w; ``sharp``: w < sharpness·σ(m_on); ``fit_lo`` is where the
    background model's range starts: ``end`` when the turn-on is sharp and ends inside the
    range, else the range start.
    """

    m_on: float
    width: float
    sigma_at_turn_on: float
    end: float
    sharp: bool
    range_lo: float
    fit_lo: float
    chi2_per_bin: float

    @property
    def guarded(self) -> bool:
        return self.fit_lo > self.range_lo

    def to_dict(self) -> dict[str, Any]:
        return record_to_dict(self) | {"guarded": self.guarded}


def measure_turn_on(edges: FloatArray, counts: FloatArray, sigma: Callable[[float], float], *,
                    widths: float, sharpness: float) -> TurnOn:
    """Fit the ``expcheb`` form to the spectrum and decide where the background model may start.

    ``sigma``: the mass resolution σ(m) in GeV; ``widths`` = n_w; ``sharpness`` = κ.
    """
    edges, counts = np.asarray(edges, float), np.asarray(counts, float)
    if not np.isfinite(counts).all() or counts.sum() <= 0:
        raise InputError("the turn-on cannot be measured on an empty spectrum; set background.turn_on=off")
    fit = turn_on_fit(edges, counts)
    lo, hi = float(edges[0]), float(edges[-1])
    edge, fit_edge = rising_edge(edges, counts), rising_edge(edges, fit.expected)
    if edge is not None and (fit_edge is None or abs(fit_edge - edge) > TURN_ON_MISS):
        where = "has none" if fit_edge is None else f"reaches it at {fit_edge * 1e3:.2f} MeV"
        raise InputError(
            f"the turn-on fit does not follow the spectrum's rising edge: the data reach half their peak density at "
            f"{edge * 1e3:.2f} MeV, the fit {where}, with m_on = {fit.m_on * 1e3:.2f} MeV (width "
            f"{fit.width * 1e3:.2f} MeV, chi2/bin {fit.chi2 / fit.n_bins:.3g}); the spectrum's shape below it is not an "
            f"error-function turn-on of a smooth spectrum. Start the search above it by hand "
            f"(background.fit_range_min=<GeV above the turn-on>), give background.turn_on_mass and "
            f"turn_on_width (GeV) with background.turn_on=factor, or background.turn_on=off")
    sigma_on = float(sigma(min(max(fit.m_on, lo), hi)))
    end = fit.m_on + widths * fit.width
    sharp = fit.width < sharpness * sigma_on
    fit_lo = end if sharp and end > lo else lo
    result = TurnOn(m_on=fit.m_on, width=fit.width, sigma_at_turn_on=sigma_on, end=end, sharp=bool(sharp),
                    range_lo=lo, fit_lo=float(fit_lo), chi2_per_bin=fit.chi2 / fit.n_bins)
    log.info("turn-on: m_on %.2f MeV, width %.2f MeV (%.2f sigma(m)), end %.2f MeV -> background fit range "
             "starts at %.2f MeV", result.m_on * 1e3, result.width * 1e3, result.width / sigma_on, end * 1e3,
             result.fit_lo * 1e3)
    return result
