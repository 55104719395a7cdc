"""Realistic HPS-like pseudo-data for the demo, the tests and the studies.

The background density of each dataset shape is a smooth turn-on times the sum
of two log-normal terms,

    ρ(m) = Φ((m − m_on)/w_on) · Σ_k A_k exp(−(ln m − ln μ_k)² / (2 s_k²)),

with Φ the standard normal CDF (trigger/acceptance turn-on at m_on, width
w_on), A_k in events per GeV, μ_k in GeV and s_k the widths in ln m.  The
parameters were fitted to the approximate dN/dm of the real spectra
(the table in ``tests/physics/test_demo.py``): every tabulated value is reproduced within
≈20 %, the density rises monotonically to its peak (≈30, 62, 53 MeV) and
falls monotonically over 3–4 decades after it, with no bump narrower than
s_k ≥ 0.25 in ln m (≈5 mass resolutions), so the demo data hold no fake
signal.  Its integral over [0, mass_max] is the event count of the real run
(21.5M, 7.5M, 11M events); :func:`simulate_spectrum` rescales to any
``n_events``.

Real spectra are not that smooth.  The *structured* variants (``structured=True``,
the bundled demo files) multiply ρ by ``exp(a·g(ln m))``, g a fixed sum of eight
sinusoids in ln m (wavelengths 0.35–0.7, i.e. 7–14 σ(m)/m, ≈ 10–20 MeV at the 2015
peak; phases and weights drawn once from the seed ``int(shape)``; unit RMS over
15–300 MeV) with a = 0.42% (2015), 0.35% (2016), 0.23% (2021).  The structured 2015
turn-on is sharper and higher (m_on = 20 MeV, w = 3.2 MeV, its end m_on + 2w at
26.4 MeV, as a turn-on fit finds on real-looking 2015 data; the first log-normal
refitted to the tabulated density).  Against a degree-8 exp(Legendre in ln m) fit of
the analysis range, the noise-free structured densities leave residuals (smoothed over
2 MeV) of 0.74% RMS (2015), 0.93% (2016) and 0.59% (2021), 0.1–0.2% after a degree-12
fit; with Poisson noise that is near what real-looking spectra show for 2016 and 2021
(0.7%), below it for 2015 (1.7%).  The amplitudes were set so that window backgrounds
fake and miss signals on the demo about as they do on real-looking data (Z spread of
Â/σ_A on the data: degree 3 in ±7σ ≈ 4.5, degree 7 in ±10σ ≈ 2.2; real-looking 2015:
3.3 and 1.6); a larger 2015 amplitude makes every window background fail there.
:class:`Structure` (``dataset.demo.structure_scale``, ``structure_seed``,
``structure_wavelengths``) draws other structure of the same kind: another amplitude,
another draw of the sinusoids, or wavelengths outside 0.35–0.7.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast, get_args

import numpy as np
from numpy.typing import NDArray
from scipy.special import ndtr

from hps_bayes.errors import ConfigError
from hps_bayes.inputs.root_io import write_spectra_root
from hps_bayes.inputs.spectrum import Spectrum
from hps_bayes.physics.presets import DatasetPreset, load_preset
from hps_bayes.physics.signal import sigma_m, signal_template

log = logging.getLogger(__name__)

Shape = Literal["2015", "2016", "2021"]

#: Events of the real runs that the densities are normalised to.
DEFAULT_N_EVENTS: dict[str, int] = {"2015": 21_500_000, "2016": 7_500_000, "2021": 11_000_000}
#: Upper edge (GeV) of the simulated histograms.
DEFAULT_MASS_MAX: dict[str, float] = {"2015": 0.2, "2016": 0.3, "2021": 0.3}
#: Bin width of the real HPS histograms (0.05 MeV).
FINE_BIN_WIDTH = 5e-5
#: Gauss–Legendre nodes per bin for the bin integrals of the density.
_N_NODES = 5


@dataclass(frozen=True)
class _DensityParameters:
    """Parameters of ρ(m) = Φ((m − m_on)/w_on) Σ_k A_k exp(−(ln m − ln μ_k)²/(2 s_k²))."""

    turn_on_mass: float
    turn_on_width: float
    terms: tuple[tuple[float, float, float], ...]  # (A_k [events/GeV], μ_k [GeV], s_k)


#: RMS a of the multiplicative structure exp(a·g(ln m)) of the structured variants.
STRUCTURE_AMPLITUDE: dict[str, float] = {"2015": 0.004244, "2016": 0.003520, "2021": 0.002330}
#: Wavelengths (in ln m) of the structure's sinusoids are drawn in this range.
STRUCTURE_WAVELENGTHS = (0.35, 0.7)
_N_STRUCTURE_TERMS = 8

_PARAMETERS: dict[str, _DensityParameters] = {
    "2015": _DensityParameters(0.01586, 0.00100, ((8.28e8, 0.03001, 0.3304), (2.13e5, 0.1166, 0.25))),
    "2016": _DensityParameters(0.03990, 0.00372, ((7.23e7, 0.07014, 0.25), (1.025e8, 0.04524, 0.4444))),
    "2021": _DensityParameters(0.03021, 0.00222, ((2.18e8, 0.05319, 0.3525), (6.33e6, 0.1122, 0.25))),
}
#: The structured variants' parameters where they differ (2015: the sharper, higher turn-on).
_STRUCTURED_PARAMETERS: dict[str, _DensityParameters] = {
    "2015": _DensityParameters(0.0200, 0.0032, ((1.029e9, 0.02703, 0.3550), (2.13e5, 0.1166, 0.25))),
}


@dataclass(frozen=True)
class Structure:
    """Which structure a structured spectrum carries: by default the bundled demo's (module docstring).

    ``scale``: its RMS in units of :data:`STRUCTURE_AMPLITUDE`; ``seed``: the draw of the sinusoids'
    wavelengths, phases and weights (``None``: ``int(shape)``, the bundled files' draw); ``wavelengths``:
    the range (in ln m) the wavelengths are drawn from.  Other values make spectra unlike the bundled
    ones, to try the analysis on structure it was not tuned on (``dataset.demo.structure_*``).
    """

    scale: float = 1.0
    seed: int | None = None
    wavelengths: tuple[float, float] = STRUCTURE_WAVELENGTHS

    def __post_init__(self) -> None:
        lo, hi = (float(v) for v in self.wavelengths)
        if not (math.isfinite(self.scale) and self.scale >= 0 and 0 < lo <= hi and (self.seed or 0) >= 0):
            raise ConfigError(f"structure scale {self.scale!r}, seed {self.seed!r} and wavelengths "
                              f"{tuple(self.wavelengths)!r}: give a scale >= 0, a seed >= 0 (or null) and wavelengths "
                              "0 < lo <= hi in ln m, e.g. dataset.demo.structure_scale=2.0 "
                              "dataset.demo.structure_seed=31 dataset.demo.structure_wavelengths=[0.35,0.7]")
        object.__setattr__(self, "wavelengths", (lo, hi))

    @classmethod
    def from_settings(cls, demo: Mapping[str, Any]) -> Structure:
        """From the ``dataset.demo`` keys ``structure_scale``, ``structure_seed``, ``structure_wavelengths``."""
        seed, scale = demo.get("structure_seed"), demo.get("structure_scale")
        wavelengths = demo.get("structure_wavelengths") or STRUCTURE_WAVELENGTHS
        try:
            lo, hi = (float(v) for v in wavelengths)
            return cls(scale=1.0 if scale is None else float(scale), seed=None if seed is None else int(seed),
                       wavelengths=(lo, hi))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"dataset.demo.structure_scale={scale!r}, structure_seed={seed!r}, "
                              f"structure_wavelengths={wavelengths!r}: give a number, an integer (or null) and "
                              "[lo, hi] in ln m, e.g. structure_scale=2.0 structure_seed=31 "
                              "structure_wavelengths=[0.35,0.7]") from exc


def structure_factor(shape: Shape, structure: Structure | None = None
                     ) -> Callable[[NDArray[np.float64]], NDArray[np.float64]]:
    """ln of the structured variant's multiplicative structure, a·g(ln m) (module docstring)."""
    _check_shape(shape)
    structure = Structure() if structure is None else structure
    rng = np.random.default_rng(int(shape) if structure.seed is None else structure.seed)
    lo, hi = structure.wavelengths
    wavelength = rng.uniform(lo, hi, _N_STRUCTURE_TERMS)
    phase = rng.uniform(0.0, 2.0 * np.pi, _N_STRUCTURE_TERMS)
    weight = rng.standard_normal(_N_STRUCTURE_TERMS)
    u = np.linspace(np.log(0.015), np.log(0.3), 2001)[:, None]  # unit RMS over 15-300 MeV
    weight *= STRUCTURE_AMPLITUDE[shape] * structure.scale / np.sqrt(
        np.mean(np.sum(weight * np.sin(2.0 * np.pi * u / wavelength + phase), axis=1) ** 2))

    def log_structure(mass: NDArray[np.float64]) -> NDArray[np.float64]:
        u = np.log(np.where(mass > 0, mass, 1.0))[..., None]
        return np.asarray(np.sum(weight * np.sin(2.0 * np.pi * u / wavelength + phase), axis=-1))

    return log_structure


def turn_on_parameters(shape: Shape, *, structured: bool = False) -> tuple[float, float]:
    """(m_on, w) in GeV of the demo density's turn-on Φ((m − m_on)/w)."""
    _check_shape(shape)
    p = _STRUCTURED_PARAMETERS.get(shape, _PARAMETERS[shape]) if structured else _PARAMETERS[shape]
    return p.turn_on_mass, p.turn_on_width


def _check_shape(shape: str) -> None:
    if shape not in get_args(Shape):
        raise ConfigError(
            f"demo shape {shape!r} is not one of {list(get_args(Shape))}; use e.g. shape='2015'"
        )


def demo_density(shape: Shape, *, structured: bool = False, structure: Structure | None = None
                 ) -> Callable[[NDArray[np.float64]], NDArray[np.float64]]:
    """The background density dN/dm (events per GeV) of an HPS-like spectrum.

    Parameters
    ----------
    shape : {"2015", "2016", "2021"}
        Which run's spectrum to imitate.
    structured : bool, optional
        The variant with real spectra's few-percent structure (and 2015's sharper turn-on).
    structure : Structure, optional
        Which structure (default: the bundled demo's); only with ``structured``.

    Returns
    -------
    callable
        ρ(m) for masses m in GeV (0 for m ≤ 0); see the module docstring for the form.

    Raises
    ------
    ConfigError
        For an unknown shape.
    """
    _check_shape(shape)
    p = _STRUCTURED_PARAMETERS.get(shape, _PARAMETERS[shape]) if structured else _PARAMETERS[shape]
    if structure is not None and not structured:
        raise ConfigError("a structure (dataset.demo.structure_*) needs the structured variant: set "
                          "dataset.demo.structured=true")
    log_structure = structure_factor(shape, structure) if structured else None

    def density(mass: NDArray[np.float64]) -> NDArray[np.float64]:
        m = np.asarray(mass, dtype=np.float64)
        log_m = np.log(np.where(m > 0, m, 1.0))
        shape_sum = sum(a * np.exp(-0.5 * ((log_m - np.log(mu)) / s) ** 2) for a, mu, s in p.terms)
        turn_on = ndtr((m - p.turn_on_mass) / p.turn_on_width)
        if log_structure is not None:
            shape_sum = shape_sum * np.exp(log_structure(m))
        return np.asarray(np.where(m > 0, turn_on * shape_sum, 0.0), dtype=np.float64)

    return density


def _bin_integrals(
    density: Callable[[NDArray[np.float64]], NDArray[np.float64]], edges: NDArray[np.float64]
) -> NDArray[np.float64]:
    """∫ ρ dm over each bin by Gauss–Legendre quadrature (exact to ~1e-10 for these smooth ρ)."""
    nodes, weights = np.polynomial.legendre.leggauss(_N_NODES)
    half = 0.5 * np.diff(edges)
    mid = 0.5 * (edges[:-1] + edges[1:])
    values = density(mid[:, None] + half[:, None] * nodes[None, :])
    return np.asarray(half * (values @ weights), dtype=np.float64)


def _fine_edges(shape: Shape, bin_width: float, mass_max: float | None) -> NDArray[np.float64]:
    """Edges 0, w, 2w, ..., mass_max (a multiple of the bin width w)."""
    upper = DEFAULT_MASS_MAX[shape] if mass_max is None else float(mass_max)
    if not (bin_width > 0 and upper > 0):
        raise ConfigError(f"bin_width and mass_max must be > 0 GeV, got {bin_width!r} and {mass_max!r}")
    n_bins = round(upper / bin_width)
    if n_bins < 1 or abs(n_bins * bin_width - upper) > 1e-6 * bin_width:
        raise ConfigError(
            f"mass_max = {upper} GeV is not a multiple of bin_width = {bin_width} GeV; "
            "choose values such that mass_max / bin_width is an integer"
        )
    return np.arange(n_bins + 1, dtype=np.float64) * bin_width


def _signal_counts(
    shape: Shape, edges: NDArray[np.float64], *, mass: float | None, yield_: float, sigma: float | None
) -> NDArray[np.float64]:
    """A·T_i of an injected Gaussian signal (zeros without one); σ defaults to the run's σ(m)."""
    if yield_ == 0:
        return np.zeros(edges.size - 1)
    if mass is None or not yield_ > 0:
        raise ConfigError(
            f"an injected signal needs signal_mass (GeV) and signal_yield > 0, got mass={mass!r}, "
            f"yield={yield_!r}; set signal_yield=0 for background only"
        )
    width = float(sigma_m(mass, load_preset(shape))) if sigma is None else float(sigma)
    return float(yield_) * signal_template(edges, mass, width)


def expected_spectrum(
    shape: Shape,
    *,
    n_events: float,
    bin_width: float = FINE_BIN_WIDTH,
    mass_max: float | None = None,
    signal_mass: float | None = None,
    signal_yield: float = 0.0,
    sigma: float | None = None,
    name: str = "invariant_mass",
    structured: bool = False,
    structure: Structure | None = None,
) -> Spectrum:
    """Noise-free expected counts of an HPS-like spectrum.

    ν_i = N · ∫_{bin i} ρ dm / ∫_0^{mass_max} ρ dm + A·T_i, with ρ from
    :func:`demo_density`, N = ``n_events`` and T_i the Gaussian template of
    :func:`hps_bayes.physics.signal_template`.

    Parameters
    ----------
    shape : {"2015", "2016", "2021"}
        Which run's spectrum to imitate.
    n_events : float
        Expected background events in [0, mass_max].
    bin_width : float, optional
        Bin width in GeV (default 0.05 MeV, as in the real files).
    mass_max : float, optional
        Upper edge in GeV (default 0.2 for 2015, 0.3 for 2016 and 2021).
    signal_mass, signal_yield, sigma : float, optional
        An injected signal of total yield A = ``signal_yield`` at ``signal_mass``
        (GeV) with width ``sigma`` (default σ(m) of the run's preset).
    name : str, optional
        The spectrum's name.
    structured, structure : optional
        The structured variant of :func:`demo_density`, and which structure it carries.

    Returns
    -------
    Spectrum
        Counts = variances = ν (not integers).
    """
    _check_shape(shape)
    if not n_events > 0:
        raise ConfigError(f"n_events must be > 0, got {n_events!r}")
    edges = _fine_edges(shape, bin_width, mass_max)
    background = _bin_integrals(demo_density(shape, structured=structured, structure=structure), edges)
    expected = float(n_events) * background / background.sum()
    expected = expected + _signal_counts(shape, edges, mass=signal_mass, yield_=signal_yield, sigma=sigma)
    kind = "structured " if structured else ""
    source = f"expected {kind}HPS-like {shape} spectrum, {n_events:.6g} events"
    return Spectrum(edges=edges, counts=expected, variances=expected, name=name, source=source)


def simulate_spectrum(
    shape: Shape,
    *,
    n_events: float,
    rng: np.random.Generator,
    bin_width: float = FINE_BIN_WIDTH,
    mass_max: float | None = None,
    signal_mass: float | None = None,
    signal_yield: float = 0.0,
    sigma: float | None = None,
    name: str = "invariant_mass",
    structured: bool = False,
    structure: Structure | None = None,
) -> Spectrum:
    """Poisson pseudo-data n_i ~ Poisson(ν_i) around :func:`expected_spectrum`.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of randomness (e.g. ``numpy.random.default_rng(seed)``).
    shape, n_events, bin_width, mass_max, signal_mass, signal_yield, sigma, name, structured, structure
        As in :func:`expected_spectrum`.

    Returns
    -------
    Spectrum
        Integer counts (as float64) with variances = counts.
    """
    nu = expected_spectrum(
        shape,
        n_events=n_events,
        bin_width=bin_width,
        mass_max=mass_max,
        signal_mass=signal_mass,
        signal_yield=signal_yield,
        sigma=sigma,
        name=name,
        structured=structured,
        structure=structure,
    )
    counts = rng.poisson(nu.counts).astype(np.float64)
    kind = "structured " if structured else ""
    source = f"simulated {kind}HPS-like {shape} spectrum, {n_events:.6g} events"
    return Spectrum(edges=nu.edges, counts=counts, variances=counts, name=name, source=source)


def write_demo_file(
    path: str | os.PathLike[str],
    preset: DatasetPreset,
    *,
    n_events: float,
    seed: int,
    signal_mass: float | None = None,
    signal_yield: float = 0.0,
    shape: Shape | None = None,
    structured: bool = False,
    structure: Structure | None = None,
) -> Path:
    """Simulate a spectrum and write it as a TH1D under ``preset.hist_name``.

    Parameters
    ----------
    path : str or path-like
        ROOT file to create (parent folders are made; an existing file is replaced).
    preset : DatasetPreset
        Gives the histogram key (a TDirectory path such as
        ``preselection/h_invM_8000`` is created) and σ(m) of an injected signal.
    n_events : float
        Expected background events.
    seed : int
        Seed of ``numpy.random.default_rng``; the same seed gives the same file.
    signal_mass, signal_yield : float, optional
        An injected signal (GeV, total events).
    shape : {"2015", "2016", "2021"}, optional
        Spectrum shape; default ``preset.name`` when that is a shape.
    structured : bool, optional
        The structured variant (real spectra's few-percent structure; :func:`demo_density`).
    structure : Structure, optional
        Which structure it carries (default: the bundled demo's).

    Returns
    -------
    Path
        The written file.
    """
    chosen = shape if shape is not None else preset.name
    if chosen not in get_args(Shape):
        raise ConfigError(
            f"dataset '{preset.name}' is not a demo shape; pass shape= one of {list(get_args(Shape))}"
        )
    key = preset.hist_name.partition(";")[0]
    sigma = None if signal_mass is None else float(sigma_m(signal_mass, preset))
    spectrum = simulate_spectrum(
        cast(Shape, chosen),
        n_events=n_events,
        rng=np.random.default_rng(seed),
        signal_mass=signal_mass,
        signal_yield=signal_yield,
        sigma=sigma,
        name=key.rpartition("/")[2],
        structured=structured,
        structure=structure,
    )
    spectrum = dataclasses.replace(spectrum, source=f"{spectrum.source}, seed {seed}")
    target = write_spectra_root(path, {key: spectrum})
    log.info("demo spectrum (%s-like, %.6g events, seed %d) written to %s", chosen, n_events, seed, target)
    return target
