"""The PyMC model of one mass window and its compiled likelihood.

For a mass hypothesis m the window holds the bins with ``|x - m| <= k σ(m)``.
In the window coordinate ``t`` (ln x mapped linearly onto [-1, 1]; the mass
resolution is nearly constant in ln x) the expected counts are

    μ_i = exp( o_i + Σ_k c_k P_k(t_i) + Σ_j φ_j(t_i) √S(λ_j; η, ℓ) β_j ) + A T_i,

(plus, where switched on, a spurious-signal nuisance ``S·ν·T_i`` with
``ν ~ N(ν⁰, 1)`` and S the measured spurious yield at m), with
``o_i = ln(w_i / w_ref)`` for the bin widths, ``P_k`` Legendre
polynomials (a GP with explicit basis functions, Rasmussen & Williams §2.7:
the coefficients ``c`` are fitted jointly with A and unconstrained), ``φ_j``,
``S`` the Hilbert-space GP approximation of PyMC (``pm.gp.HSGP``, Solin &
Särkkä; Riutort-Mayol et al. 2023) with amplitude η and lengthscale ℓ, and
``β_j ~ N(β⁰_j, 1)`` its weights.  ``T_i`` is the binned Gaussian signal
template and A the total signal yield.  Counts are Poisson.

The model is built once per process for a given :class:`BackgroundSettings`;
its negative log-posterior (flat priors on A and c, so the frequentist
likelihood with the GP prior as Gaussian constraint), gradient and Hessian
are compiled once by PyTensor and serve every window: all window arrays
(``pm.Data`` containers with dynamic shapes) are inputs of the compiled
function, so no state is shared between windows.

Parameters: ``θ = (A, c_0..c_d, β_1..β_m, ν)``; A is at index 0.  The
constraint centres ``(β⁰, ν⁰)`` are the auxiliary data (``FitData.aux``).
With S = 0 the nuisance ν decouples (its constraint alone fixes it at ν⁰).
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
from numpy.polynomial import legendre

from hps_bayes.core import FitData, FloatArray
from hps_bayes.errors import ConfigError, InputError

log = logging.getLogger(__name__)

Kernel = Literal["expquad", "matern52", "matern32"]
EdgeMode = Literal["shift", "clip"]
SpuriousMode = Literal["off", "table"]
HyperMode = Literal["fixed", "marginal"]
HyperScope = Literal["spectrum", "window"]
HyperFree = Literal["both", "eta"]
TurnOnMode = Literal["guard", "off"]

#: Folder of the per-dataset spurious-signal tables ``spurious_<dataset>.csv``.
SPURIOUS_DIR = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class BackgroundSettings:
    """How the background of a window is modelled.

    Attributes
    ----------
    poly_degree : degree d of the Legendre mean in t (d + 1 free coefficients).
    n_basis : number m of HSGP basis functions.
    c : HSGP boundary factor; L = c (the window spans t ∈ [-1, 1]).
    kernel : GP covariance ("expquad", "matern52", "matern32").
    eta : GP amplitude η in units of ln(counts).
    lengthscale : GP lengthscale ℓ in units of σ(m)/m (the resolution in ln m).
    window_sigmas : half-width k of the window in units of σ(m); a value larger than the
        range (e.g. 1000) fits the whole spectrum at every mass.
    min_bins : windows with fewer bins are not fitted.
    edge : what happens where ``m ± k σ`` crosses the range end: ``"shift"`` keeps the full
        width 2kσ inside the range (the mass sits off-centre; flagged only when the range is
        narrower than the window), ``"clip"`` cuts the window at the range end (flagged).
    spurious : ``"table"`` switches on the spurious-signal nuisance with the size measured by
        ``task=spurious`` (``spurious_<dataset>.csv``); ``"off"`` leaves it out.
    spurious_table : path of a table to use instead of the dataset's own ("" = the dataset's).
    hyper : ``"fixed"``: η, ℓ as set; ``"marginal"``: chosen by the Laplace-approximated marginal
        likelihood of the background-only fit (:func:`marginal_likelihood_hyperparameters`).
    hyper_scope : ``"spectrum"``: once per spectrum, from the fit of the whole range (Legendre of
        degree ``hyper_degree`` in the range's ln m + HSGP); ``"window"``: per window, from the
        window's own background-only fit.
    hyper_free : ``"both"``: η and ℓ (ℓ ≥ ``lengthscale_min`` σ(m)/m); ``"eta"``: η only, ℓ fixed
        at ``lengthscale``.
    hyper_degree : Legendre degree of the whole-range fit of ``hyper_scope="spectrum"``
        (-1: ``poly_degree``).
    lengthscale_min : lower bound of ℓ (units of σ(m)/m) for ``hyper_free="both"``, per window.
    lengthscale_min_lnm : the same bound in ln m for ``hyper_scope="spectrum"`` (one bound for the
        whole range, so that η, ℓ are the same at every mass; 0.1 = 2σ(m)/m of 2015).
    turn_on : ``"guard"``: the spectrum's turn-on is measured (:mod:`hps_bayes.turnon`) and, where
        it is sharp (width < ``turn_on_sharpness`` σ(m)), the fit range starts at its end,
        m_on + ``turn_on_widths``·w (:func:`hps_bayes.scan.guard_turn_on`); ``"off"``: the
        dataset's range as it is.
    turn_on_widths, turn_on_sharpness : n_w and κ of the guard.
    fit_range_min : where the background fit range starts (GeV); set by the guard from the data
        (``None``: not measured yet) or by hand (the guard then keeps it).
    """

    poly_degree: int = 10
    n_basis: int = 20
    c: float = 1.5
    kernel: Kernel = "expquad"
    eta: float = 0.0
    lengthscale: float = 4.0
    window_sigmas: float = 10.0
    min_bins: int = 15
    edge: EdgeMode = "shift"
    spurious: SpuriousMode = "table"
    spurious_table: str = ""
    hyper: HyperMode = "fixed"
    hyper_scope: HyperScope = "spectrum"
    hyper_free: HyperFree = "both"
    hyper_degree: int = -1
    lengthscale_min: float = 2.0
    lengthscale_min_lnm: float = 0.1
    turn_on: TurnOnMode = "guard"
    turn_on_widths: float = 2.0
    turn_on_sharpness: float = 4.0
    fit_range_min: float | None = None

    def __post_init__(self) -> None:
        if self.edge not in ("shift", "clip"):
            raise ConfigError(f"background.edge={self.edge!r}: use 'shift' (full-width window kept inside "
                              f"the range) or 'clip' (window cut at the range end)")
        if self.spurious not in ("off", "table"):
            raise ConfigError(f"background.spurious={self.spurious!r}: use 'off' or 'table' (the measured "
                              f"spurious signal of task=spurious as a constrained nuisance)")
        if self.hyper not in ("fixed", "marginal") or self.hyper_scope not in ("spectrum", "window") \
                or self.hyper_free not in ("both", "eta"):
            raise ConfigError(f"background.hyper={self.hyper!r}, hyper_scope={self.hyper_scope!r}, "
                              f"hyper_free={self.hyper_free!r}: use hyper fixed|marginal, hyper_scope "
                              f"spectrum|window, hyper_free both|eta")
        if self.hyper_degree < -1 or self.hyper_degree > 20 or self.lengthscale_min <= 0 \
                or self.lengthscale_min_lnm <= 0:
            raise ConfigError(f"background.hyper_degree={self.hyper_degree} (use -1..20), lengthscale_min="
                              f"{self.lengthscale_min} (use > 0)")
        if self.poly_degree < 0 or self.poly_degree > 15:
            raise ConfigError(f"background.poly_degree={self.poly_degree}: use 0..15")
        if self.turn_on not in ("guard", "off") or not self.turn_on_widths >= 0 \
                or not self.turn_on_sharpness >= 0:
            raise ConfigError(f"background.turn_on={self.turn_on!r}, turn_on_widths={self.turn_on_widths}, "
                              f"turn_on_sharpness={self.turn_on_sharpness}: use turn_on guard|off and "
                              f"non-negative widths and sharpness")
        if self.n_basis < 1:
            raise ConfigError(f"background.n_basis={self.n_basis}: use at least 1 basis function")
        if self.c <= 1.0:
            raise ConfigError(f"background.c={self.c}: the HSGP boundary factor must exceed 1 (1.5 is usual)")
        if self.kernel not in ("expquad", "matern52", "matern32"):
            raise ConfigError(f"background.kernel={self.kernel!r}: use expquad, matern52 or matern32")
        if self.eta < 0 or self.lengthscale <= 0 or self.window_sigmas <= 0:
            raise ConfigError(
                f"background eta={self.eta}, lengthscale={self.lengthscale}, "
                f"window_sigmas={self.window_sigmas}: eta >= 0 and the others > 0 are required"
            )

    def compile_key(self) -> tuple[int, int, float, str]:
        """The settings that fix the compiled graph (the others are data)."""
        return (self.poly_degree, self.n_basis, self.c, self.kernel)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackgroundSettings:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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

    @property
    def lengthscale_sigma(self) -> float:
        """The GP lengthscale in units of σ(m)/m (``lengthscale_t`` is in the window's t ∈ [−1, 1])."""
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


def _cov_func(kernel: Kernel, eta: Any, ell: Any) -> Any:
    cls = {"expquad": pm.gp.cov.ExpQuad, "matern52": pm.gp.cov.Matern52, "matern32": pm.gp.cov.Matern32}
    return eta**2 * cls[kernel](1, ls=ell)


class CompiledWindowModel:
    """The PyMC window model, compiled once; evaluate it on any :class:`Window`."""

    def __init__(self, settings: BackgroundSettings) -> None:
        self.settings = settings
        d, m = settings.poly_degree, settings.n_basis
        self.n_params = 1 + (d + 1) + m + 1
        self.slices = {"A": slice(0, 1), "coef": slice(1, d + 2), "beta": slice(d + 2, d + 2 + m),
                       "spurious": slice(d + 2 + m, d + 3 + m)}
        self.n_aux = m + 1
        self.pymc_model = self._build_model()
        self._fn_full, self._fn_value, self._fn_parts = self._compile()

    def _build_model(self) -> pm.Model:
        s = self.settings
        d, m = s.poly_degree, s.n_basis
        t0 = np.linspace(-1.0, 1.0, 16)
        with pm.Model(check_bounds=False) as model:
            t = pm.Data("t", t0)
            basis = pm.Data("legendre", legendre.legvander(t0, d))
            template = pm.Data("template", np.zeros_like(t0))
            log_offset = pm.Data("log_offset", np.zeros_like(t0))
            counts = pm.Data("counts", np.zeros_like(t0))
            beta_centre = pm.Data("beta_centre", np.zeros(m + 1))
            eta = pm.Data("eta", 0.1)
            ell = pm.Data("lengthscale", 0.5)
            spurious_size = pm.Data("spurious_size", 0.0)
            amp = pm.Flat("A")
            coef = pm.Flat("coef", shape=d + 1)
            gp = pm.gp.HSGP(m=[m], L=[s.c], cov_func=_cov_func(s.kernel, eta, ell))
            phi, sqrt_psd = gp.prior_linearized(X=t[:, None])
            beta = pm.Normal("beta", mu=beta_centre[:m], sigma=1.0, shape=m)
            nu = pm.Normal("spurious", mu=beta_centre[m], sigma=1.0)
            log_b = log_offset + basis @ coef + phi @ (beta * sqrt_psd)
            pm.Deterministic("background", pt.exp(log_b))
            pm.Deterministic("gp_basis", phi * sqrt_psd)
            pm.Poisson("n", mu=pt.exp(log_b) + (amp + spurious_size * nu) * template, observed=counts)
        return model

    def _compile(self) -> tuple[Any, Any, Any]:
        model = self.pymc_model
        theta = pt.dvector("theta")
        values = {model.rvs_to_values[model[name]]: theta[sl] for name, sl in self.slices.items()}
        values[model.rvs_to_values[model["A"]]] = theta[0]
        values[model.rvs_to_values[model["spurious"]]] = theta[self.n_params - 1]
        inputs = {name: pt.dvector(name) for name in ("t", "template", "log_offset", "counts", "beta_centre")}
        scalars = {name: pt.dscalar(name) for name in ("eta", "lengthscale", "spurious_size")}
        basis = pt.dmatrix("legendre")
        givens = [(model[k], v) for k, v in inputs.items()]
        givens += [(model[k], v) for k, v in scalars.items()] + [(model["legendre"], basis)]
        logp = model.logp(jacobian=False)
        (bkg, gp_basis) = model.replace_rvs_by_values([model["background"], model["gp_basis"]])
        nll, bkg = pytensor.graph.replace.graph_replace([-logp, bkg], replace=values,  # type: ignore[list-item]
                                                        strict=False)
        grad = pt.grad(nll, theta)
        hess = pytensor.gradient.jacobian(grad, theta, vectorize=True)
        args = [theta, inputs["counts"], inputs["beta_centre"], inputs["t"], basis, inputs["template"],
                inputs["log_offset"], scalars["eta"], scalars["lengthscale"], scalars["spurious_size"]]
        log.info("compiling the window model (%d parameters); the first compile takes a while", self.n_params)
        full = pytensor.function(args, [nll, grad, hess], givens=givens,  # type: ignore[list-item]
                                 on_unused_input="ignore",
                                 trust_input=True)
        value = pytensor.function(args, nll, givens=givens, on_unused_input="ignore", trust_input=True)
        parts = pytensor.function(args[:1] + args[2:], bkg, givens=givens, on_unused_input="ignore",
                                  trust_input=True)
        self._fn_gp_basis = pytensor.function([inputs["t"], scalars["eta"], scalars["lengthscale"]], gp_basis,
                                              givens=givens, on_unused_input="ignore")
        return full, value, parts

    def arguments(self, window: Window, data: FitData) -> list[Any]:
        return [data.counts, data.aux, window.t, window.legendre, window.template, window.log_offset,
                np.asarray(window.eta, dtype=float), np.asarray(window.lengthscale_t, dtype=float),
                np.asarray(window.spurious, dtype=float)]

    def gp_basis(self, window: Window) -> FloatArray:
        """The HSGP basis ``φ_j(t_i) √S(λ_j)`` of ``window`` (n_bins × m), from the PyMC graph."""
        return np.asarray(self._fn_gp_basis(window.t, np.asarray(window.eta, dtype=float),
                                            np.asarray(window.lengthscale_t, dtype=float)))

    def background(self, theta: FloatArray, window: Window, aux: FloatArray | None = None) -> FloatArray:
        """Expected background counts per bin of ``window`` at ``theta``."""
        args = self.arguments(window, FitData(window.counts, np.zeros(self.n_aux)))
        return np.asarray(self._fn_parts(theta, *args[1:]))


@functools.lru_cache(maxsize=8)
def compiled_model(settings_key: tuple[int, int, float, str]) -> CompiledWindowModel:
    """One compiled model per process and graph-fixing settings."""
    degree, n_basis, c, kernel = settings_key
    return CompiledWindowModel(BackgroundSettings(poly_degree=degree, n_basis=n_basis, c=c,
                                                  kernel=kernel))  # type: ignore[arg-type]


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
    """
    centers = 0.5 * (edges[1:] + edges[:-1])
    lo, hi, clipped_low, clipped_high = window_bounds(mass, settings.window_sigmas * sigma, range_lo,
                                                      range_hi, edge=settings.edge)
    sel = (centers >= lo) & (centers <= hi)
    idx = np.flatnonzero(sel)
    if len(idx) < settings.min_bins:
        raise InputError(
            f"the window around m={mass * 1e3:.2f} MeV holds {len(idx)} bins (< background.min_bins="
            f"{settings.min_bins}); use coarser rebinning only if needed, a larger window_sigmas, "
            f"or a mass inside the dataset range [{range_lo}, {range_hi}] GeV"
        )
    w_edges = edges[idx[0]: idx[-1] + 2]
    u = np.log(0.5 * (w_edges[1:] + w_edges[:-1]))
    u_lo, u_hi = np.log(w_edges[0]), np.log(w_edges[-1])
    t = 2.0 * (u - u_lo) / (u_hi - u_lo) - 1.0
    widths = np.diff(w_edges)
    ell_u, eta = settings.lengthscale * sigma / mass, settings.eta
    log_offset = np.log(widths / widths.mean())
    w_counts = np.asarray(counts[idx], dtype=float)
    if settings.hyper == "marginal":
        ell_min = settings.lengthscale_min * sigma / mass
        if settings.hyper_scope == "spectrum":
            eta, ell_u = spectrum_hyperparameters(edges, counts, range_lo, range_hi, settings,
                                                  ell_min=settings.lengthscale_min_lnm, ell_fixed=ell_u)
        else:
            half = 0.5 * (u_hi - u_lo)
            fit = marginal_likelihood_hyperparameters(
                t, w_counts, log_offset, degree=settings.poly_degree, settings=settings,
                ell_min=ell_min / half, ell_fixed=ell_u / half if settings.hyper_free == "eta" else None)
            eta, ell_u = fit.eta, fit.lengthscale * half
    return Window(
        mass=mass, sigma=sigma, edges=w_edges, counts=w_counts, t=t,
        legendre=legendre.legvander(t, settings.poly_degree), template=np.asarray(template[idx], float),
        log_offset=log_offset, eta=eta,
        lengthscale_t=ell_u / (0.5 * (u_hi - u_lo)),
        clipped_low=clipped_low, clipped_high=clipped_high, spurious=float(spurious),
    )


# --------------------------------------------------------------------------- η, ℓ by the marginal likelihood


@dataclass(frozen=True)
class HyperFit:
    """η, ℓ chosen by :func:`marginal_likelihood_hyperparameters`.

    ``lengthscale`` is in the coordinate t of the fit; ``neg_log_evidence`` is the Laplace
    approximation −ln p(n | η, ℓ) up to a constant (η = 0 when the GP gains less than
    :data:`EVIDENCE_MIN_GAIN` in ln Z); ``eta_at_bound``/``ell_at_bound`` say
    whether the optimum sits at the lower bound (η at its bound: the GP is effectively off).
    """

    eta: float
    lengthscale: float
    neg_log_evidence: float
    neg_log_evidence_no_gp: float
    eta_at_bound: bool
    ell_at_bound: bool
    n_evaluations: int


#: Lower and upper bounds of η (ln counts) in the marginal-likelihood search.
ETA_BOUNDS = (1e-4, 3.0)
#: The GP is switched on (η > 0) only if it raises ln Z by at least this much over no GP: where the
#: evidence is flat in η (a long-ℓ GP duplicating the Legendre mean) η = 0 is the Occam choice.
EVIDENCE_MIN_GAIN = 0.5


def _gp_basis(t: FloatArray, eta: float, ell_t: float, settings: BackgroundSettings) -> FloatArray:
    """The HSGP basis φ_j(t) √S(λ_j; η, ℓ) of the compiled PyMC graph (n × m)."""
    model = compiled_model(settings.compile_key())
    return np.asarray(model._fn_gp_basis(np.asarray(t, float), np.asarray(eta, float), np.asarray(ell_t, float)))


def laplace_neg_log_evidence(offset: FloatArray, free_basis: FloatArray, gp_basis: FloatArray,
                             counts: FloatArray, start: FloatArray | None = None,
                             ) -> tuple[float, FloatArray]:
    """Laplace approximation of −ln p(n | η, ℓ) of the background-only model (A = 0).

    μ = exp(offset + F c + G β), c flat, β ~ N(0, 1):
    NLL(γ̂) + ½ ln det H(γ̂), γ = (c, β), H = Bᵀ diag(μ) B + diag(0, I) (Poisson with log link:
    the Hessian is exact), constants dropped.  Returns the value and γ̂ (a warm start).
    """
    basis = np.hstack([free_basis, gp_basis])
    n_free = free_basis.shape[1]
    prior = np.r_[np.zeros(n_free), np.ones(gp_basis.shape[1])]
    if start is None:
        y = np.log(counts + 0.5) - offset
        wts = np.sqrt(counts + 0.5)
        coef, *_ = np.linalg.lstsq(free_basis * wts[:, None], y * wts, rcond=None)
        start = np.r_[coef, np.zeros(gp_basis.shape[1])]
    gamma = np.asarray(start, float).copy()

    def value(g: FloatArray) -> tuple[float, FloatArray]:
        eta_ = offset + basis @ g
        mu = np.exp(np.minimum(eta_, 700.0))
        return float(np.sum(mu - counts * eta_) + 0.5 * np.sum(prior * g * g)), mu

    f, mu = value(gamma)
    hess = basis.T @ (mu[:, None] * basis) + np.diag(prior)
    for _ in range(100):
        grad = basis.T @ (mu - counts) + prior * gamma
        scale = 1.0 / np.sqrt(np.maximum(np.diag(hess), 1e-300))
        chol = np.linalg.cholesky(hess * scale[:, None] * scale[None, :])
        step = scale * np.linalg.solve(chol.T, np.linalg.solve(chol, scale * grad))
        decrement = float(grad @ step)
        lam = 1.0
        while True:
            f_new, mu_new = value(gamma - lam * step)
            if f_new <= f + 1e-12 * abs(f) or lam < 1e-6:
                break
            lam *= 0.5
        gamma, f, mu = gamma - lam * step, f_new, mu_new
        hess = basis.T @ (mu[:, None] * basis) + np.diag(prior)
        if decrement < 1e-9:
            break
    scale = 1.0 / np.sqrt(np.diag(hess))
    logdet = np.linalg.slogdet(hess * scale[:, None] * scale[None, :])[1] - 2.0 * np.sum(np.log(scale))
    return f + 0.5 * float(logdet), gamma


def marginal_likelihood_hyperparameters(t: FloatArray, counts: FloatArray, log_offset: FloatArray, *,
                                        degree: int, settings: BackgroundSettings, ell_min: float,
                                        ell_fixed: float | None = None, ell_max: float = 4.0) -> HyperFit:
    """η, ℓ (ℓ in the coordinate ``t`` ∈ [−1, 1]) maximising the Laplace marginal likelihood.

    The background-only model exp(offset + Legendre(degree) in t + HSGP(η, ℓ)) with the Legendre
    coefficients flat and the HSGP weights N(0, 1) (:func:`laplace_neg_log_evidence`), minimised
    over (ln η, ln ℓ) with ``scipy.optimize.minimize`` (L-BFGS-B, bounded: η in :data:`ETA_BOUNDS`,
    ℓ in [ell_min, ell_max]) from the best point of a small grid; with ``ell_fixed`` only η.
    """
    from scipy.optimize import minimize

    free = legendre.legvander(np.asarray(t, float), degree)
    counts = np.asarray(counts, float)
    warm: dict[str, FloatArray] = {}
    n_eval = 0
    ell_min = float(ell_min)
    ell_max = max(float(ell_max), 1.01 * ell_min)

    def objective(x: FloatArray) -> float:
        nonlocal n_eval
        n_eval += 1
        eta = math.exp(x[0])
        ell = float(ell_fixed) if ell_fixed is not None else math.exp(x[1])
        val, gamma = laplace_neg_log_evidence(log_offset, free, _gp_basis(t, eta, ell, settings), counts,
                                              warm.get("gamma"))
        warm["gamma"] = gamma
        return val

    lo_eta, hi_eta = (math.log(b) for b in ETA_BOUNDS)
    if ell_fixed is None:
        bounds = [(lo_eta, hi_eta), (math.log(ell_min), math.log(ell_max))]
        grid = [np.array([math.log(e), math.log(ell_min * k)]) for e in (3e-3, 3e-2, 3e-1) for k in (1.0, 3.0, 10.0)
                if ell_min * k <= ell_max]
    else:
        bounds = [(lo_eta, hi_eta)]
        grid = [np.array([math.log(e)]) for e in (1e-3, 1e-2, 1e-1, 1.0)]
    values = []
    for x in grid:
        warm.clear()
        values.append(objective(x))
    x0 = grid[int(np.argmin(values))]
    warm.clear()
    res = minimize(objective, x0, method="L-BFGS-B", bounds=bounds, options={"eps": 1e-5, "maxiter": 200})
    no_gp, _ = laplace_neg_log_evidence(log_offset, free, np.zeros((len(t), 0)), counts)
    x = np.asarray(res.x)
    eta = math.exp(x[0])
    ell = float(ell_fixed) if ell_fixed is not None else math.exp(x[1])
    best = float(res.fun)
    if min(values) < best:  # the optimiser never ends above its start; guard anyway
        x, best = grid[int(np.argmin(values))], min(values)
        eta = math.exp(x[0])
        ell = float(ell_fixed) if ell_fixed is not None else math.exp(x[1])
    if no_gp <= best + EVIDENCE_MIN_GAIN:  # η → 0 (the limit of the lower bound) unless the GP earns it
        eta, best = 0.0, float(no_gp)
    return HyperFit(eta=eta, lengthscale=ell, neg_log_evidence=best, neg_log_evidence_no_gp=float(no_gp),
                    eta_at_bound=bool(eta == 0.0 or x[0] <= lo_eta + 1e-3),
                    ell_at_bound=bool(ell_fixed is None and x[1] <= math.log(ell_min) + 1e-3),
                    n_evaluations=n_eval)


_SPECTRUM_HYPER: dict[tuple[Any, ...], tuple[float, float]] = {}


def spectrum_hyperparameters(edges: FloatArray, counts: FloatArray, range_lo: float, range_hi: float,
                             settings: BackgroundSettings, *, ell_min: float,
                             ell_fixed: float) -> tuple[float, float]:
    """(η, ℓ in ln m) of the whole range ``[range_lo, range_hi]``, chosen once per spectrum.

    The fit: Legendre of degree ``hyper_degree`` in the range's normalised ln m + HSGP, A = 0
    (:func:`marginal_likelihood_hyperparameters`); ``ell_min``/``ell_fixed`` in ln m.  Cached per
    (spectrum, settings, bound), so a scan pays it once.
    """
    import hashlib

    centers = 0.5 * (edges[1:] + edges[:-1])
    sel = (centers >= range_lo) & (centers <= range_hi)
    idx = np.flatnonzero(sel)
    e = np.asarray(edges[idx[0]: idx[-1] + 2], float)
    n = np.asarray(counts[idx], float)
    digest = hashlib.sha1(e.tobytes() + n.tobytes()).hexdigest()
    free_ell = settings.hyper_free == "both"
    key = (digest, settings.compile_key(), settings.hyper_degree, settings.poly_degree, free_ell,
           round(ell_min if free_ell else ell_fixed, 12))
    if key not in _SPECTRUM_HYPER:
        u = np.log(0.5 * (e[1:] + e[:-1]))
        u_lo, u_hi = math.log(e[0]), math.log(e[-1])
        half = 0.5 * (u_hi - u_lo)
        t = (u - u_lo) / half - 1.0
        widths = np.diff(e)
        degree = settings.poly_degree if settings.hyper_degree < 0 else settings.hyper_degree
        fit = marginal_likelihood_hyperparameters(
            t, n, np.log(widths / widths.mean()), degree=degree, settings=settings, ell_min=ell_min / half,
            ell_fixed=None if free_ell else ell_fixed / half)
        log.info("eta, ell by the marginal likelihood of the whole range (degree %d): eta = %.4g, "
                 "ell = %.4g in ln m (%s%s; -ln Z gain over no GP %.2f)", degree, fit.eta, fit.lengthscale * half,
                 "eta at its bound, " if fit.eta_at_bound else "", "ell at its bound" if fit.ell_at_bound else "",
                 fit.neg_log_evidence_no_gp - fit.neg_log_evidence)
        _SPECTRUM_HYPER[key] = (fit.eta, fit.lengthscale * half)
    return _SPECTRUM_HYPER[key]


# --------------------------------------------------------------------------- spurious-signal nuisance


@dataclass(frozen=True)
class SpuriousTable:
    """The measured spurious signal S(m) relative to the background under the signal.

    ``relative[k]`` is S / (ρ(m) σ(m)) at ``mass[k]`` (GeV): the spurious yield in units
    of the background events per σ(m) of mass, so that the table carries over to spectra
    with other event counts (a shape mismatch scales with the background, not with √B).
    Linear interpolation in mass, constant beyond the ends.
    """

    mass: FloatArray
    relative: FloatArray
    source: str = ""

    def __call__(self, mass: float) -> float:
        return float(np.interp(mass, self.mass, self.relative))

    @functools.cached_property
    def _step(self) -> float:
        return float(np.min(np.diff(self.mass))) if self.mass.size > 1 else 0.0

    def covers(self, mass: float) -> bool:
        """Whether ``mass`` lies within the measured masses (one grid step beyond the ends allowed)."""
        return bool(self.mass[0] - self._step <= mass <= self.mass[-1] + self._step)


def spurious_table_path(dataset: str, table: str = "") -> Path:
    """The table file: ``table`` if given, else ``hps_bayes/data/spurious_<dataset>.csv``.

    ``{dataset}`` in ``table`` is replaced by the dataset's name; a bare file name (no folder)
    that does not exist where it is run from is looked up in ``hps_bayes/data`` (the packaged
    tables, e.g. ``spurious_{dataset}_whole.csv`` of ``background=whole``).
    """
    if not table:
        return SPURIOUS_DIR / f"spurious_{dataset}.csv"
    path = Path(table.replace("{dataset}", dataset))
    if path.parent == Path(".") and not path.is_file():
        return SPURIOUS_DIR / path.name
    return path


@functools.lru_cache(maxsize=16)
def load_spurious_table(path: str) -> SpuriousTable:
    """Read a table written by ``task=spurious`` (columns ``mass_gev, spurious_rel``)."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(
            f"spurious-signal table {file} not found; run `python -m hps_bayes task=spurious "
            f"task.write_table=true dataset=...` to make it, set background.spurious_table=<file>, "
            f"or background.spurious=off"
        )
    lines = [ln for ln in file.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    try:
        data = np.array([[float(v) for v in ln.split(",")[:2]] for ln in lines[1:]], dtype=float).reshape(-1, 2)
    except ValueError as exc:
        raise ConfigError(f"{file}: unreadable spurious-signal table ({exc})") from exc
    if data.shape[1] < 2 or len(data) < 1 or not np.all(np.diff(data[:, 0]) > 0) or np.any(data[:, 1] < 0):
        raise ConfigError(f"{file}: need columns mass_gev (increasing), spurious_rel (>= 0)")
    return SpuriousTable(mass=data[:, 0], relative=data[:, 1], source=str(file))


def with_spurious(window: Window, table: SpuriousTable) -> Window:
    """``window`` with its spurious-signal size S = table(m) · ρ(m) σ(m).

    ρ(m) is the template-weighted density (counts/GeV) of the window's observed counts,
    ``Σ_i (n_i/w_i) T_i / Σ_i T_i``.
    """
    tpl = window.template
    rho = float(np.sum(window.counts / window.widths * tpl) / np.sum(tpl))
    return replace(window, spurious=table(window.mass) * rho * window.sigma)


@dataclass(frozen=True)
class LogLinearDesign:
    """The window likelihood written out for vectorised fits.

    With ``θ = (A, γ, ν)``, ``γ = (c, β)`` (the first ``n_free_basis`` entries of γ
    unconstrained, the rest ``β ~ N(β⁰, 1)``), and ``ν ~ N(ν⁰, 1)``:

        μ_i = exp(offset_i + Σ_k basis_ik γ_k) + (A + spurious·ν) T_i,
        NLL = Σ_i [μ_i − n_i ln μ_i + ln n_i!] + ½ Σ (β − β⁰)² + ½ (ν − ν⁰)² + const.

    This is the same function the compiled PyMC model evaluates (a test checks it).
    """

    offset: FloatArray
    basis: FloatArray
    template: FloatArray
    n_free_basis: int
    spurious: float

    @property
    def n_params(self) -> int:
        return 1 + self.basis.shape[1] + 1


class WindowObjective:
    """The window likelihood as a :class:`hps_bayes.fit.Objective` (POI = A at index 0)."""

    poi_index = 0

    def __init__(self, window: Window, settings: BackgroundSettings) -> None:
        self.window = window
        self.settings = settings
        self.model = compiled_model(settings.compile_key())
        self.n_params = self.model.n_params
        self._aux = slice(self.model.slices["beta"].start, self.n_params)

    def _args(self, data: FitData) -> list[Any]:
        return self.model.arguments(self.window, data)

    def _feasible(self, theta: FloatArray) -> bool:
        return bool(np.all(self.expected_counts(theta) > 0))

    def nll(self, theta: FloatArray, data: FitData) -> float:
        if not self._feasible(theta):
            return float("inf")
        return float(self.model._fn_value(theta, *self._args(data)))

    def nll_grad_hess(self, theta: FloatArray, data: FitData) -> tuple[float, FloatArray, FloatArray]:
        if not self._feasible(theta):
            n = self.n_params
            return float("inf"), np.full(n, np.nan), np.full((n, n), np.nan)
        f, g, h = self.model._fn_full(theta, *self._args(data))
        return float(f), np.asarray(g), np.asarray(h)

    def background(self, theta: FloatArray) -> FloatArray:
        return self.model.background(theta, self.window)

    def expected_counts(self, theta: FloatArray) -> FloatArray:
        signal = theta[0] + self.window.spurious * theta[-1]
        return self.background(theta) + signal * self.window.template

    def aux_at(self, theta: FloatArray) -> FloatArray:
        return np.array(theta[self._aux], dtype=float)

    def observed(self) -> FitData:
        return FitData(self.window.counts, np.zeros(self.model.n_aux))

    def design(self) -> LogLinearDesign:
        """The window likelihood in closed form, for vectorised (numpy) fits of many toys."""
        w = self.window
        return LogLinearDesign(offset=w.log_offset, basis=np.hstack([w.legendre, self.model.gp_basis(w)]),
                               template=w.template, n_free_basis=w.legendre.shape[1], spurious=w.spurious)

    def initial(self, data: FitData) -> FloatArray:
        """Start from a weighted least-squares fit of ln(n + 1/2) by the Legendre mean, A = 0."""
        w = self.window
        y = np.log(data.counts + 0.5) - w.log_offset
        weights = np.sqrt(data.counts + 0.5)
        coef, *_ = np.linalg.lstsq(w.legendre * weights[:, None], y * weights, rcond=None)
        theta = np.zeros(self.n_params)
        theta[self.model.slices["coef"]] = coef
        theta[self._aux] = data.aux if len(data.aux) else 0.0
        return theta

    def a_min(self, theta: FloatArray) -> float:
        """Smallest A at which every expected count stays positive (nuisances at ``theta``)."""
        b = self.background(theta)
        tpl = self.window.template
        pos = tpl > 0
        return float(-np.min(b[pos] / tpl[pos])) if pos.any() else -np.inf

    # --- batched evaluation of many data sets (hps_bayes.fit.BatchObjective), numpy on design() ---
    @functools.cached_property
    def _batch_design(self) -> tuple[LogLinearDesign, float]:
        """The closed-form design and the NLL constant ½ q ln 2π of the q constrained nuisances."""
        return self.design(), 0.5 * self.model.n_aux * float(np.log(2.0 * np.pi))

    def _batch_parts(self, thetas: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """exp-part e (K, n), total signal strength A + S·ν (K,), expected counts μ (K, n)."""
        d, _ = self._batch_design
        e = np.exp(d.offset + thetas[:, 1:-1] @ d.basis.T)
        strength = thetas[:, 0] + d.spurious * thetas[:, -1]
        return e, strength, e + strength[:, None] * d.template

    def expected_counts_batch(self, thetas: FloatArray) -> FloatArray:
        """Expected counts per row, shape (K, n)."""
        return self._batch_parts(np.atleast_2d(thetas))[2]

    def nll_batch(self, thetas: FloatArray, counts: FloatArray, aux: FloatArray) -> FloatArray:
        """The compiled NLL (incl. ln n! and the Gaussian normalisations) per row; ``inf`` where μ ≤ 0."""
        return self._nll_batch(thetas, counts, aux, self._batch_parts(thetas)[2])

    def _nll_batch(self, thetas: FloatArray, counts: FloatArray, aux: FloatArray, mu: FloatArray) -> FloatArray:
        d, const = self._batch_design
        ok = np.all(mu > 0, axis=1)
        log_mu = np.log(np.where(mu > 0, mu, 1.0))
        z = thetas[:, 1 + d.n_free_basis:] - aux
        f = np.sum(mu - counts * log_mu, axis=1) + 0.5 * np.sum(z * z, axis=1) + const
        return np.where(ok, f + self._log_factorial_sum(counts), np.inf)

    def nll_grad_batch(self, thetas: FloatArray, counts: FloatArray,
                       aux: FloatArray) -> tuple[FloatArray, FloatArray]:
        """NLL (K,) and gradient (K, p): with w = 1 − n/μ, ∂/∂A = Σ w T, ∂/∂γ = Bᵀ(w e) (+ γ − γ⁰ where
        constrained), ∂/∂ν = S Σ w T + ν − ν⁰."""
        d, _ = self._batch_design
        e, _, mu = self._batch_parts(thetas)
        f = self._nll_batch(thetas, counts, aux, mu)
        w = 1.0 - counts / np.where(np.isfinite(f)[:, None], mu, np.nan)
        grad = np.empty_like(thetas)
        grad[:, 0] = w @ d.template
        grad[:, 1:-1] = (w * e) @ d.basis
        grad[:, -1] = d.spurious * grad[:, 0]
        grad[:, 1 + d.n_free_basis:] += thetas[:, 1 + d.n_free_basis:] - aux
        return f, grad

    def nll_grad_hess_batch(self, thetas: FloatArray, counts: FloatArray,
                            aux: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """NLL, gradient and Hessian per row: H = Jᵀ diag(n/μ²) J + Bᵀ diag(w e) B (γγ block) + I
        (constrained), J = ∂μ/∂θ = (T, e·B, S·T)."""
        d, _ = self._batch_design
        f, grad = self.nll_grad_batch(thetas, counts, aux)
        e, _, mu = self._batch_parts(thetas)
        mu = np.where(np.isfinite(f)[:, None], mu, np.nan)
        c, w = counts / mu**2, 1.0 - counts / mu
        jac = np.empty(mu.shape + (thetas.shape[1],))
        jac[:, :, 0] = d.template
        jac[:, :, 1:-1] = e[:, :, None] * d.basis[None]
        jac[:, :, -1] = d.spurious * d.template
        hess = np.swapaxes(jac * c[:, :, None], 1, 2) @ jac
        hess[:, 1:-1, 1:-1] += np.swapaxes(d.basis[None] * (w * e)[:, :, None], 1, 2) @ d.basis
        idx = np.arange(1 + d.n_free_basis, thetas.shape[1])
        hess[:, idx, idx] += 1.0
        return f, grad, hess


    @staticmethod
    @functools.lru_cache(maxsize=4)
    def _log_factorial_table(size: int) -> FloatArray:
        from scipy.special import gammaln

        return np.asarray(gammaln(np.arange(size) + 1.0))

    @staticmethod
    def _log_factorial_sum(counts: FloatArray) -> FloatArray:
        """Σ_i ln n_i! per row: a table lookup for integer counts (toys), ``gammaln`` otherwise (Asimov)."""
        from scipy.special import gammaln

        top = float(counts.max(initial=0.0))
        if top < 2**20:
            as_int = counts.astype(np.int64)
            if np.array_equal(as_int, counts):
                size = 1 << max(int(top).bit_length(), 8)
                return np.asarray(WindowObjective._log_factorial_table(size)[as_int].sum(axis=1))
        return np.asarray(gammaln(counts + 1.0).sum(axis=1))
