"""JSON outputs are strict JSON (``null`` for NaN and infinities) and read back into the same results."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from hps_bayes.results.files import read_json, strict_json_value, write_json
from hps_bayes.results.objects import MassPointResult


def _strict_load(path: Path) -> dict:
    """Parse as JavaScript and jq do: NaN/Infinity are syntax errors."""
    def refuse(token: str) -> None:
        raise ValueError(f"non-standard JSON constant {token}")

    return dict(json.loads(path.read_text(), parse_constant=refuse))


def test_nan_and_infinities_are_written_as_null_everywhere(tmp_path: Path) -> None:
    payload = {"a": math.nan, "b": np.float64(np.inf), "c": np.array([1.5, np.nan, -np.inf]),
               "d": {"e": (np.float32(np.nan), 2)}, "f": None, "g": "NaN stays a string", "h": np.int64(7)}
    data = _strict_load(write_json(tmp_path / "x.json", payload))
    assert data == {"a": None, "b": None, "c": [1.5, None, None], "d": {"e": [None, 2]}, "f": None,
                    "g": "NaN stays a string", "h": 7}


def test_strict_json_value_leaves_finite_values_alone() -> None:
    values = {"x": 1e-300, "y": [0.0, -2.5], "z": True, "w": "text"}
    assert strict_json_value(values) == values


def test_a_mass_point_with_nan_fields_round_trips_through_strict_json(tmp_path: Path) -> None:
    result = MassPointResult(dataset="2015", mass=0.03, status="fit_failed", message="no convergence",
                             A_hat=12.5, A_up_expected=(1.0, math.nan, 3.0, math.inf, 5.0))
    path = write_json(tmp_path / "numbers.json", {"result": result.to_dict()})
    stored = _strict_load(path)["result"]
    assert stored["A_up"] is None and stored["A_up_expected"] == [1.0, None, 3.0, None, 5.0]
    back = MassPointResult.from_dict(read_json(path)["result"])
    for key, value in result.to_dict().items():  # NaN and infinities come back as NaN, the rest as written
        got = getattr(back, key)
        if isinstance(value, tuple):
            np.testing.assert_array_equal(got, [v if math.isfinite(v) else math.nan for v in value])
        elif isinstance(value, float) and not math.isfinite(value):
            assert math.isnan(got), key
        else:
            assert got == value, key
