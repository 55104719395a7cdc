"""What the experiment label above every plot says: the kind of spectrum and the status.

Kept free of matplotlib so that the command line can set it before any plotting module loads.
A run sets it once (:func:`experiment_label`); every figure's header reads it (:func:`current_label`).

>>> ExperimentLabel(kind="demo", status="Internal").text()
('Demo', 'HPS-like simulation, Internal')
>>> ExperimentLabel(kind="data", status=None).text()
('HPS', '')
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Literal

from hps_bayes.errors import ConfigError

#: data: a measured spectrum; simulation: pseudo-data (toys) of truth shapes fitted to a measured
#: spectrum; demo: the package's simulated HPS-like demo spectra (or toys of them).
DataKind = Literal["data", "simulation", "demo"]
#: The publication status printed after the experiment's name (None: nothing).
Status = Literal["Internal", "Preliminary"] | None
_KINDS = ("data", "simulation", "demo")
_STATUSES = ("Internal", "Preliminary", None)


@dataclass(frozen=True)
class ExperimentLabel:
    """The left-hand header of a figure: experiment (bold) and, after it, the kind of spectrum and the status.

    Parameters
    ----------
    kind : what the plotted spectrum is: ``"data"`` ("HPS Internal"), ``"simulation"``
        ("HPS Simulation Internal") or ``"demo"`` ("Demo HPS-like simulation, Internal": no bare
        "HPS" on spectra that are not the experiment's).
    status : ``"Internal"``, ``"Preliminary"`` or None (no status).
    """

    kind: DataKind = "data"
    status: Status = "Internal"

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ConfigError(f"plot label kind={self.kind!r}: choose one of {list(_KINDS)}")
        if self.status not in _STATUSES:
            raise ConfigError(f"plots.status={self.status!r}: choose Internal, Preliminary or null (no status)")

    def text(self) -> tuple[str, str]:
        """(bold experiment text, the text after it)."""
        status = self.status or ""
        if self.kind == "demo":
            return "Demo", ", ".join(t for t in ("HPS-like simulation", status) if t)
        if self.kind == "simulation":
            return "HPS", " ".join(t for t in ("Simulation", status) if t)
        return "HPS", status


_CURRENT: ContextVar[ExperimentLabel | None] = ContextVar("hps_bayes_experiment_label", default=None)


def current_label() -> ExperimentLabel:
    """The label figures drawn now carry (outside :func:`experiment_label`: data, Internal)."""
    return _CURRENT.get() or ExperimentLabel()


@contextmanager
def experiment_label(label: ExperimentLabel) -> Iterator[ExperimentLabel]:
    """Draw every figure inside the ``with`` block with ``label``; the previous label afterwards."""
    token = _CURRENT.set(label)
    try:
        yield label
    finally:
        _CURRENT.reset(token)
