"""Frozen result objects of a mass point and a combination, and their tables.

Every result is a frozen dataclass with a fixed shape: fields never depend on
options, and a field that was not computed holds NaN (numbers) or "" (text).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hps_bayes.core import FloatArray

N_SIGMA_BAND = (-2, -1, 0, 1, 2)
#: column suffixes of the expected band in tables, in the order of ``N_SIGMA_BAND``
BAND_SUFFIXES = ("m2", "m1", "median", "p1", "p2")
#: the fields of a mass point that hold a band (one column per suffix in tables)
BAND_FIELDS = ("A_up_expected", "A_up_expected_error", "eps2_up_expected")
NAN = float("nan")


def _nan5() -> tuple[float, ...]:
    return (NAN,) * 5


@dataclass(frozen=True)
class MassPointResult:
    """Everything computed for one (dataset, mass) point.

    ``A_up_error`` is the Monte Carlo uncertainty of a toy limit ``A_up`` (σ(CLs) over the CLs slope
    at the limit; NaN for asymptotic limits), ``A_up_expected_error`` that of each toy expected limit
    (bootstrap of the toys, over the band's CLs slope; NaN for asymptotic limits).  ``A_up_expected`` and ``eps2_up_expected`` hold the expected limits for
    N = -2, -1, 0, +1, +2 standard deviations (in that order).  ``spurious_signal`` is the size S
    (events) of the spurious-signal nuisance at this mass (0: off); ``sigma_A`` includes it in
    quadrature, σ_A = √(σ_stat² + S²), and ``sigma_A_stat`` = √(σ_A² − S²) is its statistical part.
    ``sigma_A_hesse`` is the Hessian error of Â on the data with every nuisance profiled (S
    included): the cross-check of σ_A (:mod:`hps_bayes.analysis.checks`).  ``gof_p`` is the goodness of fit of
    the window's free fit (signal and background): the χ² p-value of its Poisson deviance with bins − free
    coefficients degrees of freedom; ``sideband_z`` the largest signal-like excess or deficit in its sidebands
    (|Σ r|/√k over runs of about 2σ(m) of the fit's Pearson residuals r beyond 2σ(m) from the mass), in σ.  ``limit`` is the
    kind of the limits (``stats.limit``: "cls", "pl" or "pcl"), ``method`` how they were computed.
    ``background_model`` names the background used at this mass (the selection's model name with
    ``background.selection``, else :meth:`hps_bayes.model.settings.BackgroundSettings.label`).  ``status`` is
    "ok" when every fit converged and the limit search closed; otherwise a
    short reason, and ``message`` says more.
    """

    dataset: str
    mass: float
    status: str = "ok"
    message: str = ""
    sigma_m: float = NAN
    f_rad: float = NAN
    A_hat: float = NAN
    sigma_A: float = NAN
    sigma_A_stat: float = NAN
    sigma_A_hesse: float = NAN
    q0: float = NAN
    p0: float = NAN
    Z: float = NAN
    p0_method: str = "asymptotic"
    p0_asymptotic: float = NAN
    A_up: float = NAN
    A_up_error: float = NAN
    A_up_expected: tuple[float, ...] = field(default_factory=_nan5)
    A_up_expected_error: tuple[float, ...] = field(default_factory=_nan5)
    eps2_up: float = NAN
    eps2_up_expected: tuple[float, ...] = field(default_factory=_nan5)
    rho: float = NAN
    spurious_signal: float = 0.0
    window_lo: float = NAN
    window_hi: float = NAN
    window_bins: int = 0
    window_clipped: bool = False
    converged: bool = False
    gof_p: float = NAN
    sideband_z: float = NAN
    n_iter: int = 0
    eta: float = NAN
    lengthscale: float = NAN
    method: str = "asymptotic"
    n_toys: int = 0
    seed: int = -1
    config_hash: str = ""
    version: str = ""
    seconds: float = NAN
    limit: str = "cls"
    background_model: str = ""

    def to_dict(self) -> dict[str, Any]:
        return record_to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MassPointResult:
        return record_from_dict(cls, d)

    def to_row(self) -> dict[str, Any]:
        """Flat row for CSV/Parquet: band tuples become columns ``*_m2 … *_p2``."""
        row = self.to_dict()
        for key in BAND_FIELDS:
            values = row.pop(key)
            for suffix, v in zip(BAND_SUFFIXES, values, strict=True):
                row[f"{key}_{suffix}"] = v
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> MassPointResult:
        """The inverse of :meth:`to_row`: a result from one flat table row."""
        d = dict(row)
        for key in BAND_FIELDS:
            if f"{key}_{BAND_SUFFIXES[0]}" in d:  # tables written before a band field existed lack it
                d[key] = [d.pop(f"{key}_{suffix}") for suffix in BAND_SUFFIXES]
        return cls.from_dict(d)


def record_to_dict(record: Any, *, exclude: Iterable[str] = (), lists: bool = False) -> dict[str, Any]:
    """The fields of a frozen result (a dataclass instance) as a dict, for JSON and table rows.

    Arrays become lists; tuples stay tuples unless ``lists``; ``exclude`` names fields left out
    (e.g. a trace object written elsewhere).  :func:`record_from_dict` is its inverse.
    """
    skip = set(exclude)
    out: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        if f.name in skip:
            continue
        value = getattr(record, f.name)
        if isinstance(value, np.ndarray):
            value = value.tolist()
        elif isinstance(value, tuple) and lists:
            value = list(value)
        elif isinstance(value, (dict, list)):
            value = copy.deepcopy(value)
        out[f.name] = value
    return out


def record_from_dict[T](cls: type[T], d: Mapping[str, Any], *, exclude: Iterable[str] = ()) -> T:
    """A frozen result of class ``cls`` from the entries of ``d`` that are its fields (others ignored).

    Fields annotated ``tuple[float, ...]`` (or ``tuple[str, ...]``) become tuples of that type, from
    lists (as JSON stores them) or ";"-joined strings (as CSV rows hold them); a ``null`` where a float
    belongs (strict JSON's NaN) becomes NaN.
    """
    skip = set(exclude)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.name in skip or f.name not in d:
            continue
        value, kind = d[f.name], str(f.type)
        if value is None and kind == "float":  # strict JSON writes NaN as null
            value = math.nan
        if kind.startswith("tuple["):
            if isinstance(value, str):
                value = [v for v in value.split(";") if v]
            convert = _float_or_nan if "float" in kind else str
            value = tuple(convert(v) for v in value)
        kwargs[f.name] = value
    return cls(**kwargs)


def _float_or_nan(value: Any) -> float:
    """``float(value)``, NaN for None (how strict JSON stores NaN)."""
    return math.nan if value is None else float(value)


def mass_label(mass: float) -> str:
    """Folder name of a mass point, e.g. ``m030MeV`` or ``m030p5MeV``."""
    mev = round(mass * 1e3, 3)
    whole = math.floor(mev)
    frac = round(mev - whole, 3)
    return f"m{whole:03d}MeV" if frac == 0 else f"m{whole:03d}p{str(frac)[2:]}MeV"


def result_rows(results: Iterable[MassPointResult]) -> list[dict[str, Any]]:
    """One table row per result (:meth:`MassPointResult.to_row`), sorted by dataset and mass (stable)."""
    return sorted((r.to_row() for r in results), key=lambda row: (row["dataset"], row["mass"]))


def results_frame(results: Iterable[MassPointResult]) -> Any:
    """A pandas DataFrame with one row per result, sorted by dataset and mass."""
    import pandas as pd

    return pd.DataFrame(result_rows(results))


class ScanResults(list[MassPointResult]):
    """A scan's results in grid order, with the counts of points ``computed`` and ``reused``: what a
    command-line scan hands on.  Its DataFrame (:meth:`frame`, with the counts in ``attrs``) is built
    only where something needs it: pandas costs a third of a second of every chunk's start."""

    def __init__(self, results: Iterable[MassPointResult], counts: Mapping[str, int]) -> None:
        super().__init__(results)
        self.counts = dict(counts)
        self._frame: Any = None

    @property
    def status(self) -> list[str]:
        """The status of every point (what the command line checks for "no point ok")."""
        return [r.status for r in self]

    def rows(self) -> list[dict[str, Any]]:
        return result_rows(self)

    def frame(self) -> Any:
        if self._frame is None:
            self._frame = results_frame(self)
            self._frame.attrs.update(self.counts)
        return self._frame


@dataclass(frozen=True)
class WindowFitArrays:
    """Arrays of one window fit, for the per-mass plots (plots never compute statistics).

    ``background_free``/``signal_free``: the free fit's background and Â·T per bin;
    ``background_limit``/``signal_limit``: the fit with A fixed at the observed
    upper limit and that signal, A_up·T.  Masses and edges in GeV.
    """

    dataset: str
    mass: float
    sigma_m: float
    edges: Any
    counts: Any
    background_free: Any
    signal_free: Any
    background_limit: Any
    signal_limit: Any
    A_hat: float
    A_up: float
    Z: float

    def to_dict(self) -> dict[str, Any]:
        return record_to_dict(self)


@dataclass(frozen=True)
class CombinedResult:
    """The combination of the datasets covering one mass (shared ε², per-dataset nuisances).

    ``datasets`` names them joined by "+", in the order of ``k_factors`` (yield per
    unit ε², A_d = ε²·K_d) and ``sigma_eps2_single`` (each dataset's own σ(ε²)).
    """

    mass: float
    datasets: str
    status: str = "ok"
    message: str = ""
    eps2_hat: float = NAN
    sigma_eps2: float = NAN
    q0: float = NAN
    p0: float = NAN
    Z: float = NAN
    eps2_up: float = NAN
    eps2_up_expected: tuple[float, ...] = field(default_factory=_nan5)
    k_factors: tuple[float, ...] = ()
    sigma_eps2_single: tuple[float, ...] = ()
    method: str = "asymptotic"
    config_hash: str = ""
    version: str = ""
    seconds: float = NAN

    def to_dict(self) -> dict[str, Any]:
        return record_to_dict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CombinedResult:
        return record_from_dict(cls, d)

    def to_row(self) -> dict[str, Any]:
        """Flat row for CSV/Parquet: the band as ``eps2_up_expected_m2 … _p2``, lists joined by ";"."""
        row = self.to_dict()
        band = row.pop("eps2_up_expected")
        for suffix, v in zip(BAND_SUFFIXES, band, strict=True):
            row[f"eps2_up_expected_{suffix}"] = v
        for key in ("k_factors", "sigma_eps2_single"):
            row[key] = ";".join(f"{v:.8g}" for v in row[key])
        return row


@dataclass(frozen=True)
class PosteriorArrays:
    """What the figures of one sampled point draw (:mod:`hps_bayes.plots.posterior`)."""

    dataset: str
    mass: float
    edges: FloatArray
    counts: FloatArray
    band: FloatArray
    trace_draws: dict[str, FloatArray]
    A: FloatArray
    A_up_credible: float
    passed: bool
