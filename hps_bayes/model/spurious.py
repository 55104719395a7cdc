"""Spurious-signal tables S(m): the shipped defaults and a user's file."""

from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from hps_bayes.core import FloatArray
from hps_bayes.errors import ConfigError
from hps_bayes.model.window import Window

#: Folder of the per-dataset spurious-signal tables ``spurious_<dataset>.csv``.
SPURIOUS_DIR = Path(__file__).resolve().parents[1] / "data"


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
    background: str = ""  # the label of the background it was measured for (its header's "background: ..."); "" unknown

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
            f"spurious-signal table {file} not found; run `hps-bayes task=spurious "
            f"task.write_table=true dataset=...` to make one (spurious_<dataset>.csv in its run folder) "
            f"and set background.spurious_table=<that file>, "
            f"or background.spurious=off"
        )
    text = file.read_text().splitlines()
    lines = [ln for ln in text if ln.strip() and not ln.startswith("#")]
    labels = [ln.split("background:", 1)[1].strip() for ln in text if ln.startswith("#") and "background:" in ln]
    try:
        data = np.array([[float(v) for v in ln.split(",")[:2]] for ln in lines[1:]], dtype=float).reshape(-1, 2)
    except ValueError as exc:
        raise ConfigError(f"{file}: unreadable spurious-signal table ({exc})") from exc
    if data.shape[1] < 2 or len(data) < 1 or not np.all(np.diff(data[:, 0]) > 0) or np.any(data[:, 1] < 0):
        raise ConfigError(f"{file}: need columns mass_gev (increasing), spurious_rel (>= 0)")
    return SpuriousTable(mass=data[:, 0], relative=data[:, 1], source=str(file), background=labels[0] if labels else "")


def with_spurious(window: Window, table: SpuriousTable) -> Window:
    """``window`` with its spurious-signal size S = table(m) · ρ(m) σ(m).

    ρ(m) is the template-weighted density (counts/GeV) of the window's observed counts,
    ``Σ_i (n_i/w_i) T_i / Σ_i T_i``.
    """
    tpl = window.template
    rho = float(np.sum(window.counts / window.widths * tpl) / np.sum(tpl))
    return replace(window, spurious=table(window.mass) * rho * window.sigma)
