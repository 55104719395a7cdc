"""The bias of a selection's chosen models on a known true shape, against their S."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm

from hps_bayes.analysis.settings import resolve_settings
from hps_bayes.inputs.spectrum import Spectrum
from hps_bayes.model.selection import load_selection
from hps_bayes.physics.signal import signal_template
from hps_bayes.studies.true_shape import bias_on_true_shape, summary

EDGES = np.round(np.arange(0.015, 0.13000001, 0.00005), 8)  # the demo files' 0.05 MeV bins
CENTRES = 0.5 * (EDGES[1:] + EDGES[:-1])
SIGMA_STAT = float(np.sqrt(1000.0**2 - 100.0**2))  # σ_tot = 1000 events with S = 100
POWER_LAW = 200.0 * (CENTRES / 0.03) ** -3.0  # exp(linear in ln m): every Legendre window fits it exactly


def _selection(tmp_path: Path) -> str:
    model = {"poly_degree": 3, "window_sigmas": 10.0, "turn_on": "guard", "fit_range_min": 0.02}
    rows = [{"mass": m, "model": "d3", "spurious_rel": 0.0, "spurious": 100.0, "sigma_tot": 1000.0,
             "sigma_stat": SIGMA_STAT}
            for m in (0.04, 0.05, 0.06)]
    path = tmp_path / "selection_demo.json"
    path.write_text(json.dumps({"format": 1, "rows": rows, "models": {"d3": model}, "range_lo": 0.02}))
    load_selection.cache_clear()
    return str(path)


def test_a_model_that_describes_the_true_shape_has_no_bias(tmp_path: Path) -> None:
    true = Spectrum(edges=EDGES, counts=POWER_LAW, variances=POWER_LAW, name="true", source="test")
    frame = bias_on_true_shape(true, resolve_settings("demo"), _selection(tmp_path))
    assert list(frame.mass) == [0.04, 0.05, 0.06] and set(frame.model) == {"d3"}
    sigma = 1000.0
    # the noise-free fit of its own family (measured 3.3e-3 events: summed into the analysis bins, the power
    # law is exponential-linear in the bins' ln m only to that precision)
    assert np.abs(frame.bias).max() < 1e-5 * sigma
    assert (frame.uncovered == 0).all()
    assert "bias beyond S at 0" in summary(frame)
    # unbiased: the one-sided limit Â + 1.645 σ_tot covers with Φ(1.645 σ_tot/σ_stat), a little over 95 %
    assert frame.coverage.to_numpy() == pytest.approx(norm.cdf(1.6448536269514722 * 1000.0 / SIGMA_STAT), abs=1e-6)  # bias 3e-3 events
    assert frame.coverage.min() == pytest.approx(0.9508, abs=1e-4)
    assert frame.rate_z2.to_numpy() == pytest.approx(norm.sf(2000.0 / SIGMA_STAT), abs=1e-6)  # 0.0222


def test_a_bump_in_the_true_shape_is_the_bias_and_what_s_does_not_cover(tmp_path: Path) -> None:
    settings = resolve_settings("demo")
    from hps_bayes.physics.signal import sigma_m

    bump = 3000.0  # a signal-shaped bump of 3000 events at 50 MeV: the model cannot tell it from a signal
    counts = POWER_LAW + bump * signal_template(EDGES, 0.05, float(sigma_m(0.05, settings.dataset)))
    true = Spectrum(edges=EDGES, counts=counts, variances=counts, name="true", source="test")
    frame = bias_on_true_shape(true, settings, _selection(tmp_path)).set_index("mass")
    assert frame.bias[0.05] == pytest.approx(bump, rel=1e-5)  # measured 1.1e-6
    assert frame.bias[0.04] < -0.3 * bump and frame.bias[0.06] < -0.3 * bump  # its side lobes, 10 MeV away
    assert frame.uncovered[0.05] == pytest.approx((frame.bias[0.05] - 100.0) / 1000.0, rel=1e-12)
    # what the bias does: at the bump a local Z above 2 nearly always (3000 events = 3 σ_tot), and on its
    # negative side lobes the 95 % upper limit covers far less often
    assert frame.rate_z2[0.05] == pytest.approx(norm.sf((2000.0 - frame.bias[0.05]) / SIGMA_STAT), rel=1e-9)
    assert frame.rate_z2[0.05] > 0.8 and frame.coverage[0.05] > 0.999
    assert frame.coverage[0.04] == pytest.approx(norm.cdf((frame.bias[0.04] + 1644.8536269514722) / SIGMA_STAT), abs=1e-9)
    assert frame.coverage[0.04] < 0.8 and frame.coverage[0.06] < 0.8


def test_with_a_scan_every_ok_mass_is_judged_with_the_s_the_scan_used(tmp_path: Path) -> None:
    """``scan_results``: the rows of a scan with the selection (its ok masses, between grid masses too), each with
    the S, σ_A and σ_stat the scan reported there, not the selection's."""
    import pandas as pd

    true = Spectrum(edges=EDGES, counts=POWER_LAW, variances=POWER_LAW, name="true", source="test")
    scan = tmp_path / "results_single.csv"
    pd.DataFrame({"mass": [0.045, 0.05, 0.055], "status": ["ok", "ok", "input_error"],
                  "background_model": ["d3", "d3", ""], "spurious_signal": [300.0, 100.0, 0.0],
                  "sigma_A": [2000.0, 1000.0, np.nan], "sigma_A_stat": [1900.0, SIGMA_STAT, np.nan]}).to_csv(scan)
    frame = bias_on_true_shape(true, resolve_settings("demo"), _selection(tmp_path), scan)
    assert list(frame.mass) == [0.045, 0.05] and list(frame.spurious) == [300.0, 100.0]
    assert frame.coverage.to_numpy() == pytest.approx(norm.cdf(1.6448536269514722 * np.array([2000.0 / 1900.0, 1000.0 / SIGMA_STAT])), abs=1e-6)
    assert summary(frame).startswith("2 masses:")
