"""Reading a background selection and applying it per mass (hps_bayes.model.selection)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from hps_bayes.errors import ConfigError, InputError
from hps_bayes.model.selection import load_selection
from hps_bayes.model.settings import BackgroundSettings
from hps_bayes.model.window import make_window, turn_on_log_factor


def _write(path, rows, models, range_lo=0.02):
    path.write_text(json.dumps({"format": 1, "rows": rows, "models": models, "range_lo": range_lo}))
    load_selection.cache_clear()
    return str(path)


@pytest.fixture
def selection_file(tmp_path):
    models = {"stiff": {"poly_degree": 3, "window_sigmas": 7.0},
              "onset": {"poly_degree": 5, "window_sigmas": 14.0, "turn_on": "factor", "turn_on_mass": 0.02,
                        "turn_on_width": 0.003}}
    rows = [{"mass": 0.03, "model": "onset", "spurious_rel": 0.01}, {"mass": 0.04, "model": "stiff",
            "spurious_rel": 0.03}, {"mass": 0.05, "model": "", "reason": "stiff: window goodness of fit p < 0.01"}]
    return _write(tmp_path / "selection_2015.json", rows, models)


def test_settings_at_a_mass_are_the_chosen_models(selection_file):
    base = BackgroundSettings(selection=selection_file)
    near_30, at_40 = base.at_mass(0.0312), base.at_mass(0.04)
    assert (near_30.poly_degree, near_30.window_sigmas, near_30.turn_on) == (5, 14.0, "factor")
    assert (at_40.poly_degree, at_40.window_sigmas, at_40.turn_on) == (3, 7.0, "guard")
    assert at_40.selection == "" and at_40.spurious == "off"  # the selection carries S itself
    selection = load_selection(selection_file)
    assert selection.spurious_relative(0.035) == 0.03  # the larger neighbour between grid masses
    assert selection.spurious_relative(0.04) == 0.03
    with pytest.raises(InputError, match=r"no candidate background serves m = 50.00 MeV .*goodness of fit"):
        base.at_mass(0.05)
    with pytest.raises(InputError, match="outside the background selection"):
        base.at_mass(0.08)


def test_the_scan_takes_the_selections_s_at_a_grid_mass_and_the_larger_neighbour_between(tmp_path):
    rows = [{"mass": 0.030, "model": "stiff", "spurious_rel": 0.05}, {"mass": 0.032, "model": "stiff", "spurious_rel": 0.01},
            {"mass": 0.034, "model": "onset", "spurious_rel": 0.02}]
    models = {"stiff": {"poly_degree": 3, "window_sigmas": 7.0}, "onset": {"poly_degree": 5, "window_sigmas": 14.0}}
    selection = load_selection(_write(tmp_path / "selection_2015.json", rows, models))
    assert [selection.spurious_relative(m) for m in (0.030, 0.032, 0.034)] == [0.05, 0.01, 0.02]
    assert [selection.spurious_relative(m) for m in (0.0312, 0.0308, 0.0328)] == [0.05, 0.05, 0.02]


def test_a_bad_selection_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="not found: make one with `hps-bayes task=select"):
        load_selection(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ConfigError, match="not a background selection of format 1"):
        load_selection(str(bad))
    path = _write(tmp_path / "keys.json", [{"mass": 0.03, "model": "m"}], {"m": {"stats": 1}})
    with pytest.raises(ConfigError, match=r"model 'm' sets \['stats'\]"):
        load_selection(path)
    path = _write(tmp_path / "unknown.json", [{"mass": 0.03, "model": "other"}], {"m": {}})
    with pytest.raises(ConfigError, match=r"unknown models \['other'\]"):
        load_selection(path)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda rows, models: rows[1].pop("mass"), "row 1 has mass None, not a mass in GeV"),
    (lambda rows, models: rows[1].update(spurious_rel=None), r"m = 40.00 MeV \(model 'stiff'\) has spurious_rel = None"),
    (lambda rows, models: rows[1].update(spurious_rel=float("nan")), "has spurious_rel = nan"),
    (lambda rows, models: rows[1].update(spurious_rel=-0.05), "has spurious_rel = -0.05; S must be a finite number >= 0"),
    (lambda rows, models: models["stiff"].update(poly_degree=-2), r"model 'stiff' is not a valid background .*poly_degree=-2"),
    (lambda rows, models: models["stiff"].update(poly_degree="twelve"), "model 'stiff' is not a valid background"),
])
def test_an_edited_selection_file_is_refused_with_the_row_or_model(tmp_path, edit, message):
    """An edited file would otherwise run with S = 0, a negative S, or fail at every point with a TypeError."""
    models = {"stiff": {"poly_degree": 3, "window_sigmas": 7.0}}
    rows = [{"mass": m, "model": "stiff", "spurious_rel": 0.01} for m in (0.03, 0.04, 0.05)]
    edit(rows, models)
    with pytest.raises(ConfigError, match=message):
        load_selection(_write(tmp_path / "edited.json", rows, models))


def test_a_mass_whose_grid_rows_are_missing_is_not_served_by_a_distant_model(tmp_path):
    models = {"stiff": {"poly_degree": 3, "window_sigmas": 7.0}}
    rows = [{"mass": m, "model": "stiff", "spurious_rel": 0.01} for m in (0.030, 0.032, 0.034, 0.046, 0.048)]
    base = BackgroundSettings(selection=_write(tmp_path / "gap.json", rows, models))
    assert base.at_mass(0.035).poly_degree == 3  # half a grid step (1 MeV) from 34 MeV
    with pytest.raises(InputError, match=r"no row within 1.00 MeV \(half its grid step; the nearest is 34.00 MeV\)"):
        base.at_mass(0.0352)
    with pytest.raises(InputError, match="the nearest is 46.00 MeV"):
        base.at_mass(0.044)


def test_turn_on_factor_enters_the_offsets():
    edges = np.linspace(0.015, 0.06, 91)
    centers = 0.5 * (edges[1:] + edges[:-1])
    from scipy.special import ndtr

    factor = BackgroundSettings(turn_on="factor", turn_on_mass=0.02, turn_on_width=0.003)
    np.testing.assert_allclose(turn_on_log_factor(edges, factor), np.log(ndtr((centers - 0.02) / 0.003)), rtol=0,
                               atol=1e-15)  # measured 5e-17 (log_ndtr against log(ndtr))
    assert not turn_on_log_factor(edges, BackgroundSettings()).any()
    with pytest.raises(InputError, match="needs the turn-on measured first"):
        turn_on_log_factor(edges, BackgroundSettings(turn_on="factor"))
    with pytest.raises(ConfigError, match="set both"):
        BackgroundSettings(turn_on="factor", turn_on_mass=0.02)
    counts = np.full(90, 100.0)
    tpl = np.zeros(90)
    win = make_window(edges, counts, mass=0.03, sigma=0.0015, template=tpl, settings=factor, range_lo=0.015,
                      range_hi=0.06)
    plain = make_window(edges, counts, mass=0.03, sigma=0.0015, template=tpl, settings=BackgroundSettings(),
                        range_lo=0.015, range_hi=0.06)
    np.testing.assert_allclose(win.log_offset - plain.log_offset, np.log(ndtr((win.centers - 0.02) / 0.003)),
                               rtol=0, atol=1e-14)
    assert BackgroundSettings(turn_on="factor", turn_on_mass=0.02, turn_on_width=0.003).label() == \
        "legendre_lnm d10 ±10σ + turn-on"


def test_turn_on_factor_fits_a_sharp_turn_on_that_the_guard_refuses():
    """Noise-free Φ((m − 20 MeV)/3 MeV) · exp(cubic in ln m) at 21.5M-event scale: at 21 MeV, inside the turn-on,
    the factor model (degree 5, ±10σ) fits it with |Â/σ_A| below 1e-6 (measured 5e-9), where a window that
    ignores the turn-on fakes a signal of −4.3σ_A."""
    from dataclasses import replace

    from scipy.special import ndtr

    from hps_bayes.analysis.point import build_window
    from hps_bayes.analysis.settings import resolve_settings
    from hps_bayes.fit.newton import newton_fit
    from hps_bayes.inputs.spectrum import Spectrum
    from hps_bayes.model.objective import WindowObjective

    edges = np.round(np.arange(0.015, 0.1300001, 0.0005), 7)
    m = 0.5 * (edges[1:] + edges[:-1])
    u = np.log(m / 0.03)
    counts = 4e5 * ndtr((m - 0.020) / 0.003) * np.exp(-1.5 * u - 2.0 * u**2 + 0.5 * u**3)
    truth = Spectrum(edges=edges, counts=counts, variances=counts, name="truth", source="test")
    base = resolve_settings("2015", {"background": {"spurious": "off", "turn_on": "off", "poly_degree": 5}})
    z = {}
    for mode, extra in (("factor", {"turn_on": "factor", "turn_on_mass": 0.020, "turn_on_width": 0.003}),
                        ("plain", {})):
        settings = replace(base, background=replace(base.background, **extra))
        objective = WindowObjective(build_window(truth, 0.021, settings), settings.background)
        fit = newton_fit(objective, objective.observed())
        z[mode] = fit.theta[0] / fit.poi_error(objective)
    assert abs(z["factor"]) < 1e-6
    assert z["plain"] < -3.0


def test_a_selection_is_refused_for_another_dataset_and_warned_about_for_another_spectrum(tmp_path, caplog):
    path = tmp_path / "selection_2016.json"
    path.write_text(json.dumps({"format": 1, "rows": [{"mass": 0.05, "model": "m", "spurious_rel": 0.01}], "models": {"m": {}},
                                "range_lo": 0.03, "dataset": "2016", "input_hash": "abc"}))
    load_selection.cache_clear()
    selection = load_selection(str(path))
    with pytest.raises(ConfigError, match=r"made for dataset '2016', not 'demo': run task=select on this dataset"):
        selection.check_use("demo", "abc")
    selection.check_use("2016", "abc")
    assert "made on another spectrum" not in caplog.text
    selection.check_use("2016", "def")
    assert "made on another spectrum (content abc, this one def)" in caplog.text


def test_a_selection_note_reaches_the_point_message(tmp_path, spectrum_2015):
    """A model chosen although it fails the Z-spread check (as every candidate there does) is used, and the
    point's message carries the selection's note; the status stays that of the point's own checks."""
    from hps_bayes.analysis.point import evaluate_point
    from hps_bayes.analysis.settings import resolve_settings

    note = "every candidate's Z spread within ±8 grid masses is above what noise gives"
    rows = [{"mass": 0.05, "model": "stiff", "spurious_rel": 0.0, "note": note},
            {"mass": 0.06, "model": "stiff", "spurious_rel": 0.0}]
    path = _write(tmp_path / "selection_2015.json", rows, {"stiff": {"poly_degree": 5, "window_sigmas": 10.0}})
    assert load_selection(path).note_at(0.0502) == note and load_selection(path).note_at(0.06) == ""
    settings = resolve_settings("2015", {"background": {"selection": path}})
    noted, plain = (evaluate_point(spectrum_2015, m, settings) for m in (0.05, 0.06))
    assert noted.status == "ok" and noted.message == note and noted.background_model == "stiff"
    assert plain.status == "ok" and plain.message == ""


def test_a_window_evidence_model_takes_the_hyperparameters_the_selection_found_at_the_nearest_grid_mass(tmp_path):
    gp = {"poly_degree": 3, "window_sigmas": 10.0, "turn_on": "guard", "hyper": "marginal", "hyper_scope": "window",
          "lengthscale_min": 4.0, "n_basis": 20}
    whole = {"poly_degree": 12, "window_sigmas": 1000.0, "hyper": "marginal", "hyper_scope": "spectrum"}
    rows = [{"mass": 0.04, "model": "gp", "spurious_rel": 0.0, "eta": 0.03, "lengthscale": 4.5},
            {"mass": 0.05, "model": "gp", "spurious_rel": 0.0, "eta": 0.0, "lengthscale": 12.0},
            {"mass": 0.06, "model": "whole", "spurious_rel": 0.0, "eta": 0.2, "lengthscale": 30.0}]
    base = BackgroundSettings(selection=_write(tmp_path / "selection_2015.json", rows, {"gp": gp, "whole": whole}))
    near_40, at_50, at_60 = base.at_mass(0.0412), base.at_mass(0.05), base.at_mass(0.06)
    assert (near_40.hyper, near_40.eta, near_40.lengthscale, near_40.poly_degree) == ("fixed", 0.03, 4.5, 3)
    assert (at_50.hyper, at_50.eta) == ("fixed", 0.0)  # the evidence switched the GP off there: it stays off
    assert (at_60.hyper, at_60.hyper_scope) == ("marginal", "spectrum")  # one search per spectrum: kept
    older = [{k: v for k, v in r.items() if k not in ("eta", "lengthscale")} for r in rows]
    base = BackgroundSettings(selection=_write(tmp_path / "older.json", older, {"gp": gp, "whole": whole}))
    assert base.at_mass(0.04).hyper == "marginal"  # a file without them: the scan searches them itself


def test_hyperparameters_stored_in_sigma_units_rebuild_the_same_window():
    """η, ℓ from a window's evidence, written as a selection stores them (ℓ in σ(m)/m) and set as fixed:
    the same window, so the scan at a grid mass repeats the selection's fit (on the bundled structured
    demo spectrum, where the evidence switches the GP on)."""
    from dataclasses import replace
    from pathlib import Path

    from hps_bayes.analysis.point import build_window
    from hps_bayes.analysis.settings import resolve_settings
    from hps_bayes.fit.newton import newton_fit
    from hps_bayes.inputs.root_io import load_spectrum
    from hps_bayes.model.objective import WindowObjective

    spectrum = load_spectrum(str(Path(__file__).parents[2] / "data" / "demo_2015.root"), "invariant_mass")
    searched = resolve_settings("demo", {"background": {"spurious": "off", "poly_degree": 5, "window_sigmas": 14.0,
                                                        "hyper": "marginal", "hyper_scope": "window",
                                                        "lengthscale_min": 3.0}})
    window = build_window(spectrum, 0.08, searched)
    assert window.eta > 0  # the GP is on here, so the test compares something
    fixed = replace(searched, background=replace(searched.background, hyper="fixed", eta=window.eta,
                                                 lengthscale=window.lengthscale_sigma))
    again = build_window(spectrum, 0.08, fixed)
    assert again.eta == window.eta
    assert again.lengthscale_t == pytest.approx(window.lengthscale_t, rel=1e-14)  # measured 2.2e-16
    fits = [newton_fit(o, o.observed()) for o in (WindowObjective(w, s.background)
                                                  for w, s in ((window, searched), (again, fixed)))]
    # measured 1.8e-14 σ_A apart
    assert fits[1].theta[0] == pytest.approx(fits[0].theta[0], rel=0, abs=1e-10 * fits[0].covariance[0, 0] ** 0.5)
