"""Dataset presets, the binned signal template and the A ↔ ε² conversion.

This is the ``physics`` layer of :mod:`hps_bayes`.  Every number that
describes a dataset (mass resolution σ(m), radiative fraction f_rad(m),
analysis range, histogram name) lives in a :class:`DatasetPreset`, read from
``conf/dataset/<name>.yaml``; nothing dataset-specific is a constant in code.

The signal of a dark photon A' → e+e− of mass m is a Gaussian of width σ(m)
in the invariant mass; its total yield A converts to the kinetic-mixing
strength ε² through the radiative-tridents relation of HPS
(arXiv:1807.11530, Eq. 1; DESIGN.md "The statistical model")::

    ε² = 2 N_eff α A / (3π m f_rad(m) ρ(m)),

with ρ = dN/dm the background density at m in counts per GeV.

Examples
--------
>>> import numpy as np
>>> t = signal_template(np.linspace(-1.0, 1.0, 201), 0.0, 0.01)
>>> round(float(t.sum()), 12)
1.0
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.polynomial import polynomial
from numpy.typing import ArrayLike, NDArray
from scipy.special import ndtr

from hps_bayes.errors import ConfigError, InputError

__all__ = [
    "ALPHA_EM",
    "DatasetPreset",
    "available_presets",
    "eps2_from_yield",
    "f_rad",
    "load_preset",
    "preset_from_mapping",
    "sigma_m",
    "signal_template",
    "yield_per_eps2",
]

#: Fine-structure constant α (the default of every ``alpha_em`` setting).
ALPHA_EM = 1.0 / 137.036

#: Folder of the Hydra ``dataset`` config group.
PRESET_DIR = Path(__file__).resolve().parents[1] / "conf" / "dataset"

#: Keys of a dataset config mapping that are not preset fields (used by other layers).
_NON_PRESET_KEYS = frozenset({"demo"})


def _float_tuple(values: Any, field: str) -> tuple[float, ...]:
    """A non-empty tuple of finite floats, or a ConfigError naming ``field``."""
    if isinstance(values, (int, float)):
        values = [values]
    try:
        result = tuple(float(v) for v in values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{field} must be a list of numbers, got {values!r}") from err
    if not result or not all(math.isfinite(v) for v in result):
        raise ConfigError(f"{field} must be a non-empty list of finite numbers, got {values!r}")
    return result


@dataclass(frozen=True)
class DatasetPreset:
    """Everything the analysis needs to know about one dataset.

    Parameters
    ----------
    name : str
        Dataset name (``"2015"``, ``"2016"``, ``"2021"``, ``"demo"``).
    hist_name : str
        Histogram key in the ROOT file (may contain TDirectories and a cycle).
    mass_range : (float, float)
        Analysis range [lo, hi] in GeV.
    sigma_coeffs : tuple of float
        Mass resolution σ(m) = Σ_i c_i m^i (GeV, m in GeV).
    sigma_linear_above : float or None
        Above this mass (GeV) σ continues linearly:
        σ(m) = σ_poly(m₀) + s (m − m₀) with m₀ = ``sigma_linear_above``.
    sigma_linear_slope : float or None
        The slope s of that continuation (set both or neither).
    f_rad_coeffs : tuple of float
        Radiative fraction f_rad(m) = Σ_i a_i m^i; one coefficient is a constant.
    n_eff : float
        Number of open decay channels N_eff (1 below the dimuon threshold).
    alpha_em : float
        Fine-structure constant α used in the ε² conversion.
    rebin : int
        Factor by which the stored histogram is rebinned before analysis.
    path : str
        The ROOT file holding the histogram.

    Raises
    ------
    ConfigError
        If a value is out of its allowed range (the message names it).
    """

    name: str
    hist_name: str
    mass_range: tuple[float, float]
    sigma_coeffs: tuple[float, ...]
    f_rad_coeffs: tuple[float, ...]
    sigma_linear_above: float | None = None
    sigma_linear_slope: float | None = None
    n_eff: float = 1.0
    alpha_em: float = ALPHA_EM
    rebin: int = 1
    path: str = ""

    def __post_init__(self) -> None:
        set_ = self._set
        set_("sigma_coeffs", _float_tuple(self.sigma_coeffs, "sigma_coeffs"))
        set_("f_rad_coeffs", _float_tuple(self.f_rad_coeffs, "f_rad_coeffs"))
        mass_range = _float_tuple(self.mass_range, "mass_range")
        if len(mass_range) != 2 or not 0 < mass_range[0] < mass_range[1]:
            raise ConfigError(f"mass_range must be [lo, hi] in GeV with 0 < lo < hi, got {self.mass_range!r}")
        set_("mass_range", (mass_range[0], mass_range[1]))
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"dataset name must be a non-empty string, got {self.name!r}")
        if not isinstance(self.hist_name, str) or not self.hist_name:
            raise ConfigError(f"hist_name must be a non-empty string, got {self.hist_name!r}")
        self._check_scalars()

    def _set(self, field: str, value: Any) -> None:
        object.__setattr__(self, field, value)

    def _check_scalars(self) -> None:
        """Validate the scalar settings."""
        if (self.sigma_linear_above is None) != (self.sigma_linear_slope is None):
            raise ConfigError(
                "sigma_linear_above and sigma_linear_slope must be set together, got "
                f"{self.sigma_linear_above!r} and {self.sigma_linear_slope!r}"
            )
        if self.sigma_linear_above is not None and self.sigma_linear_slope is not None:
            self._set("sigma_linear_above", float(self.sigma_linear_above))
            self._set("sigma_linear_slope", float(self.sigma_linear_slope))
        if not float(self.n_eff) > 0:
            raise ConfigError(f"n_eff must be > 0, got {self.n_eff!r}; use 1 below the dimuon threshold")
        if not 0 < float(self.alpha_em) < 1:
            raise ConfigError(f"alpha_em must be in (0, 1), got {self.alpha_em!r}; the default is 1/137.036")
        if isinstance(self.rebin, bool) or not isinstance(self.rebin, int) or self.rebin < 1:
            raise ConfigError(f"rebin must be an integer >= 1, got {self.rebin!r}")
        self._set("n_eff", float(self.n_eff))
        self._set("alpha_em", float(self.alpha_em))
        self._set("path", str(self.path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DatasetPreset:
        """Build a preset from a mapping with exactly the field names.

        Raises
        ------
        ConfigError
            If a key is unknown or a required one is missing.
        """
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ConfigError(f"unknown dataset preset keys {unknown}; allowed keys: {names}")
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [key for key in required if key not in data]
        if missing:
            raise ConfigError(f"dataset preset is missing keys {missing}; required keys: {required}")
        return cls(**dict(data))

    def to_dict(self) -> dict[str, Any]:
        """A JSON/YAML-able mapping (tuples become lists) that :meth:`from_dict` reads back."""
        out = dataclasses.asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out


def preset_from_mapping(data: Mapping[str, Any]) -> DatasetPreset:
    """Build a preset from a dataset config mapping (the content of a ``conf/dataset`` file).

    Keys that belong to other layers (the ``demo`` block) are ignored; every
    other key must be a :class:`DatasetPreset` field.
    """
    return DatasetPreset.from_dict({k: v for k, v in data.items() if k not in _NON_PRESET_KEYS})


def available_presets() -> list[str]:
    """Names of the preset files in ``conf/dataset`` (without ``.yaml``)."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def _preset_file(name: str) -> Path:
    """Map ``"2015"``, ``"hps2015"``, ``"hps2015.yaml"``, ``"demo"`` to a preset file."""
    stem = str(name).strip().lower().removesuffix(".yaml")
    candidates = [stem, f"hps{stem}"]
    for candidate in candidates:
        path = PRESET_DIR / f"{candidate}.yaml"
        if path.is_file():
            return path
    raise ConfigError(
        f"unknown dataset preset {name!r}; available in {PRESET_DIR}: {available_presets()} "
        "(e.g. '2015', 'hps2016', 'demo')"
    )


def load_preset(name: str) -> DatasetPreset:
    """Read the preset ``conf/dataset/<name>.yaml`` of the repository.

    Parameters
    ----------
    name : str
        ``"2015"``, ``"hps2015"``, ``"2016"``, ``"2021"``, ``"demo"`` ...

    Raises
    ------
    ConfigError
        If no such file exists (the message lists the available presets) or
        its content is not a valid preset.
    """
    return preset_from_mapping(_read_preset_file(_preset_file(name)))


def background_mapping(name: str) -> dict[str, Any]:
    """The mapping of a background config (``conf/background/<name>.yaml``: default, whole, whole15, ...)."""
    import yaml  # PyYAML: a dependency of Hydra/OmegaConf, only needed here

    folder = PRESET_DIR.parent / "background"
    path = folder / f"{str(name).strip().removesuffix('.yaml')}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in folder.glob("*.yaml"))
        raise ConfigError(f"unknown background {name!r}; available in {folder}: {known}")
    with path.open(encoding="utf-8") as stream:
        data = yaml.safe_load(stream)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path} must hold a mapping of background keys, got {type(data).__name__}")
    return dict(data)


def preset_mapping(name: str) -> dict[str, Any]:
    """The full mapping of a preset file (including its ``demo:`` block), inheritance resolved."""
    return _read_preset_file(_preset_file(name))


def _read_preset_file(path: Path) -> dict[str, Any]:
    """The mapping in a preset file, with a Hydra ``defaults:`` list of other presets merged in."""
    import yaml  # PyYAML: a dependency of Hydra/OmegaConf, only needed here

    with path.open(encoding="utf-8") as stream:
        data = yaml.safe_load(stream)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path} must hold a mapping of preset keys, got {type(data).__name__}")
    merged: dict[str, Any] = {}
    for base in data.get("defaults", []):
        if base != "_self_":
            merged.update(_read_preset_file(_preset_file(str(base))))
    for key, value in data.items():
        if key == "demo" and isinstance(merged.get("demo"), Mapping):
            merged["demo"] = {**merged["demo"], **value}  # merged like Hydra merges mappings
        elif key != "defaults":
            merged[key] = value
    return merged


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
    arXiv:2212.10629), see DESIGN.md "The statistical model".

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
    (HPS, arXiv:1807.11530, Eq. 1; DESIGN.md), with ρ = dN/dm in counts per GeV.
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
