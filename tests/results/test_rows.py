"""A command-line scan writes its tables from row dicts: the same bytes (CSV) and the same table read back
(Parquet, HEPData) as from the DataFrame of the rows, without importing pandas."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from hps_bayes.results.export import export_scan
from hps_bayes.results.objects import MassPointResult, result_rows, results_frame
from hps_bayes.results.rows import csv_text, write_rows


def _results() -> list[MassPointResult]:
    """Realistic points (numpy scalars, long floats, tiny and huge values, NaN fields) and a failed one whose
    message holds a comma, quotes and a line break."""
    ok = [MassPointResult(dataset="demo", mass=m, A_hat=np.float64(-4654.982293022235), sigma_A=7378.087906134735,
                          A_up=11738.388851276084 * (1 + m), eps2_up=1.0179265901589267e-05, p0=0.5, Z=0.0,
                          window_lo=0.026500000000000003, window_bins=np.int64(81), converged=np.bool_(True),
                          n_iter=3, rho=5.2e16, seconds=5e-324, eps2_up_expected=(6.7e-6, 9e-6, 1.25e-5, 1.7e-5, 2.3e-5))
          for m in (0.05, 0.03, 0.04)]
    return [*ok, MassPointResult(dataset="demo", mass=0.06, status="fit_failed", message='no "fit",\nsee log')]


def test_rows_are_written_as_pandas_writes_their_frame(tmp_path: Path) -> None:
    results = _results()
    rows, frame = result_rows(results), results_frame(results)
    assert [row["mass"] for row in rows] == [0.03, 0.04, 0.05, 0.06]
    assert csv_text(rows) == frame.to_csv(index=False)
    pd.testing.assert_frame_equal(pd.read_parquet(write_rows(tmp_path / "t.parquet", rows)), frame)


def test_columns_of_ints_and_floats_or_missing_values_are_floats_as_in_pandas(tmp_path: Path) -> None:
    rows = [{"n": 3, "x": 1, "s": "1e5", "b": True, "none": None, "nan": float("nan")},
            {"n": None, "x": 2.5, "s": "", "b": False, "none": None, "nan": float("nan")}]
    assert csv_text(rows) == pd.DataFrame(rows).to_csv(index=False)
    assert csv_text(rows).splitlines()[1] == "3.0,1.0,1e5,True,,"
    pd.testing.assert_frame_equal(pd.read_parquet(write_rows(tmp_path / "t.parquet", rows)), pd.DataFrame(rows))


def test_no_rows_give_empty_tables(tmp_path: Path) -> None:
    assert csv_text([]) == pd.DataFrame([]).to_csv(index=False)
    assert pd.read_parquet(write_rows(tmp_path / "t.parquet", [])).empty


def test_export_from_rows_equals_export_from_the_frame(tmp_path: Path) -> None:
    results = _results()
    export_scan(results_frame(results), tmp_path / "frame")
    export_scan(result_rows(results), tmp_path / "rows")
    for name in ("hepdata/submission.yaml", "hepdata/eps2_limits_demo.yaml"):
        assert (tmp_path / "rows" / name).read_text() == (tmp_path / "frame" / name).read_text()
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "rows" / "results_single.parquet"),
                                  pd.read_parquet(tmp_path / "frame" / "results_single.parquet"))


def test_writing_rows_does_not_import_pandas(tmp_path: Path) -> None:
    script = ("import sys\nfrom hps_bayes.results.export import export_scan\n"
              "from hps_bayes.results.objects import MassPointResult, result_rows\n"
              "rows = result_rows([MassPointResult(dataset='demo', mass=0.03, A_up=1.0, eps2_up=1e-5, p0=0.5, Z=0.0,"
              " eps2_up_expected=(1e-5,) * 5)])\n"
              f"export_scan(rows, {str(tmp_path)!r})\nprint('pandas' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "False"  # hepdata_lib may print a warning of its own before
    assert (tmp_path / "results_single.parquet").is_file() and (tmp_path / "submission.tar.gz").is_file()
