"""Tests of hps_bayes.demo: the HPS-like density, pseudo-data and demo files."""

from __future__ import annotations

import numpy as np
import pytest
import uproot

from hps_bayes.errors import ConfigError
from hps_bayes.inputs.root_io import load_spectrum
from hps_bayes.physics.demo import (
    DEFAULT_MASS_MAX,
    DEFAULT_N_EVENTS,
    demo_density,
    expected_spectrum,
    simulate_spectrum,
    write_demo_file,
)
from hps_bayes.physics.presets import load_preset
from hps_bayes.physics.signal import sigma_m, signal_template

MASSES_MEV = [20, 30, 40, 60, 80, 100, 130, 160, 200, 250]
# Approximate dN/dm (events/GeV) of the real spectra; None: not tabulated.
FACTS_TABLE = {
    "2015": [3.9e8, 8.3e8, 5.7e8, 8.7e7, 1.1e7, 1.2e6, 2.4e5, None, None, None],
    "2016": [0.0, 2.6e5, 5.4e7, 1.4e8, 1.1e8, 4.7e7, 9.9e6, 1.9e6, 4.4e5, 6e4],
    "2021": [0.0, 2.7e7, 1.6e8, 2.0e8, 1.1e8, 5.4e7, 1.4e7, 3.5e6, 7.4e5, 4.8e4],
}
PEAK_MEV = {"2015": 30, "2016": 60, "2021": 51}


@pytest.mark.parametrize("shape", ["2015", "2016", "2021"])
def test_density_matches_facts_table(shape):
    density = demo_density(shape)
    for mass_mev, value in zip(MASSES_MEV, FACTS_TABLE[shape], strict=True):
        if value is None:
            continue
        model = float(density(np.array(mass_mev * 1e-3)))
        if value == 0.0:
            assert model < 1e2, f"{shape}: {model:.3g} events/GeV at {mass_mev} MeV, below the turn-on"
        else:
            assert 1 / 1.5 < model / value < 1.5, f"{shape}: {model:.3g} vs {value:.3g} at {mass_mev} MeV"


@pytest.mark.parametrize("shape", ["2015", "2016", "2021"])
def test_density_rises_to_one_peak_then_falls(shape):
    mass = np.linspace(1e-4, 0.5, 20001)
    rho = demo_density(shape)(mass)
    peak = int(np.argmax(rho))
    assert mass[peak] * 1e3 == pytest.approx(PEAK_MEV[shape], abs=5)
    assert np.all(np.diff(rho[: peak + 1]) >= 0) and np.all(np.diff(rho[peak:]) <= 0)
    upper = np.searchsorted(mass, DEFAULT_MASS_MAX[shape])
    assert rho[peak] / rho[upper] > 1e3  # falls over more than 3 decades within the histogram
    assert demo_density(shape)(np.array([-0.01, 0.0])).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("shape", ["2015", "2016", "2021"])
def test_expected_spectrum_normalisation_and_binning(shape):
    nu = expected_spectrum(shape, n_events=1e6)
    assert nu.n_bins == {"2015": 4000, "2016": 6000, "2021": 6000}[shape]
    np.testing.assert_allclose(nu.widths, 5e-5, rtol=1e-9)
    assert nu.total == pytest.approx(1e6, rel=1e-12)
    # the default event count reproduces the density's own integral (the facts table) within 10 %
    full = expected_spectrum(shape, n_events=DEFAULT_N_EVENTS[shape])
    rho_centre = demo_density(shape)(full.centers) * full.widths
    assert full.total == pytest.approx(rho_centre.sum(), rel=0.1)


def test_simulate_reproducible_and_total():
    a = simulate_spectrum("2016", n_events=7.5e6, rng=np.random.default_rng(7))
    b = simulate_spectrum("2016", n_events=7.5e6, rng=np.random.default_rng(7))
    c = simulate_spectrum("2016", n_events=7.5e6, rng=np.random.default_rng(8))
    np.testing.assert_array_equal(a.counts, b.counts)
    assert not np.array_equal(a.counts, c.counts)
    assert abs(a.total - 7.5e6) < 5 * np.sqrt(7.5e6)
    assert np.all(a.counts == np.round(a.counts)) and np.array_equal(a.variances, a.counts)
    assert np.all(a.counts[a.centers < 0.02] == 0)  # nothing below the turn-on
    assert np.any(a.counts[a.centers > 0.25] < 10)  # low counts in the tail


def test_injected_signal_expected_and_simulated():
    mass, yield_ = 0.1, 5000.0
    sigma = float(sigma_m(mass, load_preset("2015")))
    bkg = expected_spectrum("2015", n_events=21.5e6)
    sig = expected_spectrum("2015", n_events=21.5e6, signal_mass=mass, signal_yield=yield_)
    np.testing.assert_allclose(
        sig.counts - bkg.counts, yield_ * signal_template(bkg.edges, mass, sigma), atol=1e-6
    )
    data = simulate_spectrum(
        "2015", n_events=21.5e6, rng=np.random.default_rng(3), signal_mass=mass, signal_yield=yield_
    )
    window = np.abs(data.centers - mass) < 3 * sigma
    excess = data.counts[window].sum() - bkg.counts[window].sum()
    assert excess == pytest.approx(0.9973 * yield_, abs=5 * np.sqrt(sig.counts[window].sum()))


def test_signal_settings_errors():
    with pytest.raises(ConfigError, match="signal_mass"):
        expected_spectrum("2015", n_events=1e5, signal_yield=10.0)
    with pytest.raises(ConfigError, match="shape"):
        expected_spectrum("2018", n_events=1e5)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="multiple of bin_width"):
        expected_spectrum("2015", n_events=1e5, mass_max=0.20002)


def test_write_demo_file_2021_in_tdirectory(tmp_path):
    preset = load_preset("2021")
    path = write_demo_file(tmp_path / "data" / "demo_2021.root", preset, n_events=2e5, seed=11)
    with uproot.open(path) as f:
        assert f.classnames(recursive=True)["preselection/h_invM_8000;1"] == "TH1D"
    spectrum = load_spectrum(path, preset.hist_name)
    again = simulate_spectrum("2021", n_events=2e5, rng=np.random.default_rng(11))
    np.testing.assert_array_equal(spectrum.counts, again.counts)
    np.testing.assert_allclose(spectrum.edges, again.edges, rtol=1e-12)


def test_write_demo_file_demo_preset_needs_shape(tmp_path):
    preset = load_preset("demo")
    with pytest.raises(ConfigError, match="pass shape="):
        write_demo_file(tmp_path / "d.root", preset, n_events=1e5, seed=1)
    path = write_demo_file(
        tmp_path / "d.root", preset, n_events=1e5, seed=1, shape="2015", signal_mass=0.05, signal_yield=100.0
    )
    spectrum = load_spectrum(path, "invariant_mass")
    assert spectrum.n_bins == 4000 and spectrum.total == pytest.approx(1e5 + 100, abs=5 * np.sqrt(1e5))


# --- the structured variants (real spectra's few-percent structure) -------------------------------------------


@pytest.mark.parametrize("shape", ["2015", "2016", "2021"])
def test_structured_density_is_the_smooth_one_times_its_structure(shape):
    from hps_bayes.physics.demo import STRUCTURE_AMPLITUDE, structure_factor

    mass = np.linspace(0.045, 0.2, 400)  # above every turn-on: only the structure differs (2015: above its turn-on too)
    ratio = demo_density(shape, structured=True)(mass) / demo_density(shape)(mass)
    log_structure = structure_factor(shape)(mass)
    if shape != "2015":
        np.testing.assert_allclose(np.log(ratio), log_structure, rtol=0, atol=1e-12)
    fine = np.linspace(np.log(0.015), np.log(0.3), 20001)
    rms = np.sqrt(np.mean(structure_factor(shape)(np.exp(fine)) ** 2))
    assert rms == pytest.approx(STRUCTURE_AMPLITUDE[shape], rel=1e-3)  # the RMS over 15-300 MeV


def test_other_structure_scales_redraws_and_keeps_its_wavelengths():
    from hps_bayes.physics.demo import STRUCTURE_AMPLITUDE, Structure, structure_factor

    mass = np.exp(np.linspace(np.log(0.015), np.log(0.3), 20001))
    bundled = structure_factor("2016")(mass)
    np.testing.assert_array_equal(structure_factor("2016", Structure())(mass), bundled)
    np.testing.assert_allclose(structure_factor("2016", Structure(scale=2.3))(mass), 2.3 * bundled, rtol=1e-12, atol=1e-15)
    redrawn = structure_factor("2016", Structure(seed=31))(mass)
    assert np.sqrt(np.mean(redrawn**2)) == pytest.approx(STRUCTURE_AMPLITUDE["2016"], rel=1e-3)
    assert abs(np.corrcoef(redrawn, bundled)[0, 1]) < 0.5  # another draw, not the bundled one
    # one wavelength: g(ln m + λ) = g(ln m), which no wavelength of the bundled range 0.35-0.7 gives
    single = structure_factor("2016", Structure(seed=5, wavelengths=(0.2, 0.2)))
    np.testing.assert_allclose(single(mass * np.exp(0.2)), single(mass), rtol=0, atol=1e-12)
    assert np.max(np.abs(structure_factor("2016")(mass * np.exp(0.2)) - bundled)) > 1e-3


def test_a_structure_needs_the_structured_variant_and_sane_values():
    from hps_bayes.physics.demo import Structure

    with pytest.raises(ConfigError, match="dataset.demo.structured=true"):
        demo_density("2015", structure=Structure(scale=2.0))
    with pytest.raises(ConfigError, match="structure_wavelengths=\\[0.35,0.7\\]"):
        Structure(wavelengths=(0.7, 0.35))
    with pytest.raises(ConfigError, match="structure_scale=2.0"):
        Structure(scale=-1.0)
    with pytest.raises(ConfigError, match="structure_seed=31"):
        Structure(seed=-3)
    assert Structure.from_settings({"structure_scale": 2, "structure_seed": 31, "structure_wavelengths": [0.15, 0.3]}) \
        == Structure(2.0, 31, (0.15, 0.3))
    assert Structure.from_settings({}) == Structure()
    for bad in ({"structure_scale": "abc"}, {"structure_wavelengths": 0.3}, {"structure_wavelengths": [0.1, 0.2, 0.3]}):
        with pytest.raises(ConfigError, match="structure_wavelengths=\\[0.35,0.7\\]"):
            Structure.from_settings(bad)


def test_structured_variant_keeps_the_facts_table_and_the_2015_turn_on_is_sharper():
    for shape in ("2015", "2016", "2021"):
        density = demo_density(shape, structured=True)
        for mass_mev, value in zip(MASSES_MEV, FACTS_TABLE[shape], strict=True):
            if value:
                assert 1 / 1.5 < float(density(np.array(mass_mev * 1e-3))) / value < 1.5, (shape, mass_mev)
    from hps_bayes.inputs.turnon import measure_turn_on

    nu = expected_spectrum("2015", n_events=21.5e6, bin_width=5e-4, mass_max=0.13, structured=True)
    keep = nu.edges[:-1] >= 0.015 - 1e-9
    edges = np.r_[nu.edges[:-1][keep], nu.edges[-1]]
    turn = measure_turn_on(edges, nu.counts[keep], lambda m: 0.0532 * m, widths=2.0, sharpness=4.0)
    assert 0.025 < turn.end < 0.028 and turn.sharp  # as a turn-on fit finds on real-looking 2015 data
    assert expected_spectrum("2015", n_events=1e6, structured=True).source.startswith("expected structured")
