"""Exports users publish with: a limits table (CSV and Parquet) and a HEPData submission.

All read the result tables (``results_single.csv`` / ``results_combined.csv``
as DataFrames); nothing here computes statistics.  :func:`export_scan` is what every
scan writes beside its ``results_single.csv``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hps_bayes.results.files import write_table
from hps_bayes.results.objects import BAND_SUFFIXES

LIMIT_COLUMNS = ["source", "mass_GeV", "eps2_up", *[f"eps2_up_expected_{b}" for b in BAND_SUFFIXES], "p0", "Z", "status"]


def limits_table(single: Any | None = None, combined: Any | None = None) -> Any:
    """One long table of ε² limits: a row per (source, mass); source = dataset name or "combined"."""
    import pandas as pd

    parts = []
    if single is not None and len(single):
        parts.append(single.assign(source=single.dataset.astype(str), mass_GeV=single.mass))
    if combined is not None and len(combined):
        parts.append(combined.assign(source="combined", mass_GeV=combined.mass))
    if not parts:
        return pd.DataFrame(columns=LIMIT_COLUMNS)
    frame = pd.concat([p[LIMIT_COLUMNS] for p in parts], ignore_index=True)
    return frame.sort_values(["source", "mass_GeV"], kind="stable").reset_index(drop=True)


def write_limits(frame: Any, out_dir: str | Path) -> list[Path]:
    """``limits.csv`` and ``limits.parquet`` (atomic) in ``out_dir``."""
    out = Path(out_dir)
    return [write_table(out / "limits.csv", frame), write_table(out / "limits.parquet", frame)]


def _variable(name: str, values: Any, *, independent: bool, units: str = "") -> Any:
    from hepdata_lib import Variable

    var = Variable(name, is_independent=independent, is_binned=False, units=units)
    var.values = [float(v) for v in values]
    return var


def _expected_with_bands(rows: Any) -> Any:
    from hepdata_lib import Uncertainty

    median = rows.eps2_up_expected_median.to_numpy()
    expected = _variable("Expected 95% CL upper limit on $\\epsilon^2$", median, independent=False)
    for label, lo, hi in (("expected $\\pm 1\\sigma$", "m1", "p1"), ("expected $\\pm 2\\sigma$", "m2", "p2")):
        band = Uncertainty(label, is_symmetric=False)
        band.values = [(float(d), float(u)) for d, u in zip(rows[f"eps2_up_expected_{lo}"].to_numpy() - median,
                                                           rows[f"eps2_up_expected_{hi}"].to_numpy() - median,
                                                           strict=True)]
        expected.add_uncertainty(band)
    return expected


def write_hepdata(frame: Any, out_dir: str | Path, *, descriptions: Mapping[str, str] | None = None) -> Path:
    """A HEPData submission (``hepdata/submission.yaml`` + one table per source, and the
    validated ``submission.tar.gz``) of the ε² limits, in ``out_dir``.

    ``frame`` is a :func:`limits_table`; rows whose status is not "ok" are left out
    (they have no limit).  Returns the folder holding the YAML files.
    """
    from hepdata_lib import Submission, Table

    out = Path(out_dir)
    submission = Submission()
    for source, rows in frame[frame.status == "ok"].groupby("source", sort=True):
        table = Table(f"eps2 limits {source}")
        table.description = (descriptions or {}).get(
            str(source), f"95% CL upper limits on the kinetic mixing $\\epsilon^2$ of an A' decaying to "
                         f"$e^+e^-$ ({source}), observed and expected with 1 and 2 standard deviation bands.")
        table.keywords["observables"] = ["UL"]
        table.keywords["reactions"] = ["E- NUCLEUS --> E- NUCLEUS A'", "A' --> E+ E-"]
        table.add_variable(_variable("$m_{A'}$", rows.mass_GeV, independent=True, units="GeV"))
        observed = rows.eps2_up.to_numpy()
        table.add_variable(_variable("Observed 95% CL upper limit on $\\epsilon^2$", observed, independent=False))
        table.add_variable(_expected_with_bands(rows))
        submission.add_table(table)
    out.mkdir(parents=True, exist_ok=True)
    # hepdata_lib writes (and validates) submission.tar.gz in the working directory
    with contextlib.chdir(out):
        submission.create_files("hepdata", remove_old=True)
    return out / "hepdata"


def export_scan(single: Any, out_dir: str | Path, *, hepdata: bool = True) -> list[Path]:
    """What every single-dataset scan writes beside ``results_single.csv`` in ``out_dir``:
    ``results_single.parquet`` (the same rows) and, with ``hepdata``, the HEPData record of its
    ε² limits (``hepdata/`` and the validated ``submission.tar.gz``; nothing when no point has a limit).

    Returns the paths written.
    """
    out = Path(out_dir)
    written = [write_table(out / "results_single.parquet", single)]
    table = limits_table(single)
    if hepdata and bool((table.status == "ok").any()):
        written += [write_hepdata(table, out), out / "submission.tar.gz"]
    return written
