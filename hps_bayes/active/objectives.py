"""Objectives wired to the analysis: callables of one point (a sequence of floats) returning a float.

A non-finite return (or an exception) marks a failed evaluation; the loop records
it and the learner never asks for that point again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from hps_bayes.analysis.combine import datasets_covering, evaluate_combined
from hps_bayes.analysis.grid import guard_turn_on, mass_grid, prepare_spectrum
from hps_bayes.analysis.point import evaluate_point
from hps_bayes.analysis.settings import AnalysisSettings
from hps_bayes.core import FloatArray
from hps_bayes.inputs.spectrum import Spectrum
from hps_bayes.physics.signal import sigma_m as _sigma_m

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExcessObjective:
    """Local significance Z(m) of one dataset at a mass (GeV): :func:`hps_bayes.scan.evaluate_point`.

    Maximised (EI/UCB) to find the largest local excess.  ``spectrum`` is the
    full spectrum as read from file; it is rebinned and cropped once here.
    A fit failure (status other than "ok") gives NaN.  With ``stats.method=toys``
    each call is a toy-based p0 — the expensive case active learning is for.
    """

    spectrum: Spectrum
    settings: AnalysisSettings
    prepared: bool = False

    def __post_init__(self) -> None:
        if not self.prepared:
            object.__setattr__(self, "settings", guard_turn_on(self.spectrum, self.settings))
            object.__setattr__(self, "spectrum", prepare_spectrum(self.spectrum, self.settings))
            object.__setattr__(self, "prepared", True)

    def __call__(self, point: Sequence[float]) -> float:
        result = evaluate_point(self.spectrum, float(point[0]), self.settings)
        if result.status != "ok":
            log.warning("m=%.2f MeV: %s (%s): recorded as a failed evaluation", result.mass * 1e3, result.status,
                        result.message)
            return float("nan")
        return float(result.Z)

    def grid(self) -> FloatArray:
        """The scan's mass grid (GeV): the candidates of the excess search."""
        return mass_grid(self.settings)

    def bounds(self) -> list[tuple[float, float]]:
        masses = self.grid()
        return [(float(masses[0]), float(masses[-1]))]

    def sigma_m(self, mass: float) -> float:
        return float(_sigma_m(mass, self.settings.dataset))


@dataclass(frozen=True)
class CombinedExcessObjective:
    """Local significance Z(m) of the combination of datasets at a mass (GeV), shared ε²:
    :func:`hps_bayes.combine.evaluate_combined` over the datasets whose mass range covers m
    (one dataset alone where only one covers it).

    Maximised (EI/UCB) to find the largest local excess of the combination.  ``spectra`` and
    ``settings`` are keyed by dataset name; the spectra as read from file.  ``method="toys"`` makes each
    call a toy-based combined p0.  A failed fit gives NaN.
    """

    spectra: Mapping[str, Spectrum]
    settings: Mapping[str, AnalysisSettings]
    method: Literal["asymptotic", "toys"] = "asymptotic"
    n_toys: int = 1000

    def __post_init__(self) -> None:  # each dataset's fit range above its sharp turn-on (idempotent)
        object.__setattr__(self, "settings", {n: guard_turn_on(self.spectra[n], s) for n, s in self.settings.items()})

    def __call__(self, point: Sequence[float]) -> float:
        mass = float(point[0])
        covering = {n: self.settings[n] for n in datasets_covering(mass, self.settings)}
        result = evaluate_combined(self.spectra, mass, covering, method=self.method, n_toys=self.n_toys)
        if result.status != "ok":
            log.warning("m=%.2f MeV (%s): %s (%s): recorded as a failed evaluation", mass * 1e3, result.datasets,
                        result.status, result.message)
            return float("nan")
        return float(result.Z)

    def grid(self) -> FloatArray:
        """Every mass on some dataset's scan grid (GeV, sorted): the candidates of the excess search."""
        masses = np.concatenate([mass_grid(s) for s in self.settings.values()])
        return np.unique(np.round(masses, 7))

    def bounds(self) -> list[tuple[float, float]]:
        masses = self.grid()
        return [(float(masses[0]), float(masses[-1]))]

    def sigma_m(self, mass: float) -> float:
        """The narrowest mass resolution among the datasets covering ``mass``."""
        names = datasets_covering(mass, self.settings) or list(self.settings)
        return min(float(_sigma_m(mass, self.settings[n].dataset)) for n in names)


def grid_values(objective: object, points: FloatArray) -> FloatArray:
    """The objective at every point, in-process (a truth grid for plots and benchmarks)."""
    return np.array([float(objective(p)) for p in np.atleast_2d(points)])  # type: ignore[operator]
