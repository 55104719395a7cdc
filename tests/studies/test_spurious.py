"""The spurious-signal study (hps_bayes.studies), range-end windows and the spurious-signal nuisance."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hps_bayes.analysis.point import build_window
from hps_bayes.analysis.settings import resolve_settings
from hps_bayes.cli.tasks import run_task
from hps_bayes.errors import ConfigError
from hps_bayes.fit.newton import newton_fit
from hps_bayes.model.objective import WindowObjective
from hps_bayes.model.settings import BackgroundSettings
from hps_bayes.model.spurious import SpuriousTable, load_spurious_table
from hps_bayes.model.window import window_bounds
from hps_bayes.studies import spurious as studies

DEMO = {"shape": "2015", "n_events": 2_000_000}


@pytest.fixture(scope="module")
def settings():
    return resolve_settings("2015")


@pytest.fixture(scope="module")
def reference(settings):
    """The demo reference over 20-130 MeV (above the turn-on; from 15 MeV the power law misses the top end by 2x)."""
    above = replace(settings, dataset=replace(settings.dataset, mass_range=(0.020, 0.130)))
    return studies.reference_spectrum(above, DEMO)


@pytest.mark.parametrize("family", ["expcheb", "powerlaw"])
def test_truth_shapes_imitate_the_reference_but_are_not_it(reference, family):
    truth = studies.fit_truth(reference, family)
    ratio = truth.counts / reference.counts
    assert truth.name == family and np.all(truth.counts > 0)
    assert 0.5 < ratio.min() and ratio.max() < 1.5  # the same turn-on, peak and fall ...
    assert np.ptp(ratio) > 1e-3  # ... but a different function


def test_the_flexible_truth_follows_structure_closer_than_smooth():
    """``flexible`` (Legendre degree 24 in ln m) resolves more of a spectrum's structure than ``smooth`` (16)."""
    from hps_bayes.inputs.spectrum import crop
    from hps_bayes.inputs.turnon import FLEXIBLE_DEGREE, fit_shape
    from hps_bayes.physics.demo import DEFAULT_N_EVENTS, expected_spectrum

    structured = crop(expected_spectrum("2015", n_events=DEFAULT_N_EVENTS["2015"], structured=True), 0.030, 0.095)
    assert len(fit_shape(structured.edges, structured.counts, "flexible").params) == 2 + FLEXIBLE_DEGREE + 1  # turn-on, coefficients
    rms = {f: float(np.sqrt(np.mean(np.log(studies.fit_truth(structured, f).counts / structured.counts) ** 2)))
           for f in ("smooth", "flexible")}
    assert rms["flexible"] < 1e-2 * rms["smooth"] < 1e-5  # measured 1.5e-9 and 6.0e-7: the structure's RMS is 4.6e-3


def test_dijet_truth_is_a_spectrum_the_defaults_were_not_tuned_on(reference):
    truth = studies.fit_truth(reference, "dijet")
    ratio = truth.counts / reference.counts
    assert truth.name == "dijet" and np.all(truth.counts > 0)
    assert truth.counts.sum() == pytest.approx(reference.counts.sum(), rel=1e-9)  # same events ...
    assert ratio.max() / ratio.min() > 2  # ... a different turn-on and a steeper fall
    assert np.argmax(truth.counts) < len(truth.counts) // 3  # still a peak near the start, then a fall


def test_window_bounds_shift_keeps_the_full_width_inside_the_range():
    lo, hi, cl, ch = window_bounds(0.021, 0.01, 0.02, 0.13, edge="shift")
    assert (lo, hi, cl, ch) == (0.02, pytest.approx(0.04), False, False)
    lo, hi, cl, ch = window_bounds(0.125, 0.01, 0.02, 0.13, edge="shift")
    assert (lo, hi, cl, ch) == (pytest.approx(0.11), 0.13, False, False)
    lo, hi, cl, ch = window_bounds(0.021, 0.01, 0.02, 0.13, edge="clip")
    assert (lo, hi, cl, ch) == (0.02, pytest.approx(0.031), True, False)
    assert window_bounds(0.05, 1.0, 0.02, 0.13, edge="shift") == (0.02, 0.13, True, True)  # wider than the range
    with pytest.raises(ConfigError, match="background.edge"):
        BackgroundSettings(edge="wrap")  # type: ignore[arg-type]


def test_spurious_point_is_reproducible_and_recovers_an_injected_signal(settings, reference):
    a = studies.spurious_point(reference, 0.05, settings, n_toys=20, seed=3)
    b = studies.spurious_point(reference, 0.05, settings, n_toys=20, seed=3)
    assert a == b
    assert abs(a.asimov_z) < 0.2  # the demo truth at 50 MeV: no spurious signal without noise
    assert a.sigma_A_floor < a.asimov_sigma_A  # the known-background floor is below
    assert abs(a.mean_z) < 4 * 1 / np.sqrt(20) + 0.2 and 0.5 < a.width_z < 1.5
    assert a.recovered == pytest.approx(1.0, abs=0.15)
    assert a.n_failed == 0


def test_spurious_table_sets_a_nuisance_that_inflates_sigma_A(settings, reference, tmp_path):
    path = studies.write_spurious_table(tmp_path / "s.csv", np.array([0.03, 0.08]), np.array([0.0, 1e-3]),
                                       note="test")
    table = load_spurious_table(str(path))
    assert isinstance(table, SpuriousTable) and table(0.055) == pytest.approx(5e-4)
    assert table.background == ""  # a header without "background: <label>": not compared
    labelled = studies.write_spurious_table(tmp_path / "l.csv", np.array([0.03, 0.08]), np.array([0.0, 1e-3]),
                                           note="test; background: legendre_lnm d10 ±10σ")
    assert load_spurious_table(str(labelled)).background == "legendre_lnm d10 ±10σ"
    on = replace(settings, background=replace(settings.background, spurious="table", spurious_table=str(path)))
    off = replace(settings, background=replace(settings.background, spurious="off"))
    w_off, w_on = build_window(reference, 0.055, off), build_window(reference, 0.055, on)
    assert w_off.spurious == 0 and w_on.spurious > 0
    errors = []
    for w in (w_off, w_on):
        obj = WindowObjective(w, settings.background)
        errors.append(newton_fit(obj, obj.observed()).poi_error(obj))
    assert errors[1] == pytest.approx(np.hypot(errors[0], w_on.spurious), rel=1e-3)  # σ_tot = √(σ_A² + S²)
    with pytest.raises(ConfigError, match="task=spurious"):
        load_spurious_table(str(tmp_path / "missing.csv"))


def test_spurious_relative_takes_the_largest_bias_over_shapes():
    frame = pd.DataFrame({"status": "ok", "shape": ["a", "b", "a", "b"], "mass": [0.03, 0.03, 0.05, 0.05],
                          "asimov_A": [10.0, -30.0, 0.0, 0.0], "mean_A": [0.0] * 4, "sd_A": [1.0] * 4,
                          "n_toys": [100] * 4, "rho": [1e6] * 4, "sigma_m": [1e-3] * 4})
    masses, rel = studies.spurious_relative(frame, smooth=0)
    assert list(masses) == [0.03, 0.05] and rel == pytest.approx([30.0 / 1e3, 0.0])


#: task=spurious on the 2015 preset with the reference of DEMO (the study's own settings from the config)
SPURIOUS = ["dataset=hps2015", f"dataset.demo.n_events={DEMO['n_events']}"]


def test_task_spurious_writes_csv_plot_and_table(tmp_path: Path, assert_png):
    summary = run_task("spurious", [*SPURIOUS, "task.families=[demo,powerlaw]", "task.n_toys=4", "task.step=0.04"],
                       tmp_path)
    frame = pd.read_csv(tmp_path / "spurious.csv")
    assert set(frame["shape"].unique()) == {"demo", "powerlaw"} and (frame.status == "ok").all()
    assert set(summary) == {"demo", "powerlaw", "all"}
    for name in ("spurious_2015.png", "spurious_nuisance_2015.png"):
        assert_png(tmp_path / name)
    assert load_spurious_table(str(tmp_path / "spurious_2015.csv")).mass.size == frame.mass.nunique()
    assert "| demo |" in studies.summary_table(summary)


def test_task_spurious_in_two_chunks_merges_into_the_one_chunk_table(tmp_path: Path, assert_png):
    overrides = [*SPURIOUS, "task.families=[powerlaw]", "task.n_toys=3", "task.step=0.02"]
    one = tmp_path / "one"
    run_task("spurious", overrides, one)
    two = tmp_path / "two"
    for k in (1, 0):  # either chunk may finish last
        result = run_task("spurious", [*overrides, "scan.n_chunks=2", f"scan.chunk={k}"], two)
    assert not (one / "spurious_chunk0of2.csv").exists() and (two / "spurious_chunk1of2.csv").is_file()
    single, merged = pd.read_csv(one / "spurious.csv"), pd.read_csv(two / "spurious.csv")
    assert len(single) > 2 and merged.mass.is_monotonic_increasing
    pd.testing.assert_frame_equal(merged, single)
    assert result == studies.summarise(single)
    for name in ("spurious_2015.png", "spurious_nuisance_2015.png"):
        assert_png(two / name)
    assert json.loads((two / "spurious_summary.json").read_text())["summary"] == json.loads(
        (one / "spurious_summary.json").read_text())["summary"]
    assert (two / "spurious_2015.csv").read_text() == (one / "spurious_2015.csv").read_text()


def test_whole_range_background_composes_and_finds_its_packaged_table():
    from hps_bayes.cli.config import load_config, settings_from_config
    from hps_bayes.model.spurious import SPURIOUS_DIR, spurious_table_path

    settings = settings_from_config(load_config(["dataset=hps2015", "background=whole"]))
    bkg = settings.background
    assert bkg.window_sigmas == 1000 and bkg.hyper == "marginal" and bkg.hyper_scope == "spectrum"
    path = spurious_table_path(settings.dataset.name, bkg.spurious_table)
    assert path == SPURIOUS_DIR / "spurious_2015_whole.csv" and path.is_file()
    assert load_spurious_table(str(path)).relative.max() > 0
    assert spurious_table_path("2016", "/tmp/x_{dataset}.csv") == Path("/tmp/x_2016.csv")
