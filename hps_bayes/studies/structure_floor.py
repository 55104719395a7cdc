"""The sensitivity floor set by a spectrum's structure: the smallest σ_A any background can reach.

σ_A⁰ = (Σ T²/ν)^(−1/2) (:func:`hps_bayes.stats.simple.known_background_sigma`) is the error
of Â with the background known bin by bin.  Real spectra, and the structured demo spectra
(:mod:`hps_bayes.physics.demo`), carry a multiplicative structure exp(s(ln m)) of a few
permille at wavelengths of 7–14 σ(m)/m, which no analysis knows in advance; part of it looks
like a signal, whatever the background model.  How much sensitivity that costs at best is a
closed form.

Take the structure as a stationary random function of u = ln m with the law the demo draws it
from: RMS ``amplitude`` a, sinusoids of wavelength λ spread evenly over ``wavelengths``
[λ₁, λ₂] with random phases, so that its covariance is

    K(d) = a² ⟨cos(2π d/λ)⟩_λ = a² [λ cos(2π d/λ) + 2π d Si(2π d/λ)]_{λ₁}^{λ₂} / (λ₂ − λ₁),

and add a smooth envelope the model may fit freely (exp of a Legendre polynomial of degree
``degree`` in ln m, linearised: the columns ν·P_j).  In a window with expected counts ν and
signal template T, the best unbiased linear estimate of A is the generalised least squares
one, with

    σ_struct² = [(Xᵀ Σ⁻¹ X)⁻¹]_AA,   X = [T, ν P_0, …, ν P_d],   Σ = diag(ν) + diag(ν) K diag(ν).

(Gaussian approximation to the Poisson counts, exact to first order in the structure.)  Every
background of :mod:`hps_bayes.studies.selection` is, to first order, a linear estimate of A on
such data, and its spurious signal S counts the structure it does not absorb; so
σ_struct/σ_A⁰ is the floor for the σ_tot/σ_A⁰ the selection reports, for the *law* of the
structure (an analysis cannot know its realisation).  The formula is checked against toys
drawn as the demo draws its structure (``tests/studies/test_structure_floor.py``).

Written with NumPy/SciPy: a few lines of linear algebra that no statistics library offers for
this covariance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.linalg import cho_factor, cho_solve
from scipy.special import sici

from hps_bayes.errors import InputError
from hps_bayes.inputs.spectrum import rebin
from hps_bayes.physics.signal import signal_template

if TYPE_CHECKING:
    import argparse

    from hps_bayes.physics.demo import Structure

__all__ = ["FloorPoint", "StructureLaw", "demo_structure_law", "structure_covariance", "structure_floor"]


@dataclass(frozen=True)
class StructureLaw:
    """A multiplicative structure's law: RMS ``amplitude`` of its logarithm, wavelengths in ln m."""

    amplitude: float
    wavelengths: tuple[float, float]

    def __post_init__(self) -> None:
        lo, hi = self.wavelengths
        if not (self.amplitude >= 0 and np.isfinite(self.amplitude)):
            raise InputError(f"structure amplitude={self.amplitude!r}: give a finite number >= 0 (e.g. 0.004)")
        if not (0 < lo < hi and np.isfinite(hi)):
            raise InputError(f"structure wavelengths={self.wavelengths!r}: give (λ_min, λ_max) with "
                             "0 < λ_min < λ_max in ln m, e.g. (0.35, 0.7)")


@dataclass(frozen=True)
class FloorPoint:
    """σ_A at one mass: background known (``known``), smooth envelope fitted (``envelope``), and
    the envelope fitted with the structure's law (``structure``: the floor)."""

    mass: float
    known: float
    envelope: float
    structure: float
    bias: float = 0.0
    half_width: float = float("nan")
    degree: int | None = None

    @property
    def ratio(self) -> float:
        """σ_struct/σ_A⁰: the floor in the units the selection and the scan report."""
        return self.structure / self.known


def demo_structure_law(shape: str) -> StructureLaw:
    """The law of the structured demo spectrum ``shape`` ("2015", "2016", "2021")."""
    from hps_bayes.physics import demo

    if shape not in demo.STRUCTURE_AMPLITUDE:
        raise InputError(f"shape={shape!r}: give one of {sorted(demo.STRUCTURE_AMPLITUDE)}")
    lo, hi = demo.STRUCTURE_WAVELENGTHS
    return StructureLaw(demo.STRUCTURE_AMPLITUDE[shape], (float(lo), float(hi)))


def structure_covariance(u: ArrayLike, law: StructureLaw) -> NDArray[np.float64]:
    """K_ij = a² ⟨cos(2π (u_i − u_j)/λ)⟩ over λ uniform in the law's wavelengths (module docstring)."""
    u = np.asarray(u, dtype=float)
    d = np.abs(u[:, None] - u[None, :])
    lo, hi = law.wavelengths

    def primitive(lam: float) -> NDArray[np.float64]:
        c = 2.0 * np.pi * d
        with np.errstate(divide="ignore", invalid="ignore"):
            si = np.where(d > 0, sici(c / lam)[0], 0.0)
        return np.asarray(lam * np.cos(c / lam) + c * si)

    return np.asarray(law.amplitude**2 * (primitive(hi) - primitive(lo)) / (hi - lo))


def structure_floor(edges: ArrayLike, expected: ArrayLike, mass: float, sigma: float, law: StructureLaw, *,
                    half_width: float = 14.0, degree: int | None = 3, smooth: ArrayLike | None = None,
                    factor: ArrayLike | None = None, bounds: tuple[float, float] | None = None) -> FloorPoint:
    """σ_A⁰, σ_A with a free envelope, and σ_struct (module docstring) at ``mass``.

    Parameters
    ----------
    edges, expected : bin edges (GeV) and the background's expected counts ν of a spectrum (the
        noise-free demo, or a smooth fit of data).
    mass, sigma : the hypothesis and its width σ(m), in GeV.
    law : the structure's law (:func:`demo_structure_law` for the demo spectra).
    half_width : the window, ±``half_width``·σ around ``mass``.
    degree : the envelope's Legendre degree in ln m; None for no envelope (then ``envelope`` and,
        with a zero amplitude, ``structure`` equal σ_A⁰).
    smooth : the background without its structure (as ``expected``); ``bias`` is then the
        estimate's bias from the envelope's misfit of it (linearised), which says whether the
        envelope is adequate there: the floor holds only for a window and degree that describe
        the smooth background.
    factor : a known factor of the smooth background (the measured turn-on Φ, as the turn-on-aware
        models of the selection fix it); the envelope then describes ``smooth``/``factor``.
    bounds : the analysis range (GeV): a window reaching past an end is shifted inside it (its
        width kept where the range allows), as the scan's windows are.
    """
    edges, nu = np.asarray(edges, dtype=float), np.asarray(expected, dtype=float)
    if edges.shape != (nu.size + 1,):
        raise InputError(f"edges has {edges.size} entries for {nu.size} bins: give n + 1 edges")
    centres = 0.5 * (edges[1:] + edges[:-1])
    lo, hi = mass - half_width * sigma, mass + half_width * sigma
    if bounds is not None:
        shift = max(bounds[0] - lo, 0.0) - max(hi - bounds[1], 0.0)
        lo, hi = max(lo + shift, bounds[0]), min(hi + shift, bounds[1])
    inside = np.flatnonzero((centres > lo) & (centres < hi))
    if inside.size < 4 or np.any(nu[inside] <= 0):
        raise InputError(f"m = {mass * 1e3:.2f} MeV: the ±{half_width}σ window has {inside.size} bins "
                         "or empty ones; give a mass inside the spectrum's populated range")
    nu = nu[inside]
    template = signal_template(edges[inside[0]:inside[-1] + 2], mass, sigma)
    u = np.log(centres[inside])
    columns = [template]
    if degree is not None:
        t = 2.0 * (u - u[0]) / (u[-1] - u[0]) - 1.0
        columns += list((nu[:, None] * np.polynomial.legendre.legvander(t, degree)).T)
    x = np.column_stack(columns)
    known = float(1.0 / np.sqrt(np.sum(template**2 / nu)))

    def gls(cov: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Σ⁻¹X and (XᵀΣ⁻¹X)⁻¹: the estimate is (XᵀΣ⁻¹X)⁻¹ (Σ⁻¹X)ᵀ n."""
        weighted = cho_solve(cho_factor(cov), x)
        return weighted, np.linalg.inv(x.T @ weighted)

    envelope = float(np.sqrt(gls(np.diag(nu))[1][0, 0]))
    weighted, covariance = gls(np.diag(nu) + nu[:, None] * structure_covariance(u, law) * nu[None, :])
    structure = float(np.sqrt(covariance[0, 0]))
    bias = 0.0
    if smooth is not None:
        log_smooth = np.log(np.asarray(smooth, dtype=float)[inside])
        if factor is not None:
            log_smooth = log_smooth - np.log(np.asarray(factor, dtype=float)[inside])
        envelope_fit = x[:, 1:] / nu[:, None] if degree is not None else np.zeros((nu.size, 0))
        weights = np.sqrt(nu)
        coef = np.linalg.lstsq(envelope_fit * weights[:, None], log_smooth * weights, rcond=None)[0]
        misfit = nu * (log_smooth - envelope_fit @ coef)
        bias = float((covariance @ (weighted.T @ misfit))[0])
    return FloorPoint(float(mass), known, envelope, structure, bias, float(half_width), degree)


#: The windows and envelope degrees :func:`best_floor` tries (half-width in σ(m), degree).
ENVELOPES = tuple((w, d) for w in (7.0, 10.0, 14.0, 20.0) for d in (2, 3, 4, 5, 7, 9))
#: An envelope is adequate where its bias on the smooth background is at most this fraction of
#: σ_struct (the spurious-signal criterion).
MAX_RELATIVE_BIAS = 0.2


def best_floor(edges: ArrayLike, expected: ArrayLike, smooth: ArrayLike, mass: float, sigma: float,
               law: StructureLaw, *, factor: ArrayLike | None = None,
               bounds: tuple[float, float] | None = None) -> FloorPoint | None:
    """The smallest σ_struct over :data:`ENVELOPES` whose envelope describes ``smooth`` (bias at most
    :data:`MAX_RELATIVE_BIAS` σ_struct); None where none does (the turn-on, the range ends)."""
    best = None
    for half_width, degree in ENVELOPES:
        try:
            point = structure_floor(edges, expected, mass, sigma, law, half_width=half_width, degree=degree,
                                    smooth=smooth, factor=factor, bounds=bounds)
        except InputError:
            continue
        if abs(point.bias) <= MAX_RELATIVE_BIAS * point.structure and (best is None or point.structure < best.structure):
            best = point
    return best


def demo_floor_table(shape: str, masses: ArrayLike, *, structured: bool = True,
                     structure: Structure | None = None) -> list[FloorPoint | None]:
    """:func:`best_floor` on the noise-free demo spectrum ``shape`` at ``masses`` (GeV), σ(m) of its
    preset, its turn-on as a known factor; ``structured=False``: the smooth variant (no structure);
    ``structure``: a :class:`hps_bayes.physics.demo.Structure` other than the bundled demo's (another
    amplitude, draw or wavelengths: the floor of its law)."""
    from scipy.special import ndtr

    from hps_bayes.physics import demo
    from hps_bayes.physics.presets import load_preset
    from hps_bayes.physics.signal import sigma_m

    preset = load_preset("demo" if shape == "2015" else f"demo{shape}")
    structure = demo.Structure() if structure is None else structure
    spectrum = demo.expected_spectrum(shape, n_events=demo.DEFAULT_N_EVENTS[shape], structured=structured,  # type: ignore[arg-type]
                                      structure=structure if structured else None)
    binned = rebin(spectrum, preset.rebin)  # the bins the analysis fits
    edges, counts, centres = binned.edges, binned.counts, binned.centers
    smooth = counts
    law = StructureLaw(demo_structure_law(shape).amplitude * structure.scale, structure.wavelengths)
    if structured:
        smooth = smooth / np.exp(demo.structure_factor(shape, structure)(centres))  # type: ignore[arg-type]
    else:
        law = StructureLaw(0.0, law.wavelengths)
    turn_on_mass, turn_on_width = demo.turn_on_parameters(shape, structured=structured)  # type: ignore[arg-type]
    factor = ndtr((centres - turn_on_mass) / turn_on_width)
    return [best_floor(edges, counts, smooth, float(m), float(sigma_m(m, preset)), law, factor=factor,
                       bounds=preset.mass_range) for m in np.asarray(masses, dtype=float)]


def add_structure_arguments(parser: argparse.ArgumentParser) -> None:
    """``--scale``, ``--law-seed``, ``--wavelengths``: the structure of a file written by ``task=simulate`` with
    other ``dataset.demo.structure_*`` settings (:class:`hps_bayes.physics.demo.Structure`)."""
    parser.add_argument("--scale", type=float, default=1.0,
                        help="dataset.demo.structure_scale: the structure's RMS in units of the demo's")
    parser.add_argument("--law-seed", type=int, help="dataset.demo.structure_seed: another draw of the structure")
    parser.add_argument("--wavelengths", type=float, nargs=2, metavar=("LO", "HI"),
                        help="dataset.demo.structure_wavelengths: the structure's wavelengths in ln m")


def structure_from_arguments(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Structure:
    """The :class:`~hps_bayes.physics.demo.Structure` of :func:`add_structure_arguments`; bad values end the
    command with the parser's usage and the reason."""
    from hps_bayes.errors import ConfigError
    from hps_bayes.physics.demo import STRUCTURE_WAVELENGTHS, Structure

    try:
        return Structure(args.scale, args.law_seed, tuple(args.wavelengths or STRUCTURE_WAVELENGTHS))
    except ConfigError as exc:
        parser.error(str(exc))


def main(argv: list[str] | None = None) -> None:
    """``python -m hps_bayes.studies.structure_floor 2015 [--selection selection_demo.csv]``: the floor
    per mass of a structured demo spectrum, beside what a selection (``task=select``) reached."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("shape", choices=["2015", "2016", "2021"])
    parser.add_argument("--selection", help="a selection_<dataset>.csv of task=select on that demo spectrum")
    parser.add_argument("--masses", default="0.02:0.1:0.002", help="lo:hi:step in GeV, without a selection")
    parser.add_argument("--smooth", action="store_true", help="the smooth variant (no structure)")
    add_structure_arguments(parser)
    parser.add_argument("--scan", help="2015: a results_single.csv of that spectrum; prints its expected ε² over "
                                       "the published limit at 20-80 MeV, as scanned and with σ_A at the floor")
    args = parser.parse_args(argv)
    structure = structure_from_arguments(parser, args)
    if args.scan:
        _scan_at_floor(args.scan, args.shape, structured=not args.smooth, structure=structure)
        return
    reached: dict[float, float] = {}
    if args.selection:
        import pandas as pd

        frame = pd.read_csv(args.selection)
        reached = {round(float(m), 7): float(r) for m, r in zip(frame.mass, frame.ratio, strict=True)}
        masses = np.array(sorted(reached))
    else:
        lo, hi, step = (float(v) for v in args.masses.split(":"))
        masses = np.arange(lo, hi + step / 2, step)
    rows = []
    print(f"{'m [MeV]':>8} {'envelope':>9} {'floor':>7} {'window':>7} {'degree':>6} {'selection':>10}"
          "   (σ/σ_A⁰; floor = σ_struct)")
    table_points = demo_floor_table(args.shape, masses, structured=not args.smooth, structure=structure)
    for mass, point in zip(masses, table_points, strict=True):
        got = reached.get(round(float(mass), 7), float("nan"))
        if point is None:
            print(f"{mass * 1e3:8.1f} {'no adequate envelope':>24} {got:17.2f}")
            continue
        rows.append((point.envelope / point.known, point.ratio, got))
        print(f"{mass * 1e3:8.1f} {point.envelope / point.known:9.2f} {point.ratio:7.2f} {point.half_width:6.0f}σ "
              f"{point.degree:6d} {got:10.2f}")
    table = np.array(rows)
    reached_median = np.nanmedian(table[:, 2]) if np.isfinite(table[:, 2]).any() else np.nan
    print(f"{'median':>8} {np.median(table[:, 0]):9.2f} {np.median(table[:, 1]):7.2f} {reached_median:10.2f}")


def _scan_at_floor(path: str, shape: str, *, structured: bool, structure: Structure | None = None) -> None:
    """The median expected-ε² ratio to the published 2015 limit over 20-80 MeV of the scan ``path``, and the
    same with each mass's σ_A lowered to the floor where it lies above it (limits scale with σ_A)."""
    import pandas as pd

    from hps_bayes.analysis.reproduce import load_published, ratio_to_published

    frame = pd.read_csv(path)
    frame = frame[frame.status == "ok"].reset_index(drop=True)
    floors = demo_floor_table(shape, frame.mass.to_numpy(), structured=structured, structure=structure)
    floor = np.array([p.structure if p is not None else np.nan for p in floors])
    scale = np.where(np.isfinite(floor), np.minimum(floor / frame.sigma_A.to_numpy(), 1.0), 1.0)
    at_floor = frame.assign(eps2_up_expected_median=frame.eps2_up_expected_median * scale)
    published = load_published()
    ratios = [np.median(ratio_to_published(f, published, column="eps2_up_expected_median", mass_lo=0.02,
                                           mass_hi=0.08).ratio) for f in (frame, at_floor)]
    print(f"{len(frame)} masses; floor/σ_A median {np.median(floor / frame.sigma_A.to_numpy()):.2f}; expected ε² / "
          f"published (median, 20-80 MeV): as scanned {ratios[0]:.2f}, at the floor {ratios[1]:.2f}")


if __name__ == "__main__":
    main()
