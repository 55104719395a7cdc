"""Every single-dataset scan writes a Parquet copy of its table and a validated HEPData record."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import yaml
from hepdata_validator.full_submission_validator import FullSubmissionValidator

from hps_bayes.results.export import export_scan
from hps_bayes.results.objects import MassPointResult, results_frame


def _scan() -> pd.DataFrame:
    rows = [MassPointResult(dataset="demo", mass=m, A_up=100.0, eps2_up=1e-5 * (1 + m), p0=0.3, Z=0.5,
                            eps2_up_expected=(5e-6, 7e-6, 1e-5, 1.4e-5, 1.9e-5)) for m in (0.03, 0.04, 0.05)]
    rows.append(MassPointResult(dataset="demo", mass=0.06, status="fit_failed", message="x"))
    return results_frame(rows)


def test_export_scan_writes_parquet_and_a_valid_hepdata_record(tmp_path: Path) -> None:
    frame = _scan()
    written = export_scan(frame, tmp_path)
    assert tmp_path / "results_single.parquet" in written
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "results_single.parquet"), frame)
    validator = FullSubmissionValidator()
    assert validator.validate(directory=str(tmp_path / "hepdata")), validator.get_messages()
    assert validator.validate(archive=str(tmp_path / "submission.tar.gz"))
    tables = [d for d in yaml.safe_load_all((tmp_path / "hepdata" / "submission.yaml").read_text()) if "data_file" in d]
    data = yaml.safe_load((tmp_path / "hepdata" / tables[0]["data_file"]).read_text())
    assert [v["value"] for v in data["independent_variables"][0]["values"]] == [0.03, 0.04, 0.05]


def test_export_scan_without_any_limit_writes_only_the_parquet_copy(tmp_path: Path) -> None:
    failed = results_frame([MassPointResult(dataset="demo", mass=0.03, status="fit_failed", message="x")])
    assert export_scan(failed, tmp_path) == [tmp_path / "results_single.parquet"]
    assert not (tmp_path / "hepdata").exists()
