"""Tests of hps_bayes.physics: presets, σ(m), f_rad(m), signal template, A ↔ ε²."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.polynomial import polynomial
from scipy.stats import norm

from hps_bayes.errors import ConfigError, InputError
from hps_bayes.physics.presets import (
    ALPHA_EM,
    DatasetPreset,
    available_presets,
    load_preset,
    preset_from_mapping,
)
from hps_bayes.physics.signal import eps2_from_yield, f_rad, sigma_m, signal_template, yield_per_eps2

# --------------------------------------------------------------------------- presets


def test_all_preset_files_load():
    assert set(available_presets()) >= {"hps2015", "hps2016", "hps2021", "demo"}
    for name in available_presets():
        preset = load_preset(name)
        lo, hi = preset.mass_range
        masses = np.linspace(lo, hi, 50)
        assert np.all(sigma_m(masses, preset) > 0)
        assert np.all(f_rad(masses, preset) > 0)
        assert preset.alpha_em == pytest.approx(1 / 137.036, rel=1e-12)
        assert preset.rebin == 10


@pytest.mark.parametrize(("alias", "name"), [("2015", "2015"), ("hps2016", "2016"), ("HPS2021.yaml", "2021")])
def test_load_preset_aliases(alias, name):
    assert load_preset(alias).name == name


def test_preset_contents_match_facts():
    p2021 = load_preset("2021")
    assert p2021.hist_name == "preselection/h_invM_8000"
    assert p2021.mass_range == (0.030, 0.250)
    demo, p2015 = load_preset("demo"), load_preset("2015")
    assert demo.name == "demo" and demo.hist_name == "invariant_mass" == p2015.hist_name
    assert demo.sigma_coeffs == p2015.sigma_coeffs and demo.f_rad_coeffs == p2015.f_rad_coeffs == (0.085,)
    assert demo.mass_range == p2015.mass_range == (0.015, 0.130)  # below the 19 MeV search start: whole windows there
    assert load_preset("2016").sigma_linear_above == 0.18


def test_unknown_preset_lists_available():
    with pytest.raises(ConfigError, match=r"unknown dataset preset '1999'.*hps2015"):
        load_preset("1999")


def test_to_dict_from_dict_round_trip():
    preset = load_preset("2016")
    data = preset.to_dict()
    assert isinstance(data["sigma_coeffs"], list)
    assert DatasetPreset.from_dict(data) == preset


def test_preset_from_mapping_ignores_demo_block_but_from_dict_is_strict():
    data = load_preset("2015").to_dict() | {"demo": {"shape": "2015"}}
    assert preset_from_mapping(data).name == "2015"
    with pytest.raises(ConfigError, match=r"unknown dataset preset keys \['demo'\]"):
        DatasetPreset.from_dict(data)
    with pytest.raises(ConfigError, match="missing keys"):
        DatasetPreset.from_dict({"name": "x"})


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"mass_range": (0.1, 0.05)}, "mass_range"),
        ({"sigma_linear_above": 0.1}, "set together"),
        ({"n_eff": 0.0}, "n_eff"),
        ({"alpha_em": 137.0}, "alpha_em"),
        ({"rebin": 0}, "rebin"),
        ({"f_rad_coeffs": ()}, "f_rad_coeffs"),
    ],
)
def test_invalid_preset_values(change, fragment):
    data = load_preset("2015").to_dict() | change
    with pytest.raises(ConfigError, match=fragment):
        DatasetPreset.from_dict(data)


# --------------------------------------------------------------------------- sigma, f_rad


def test_sigma_2015_values():
    preset = load_preset("2015")
    assert float(sigma_m(0.020, preset)) == pytest.approx(0.97e-3, rel=0.01)
    assert float(sigma_m(0.100, preset)) == pytest.approx(5.2e-3, rel=0.01)
    assert sigma_m(np.array([[0.02, 0.03]]), preset).shape == (1, 2)


def test_sigma_2016_linear_continuation_above_180_mev():
    preset = load_preset("2016")
    at_knee = polynomial.polyval(0.18, preset.sigma_coeffs)
    assert float(sigma_m(0.18, preset)) == pytest.approx(at_knee, rel=1e-12)
    assert float(sigma_m(0.20, preset)) == pytest.approx(at_knee + 0.0239 * 0.02, rel=1e-12)
    assert float(sigma_m(0.17, preset)) == pytest.approx(polynomial.polyval(0.17, preset.sigma_coeffs))
    ratio = sigma_m(np.array([0.05, 0.1, 0.15]), preset) / np.array([0.05, 0.1, 0.15])
    assert np.all((ratio > 0.040) & (ratio < 0.047))  # ≈ 4.1–4.6 % of m


def test_sigma_non_positive_is_config_error():
    with pytest.raises(ConfigError, match=r"sigma_m .* m = 0\.001"):
        sigma_m([0.05, 0.001], load_preset("2015"))


def test_f_rad_constant_and_polynomial():
    assert np.all(f_rad(np.array([0.02, 0.1]), load_preset("2015")) == 0.085)
    values = f_rad(np.linspace(0.039, 0.179, 30), load_preset("2016"))
    assert np.all((values > 0.058) & (values < 0.076))


# --------------------------------------------------------------------------- template


def test_template_wide_window_sums_to_one_and_is_centred():
    edges = np.linspace(0.0, 0.1, 1001)
    t = signal_template(edges, 0.05, 0.002)
    assert t.sum() == pytest.approx(1.0, abs=1e-12)
    assert np.sum(t * 0.5 * (edges[1:] + edges[:-1])) == pytest.approx(0.05, rel=1e-9)


def test_template_cut_window_sums_to_cdf_mass():
    edges = np.linspace(0.045, 0.060, 31)  # from -2.5σ to +5σ around m = 0.05, σ = 0.002
    t = signal_template(edges, 0.05, 0.002)
    assert t.sum() == pytest.approx(norm.cdf(5.0) - norm.cdf(-2.5), rel=1e-12)
    assert t.sum() < 1.0


def test_template_bad_inputs():
    with pytest.raises(ConfigError, match="sigma"):
        signal_template([0.0, 1.0], 0.5, 0.0)
    with pytest.raises(InputError, match="increasing"):
        signal_template([0.0, 1.0, 0.5], 0.5, 0.1)


# --------------------------------------------------------------------------- A <-> eps2


def test_eps2_hand_computed_value():
    # eps2 = 2 * 1 * (1/137.036) * 100 / (3 pi * 0.05 GeV * 0.085 * 1e9 / GeV)
    eps2 = eps2_from_yield(100.0, mass=0.05, f_rad=0.085, rho=1.0e9)
    assert float(eps2) == pytest.approx(3.643638e-8, rel=1e-6)


def test_eps2_yield_round_trip_vectorised():
    mass = np.array([0.03, 0.06, 0.1])
    rho = np.array([8e8, 9e7, 1.2e6])
    k = yield_per_eps2(mass, 0.085, rho, n_eff=1.0, alpha_em=ALPHA_EM)
    np.testing.assert_allclose(k, 3 * math.pi * mass * 0.085 * rho / (2 * ALPHA_EM))
    eps2 = np.array([1e-6, 5e-6, -2e-5])
    a = eps2 * k
    np.testing.assert_allclose(eps2_from_yield(a, mass=mass, f_rad=0.085, rho=rho), eps2, rtol=1e-13)
    doubled = eps2_from_yield(a, mass=mass, f_rad=0.085, rho=rho, n_eff=2.0)
    np.testing.assert_allclose(doubled, 2 * eps2, rtol=1e-13)


@pytest.mark.parametrize("bad", [{"rho": 0.0}, {"f_rad": -0.1}, {"mass": np.nan}])
def test_eps2_rejects_non_positive_inputs(bad):
    kwargs = {"mass": 0.05, "f_rad": 0.085, "rho": 1e9} | bad
    with pytest.raises(InputError, match=next(iter(bad))):
        eps2_from_yield(1.0, **kwargs)
