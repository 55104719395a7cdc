"""Scans end to end through the public API: signal found, noise looks like noise, every point has a status."""

from __future__ import annotations

import numpy as np
import pytest

import hps_bayes
from hps_bayes.inputs.spectrum import Spectrum
from hps_bayes.physics.demo import simulate_spectrum
from hps_bayes.physics.presets import load_preset
from hps_bayes.physics.signal import sigma_m
from hps_bayes.results.objects import MassPointResult

PRESET_2015 = load_preset("2015")


def test_evaluate_mass_returns_a_complete_result(raw_spectrum_2015: Spectrum) -> None:
    r = hps_bayes.evaluate_mass(raw_spectrum_2015, 0.05, dataset="2015")
    assert isinstance(r, MassPointResult)
    assert r.status == "ok", r.message
    assert r.sigma_A > 0 and r.A_up > max(r.A_hat, 0)
    band = np.array(r.A_up_expected)
    assert np.all(np.diff(band) > 0), "expected band must increase from -2σ to +2σ"
    assert r.eps2_up == pytest.approx(r.A_up * r.eps2_up_expected[2] / r.A_up_expected[2], rel=1e-9)
    # ε² = 2 N_eff α A / (3π m f_rad ρ) with the point's own f_rad and ρ (tests/analysis/test_point.py checks ρ)
    eps2 = 2 * PRESET_2015.n_eff * PRESET_2015.alpha_em * r.A_up / (3 * np.pi * r.mass * r.f_rad * r.rho)
    assert r.eps2_up == pytest.approx(eps2, rel=1e-9)
    # the median expected limit of a flat-ish window is ≈ 1.96 σ_A
    assert r.A_up_expected[2] / r.sigma_A == pytest.approx(1.96, rel=0.05)
    again = MassPointResult.from_dict(r.to_dict())
    assert again == r


def test_injected_5_sigma_signal_is_found_at_its_mass() -> None:
    """A 5 σ_A signal (Poisson-drawn, added to background-only pseudo-data) is found at its
    mass, its fitted yield is the injected one, and Z ≈ 5 on average over pseudo-experiments."""
    from dataclasses import replace

    from hps_bayes.physics.signal import signal_template

    mass = 0.05
    masses = np.round(np.arange(0.040, 0.0601, 0.001), 4)
    z_best = []
    for seed in range(100, 112):
        rng = np.random.default_rng(seed)
        background = simulate_spectrum("2015", n_events=2_000_000, rng=rng)
        bkg_only = hps_bayes.evaluate_mass(background, mass, dataset="2015")
        injected = 5 * bkg_only.sigma_A
        signal = rng.poisson(injected * signal_template(background.edges, mass, float(sigma_m(mass, PRESET_2015))))
        with_signal = replace(background, counts=background.counts + signal,
                              variances=background.variances + signal)
        frame = hps_bayes.run_scan(with_signal, dataset="2015", masses=masses, progress=False)
        # a window with the signal in its sideband may not describe its data (goodness of fit p down to 5e-5 at
        # 59 MeV, once in the 12): flagged for that reason only, away from the signal, which stays ok
        flagged = frame[frame.status != "ok"]
        assert (flagged.status == "inconsistent").all() and flagged.message.str.startswith(
            "the window's fit does not describe its data").all()
        assert (np.abs(flagged.mass - mass) > 2 * float(sigma_m(mass, PRESET_2015))).all()
        frame = frame[frame.status == "ok"]
        best = frame.loc[frame.Z.idxmax()]
        assert abs(best.mass - mass) <= float(sigma_m(mass, PRESET_2015))
        at_mass = frame.loc[(frame.mass - mass).abs().idxmin()]
        # the fit adds the injected yield to what the background fluctuation gave
        assert at_mass.A_hat - bkg_only.A_hat == pytest.approx(injected, abs=0.5 * bkg_only.sigma_A)
        z_best.append(best.Z)
    # 12 pseudo-experiments: the mean of Z has a spread of ≈ 0.27 around 5
    assert 4.2 < np.mean(z_best) < 5.8, z_best


def test_background_only_scan_looks_like_noise(raw_spectrum_2015: Spectrum) -> None:
    frame = hps_bayes.run_scan(raw_spectrum_2015, dataset="2015", progress=False)
    # the range starts at 15 MeV; this smooth turn-on ends at 17.9 MeV, so the grid starts at 23 MeV, below the
    # shipped spurious-signal table (measured from 25 MeV): those points are flagged with the reason
    flagged = frame[frame.status != "ok"]
    assert (flagged.mass < 0.025).all() and flagged.message.str.contains("outside the spurious-signal table").all(), \
        flagged[["mass", "message"]]
    frame = frame[frame.status == "ok"]
    pulls = frame.A_hat / frame.sigma_A
    assert frame.Z.max() < 3.0
    # neighbouring masses are correlated, so the spread is loose, but a biased background
    # (fake bumps of several σ) fails it
    assert abs(pulls.mean()) < 0.5
    assert 0.5 < pulls.std() < 1.6


@pytest.mark.parametrize("shape,dataset", [("2016", "2016"), ("2021", "2021")])
def test_other_hps_like_spectra_give_a_result_or_a_status_everywhere(shape: str, dataset: str) -> None:
    spectrum = simulate_spectrum(shape, n_events=1_000_000, rng=np.random.default_rng(3))  # type: ignore[arg-type]
    preset = load_preset(dataset)
    lo, hi = preset.mass_range
    masses = np.round(np.linspace(lo, hi, 9), 4)   # includes both range ends and the turn-on
    frame = hps_bayes.run_scan(spectrum, dataset=dataset, masses=masses, progress=False)
    assert len(frame) == len(masses)
    # the lowest mass lies below the sharp turn-on: refused by the guard, with the reason
    assert frame.status.iloc[0] == "input_error" and "turn-on" in frame.message.iloc[0]
    # every mass strictly inside the range (masses[1:7]) is a result
    inside = frame.iloc[1:7]
    # a mass below the shipped spurious-signal table (measured above the turn-on) is flagged with that reason
    below_table = (inside.status == "unreliable") & inside.message.str.contains("outside the spurious-signal table")
    assert ((inside.status == "ok") | below_table).all(), inside[["mass", "status", "message"]]
    assert np.isfinite(inside[["A_hat", "sigma_A", "A_up", "eps2_up"]].to_numpy()).all()
    for row in frame[frame.status != "ok"].itertuples():
        assert row.message, "a point without a result must say why"


def test_mass_outside_the_range_is_a_clear_error(raw_spectrum_2015: Spectrum) -> None:
    with pytest.raises(hps_bayes.errors.InputError, match=r"outside dataset '2015'"):
        hps_bayes.evaluate_mass(raw_spectrum_2015, 0.5, dataset="2015")


@pytest.mark.parametrize("lengthscale", [2.5, 4.0])
def test_window_reports_the_gp_lengthscale_in_resolution_units(spectrum_2015, lengthscale):
    from dataclasses import replace

    from hps_bayes.analysis.point import build_window
    from hps_bayes.analysis.settings import resolve_settings

    settings = resolve_settings("2015")
    settings = replace(settings, background=replace(settings.background, eta=0.02, lengthscale=lengthscale))
    for mass in (0.03, 0.06, 0.1):
        window = build_window(spectrum_2015, mass, settings)
        assert window.lengthscale_sigma == pytest.approx(lengthscale, rel=1e-9)


def test_sigma_columns_split_the_spurious_signal_from_the_statistics(raw_spectrum_2015: Spectrum) -> None:
    """σ_A = √(σ_stat² + S²) in the table's own columns; the Hessian error of the data's fit agrees with σ_A."""
    frame = hps_bayes.run_scan(raw_spectrum_2015, dataset="2015", masses=[0.04, 0.06, 0.08], progress=False)
    assert (frame.status == "ok").all() and (frame.spurious_signal > 0).all()
    np.testing.assert_allclose(np.hypot(frame.sigma_A_stat, frame.spurious_signal), frame.sigma_A, rtol=1e-12)
    assert (frame.sigma_A_stat < frame.sigma_A).all()
    np.testing.assert_allclose(frame.sigma_A_hesse, frame.sigma_A, rtol=0.01)  # measured: 0.0063 at most
