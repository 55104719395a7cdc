"""Dataset presets: σ(m) and f_rad(m) polynomials, ranges, histogram names, α_em.

This is the ``physics`` layer of :mod:`hps_bayes`.  Every number that
describes a dataset (mass resolution σ(m), radiative fraction f_rad(m),
analysis range, histogram name) lives in a :class:`DatasetPreset`, read from
``conf/dataset/<name>.yaml``; nothing dataset-specific is a constant in code.

The signal of a dark photon A' → e+e− of mass m is a Gaussian of width σ(m)
in the invariant mass; its total yield A converts to the kinetic-mixing
strength ε² through the radiative-tridents relation of HPS
(arXiv:1807.11530, Eq. 1)::

    ε² = 2 N_eff α A / (3π m f_rad(m) ρ(m)),

with ρ = dN/dm the background density at m in counts per GeV.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hps_bayes.errors import ConfigError

#: Fine-structure constant α (the default of every ``alpha_em`` setting).
ALPHA_EM = 1.0 / 137.036


def conf_dir(package: Path) -> Path:
    """The Hydra config folder of the package folder ``package``: ``<package>/conf`` in an installed
    package (the wheel ships the repository's ``conf/`` there), else ``conf/`` beside the package
    (the top of the source tree)."""
    installed = package / "conf"
    return installed if (installed / "config.yaml").is_file() else package.parent / "conf"


#: Folder of the Hydra config groups (``config.yaml``, ``dataset/``, ``background/``, ``task/`` ...).
CONF_DIR = conf_dir(Path(__file__).resolve().parents[1])

#: Folder of the Hydra ``dataset`` config group.
PRESET_DIR = CONF_DIR / "dataset"

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
    rho_at : str
        Where the ε² conversion takes the background density ρ(m) of the background-only fit:
        ``"template"`` (default) its average under the signal template, ``"mass"`` its value at m
        (log-linear between the bin centres), as the published HPS searches did.
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
    rho_at: str = "template"
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
        if self.rho_at not in ("template", "mass"):
            raise ConfigError(f"rho_at must be 'template' (the density averaged under the signal) or 'mass' "
                              f"(at m), got {self.rho_at!r}")
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
