"""Exports users publish with: a limits table (CSV and Parquet) and a HEPData submission.

All read the result tables (``results_single.csv`` / ``results_combined.csv``, as DataFrames or, from
a command-line scan, as lists of row dicts: :mod:`hps_bayes.results.rows`); nothing here computes
statistics.  :func:`export_scan` is what every scan writes beside its ``results_single.csv``.
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


def limit_rows(single: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """:func:`limits_table` of one dataset's scan rows, as row dicts (no pandas)."""
    rows = [{**row, "source": str(row["dataset"]), "mass_GeV": row["mass"]} for row in single]
    rows.sort(key=lambda row: (row["source"], row["mass_GeV"]))
    return [{name: row[name] for name in LIMIT_COLUMNS} for row in rows]


def write_limits(frame: Any, out_dir: str | Path) -> list[Path]:
    """``limits.csv`` and ``limits.parquet`` (atomic) in ``out_dir``."""
    out = Path(out_dir)
    return [write_table(out / "limits.csv", frame), write_table(out / "limits.parquet", frame)]


def _records(table: Any) -> list[dict[str, Any]]:
    """The rows of a DataFrame, or a list of row dicts as it is."""
    return table if isinstance(table, list) else table.to_dict("records")


def _variable(name: str, values: Any, *, independent: bool, units: str = "") -> Any:
    from hepdata_lib import Variable

    var = Variable(name, is_independent=independent, is_binned=False, units=units)
    var.values = [float(v) for v in values]
    return var


def _expected_with_bands(rows: list[dict[str, Any]]) -> Any:
    from hepdata_lib import Uncertainty

    median = [float(r["eps2_up_expected_median"]) for r in rows]
    expected = _variable("Expected 95% CL upper limit on $\\epsilon^2$", median, independent=False)
    for label, lo, hi in (("expected $\\pm 1\\sigma$", "m1", "p1"), ("expected $\\pm 2\\sigma$", "m2", "p2")):
        band = Uncertainty(label, is_symmetric=False)
        band.values = [(float(r[f"eps2_up_expected_{lo}"]) - m, float(r[f"eps2_up_expected_{hi}"]) - m)
                       for r, m in zip(rows, median, strict=True)]
        expected.add_uncertainty(band)
    return expected


def write_hepdata(frame: Any, out_dir: str | Path, *, descriptions: Mapping[str, str] | None = None) -> Path:
    """A HEPData submission (``hepdata/submission.yaml`` + one table per source, and the
    validated ``submission.tar.gz``) of the ε² limits, in ``out_dir``.

    ``frame`` is a :func:`limits_table` (or its rows, :func:`limit_rows`); rows whose status is not "ok"
    are left out (they have no limit).  Returns the folder holding the YAML files.
    """
    from hepdata_lib import Submission, Table

    out = Path(out_dir)
    submission = Submission()
    ok = [row for row in _records(frame) if row["status"] == "ok"]
    for source in sorted({str(row["source"]) for row in ok}):
        rows = [row for row in ok if str(row["source"]) == source]
        table = Table(f"eps2 limits {source}")
        table.description = (descriptions or {}).get(
            source, f"95% CL upper limits on the kinetic mixing $\\epsilon^2$ of an A' decaying to "
                    f"$e^+e^-$ ({source}), observed and expected with 1 and 2 standard deviation bands.")
        table.keywords["observables"] = ["UL"]
        table.keywords["reactions"] = ["E- NUCLEUS --> E- NUCLEUS A'", "A' --> E+ E-"]
        table.add_variable(_variable("$m_{A'}$", [r["mass_GeV"] for r in rows], independent=True, units="GeV"))
        table.add_variable(_variable("Observed 95% CL upper limit on $\\epsilon^2$", [r["eps2_up"] for r in rows],
                                     independent=False))
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
    table = limit_rows(_records(single))
    if hepdata and any(row["status"] == "ok" for row in table):
        written += [write_hepdata(table, out), out / "submission.tar.gz"]
    return written
