"""Reproduction of a published limit: step chains, ratio summaries, the global-significance recipe, task=reproduce."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import ndtri

from hps_bayes.analysis.reproduce import Step, deep_merge, load_published, step_settings, summarize
from hps_bayes.analysis.settings import resolve_settings
from hps_bayes.cli.tasks import run_task
from hps_bayes.errors import ConfigError, InputError
from hps_bayes.physics.demo import write_demo_file
from hps_bayes.physics.presets import load_preset
from hps_bayes.stats.lee import look_elsewhere, n_regions, regions_global_pvalue


def test_steps_accumulate_their_changes_and_are_validated() -> None:
    base = resolve_settings("demo").to_dict()
    steps = [Step("a", {"stats": {"limit": "pcl"}}),
             Step("b", {"background": {"mean_basis": "chebyshev_m", "degree_table": [[0.039, 5, 7.0], [1.0, 3, 6.5]]}})]
    first, second = step_settings(base, steps)
    assert first.stats.limit == "pcl" and first.background.mean_basis == "legendre_lnm"
    assert second.stats.limit == "pcl" and second.background.mean_basis == "chebyshev_m"
    assert second.background.at_mass(0.05).poly_degree == 3
    assert deep_merge({"a": {"b": 1, "c": 2}}, {"a": {"b": 3}}) == {"a": {"b": 3, "c": 2}}
    with pytest.raises(ConfigError, match="stats.limit"):
        step_settings(base, [Step("bad", {"stats": {"limit": "bayes"}})])


def _frame(published: pd.DataFrame, factor_obs: np.ndarray, factor_exp: float) -> pd.DataFrame:
    mass = np.round(np.arange(0.020, 0.0805, 0.0005), 6)  # 20-80 MeV, 121 masses
    pub = np.exp(np.interp(mass, published.mass_GeV, np.log(published.epsilon2)))
    exp = factor_exp * pub
    obs = factor_obs * pub
    m1 = 0.5 * exp
    constrained = obs < m1
    obs = np.where(constrained, m1, obs)
    z = np.linspace(-1.0, 2.5, mass.size)
    return pd.DataFrame({"mass": mass, "status": "ok", "eps2_up": obs, "eps2_up_expected_median": exp,
                         "eps2_up_expected_m1": m1, "A_hat": z * 100.0, "sigma_A": 100.0, "Z": np.maximum(z, 0),
                         "p0": np.where(z > 0, 0.5 * np.exp(-0.5 * z**2), 0.5), "sigma_m": 0.05 * mass})


def test_ratio_summary_of_known_frames() -> None:
    published = load_published()
    n = 121
    factors = np.where(np.arange(n) % 4 == 0, 0.3, 1.2)  # a quarter of the masses deficits, power-constrained
    summary = summarize(_frame(published, factors, 0.8), published, label="x", mass_lo=0.020, mass_hi=0.080)
    assert summary.n_masses == n
    assert summary.expected_median == pytest.approx(0.8, rel=1e-9)
    assert summary.observed_median == pytest.approx(1.2, rel=1e-9)
    assert summary.observed_p16 == pytest.approx(0.4, rel=1e-9)  # the −1σ floor 0.5 × 0.8
    assert summary.power_constrained == pytest.approx(31 / 121)
    assert summary.mass_at_z_max == pytest.approx(0.080) and summary.z_max == pytest.approx(2.5)
    assert np.isnan(summary.gof_median)  # no goodness-of-fit table given


def test_published_curve_is_checked(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("mass,eps\n0.02,1e-5\n")
    with pytest.raises(InputError, match="mass_GeV"):
        load_published(bad)


def test_regions_recipe_is_n_reg_times_p_local() -> None:
    masses = np.linspace(0.039, 0.179, 141)
    sigma = 0.02 + 0.03 * masses
    assert n_regions(masses, sigma) == pytest.approx(0.14 / sigma.mean())
    assert regions_global_pvalue(1e-3, masses, sigma)[1] == pytest.approx(1e-3 * 0.14 / sigma.mean())
    assert regions_global_pvalue(0.5, masses, sigma)[1] == 1.0  # capped
    z = np.zeros(masses.size)
    z[70] = 3.0
    lee = look_elsewhere(masses, z, np.zeros((0, masses.size)), sigma)
    assert lee.p_global_regions == pytest.approx(lee.n_regions * lee.p_local)
    assert lee.to_dict()["p_global_regions"] == lee.p_global_regions


@pytest.mark.slow
def test_task_reproduce_writes_table_plot_and_scans(tmp_path: Path) -> None:
    """Two steps on the published background: PCL and CLs.  Their median expected limits differ by the
    asymptotic factor Φ⁻¹(0.95)/Φ⁻¹(0.975) = 0.839 (measured 0.839; 2 % allowed for σ varying with μ)."""
    demo = write_demo_file(tmp_path / "demo.root", load_preset("demo"), n_events=2e6, seed=5, shape="2015")
    steps = ("[{label:pcl,experiment:hps2015_published,changes:{}},"
             "{label:cls,experiment:hps2015_published,changes:{stats:{limit:cls}}}]")
    table = run_task("reproduce", [f"dataset.path={demo}", "task.mass_min=0.045", "task.mass_max=0.047",
                                   "task.compare_min=0.045", "task.compare_max=0.047", f"task.steps={steps}",
                                   "task.plot=[pcl,cls]"], tmp_path / "run")
    run = tmp_path / "run"
    assert list(table.label) == ["pcl", "cls"] and (table.n_masses == 5).all()
    ratio = table.expected_median.iloc[0] / table.expected_median.iloc[1]
    assert ratio == pytest.approx(float(ndtri(0.95) / ndtri(0.975)), rel=0.02)
    assert (run / "reproduction.md").read_text().count("\n") == 4
    assert (run / "summary_plots" / "reproduction_demo.png").stat().st_size > 10_000
    assert len(pd.read_csv(run / "reproduction_1.csv")) == 5
    # σ_A with the background fitted cannot beat the known-background floor of the same window
    assert (table.sigma_floor_ratio > 1.0).all() and np.isfinite(table.sigma_floor_ratio).all()
