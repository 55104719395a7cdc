"""Closure studies (hps_bayes.closure): injection/extraction, coverage, and the two tasks."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hps_bayes.analysis.grid import prepare_spectrum
from hps_bayes.analysis.settings import resolve_settings
from hps_bayes.cli.tasks import run_task
from hps_bayes.errors import ConfigError
from hps_bayes.stats import KnownBackgroundObjective
from hps_bayes.studies import closure
from hps_bayes.studies import coverage as closure_coverage
from hps_bayes.studies import injection as closure_injection

MASS = 0.05


@pytest.fixture(scope="module")
def settings():
    return resolve_settings("2015")


@pytest.fixture(scope="module")
def window_and_truth(settings, raw_spectrum_2015):
    """The window at 50 MeV of the 2015-like demo spectrum and truth (a), its background-only fit."""
    spec = prepare_spectrum(raw_spectrum_2015, settings)
    spectra = closure.truth_spectra(raw_spectrum_2015, settings, ["fit"])
    objective, (truth,) = closure.window_truths(spec, MASS, settings, spectra)
    return objective, truth


@pytest.mark.parametrize("a_sigmas", [0.0, 3.0])
def test_injected_signal_is_extracted_without_bias_and_with_unit_pulls(window_and_truth, a_sigmas):
    """Truth (a), 240 pseudo-datasets with global observables drawn: pull mean within 3 standard errors
    of 0, pull width 0.85-1.15 (±0.046 of noise), mean Â/A_inj within 3 standard errors of 1."""
    objective, truth = window_and_truth
    a_inj = a_sigmas * truth.sigma_A
    row, toys = closure_injection.inject_cell(objective, truth, a_inj, n_toys=240, rng=np.random.default_rng(11),
                                    limits=False)
    assert row["n_failed"] == 0 and row["n_ok"] == 240
    assert abs(row["pull_mean"]) < 3 * row["pull_mean_err"]
    assert 0.85 < row["pull_width"] < 1.15
    assert abs(row["asimov_pull"]) < 0.02  # noise-free: the fit returns what was injected
    if a_inj > 0:
        assert abs(row["A_hat_over_inj"] - 1) < 3 * row["A_hat_over_inj_err"]
        assert row["Z_median"] > 2.0  # a 3 σ signal is seen at about 3 σ
    assert np.isnan(toys["A_up"]).all()  # limits=False


def test_injection_cell_is_reproducible_and_limits_cover(window_and_truth):
    objective, truth = window_and_truth
    kwargs = {"n_toys": 40, "limits": True}
    a, _ = closure_injection.inject_cell(objective, truth, 2 * truth.sigma_A, rng=np.random.default_rng(3), **kwargs)
    b, toys = closure_injection.inject_cell(objective, truth, 2 * truth.sigma_A, rng=np.random.default_rng(3), **kwargs)
    assert a == b
    assert np.isfinite(toys["A_up"]).all() and a["A_up_coverage"] >= 0.85


def test_asymptotic_limits_cover_on_a_known_background(window_and_truth):
    """Known-background model (the truth's window counts): 400 pseudo-experiments per A_true;
    coverage of the 95% CL CLs limit ≥ 0.95 − 3 binomial σ (CLs over-covers: 1 at A = 0)."""
    objective, truth = window_and_truth
    tpl = objective.window.template
    known = KnownBackgroundObjective(truth.counts, tpl)
    sigma = 1.0 / math.sqrt(float(np.sum(tpl**2 / truth.counts)))
    for value, seed in ((0.0, 1), (2.0, 2)):
        limits = closure_coverage.coverage_cell(known, truth.counts, np.zeros(0), tpl, value * sigma, method="asymptotic",
                                       n_experiments=400, n_toys=0, rng=np.random.default_rng(seed), alpha=0.05)
        cov, err, _, n = closure_coverage.coverage_fraction(limits, value * sigma)
        assert n == 400
        assert cov >= 0.95 - 3 * math.sqrt(0.95 * 0.05 / n), (value, cov, err)
        if value == 0:
            assert cov == 1.0


def test_coverage_fraction_and_masses(settings):
    cov, err, z, n = closure_coverage.coverage_fraction(np.array([1.0, 2.0, np.nan, 3.0, 0.5]), 1.0)
    assert (n, cov) == (4, 0.75) and err == pytest.approx(math.sqrt(0.75 * 0.25 / 4)) and z < 0
    masses = closure.study_masses(settings, None, 3)
    assert len(masses) == 3 and np.all(np.diff(masses) > 0)
    assert list(closure.study_masses(settings, [0.03, 0.06], 3)) == [0.03, 0.06]
    with pytest.raises(ConfigError, match="task.truths"):
        closure.truth_spectra(None, settings, ["gp"])  # type: ignore[arg-type]


def _run(task: str, tmp_path: Path, *overrides: str):
    return run_task(task, overrides, tmp_path)


@pytest.mark.slow
def test_task_inject_in_two_chunks_merges_table_summary_and_plots(tmp_path: Path):
    common = ("task.masses=[0.04,0.08]", "task.truths=[fit,powerlaw]", "task.yields=[0,3]", "task.n_toys=30",
              "scan.n_chunks=2")
    first = _run("inject", tmp_path, *common, "scan.chunk=1")
    assert len(first) == 4 and not (tmp_path / "inject.csv").exists()  # waits for chunk 0
    frame = _run("inject", tmp_path, *common, "scan.chunk=0")
    table = pd.read_csv(tmp_path / "inject.csv")
    assert len(table) == len(frame) == 8 and sorted(table.mass.unique()) == [0.04, 0.08]
    assert set(table.truth) == {"fit", "powerlaw"} and (table.status == "ok").all()
    assert {"pull_mean", "pull_width", "A_hat_over_inj", "Z_median", "A_up_median", "A_up_coverage"} <= set(table)
    for name in ("inject_summary.json", "inject_pulls_demo.png", "inject_linearity_demo.png",
                 "inject_toys_chunk0of2.csv"):
        assert (tmp_path / name).is_file(), name


@pytest.mark.slow
def test_task_coverage_writes_table_and_plot(tmp_path: Path):
    frame = _run("coverage", tmp_path, "task.masses=[0.06]", "task.true_sigmas=[0,2]", "task.n_experiments=20",
                 "task.n_experiments_toys=3", "task.n_toys=30", "task.known_scales=[1.0]")
    table = pd.read_csv(tmp_path / "coverage.csv")
    assert len(table) == len(frame) == 2 * 2 * 2  # (known, window) x (asymptotic, toys) x 2 values
    assert set(table.model) == {"known", "window"} and set(table.method) == {"asymptotic", "toys"}
    asym = table[table.method == "asymptotic"]
    assert (asym.n_ok == asym.n_experiments).all() and (tmp_path / "coverage_demo.png").is_file()
    # 30 toys cannot always bring CLs below 0.05 for a deficit: such limits are left out and counted
    assert (table.n_ok >= 1).all() and table.coverage.between(0, 1).all()
