"""Background-model settings (typed, validated).

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

import bisect
import itertools
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

from hps_bayes.errors import ConfigError

Kernel = Literal["expquad", "matern52", "matern32"]
EdgeMode = Literal["shift", "clip"]
SpuriousMode = Literal["off", "table"]
HyperMode = Literal["fixed", "marginal"]
HyperScope = Literal["spectrum", "window"]
HyperFree = Literal["both", "eta"]
TurnOnMode = Literal["guard", "factor", "off"]
MeanBasis = Literal["legendre_lnm", "chebyshev_m", "legendre_m"]
MEAN_BASES: tuple[MeanBasis, ...] = ("legendre_lnm", "chebyshev_m", "legendre_m")


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
        m_on + ``turn_on_widths``·w (:func:`hps_bayes.scan.guard_turn_on`); ``"factor"``: the
        range is kept and the measured turn-on Φ((m − m_on)/w) multiplies the background of every
        window (ln Φ joins the offsets o_i), so the polynomial models only what the turn-on leaves;
        ``"off"``: the dataset's range as it is.
    turn_on_mass, turn_on_width : m_on and w (GeV) of the ``"factor"`` turn-on, measured on the data
        (``None``: not measured yet) or set by hand.
    turn_on_widths, turn_on_sharpness : n_w and κ of the guard.
    fit_range_min : where the background fit range starts (GeV); set by the guard from the data
        (``None``: not measured yet) or by hand (the guard then keeps it).
    mean_basis : the polynomial of the mean (:mod:`hps_bayes.model.basis`): ``"legendre_lnm"``
        (Legendre in ln m), ``"chebyshev_m"`` or ``"legendre_m"`` (in m, the published HPS forms).
    selection : a background selection ``selection_<dataset>.json`` of ``task=select``
        (:mod:`hps_bayes.model.selection`): at each mass the chosen model's settings replace these
        (:meth:`at_mass`) and its spurious signal S is the nuisance; "" = the settings hold everywhere.
    degree_table : rows ``(m_max, degree, window_sigmas)`` by increasing m_max (GeV): at mass m the
        first row with m < m_max sets ``poly_degree`` and ``window_sigmas`` (half-width), the last
        row above all m_max (:meth:`at_mass`); empty: the two settings hold at every mass.
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
    turn_on_mass: float | None = None
    turn_on_width: float | None = None
    mean_basis: MeanBasis = "legendre_lnm"
    degree_table: tuple[tuple[float, int, float], ...] = ()
    selection: str = ""

    def __post_init__(self) -> None:
        self._check_types()
        self._check_mean()
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
        if self.turn_on not in ("guard", "factor", "off") or not self.turn_on_widths >= 0 \
                or not self.turn_on_sharpness >= 0:
            raise ConfigError(f"background.turn_on={self.turn_on!r}, turn_on_widths={self.turn_on_widths}, "
                              f"turn_on_sharpness={self.turn_on_sharpness}: use turn_on guard|factor|off and "
                              f"non-negative widths and sharpness")
        if (self.turn_on_mass is None) != (self.turn_on_width is None) or (
                self.turn_on_width is not None and not self.turn_on_width > 0):
            raise ConfigError(f"background.turn_on_mass={self.turn_on_mass}, turn_on_width={self.turn_on_width}: "
                              f"set both (GeV, width > 0) or neither (measured on the data)")
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

    def _check_types(self) -> None:
        """Numbers where numbers are meant (a string compared with a number gave a bare TypeError)."""
        for f in fields(self):
            kind = str(f.type)
            if kind not in ("int", "float", "float | None"):
                continue
            value = getattr(self, f.name)
            if value is None and kind == "float | None":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind == "int" and value != int(value)):
                raise ConfigError(f"background.{f.name}={value!r}: must be {'an integer' if kind == 'int' else 'a number'}"
                                  f" (default {f.default!r})")

    def _check_mean(self) -> None:
        """Validate ``mean_basis`` and ``degree_table`` (normalised to a tuple of typed rows)."""
        if self.mean_basis not in MEAN_BASES:
            raise ConfigError(f"background.mean_basis={self.mean_basis!r}: use one of {list(MEAN_BASES)}")
        try:
            rows = tuple((float(r[0]), int(r[1]), float(r[2])) for r in self.degree_table)
        except (TypeError, ValueError, IndexError) as exc:
            raise ConfigError(f"background.degree_table={self.degree_table!r}: give rows [m_max, degree, "
                              f"window_sigmas], e.g. [[0.039, 5, 7.0], [1.0, 3, 6.5]]") from exc
        ok = all(0 <= d <= 15 and w > 0 for _, d, w in rows) and all(
            a[0] < b[0] for a, b in itertools.pairwise(rows))
        if not ok:
            raise ConfigError(f"background.degree_table={self.degree_table!r}: m_max must increase, "
                              f"degrees lie in 0..15 and window_sigmas > 0")
        object.__setattr__(self, "degree_table", rows)

    def at_mass(self, mass: float) -> BackgroundSettings:
        """These settings at mass ``mass`` (GeV): the model of ``selection`` chosen there, or degree and window
        half-width from ``degree_table``.

        Examples
        --------
        >>> s = BackgroundSettings(degree_table=((0.039, 5, 7.0), (1.0, 3, 6.5)))
        >>> [(s.at_mass(m).poly_degree, s.at_mass(m).window_sigmas) for m in (0.03, 0.05)]
        [(5, 7.0), (3, 6.5)]
        """
        if self.selection:
            from hps_bayes.model.selection import load_selection  # reads the file once

            chosen = load_selection(self.selection).overrides_at(mass)
            return BackgroundSettings.from_dict(self.to_dict() | chosen | {
                "selection": "", "degree_table": (), "spurious": "off"}).at_mass(mass)
        if not self.degree_table:
            return self
        edges = [row[0] for row in self.degree_table]
        _, degree, sigmas = self.degree_table[min(bisect.bisect_right(edges, mass), len(edges) - 1)]
        if degree == self.poly_degree and sigmas == self.window_sigmas:
            return self
        return replace(self, poly_degree=degree, window_sigmas=sigmas)

    def label(self) -> str:
        """A short description of the model, e.g. ``"legendre_lnm d10 ±10σ"`` (``+ turn-on``, ``+ GP``)."""
        width = "whole range" if self.window_sigmas >= 1000 else f"±{self.window_sigmas:g}σ"
        extras = (" + turn-on" if self.turn_on == "factor" else "") + (
            " + GP" if self.eta > 0 or self.hyper == "marginal" else "")
        return f"{self.mean_basis} d{self.poly_degree} {width}{extras}"

    def compile_key(self, *, with_gp: bool = False) -> tuple[int, int, float, str]:
        """The settings that fix the compiled graph (the others are data): ``(poly_degree, m, c, kernel)``.

        m is the number of HSGP weights of the model: ``n_basis``, or 0 where the GP can never switch
        on (``eta == 0`` with ``hyper == "fixed"``; the model is then the Legendre mean alone and θ =
        (A, c, ν)).  ``with_gp=True`` keeps m = ``n_basis`` regardless (the marginal-likelihood search
        of η evaluates the GP basis itself).

        Examples
        --------
        >>> BackgroundSettings().compile_key(), BackgroundSettings(eta=0.05).compile_key()
        ((10, 0, 1.5, 'expquad'), (10, 20, 1.5, 'expquad'))
        """
        gp = with_gp or self.eta > 0 or self.hyper != "fixed"
        return (self.poly_degree, self.n_basis if gp else 0, self.c, self.kernel)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackgroundSettings:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
