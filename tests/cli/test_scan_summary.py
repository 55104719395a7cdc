"""The scan's closing log line gives the largest local excess with its look-elsewhere estimate, so that a local
significance is never shown without its trials factor."""

from __future__ import annotations

import logging
import math
import re

import pytest
from scipy.special import ndtr, ndtri

from hps_bayes.cli.task_scan import _log_summary


def _rows(z_max: float) -> list[dict[str, object]]:
    """Points every MeV over 20-80 MeV whose Â/σ_A changes sign every 10 MeV, the largest Z at 45 MeV, and a
    refused point at 60 MeV."""
    rows = []
    for k in range(61):
        z = z_max if k == 25 else 0.5 * (1 if (k // 10) % 2 == 0 else -1)
        ok = k != 40
        rows.append({"dataset": "2015", "mass": 0.020 + 0.001 * k, "status": "ok" if ok else "input_error",
                     "message": "" if ok else "a run of empty bins", "Z": z, "p0": float(ndtr(-z)),
                     "A_hat": 100.0 * z, "sigma_A": 100.0, "sigma_m": 0.0015, "eps2_up": 1e-5})
    return rows


def test_the_largest_excess_comes_with_its_global_estimate(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="hps_bayes"):
        _log_summary(_rows(3.5))
    line = next(r.getMessage() for r in caplog.records if "largest local excess" in r.getMessage())
    assert "m=45.00 MeV, Z=3.50" in line
    found = re.search(r"global p ≈ ([0-9.e-]+) \(Z ≈ ([0-9.]+); Gross–Vitells with this scan's (\d+) upcrossings", line)
    assert found is not None, line
    # signs + (20-29), − (30-39), + (40-49), − (50-59), + (60-69, 60 refused), − (70-79), + (80): upcrossings of 0
    # at 40 and 80 MeV; the refused point breaks the curve at 60 MeV, and the start at 20 MeV is not one
    assert found.group(3) == "2"
    expected = ndtr(-3.5) + 2 * math.exp(-3.5**2 / 2)
    assert float(found.group(1)) == pytest.approx(expected, rel=0.01)
    assert float(found.group(2)) == pytest.approx(-ndtri(expected), abs=0.05)
    assert "task=lee" in line


def test_a_scan_without_an_excess_says_global_p_one(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="hps_bayes"):
        _log_summary(_rows(0.5))  # exp(0) · upcrossings ≥ 1: capped
    assert "global p ≈ 1 (Z ≈ 0.0;" in caplog.text


def test_one_chunk_of_a_scan_gives_no_global_estimate(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="hps_bayes"):
        _log_summary(_rows(3.5), whole_grid=False)  # the look-elsewhere effect needs the whole grid
    assert "largest local excess: m=45.00 MeV, Z=3.50" in caplog.text
    assert "global p" not in caplog.text
