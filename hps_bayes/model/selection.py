"""A background model chosen per mass (``background.selection``): reading the selection and applying it.

``task=select`` (:mod:`hps_bayes.studies.selection`) fits every candidate background to the
user's spectrum, measures each one's spurious signal S on truths fitted to that spectrum and
its adequacy on the data, and writes ``selection_<dataset>.json``: the candidates' settings
(turn-on already measured on the data) and, per mass of its grid, the chosen model and its
S / (ρ(m) σ(m)).  A scan with ``background.selection=<that file>`` uses, at each mass, the
model chosen at the nearest grid mass and carries S as the spurious-signal nuisance; a mass
that no candidate served is refused with the selection's reason (the point gets a status).
A model whose HSGP hyperparameters η, ℓ the window's evidence chooses takes those the selection
found at that grid mass on the same spectrum (the ones its S was measured with), so the scan does
not search them again.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hps_bayes.core import FloatArray
from hps_bayes.errors import ConfigError, InputError

log = logging.getLogger(__name__)

#: Format version of ``selection_<dataset>.json``.
SELECTION_FORMAT = 1
#: Background settings a candidate may set (the rest come from ``background``).
CANDIDATE_KEYS = frozenset({
    "poly_degree", "n_basis", "c", "kernel", "eta", "lengthscale", "window_sigmas", "min_bins", "edge",
    "hyper", "hyper_scope", "hyper_free", "hyper_degree", "lengthscale_min", "lengthscale_min_lnm", "turn_on",
    "turn_on_widths", "turn_on_sharpness", "fit_range_min", "turn_on_mass", "turn_on_width", "mean_basis",
})


@dataclass(frozen=True)
class Selection:
    """The per-mass choice: grid masses (GeV, increasing), the chosen model's name ('' = none, with
    ``reason``), S/(ρσ) of the chosen model, each model's background settings, and a note where the
    model was chosen although it fails the Z-spread check (as every candidate there does)."""

    mass: FloatArray
    model: tuple[str, ...]
    spurious_rel: FloatArray
    reason: tuple[str, ...]
    models: dict[str, dict[str, Any]]
    range_lo: float
    source: str = ""
    dataset: str = ""
    input_hash: str = ""
    effective_hash: str = ""
    note: tuple[str, ...] = ()
    eta: FloatArray | None = None
    lengthscale: FloatArray | None = None

    def check_use(self, dataset: str, input_hash: str) -> None:
        """Refuse a selection made for another dataset (:class:`ConfigError`); a spectrum whose content differs
        from the one the selection was made on is warned about (its S and choices were measured there)."""
        if self.dataset and dataset != self.dataset:
            raise ConfigError(f"background.selection={self.source} was made for dataset {self.dataset!r}, not "
                              f"{dataset!r}: run task=select on this dataset and pass its selection_{dataset}.json")
        # a weighted spectrum is checked as read and, inside the scan, in effective counts: either is its content
        if self.input_hash and input_hash not in (self.input_hash, self.effective_hash):
            log.warning("background.selection=%s was made on another spectrum (content %s, this one %s): its "
                        "choices and spurious signals were measured there. Right for a selection made on a control "
                        "or blinded spectrum of the same run (a signal in the data raises S around it); otherwise "
                        "rerun task=select on this file", self.source, self.input_hash, input_hash)

    def _index(self, mass: float) -> int:
        return int(np.argmin(np.abs(self.mass - mass)))

    def covers(self, mass: float) -> bool:
        """Whether ``mass`` lies within the selection's grid (half a grid step beyond its ends allowed)."""
        step = float(np.min(np.diff(self.mass))) if self.mass.size > 1 else 0.0
        return bool(self.mass[0] - 0.5 * step - 1e-9 <= mass <= self.mass[-1] + 0.5 * step + 1e-9)

    def model_at(self, mass: float) -> str:
        """The model chosen at the grid mass nearest ``mass``; :class:`InputError` with the selection's reason
        where no candidate served, outside the grid, or where the nearest grid mass lies more than half the
        grid's step away (rows missing from the file: a model chosen elsewhere would be used here)."""
        if not self.covers(mass):
            raise InputError(f"m = {mass * 1e3:.2f} MeV is outside the background selection {self.source} "
                             f"([{self.mass[0] * 1e3:.1f}, {self.mass[-1] * 1e3:.1f}] MeV): rerun task=select over "
                             "the masses you scan, or scan inside it")
        k = self._index(mass)
        step = float(np.median(np.diff(self.mass))) if self.mass.size > 1 else 0.0
        if abs(self.mass[k] - mass) > 0.5 * step + 1e-9:
            raise InputError(f"m = {mass * 1e3:.2f} MeV: the background selection {self.source} has no row within "
                             f"{0.5 * step * 1e3:.2f} MeV (half its grid step; the nearest is {self.mass[k] * 1e3:.2f} "
                             "MeV): its rows there are missing; rerun task=select")
        if not self.model[k]:
            raise InputError(f"no candidate background serves m = {self.mass[k] * 1e3:.2f} MeV "
                             f"({self.source}): {self.reason[k]}")
        return self.model[k]

    def note_at(self, mass: float) -> str:
        """The selection's note on the model chosen at the grid mass nearest ``mass`` ("" where none)."""
        return self.note[self._index(mass)] if self.note else ""

    def overrides_at(self, mass: float) -> dict[str, Any]:
        """The background settings of the model chosen at ``mass`` (:meth:`model_at`); where the window's
        evidence chooses its η, ℓ, those found at that grid mass (``hyper`` fixed: module docstring)."""
        overrides = self.models[self.model_at(mass)]
        k = self._index(mass)
        if (overrides.get("hyper") == "marginal" and overrides.get("hyper_scope") == "window"
                and self.eta is not None and self.lengthscale is not None
                and np.isfinite(self.eta[k]) and np.isfinite(self.lengthscale[k])):
            overrides = overrides | {"hyper": "fixed", "eta": float(self.eta[k]),
                                     "lengthscale": float(self.lengthscale[k])}
        return overrides

    def spurious_relative(self, mass: float) -> float:
        """S/(ρσ) at ``mass``: at a grid mass its own value (the selection's S, already the largest over the
        neighbouring grid masses, the one its choice was made with); between grid masses the larger of the two
        neighbouring values (a running maximum, so that such a mass carries at least the spurious signal
        measured on either side)."""
        k = self._index(mass)
        if abs(self.mass[k] - mass) <= 1e-9:
            return float(self.spurious_rel[k])
        j = int(np.searchsorted(self.mass, mass))
        near = [i for i in (j - 1, j) if 0 <= i < len(self.mass) and self.model[i]]
        return float(max((self.spurious_rel[i] for i in near), default=self.spurious_rel[k]))


def read_selection(path: str | Path) -> dict[str, Any]:
    """The raw JSON of a selection file, with a clear error where it is missing or not one."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"background selection {file} not found: make one with `hps-bayes task=select "
                          f"dataset=... run_dir=<folder>` (it writes <folder>/selection_<dataset>.json) and pass "
                          f"background.selection=<that file>, or leave background.selection empty")
    try:
        raw: dict[str, Any] = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{file}: not a background selection ({exc}); rerun task=select") from exc
    if raw.get("format") != SELECTION_FORMAT or "rows" not in raw or "models" not in raw:
        raise ConfigError(f"{file}: not a background selection of format {SELECTION_FORMAT} (keys "
                          f"{sorted(raw)}); rerun task=select")
    return raw


@functools.lru_cache(maxsize=8)
def load_selection(path: str) -> Selection:
    """Read ``selection_<dataset>.json`` (written by ``task=select``)."""
    raw = read_selection(path)
    for i, row in enumerate(raw["rows"]):
        mass = row.get("mass") if isinstance(row, dict) else None
        if not isinstance(mass, (int, float)) or not 0 < mass < 10:
            raise ConfigError(f"{path}: row {i} has mass {mass!r}, not a mass in GeV; rerun task=select")
    rows = sorted(raw["rows"], key=lambda r: float(r["mass"]))
    models = {str(k): dict(v) for k, v in raw["models"].items()}
    for name, overrides in models.items():
        unknown = sorted(set(overrides) - CANDIDATE_KEYS)
        if unknown:
            raise ConfigError(f"{path}: model {name!r} sets {unknown}, which a candidate may not set "
                              f"(allowed: {sorted(CANDIDATE_KEYS)})")
    chosen = tuple(str(r.get("model") or "") for r in rows)
    missing = sorted({c for c in chosen if c and c not in models})
    if not rows or missing:
        raise ConfigError(f"{path}: {'no rows' if not rows else f'rows name unknown models {missing}'}; rerun task=select")
    mass = np.array([float(r["mass"]) for r in rows])
    if not np.all(np.diff(mass) > 0):
        raise ConfigError(f"{path}: the masses must increase; rerun task=select")
    spurious_rel = np.array([_spurious_rel(path, r) if r.get("model") else 0.0 for r in rows])
    for name, overrides in models.items():
        _check_model(path, name, overrides)
    return Selection(mass=mass, model=chosen, spurious_rel=spurious_rel,
                     reason=tuple(str(r.get("reason") or "") for r in rows), models=models,
                     range_lo=float(raw["range_lo"]), source=str(path), dataset=str(raw.get("dataset") or ""),
                     input_hash=str(raw.get("input_hash") or ""), effective_hash=str(raw.get("effective_hash") or ""),
                     note=tuple(str(r.get("note") or "") for r in rows), eta=_column(rows, "eta"),
                     lengthscale=_column(rows, "lengthscale"))


def _spurious_rel(path: str, row: dict[str, Any]) -> float:
    """A served row's S/(ρσ): a finite number ≥ 0, else :class:`ConfigError` (an edited file would otherwise
    give S = 0, or a negative S, silently)."""
    value = row.get("spurious_rel")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ConfigError(f"{path}: the row at m = {float(row['mass']) * 1e3:.2f} MeV (model {row.get('model')!r}) has "
                          f"spurious_rel = {value!r}; S must be a finite number >= 0: rerun task=select")
    return float(value)


def _check_model(path: str, name: str, overrides: dict[str, Any]) -> None:
    """A model's settings as the scan will use them (:meth:`BackgroundSettings.at_mass`), checked once here."""
    from hps_bayes.model.settings import BackgroundSettings

    try:
        BackgroundSettings.from_dict(BackgroundSettings().to_dict() | overrides | {"selection": "", "degree_table": ()})
    except (ConfigError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: model {name!r} is not a valid background ({exc}); rerun task=select") from exc


def _column(rows: list[dict[str, Any]], key: str) -> FloatArray:
    """A per-row number of the selection (NaN where a row has none: no model, or an older file)."""
    return np.array([float(r[key]) if r.get(key) is not None else np.nan for r in rows])

