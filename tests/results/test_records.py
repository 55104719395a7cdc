"""Result records (one to_dict/from_dict for every frozen result) and atomic writes (one home)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from hps_bayes.inputs.validation import write_validation_report
from hps_bayes.results.files import atomic_path, atomic_write_text, read_json, write_json
from hps_bayes.results.objects import CombinedResult, MassPointResult, WindowFitArrays, record_from_dict


def test_a_mass_point_survives_json_and_keeps_its_tuples(tmp_path: Path) -> None:
    result = MassPointResult(dataset="demo", mass=0.03, A_hat=1.5, A_up_expected=(1.0, 2.0, 3.0, 4.0, 5.0),
                             window_clipped=True, seed=7)
    write_json(tmp_path / "numbers.json", {"result": result.to_dict()})
    back = MassPointResult.from_dict(read_json(tmp_path / "numbers.json")["result"])
    assert back.A_up_expected == (1.0, 2.0, 3.0, 4.0, 5.0) and math.isnan(back.eps2_up_expected[0])
    assert back.to_dict().keys() == result.to_dict().keys()
    assert (back.A_hat, back.window_clipped, back.seed) == (1.5, True, 7)



def test_a_mass_point_round_trips_through_its_flat_table_row() -> None:
    result = MassPointResult(dataset="demo", mass=0.03, A_hat=1.5, A_up_expected=(1.0, 2.0, 3.0, 4.0, 5.0),
                             eps2_up_expected=(6.0, 7.0, 8.0, 9.0, 10.0), seed=7)
    row = result.to_row()
    assert row["A_up_expected_m2"] == 1.0 and row["eps2_up_expected_p2"] == 10.0
    back = MassPointResult.from_row(row)
    assert back.A_up_expected == result.A_up_expected and back.eps2_up_expected == result.eps2_up_expected
    assert (back.A_hat, back.seed) == (1.5, 7)


def test_a_combined_row_reads_back_from_its_csv_strings() -> None:
    result = CombinedResult(mass=0.05, datasets="2015+2016", k_factors=(1e8, 2e8), sigma_eps2_single=(3e-7, 4e-7))
    row = result.to_row()
    assert row["k_factors"] == "1e+08;2e+08"
    back = CombinedResult.from_dict(row)
    assert back.k_factors == (1e8, 2e8) and back.sigma_eps2_single == (3e-7, 4e-7)


def test_arrays_become_lists_and_unknown_keys_are_ignored() -> None:
    arrays = WindowFitArrays(dataset="demo", mass=0.03, sigma_m=0.001, edges=np.array([0.0, 1.0]),
                             counts=np.array([3.0]), background_free=np.array([2.5]), signal_free=np.array([0.5]),
                             background_limit=np.array([2.0]), signal_limit=np.array([1.0]), A_hat=0.5,
                             A_up=1.0, Z=0.3)
    d = arrays.to_dict()
    assert d["edges"] == [0.0, 1.0] and json.loads(json.dumps(d))["counts"] == [3.0]
    assert record_from_dict(MassPointResult, {"dataset": "x", "mass": 0.1, "not_a_field": 1}).mass == 0.1


def test_an_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "out.json"
    atomic_write_text(target, "old\n")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half a fi")
        raise RuntimeError("killed")
    assert target.read_text() == "old\n" and sorted(p.name for p in target.parent.iterdir()) == ["out.json"]


def test_validation_report_is_written_through_the_same_atomic_writer(tmp_path: Path) -> None:
    path = write_validation_report(tmp_path / "validation_report.json", {"demo": {"ok": True, "n_bins": 3}})
    assert path.read_text() == '{\n  "demo": {\n    "n_bins": 3,\n    "ok": true\n  }\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["validation_report.json"]
