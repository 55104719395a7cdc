"""Limits table (CSV, Parquet) and HEPData submission from result tables."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from hps_bayes.results.export import limits_table, write_hepdata, write_limits
from hps_bayes.results.objects import CombinedResult, MassPointResult, results_frame


def _single() -> pd.DataFrame:
    rows = [MassPointResult(dataset="2015", mass=m, A_up=100.0, eps2_up=1e-5 * (1 + m),
                            eps2_up_expected=(5e-6, 7e-6, 1e-5, 1.4e-5, 1.9e-5), p0=0.3, Z=0.5)
            for m in (0.03, 0.04)]
    rows.append(MassPointResult(dataset="2015", mass=0.05, status="fit_failed", message="x"))
    return results_frame(rows)


def _combined() -> pd.DataFrame:
    r = CombinedResult(mass=0.07, datasets="2015+2016", eps2_up=3e-6,
                       eps2_up_expected=(1e-6, 2e-6, 3e-6, 4e-6, 5e-6), p0=0.5, Z=0.0, k_factors=(1e8, 2e8))
    return pd.DataFrame([r.to_row()])


def test_limits_table_round_trips_through_csv_and_parquet(tmp_path: Path) -> None:
    frame = limits_table(_single(), _combined())
    assert list(frame.source) == ["2015", "2015", "2015", "combined"]
    csv, parquet = write_limits(frame, tmp_path)
    back = pd.read_parquet(parquet)
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)
    assert pd.read_csv(csv).eps2_up.iloc[0] == pytest.approx(frame.eps2_up.iloc[0])


def test_hepdata_submission_has_one_table_per_source_with_bands(tmp_path: Path) -> None:
    folder = write_hepdata(limits_table(_single(), _combined()), tmp_path)
    assert (tmp_path / "submission.tar.gz").is_file()  # validated by hepdata-validator
    docs = list(yaml.safe_load_all((folder / "submission.yaml").read_text()))
    tables = [d for d in docs if "data_file" in d]
    assert [t["name"] for t in tables] == ["eps2 limits 2015", "eps2 limits combined"]
    data = yaml.safe_load((folder / tables[0]["data_file"]).read_text())
    masses = [v["value"] for v in data["independent_variables"][0]["values"]]
    assert masses == [0.03, 0.04]  # the failed row has no limit and is left out
    expected = data["dependent_variables"][1]
    band = expected["values"][0]["errors"][0]["asymerror"]
    assert band["minus"] == pytest.approx(7e-6 - 1e-5) and band["plus"] == pytest.approx(1.4e-5 - 1e-5)
    assert np.isclose(data["dependent_variables"][0]["values"][0]["value"], 1e-5 * 1.03)
