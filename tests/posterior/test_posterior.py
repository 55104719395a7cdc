"""The Bayesian cross-check (hps_bayes.posterior): diagnostics, injection, flat-prior limit vs CLs.

The windows come from the 2015-like demo spectrum of conftest (seed 7, 2M events), prepared as a
scan prepares it.  The spurious-signal nuisance is switched off (``background.spurious=off``) so
that the tests do not depend on a measured table; the posterior handles it when present (ν).
Sampling uses fixed seeds; the thresholds are the defaults of conf/posterior/default.yaml.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.special import ndtr

from hps_bayes.analysis.grid import prepare_spectrum
from hps_bayes.analysis.point import build_window, evaluate_point
from hps_bayes.analysis.settings import AnalysisSettings, resolve_settings
from hps_bayes.errors import ConfigError
from hps_bayes.inputs.spectrum import Spectrum
from hps_bayes.physics.demo import expected_spectrum
from hps_bayes.posterior.compare import (
    comparison_row,
    effective_width,
    flat_prior_limit,
    merge_into_numbers,
    numbers_entry,
    reusable,
    select_scan_masses,
)
from hps_bayes.posterior.model import PosteriorSettings
from hps_bayes.posterior.sampling import (
    PosteriorResult,
    predictive_counts,
    read_posterior,
    sample_mass_point,
    write_posterior,
)
from hps_bayes.results.files import read_json, write_json
from hps_bayes.results.objects import mass_label

MASS = 0.05


@pytest.fixture(scope="module")
def settings() -> AnalysisSettings:
    return resolve_settings("2015", {"background": {"spurious": "off"}})


@pytest.fixture(scope="module")
def demo(raw_spectrum_2015: Spectrum, settings: AnalysisSettings) -> Spectrum:
    return prepare_spectrum(raw_spectrum_2015, settings)


@pytest.fixture(scope="module")
def asimov(settings: AnalysisSettings) -> Spectrum:
    """The noise-free spectrum, rounded to integers: Â ≈ 0 at every mass."""
    spec = prepare_spectrum(expected_spectrum("2015", n_events=2_000_000), settings)
    return dataclasses.replace(spec, counts=np.round(spec.counts), variances=np.round(spec.counts))


@pytest.fixture(scope="module")
def demo_posterior(demo: Spectrum, settings: AnalysisSettings) -> PosteriorResult:
    return sample_mass_point(build_window(demo, MASS, settings), settings.background, seed=11,
                             yield_per_eps2=1e8, dataset="2015")


def test_settings_are_validated() -> None:
    with pytest.raises(ConfigError, match="target_accept"):
        PosteriorSettings(target_accept=1.5)
    with pytest.raises(ConfigError, match="unknown key"):
        PosteriorSettings.from_dict({"draw": 100})
    assert PosteriorSettings.from_dict({"draws": 200}).draws == 200


def test_flat_prior_limit_solves_the_cls_equation() -> None:
    """(Φ(μ̂/σ) − Φ((μ̂ − μ)/σ))/Φ(μ̂/σ) = 0.95; μ̂ = 0 gives 1.96σ (the CLs limit too)."""
    assert flat_prior_limit(0.0, 10.0) == pytest.approx(19.5996, abs=1e-3)
    for mu_hat in (-2.0, 0.0, 1.5):
        up = flat_prior_limit(mu_hat, 1.0)
        assert (ndtr(mu_hat) - ndtr(mu_hat - up)) / ndtr(mu_hat) == pytest.approx(0.95, abs=1e-9)


def test_demo_point_passes_the_diagnostics(demo_posterior: PosteriorResult) -> None:
    """Default settings on the demo window: R̂ ≤ 1.01, ESS ≥ 400, no divergences, E-BFMI ≥ 0.3."""
    r = demo_posterior
    assert r.passed, r.problems
    assert r.r_hat_max <= 1.01 and r.ess_bulk_min >= 400 and r.ess_tail_min >= 400
    assert r.divergences == 0 and r.bfmi_min >= 0.3
    assert 0 < r.A_hdi_high and r.A_up_credible > r.A_mean > 0
    assert r.eps2_up_credible == pytest.approx(r.A_up_credible / 1e8)
    assert 2.0 <= r.lengthscale_mean and r.eta_mean > 0


def test_posterior_is_saved_and_read_back(demo_posterior: PosteriorResult, demo: Spectrum,
                                          settings: AnalysisSettings, tmp_path: Path) -> None:
    nc, js = write_posterior(demo_posterior, tmp_path / "m050MeV" / "2015", extra={"note": "test"})
    assert nc.name == "posterior.nc" and js.name == "posterior.json"
    back, trace = read_posterior(nc.parent)
    assert back.to_dict() == demo_posterior.to_dict()
    assert float(trace.posterior["A"].quantile(0.95)) == pytest.approx(demo_posterior.A_up_credible)
    window = build_window(demo, MASS, settings)
    toys = predictive_counts(trace, window, n=7, rng=np.random.default_rng(1), signal=False)
    assert toys.shape == (7, window.n_bins)


def test_failing_diagnostics_are_flagged(demo: Spectrum, settings: AnalysisSettings,
                                         caplog: pytest.LogCaptureFixture) -> None:
    """Too few draws cannot reach ESS 400: the point is flagged and a warning logged."""
    window = build_window(demo, MASS, settings)
    with caplog.at_level(logging.WARNING, logger="hps_bayes.posterior"):
        r = sample_mass_point(window, settings.background, draws=60, tune=100, seed=3)
    assert not r.passed and any("ESS" in p for p in r.problems)
    assert "FAILED" in caplog.text
    assert r.to_dict()["passed"] is False and isinstance(r.to_dict()["problems"], list)


def test_credible_limit_matches_cls_for_zero_signal(asimov: Spectrum, settings: AnalysisSettings) -> None:
    """Â ≈ 0 (Asimov data): flat-prior credible limit = CLs limit = 1.96 σ_A for a Gaussian likelihood.

    Tolerance: the credible limit may be 0–15% larger, because the posterior integrates over η and
    ℓ (the CLs fit fixes them; η = 0 by default, so σ_A grows with the GP's freedom), minus 4% for the
    Monte Carlo error of a 95% quantile from ~1000 effective draws.
    """
    freq = evaluate_point(asimov, MASS, settings)
    assert freq.status == "ok" and abs(freq.A_hat) < 0.1 * freq.sigma_A
    assert freq.A_up == pytest.approx(flat_prior_limit(freq.A_hat, freq.sigma_A), rel=0.02)
    post = sample_mass_point(build_window(asimov, MASS, settings), settings.background, seed=5)
    assert post.passed, post.problems
    row = comparison_row(post, A_up_cls=freq.A_up, A_hat=freq.A_hat, sigma_A=freq.sigma_A, status=freq.status)
    assert 0.96 <= row["ratio"] <= 1.15, row


@pytest.mark.slow
def test_injected_signal_moves_the_posterior(asimov: Spectrum, settings: AnalysisSettings) -> None:
    """5 σ_A injected into the Asimov window: the posterior mean of A is within 2 posterior sd of it."""
    window = build_window(asimov, MASS, settings)
    sigma_a = evaluate_point(asimov, MASS, settings).sigma_A
    injected = 5.0 * sigma_a
    signal = dataclasses.replace(window, counts=np.round(window.counts + injected * window.template))
    r = sample_mass_point(signal, settings.background, seed=9)
    assert r.passed, r.problems
    assert abs(r.A_mean - injected) < 2.0 * r.A_sd, (r.A_mean, r.A_sd, injected)
    assert r.A_hdi_low > 2.0 * sigma_a  # the interval leaves zero behind
    assert math.isfinite(r.b_under_signal_mean)


@pytest.mark.slow
def test_task_posterior_writes_the_comparison(tmp_path: Path) -> None:
    """task=posterior on the demo data: numbers.json, posterior.nc/.json, plots, comparison CSV."""
    import pandas as pd

    from hps_bayes.cli.tasks import run_task

    table = run_task("posterior", ["mass=0.05", "background.spurious=off", "posterior.draws=200",
                                   "posterior.tune=300"], tmp_path)
    folder = tmp_path / "m050MeV" / "demo"
    for name in ("numbers.json", "posterior.json", "posterior.nc", "posterior_trace.png", "posterior_A.png",
                 "posterior_ppc.png"):
        assert (folder / name).is_file(), name
    csv = pd.read_csv(tmp_path / "posterior_comparison_demo.csv")
    assert list(csv.mass) == [0.05] and {"A_up", "A_up_credible", "ratio", "passed"} <= set(csv.columns)
    assert len(table) == 1 and 0.8 < float(csv.ratio.iloc[0]) < 1.5


# --------------------------------------------------------------------------- sampling after a scan


def test_scan_selection_takes_top_z_and_nearest_grid_points() -> None:
    masses = np.array([0.03, 0.04, 0.05, 0.06])
    z = np.array([0.2, 3.0, 1.0, 2.5])
    ok = np.array([True, True, True, False])  # a failed point is never "most significant"
    chosen, unmatched = select_scan_masses(masses, z, ok, top_z=2, explicit=(0.0302, 0.07), tolerance=0.0005)
    assert chosen == [0.03, 0.04, 0.05] and unmatched == [0.07]
    assert select_scan_masses(masses, z, ok, top_z=0) == ([], [])
    assert select_scan_masses(masses, z, ok, top_z=10)[0] == [0.03, 0.04, 0.05]
    with pytest.raises(ConfigError, match="scan_top_z"):
        PosteriorSettings(scan_top_z=-1)
    assert PosteriorSettings.from_dict({"scan_masses": [0.05]}).scan_masses == (0.05,)


def test_summary_is_merged_into_numbers_json(tmp_path: Path) -> None:
    """The CLs content of numbers.json is kept; "posterior" is added; reuse needs the same settings."""
    path = write_json(tmp_path / "numbers.json", {"result": {"mass": 0.05, "A_up": 10.0}, "provenance": {"x": 1}})
    prior = PosteriorSettings(draws=100, scan_top_z=3)
    result = PosteriorResult(dataset="demo", mass=0.05, A_up_credible=11.0, passed=True)
    merge_into_numbers(path, numbers_entry(result, prior, config_hash="abc"))
    back = read_json(path)
    assert back["result"] == {"mass": 0.05, "A_up": 10.0} and back["provenance"] == {"x": 1}
    assert back["posterior"]["result"]["A_up_credible"] == 11.0 and back["posterior"]["config_hash"] == "abc"
    assert reusable(back, dataclasses.replace(prior, scan_top_z=0), config_hash="abc")  # selection only
    assert not reusable(back, dataclasses.replace(prior, draws=200), config_hash="abc")
    assert not reusable(back, prior, config_hash="other")
    with pytest.raises(Exception, match="does not exist"):
        merge_into_numbers(tmp_path / "missing.json", {})


def test_effective_width_inverts_the_flat_prior_limit() -> None:
    for mu_hat, sigma in ((-1.6, 1.2), (0.0, 1.0), (2.0, 0.5)):
        assert effective_width(mu_hat, flat_prior_limit(mu_hat, sigma)) == pytest.approx(sigma, rel=1e-8)


def test_scan_samples_the_most_significant_points(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """task=scan with posterior.scan_top_z=1 and one explicit mass on a two-mass grid: both points are
    sampled, their numbers.json get "posterior", the CSV and the comparison plot are written; a rerun
    reuses the posteriors instead of sampling again."""
    import pandas as pd

    from hps_bayes.cli.tasks import run_task

    overrides = ["scan.mass_min=0.05", "scan.mass_max=0.06", "scan.step=0.01", "background.spurious=off",
                 "plots.per_mass=false", "posterior.scan_top_z=1", "posterior.scan_masses=[0.0501]",
                 "posterior.draws=100", "posterior.tune=150", "posterior.ess_bulk_min=50",
                 "posterior.ess_tail_min=50"]
    frame = run_task("scan", overrides, tmp_path)
    assert sorted(frame.mass) == [0.05, 0.06]
    top = float(frame.loc[frame.Z.idxmax(), "mass"])
    csv = pd.read_csv(tmp_path / "posterior_comparison_demo.csv")
    assert sorted(csv.mass) == sorted({0.05, top})
    assert {"mass", "A_up", "A_up_credible", "ratio", "width_ratio", "passed"} <= set(csv.columns)
    assert (tmp_path / "summary_plots" / "posterior_vs_cls_demo.png").is_file()
    for mass in csv.mass:
        folder = tmp_path / mass_label(mass) / "demo"
        numbers = read_json(folder / "numbers.json")
        assert numbers["result"]["mass"] == mass and numbers["posterior"]["result"]["mass"] == mass
        assert numbers["posterior"]["result"]["A_up_credible"] == pytest.approx(
            float(csv.loc[csv.mass == mass, "A_up_credible"].iloc[0]))
        assert (folder / "posterior.nc").is_file() and (folder / "posterior_A.png").is_file()
    with caplog.at_level(logging.INFO, logger="hps_bayes"):
        run_task("scan", overrides, tmp_path)
    assert caplog.text.count("posterior reused") == len(csv)
