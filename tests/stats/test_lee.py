"""Look-elsewhere effect: upcrossings and Gross–Vitells against Rice's formula on a synthetic
Gaussian process, monotone global p-values, toy scans of a spectrum, the scan summary, task=bands."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.ndimage import gaussian_filter1d
from scipy.special import ndtr
from scipy.stats import norm

from hps_bayes.analysis.bandbatches import read_batches, toy_settings
from hps_bayes.analysis.grid import turn_on_guard
from hps_bayes.analysis.point import TOY_SCAN_POINTS, build_window
from hps_bayes.analysis.rundir import RunFolderConflict
from hps_bayes.analysis.scan import prepare_scan
from hps_bayes.analysis.settings import resolve_settings
from hps_bayes.analysis.toyscans import toy_scans
from hps_bayes.cli.config import load_config, settings_from_config
from hps_bayes.cli.tasks import run_task
from hps_bayes.errors import ConfigError
from hps_bayes.inputs.root_io import load_spectrum
from hps_bayes.inputs.spectrum import Spectrum
from hps_bayes.model.objective import WindowObjective
from hps_bayes.physics.demo import write_demo_file
from hps_bayes.physics.presets import load_preset
from hps_bayes.stats import PooledToyCalculator, upper_limit
from hps_bayes.stats.lee import (
    LookElsewhere,
    global_pvalue_from_toys,
    gross_vitells,
    look_elsewhere,
    mean_upcrossings,
    trials_factor,
    upcrossings,
)


def _smooth_process(n_scans: int, n_points: int, width: float, rng: np.random.Generator) -> np.ndarray:
    """Unit-variance stationary Gaussian process: white noise smoothed by a Gaussian of sd ``width``
    (points); its correlation is exp(−τ²/(4 width²)), so λ₂ = −ρ''(0) = 1/(2 width²)."""
    pad = int(8 * width)
    noise = rng.standard_normal((n_scans, n_points + 2 * pad))
    x = gaussian_filter1d(noise, width, axis=1, mode="wrap", truncate=8.0)[:, pad:-pad]
    kernel = np.exp(-0.5 * (np.arange(-pad, pad + 1) / width) ** 2)
    return np.asarray(x / np.sqrt(np.sum((kernel / kernel.sum()) ** 2)))


def test_upcrossings_count_steps_across_the_level() -> None:
    z = np.array([[0.0, 2.0, 0.5, 1.5, 3.0], [2.0, 2.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, np.nan, 2.0]])
    assert upcrossings(z, 1.0).tolist() == [2, 0, 1]
    assert mean_upcrossings(z, 1.0) == pytest.approx(1.0)


def test_gross_vitells_on_a_gaussian_process_with_known_upcrossings() -> None:
    """Rice: ⟨N(u)⟩ = L √λ₂ e^{−u²/2} / (2π).  The measured ⟨N(c0)⟩ matches it, and Gross–Vitells
    from c0 = 1 predicts the toys' global p of max Z (Z = max(0, X)) at Z = 2.5 and 3."""
    width, n_points = 5.0, 400
    z = np.maximum(_smooth_process(4000, n_points, width, np.random.default_rng(1)), 0.0)
    rice = (n_points - 1) * np.sqrt(1.0 / (2 * width**2)) / (2 * np.pi)
    for level in (0.5, 1.0, 2.0):
        measured = mean_upcrossings(z, level)
        assert measured == pytest.approx(rice * np.exp(-0.5 * level**2), rel=0.06), level
    n_c0 = mean_upcrossings(z[:200], 1.0)  # a few toy scans suffice at a low level
    z_max = z.max(axis=1)
    for z_obs in (2.5, 3.0):
        p_toys, err = global_pvalue_from_toys(z_max, z_obs)
        assert gross_vitells(z_obs, n_c0, 1.0) == pytest.approx(p_toys, abs=4 * err + 0.15 * p_toys)


def test_global_pvalues_are_monotone_and_above_local() -> None:
    rng = np.random.default_rng(3)
    z = np.maximum(_smooth_process(500, 200, 3.0, rng), 0.0)
    masses = np.linspace(0.02, 0.12, 200)
    sigma = np.full(200, 0.002)
    previous = None
    for z_obs in (0.5, 1.5, 2.0, 2.5, 3.0, 4.0):
        observed = np.zeros(200)
        observed[57] = z_obs
        lee = look_elsewhere(masses, observed, z, sigma)
        assert lee.mass_at_max == pytest.approx(masses[57]) and lee.n_toy_scans == 500
        assert lee.p_local == pytest.approx(float(ndtr(-z_obs)))
        for p in (lee.p_global_toys + lee.p_global_toys_error, lee.p_global_gv, lee.p_global_trials):
            assert lee.p_local <= p <= 1.0
        if previous is not None:
            assert lee.p_global_toys <= previous.p_global_toys
            assert lee.p_global_gv <= previous.p_global_gv
            assert lee.p_global_trials <= previous.p_global_trials
        previous = lee
    assert LookElsewhere.from_dict(previous.to_dict()) == previous
    assert previous.trials_factor == pytest.approx(50.0)
    assert trials_factor(masses, sigma, sigmas_per_trial=2.0) == pytest.approx(25.0)


def test_a_global_p_that_no_toy_scan_reached_is_logged_as_a_bound(tmp_path: Path, caplog) -> None:
    """50 toy scans, none reaching the observed local Z = 6: the log gave "toys 0 ± 0.02 (Z = inf)"."""
    import logging

    from hps_bayes.analysis.settings import resolve_settings
    from hps_bayes.cli.task_scan import record_look_elsewhere

    masses = np.linspace(0.03, 0.09, 61)
    z = np.where(np.isclose(masses, 0.06), 6.0, 0.3)
    lee = look_elsewhere(masses, z, np.full((50, masses.size), 0.5), np.full(masses.size, 0.002))
    assert lee.p_global_toys == 0.0
    with caplog.at_level(logging.INFO, logger="hps_bayes"):
        record_look_elsewhere(tmp_path, resolve_settings("demo"), lee, n_masses=masses.size, source={})
    assert "global p: toys < 0.02 (Z > 2.05; no toy scan reached the local Z)" in caplog.text
    assert "inf" not in caplog.text


def test_toy_scans_shape_and_seed(raw_spectrum_2015: Spectrum) -> None:
    settings = resolve_settings("2015", {"background": {"spurious": "off"}})
    masses = [0.04, 0.06, 0.08]
    runs = [toy_scans(raw_spectrum_2015, settings, n_scans=40, rng=np.random.default_rng(seed), masses=masses)
            for seed in (5, 5, 6)]
    assert runs[0].shape == (40, 3) and np.all(np.isfinite(runs[0])) and np.all(runs[0] >= 0)
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])
    # background-only truth: Z = max(0, N(0, 1)) at each mass (about half the toys at 0)
    pooled = np.concatenate(runs[:1] + runs[2:]).ravel()
    assert 0.35 < np.mean(pooled == 0) < 0.65 and 0.3 < np.mean(pooled**2) < 0.75


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "demo.root"
    return write_demo_file(path, load_preset("demo"), n_events=2e6, seed=5, shape="2015")


def _overrides(demo_file: Path, *extra: str) -> list[str]:
    return [f"dataset.path={demo_file}", "background.spurious=off", "plots.per_mass=false",
            "scan.mass_min=0.05", "scan.mass_max=0.07", "scan.step=0.01", *extra]


def test_scan_summary_reports_the_look_elsewhere_effect(tmp_path: Path, demo_file: Path) -> None:
    overrides = _overrides(demo_file, "stats.lee_toys=30", "plots.summary=false")
    run_task("scan", overrides, tmp_path)
    lee = json.loads((tmp_path / "summary.json").read_text())["look_elsewhere"]["demo"]
    assert lee["n_toy_scans"] == 30 and lee["c0"] == 1.0
    # the local excess is the scan's largest Z; the toy p is a count of the 30 toy scans with its binomial error
    scan = pd.read_csv(tmp_path / "results_single.csv")
    best = scan.loc[scan.Z.idxmax()]
    assert lee["z_local_max"] == pytest.approx(best.Z, rel=1e-9) and lee["mass_at_max"] == pytest.approx(best.mass)
    assert lee["p_local"] == pytest.approx(norm.sf(best.Z), rel=1e-9)
    k = lee["p_global_toys"] * 30
    assert k == pytest.approx(round(k), abs=1e-9) and 1 <= round(k) <= 30
    p = round(k) / 30
    assert lee["p_global_toys_error"] == pytest.approx(np.sqrt(p * (1 - p) / 30), rel=1e-9)
    assert lee["z_global_toys"] == pytest.approx(norm.isf(p), rel=1e-9)
    assert lee["p_local"] <= lee["p_global_trials"] and lee["trials_factor"] > 1
    on, off = (settings_from_config(load_config(o)) for o in (overrides, _overrides(demo_file)))
    assert off.config_hash() == on.config_hash()  # lee_toys does not change a point's numbers


def test_bands_task_smoke(tmp_path: Path, demo_file: Path) -> None:
    table = run_task("bands", _overrides(demo_file, "stats.n_toys=100", "scan.mass_max=0.06"), tmp_path)
    frame = pd.read_csv(tmp_path / "bands.csv")
    assert len(frame) == len(table) == 4 and sorted(set(frame.method)) == ["asymptotic", "toys"]
    toys = frame[frame.method == "toys"]
    assert set(frame[frame.method == "asymptotic"].status) == {"ok"}
    # 100 toys: a limit whose Monte Carlo error exceeds half of σ_A is flagged (one of the two masses here)
    imprecise = toys.status == "unreliable"
    assert set(toys.status) <= {"ok", "unreliable"}
    assert toys[imprecise].message.str.contains("too few toys for this limit").all()
    assert (toys[imprecise].A_up_error > 0.5 * toys[imprecise].sigma_A).all()
    assert (toys[~imprecise].A_up_error <= 0.5 * toys[~imprecise].sigma_A).all()
    assert (toys.n_toys == 100).all() and (toys.A_up_error > 0).all()
    assert (toys.A_up_expected_error_median > 0).all()  # the band's Monte Carlo errors, toys only
    assert frame[frame.method == "asymptotic"].A_up_expected_error_median.isna().all()
    assert frame[frame.method == "asymptotic"].A_up_error.isna().all()
    for short in ("A", "eps2"):
        assert (tmp_path / "summary_plots" / f"bands_{short}_demo.png").stat().st_size > 10_000


def test_toy_scans_in_batches_are_merged_into_the_global_significance(tmp_path: Path, demo_file: Path) -> None:
    """A chunked scan, two task=lee batches, task=merge: the global p-value counts the toy scans of both
    batches; a rerun batch is reused, the same batch in another folder is identical, a batch of other
    settings is refused at the merge."""
    from hps_bayes.analysis.toyscans import read_batch

    base = _overrides(demo_file, "plots.summary=false")
    for k in range(2):
        run_task("scan", [*base, "scan.n_chunks=2", f"scan.chunk={k}"], tmp_path)
    for k in range(2):
        run_task("lee", [*base, "task.toys_per_batch=15", f"task.batch={k}", "task.n_batches=3"], tmp_path)
    batch0 = tmp_path / "lee" / "demo" / "toys_0000.npz"
    stamp = batch0.stat().st_mtime_ns
    again = run_task("lee", [*base, "task.toys_per_batch=15", "task.batch=0", "task.n_batches=3"], tmp_path)
    assert batch0.stat().st_mtime_ns == stamp  # reused, not recomputed
    other = run_task("lee", [*base, "task.toys_per_batch=15", "task.batch=0"], tmp_path / "elsewhere")
    np.testing.assert_array_equal(other.z, again.z)  # batch k's toys do not depend on the job
    run_task("merge", [*base], tmp_path)
    lee = json.loads((tmp_path / "summary.json").read_text())["look_elsewhere"]["demo"]
    assert lee["n_toy_scans"] == 30 and lee["batches"] == [0, 1] and lee["missing_batches"] == [2]
    report = json.loads((tmp_path / "merge_report.json").read_text())["datasets"][0]["look_elsewhere"]
    assert report["n_toy_scans"] == 30 and report["missing_batches"] == [2]
    # the global p-value: the fraction of the 30 stacked toy scans whose largest Z reaches the observed one
    scan = pd.read_csv(tmp_path / "results_single.csv")
    z_max = np.vstack([read_batch(tmp_path / "lee" / "demo" / f"toys_{k:04d}.npz").z for k in range(2)]).max(axis=1)
    assert lee["z_local_max"] == pytest.approx(scan.Z.max(), rel=1e-12)
    assert lee["p_global_toys"] == pytest.approx(np.mean(z_max >= scan.Z.max() - 1e-12), abs=1e-12)
    assert 0 < lee["p_global_toys"] <= 1
    # a batch of another background is refused in this folder, and not merged when copied in
    degree6 = [*base, "background.poly_degree=6", "task.toys_per_batch=15", "task.batch=2"]
    with pytest.raises(RunFolderConflict, match="other settings"):
        run_task("lee", degree6, tmp_path)
    run_task("lee", degree6, tmp_path / "degree6")
    shutil.copy(tmp_path / "degree6" / "lee" / "demo" / "toys_0002.npz", tmp_path / "lee" / "demo")
    with pytest.raises(ConfigError, match="toys_0002.npz was made with other settings"):
        run_task("merge", [*base], tmp_path)
    (tmp_path / "lee" / "demo" / "toys_0002.npz").write_bytes(b"cut off")  # a damaged batch file (a copy cut short)
    with pytest.raises(ConfigError, match="toys_0002.npz cannot be read"):
        run_task("merge", [*base], tmp_path)


def test_band_toys_in_batches_are_pooled(tmp_path: Path, demo_file: Path) -> None:
    """task=bands in two batches of toys and task.merge=true: every mass's toys of both batches pooled (the toy
    columns of a mass are those of one calculator holding them); task=merge of the folder gives the same table;
    a rerun batch is kept, batch k is the same in any job, a batch of other settings and a batch job that also
    merges are refused."""
    base = _overrides(demo_file, "plots.summary=false", "task.toys_per_batch=1000")
    for k in range(2):
        run_task("bands", [*base, f"task.batch={k}", "task.n_batches=3"], tmp_path)
    batch0 = tmp_path / "bands" / "demo" / "toys_0000.npz"
    stamp = batch0.stat().st_mtime_ns
    run_task("bands", [*base, "task.batch=0", "task.n_batches=3"], tmp_path)
    assert batch0.stat().st_mtime_ns == stamp  # kept, not recomputed
    run_task("bands", [*base, "task.batch=0", "task.n_batches=3"], tmp_path / "elsewhere")
    assert (tmp_path / "elsewhere" / "bands" / "demo" / "toys_0000.npz").read_bytes() == batch0.read_bytes()
    table = run_task("bands", [*base, "task.merge=true"], tmp_path)
    report = json.loads((tmp_path / "bands_report.json").read_text())
    assert report["batches"] == [0, 1] and report["missing_batches"] == [2] and report["toys_per_mass_min"] == 2000
    toys = table[table.method == "toys"]
    assert len(toys) == 3 and set(toys.status) == {"ok"} and (toys.n_toys == 2000).all()
    assert (toys.A_up_error > 0).all() and (toys.A_up_expected_error_median > 0).all()
    # the 60 MeV row is the limit of one calculator holding both batches' toys of that mass
    cfg = load_config([*base, "task=bands"])
    settings = settings_from_config(cfg)
    spectrum = load_spectrum(demo_file, settings.dataset.hist_name)
    guarded, _ = turn_on_guard(spectrum, settings)
    prep = prepare_scan(spectrum, config=toy_settings(guarded, 1000))
    per_mass, _ = read_batches(tmp_path, "demo", prep.key)
    objective = WindowObjective(build_window(prep.spectrum, 0.06, prep.settings), prep.settings.background)
    pooled = PooledToyCalculator(objective, objective.observed(), per_mass[0.06])
    limit = upper_limit(pooled, rtol=1e-3, scan=TOY_SCAN_POINTS)
    row = toys[np.isclose(toys.mass, 0.06)].iloc[0]
    assert row.A_up == pytest.approx(limit.mu_up, rel=1e-12)
    assert row.A_up_expected_median == pytest.approx(limit.mu_up_expected[2], rel=1e-12)
    # task=merge of the folder pools the batches with the settings they were made with: the same table
    bands = pd.read_csv(tmp_path / "bands.csv").drop(columns=["seconds"])
    run_task("merge", [], tmp_path)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "bands.csv").drop(columns=["seconds"]), bands)
    with pytest.raises(ConfigError, match="task.batch and task.merge=true together"):
        run_task("bands", [*base, "task.batch=1", "task.merge=true"], tmp_path)
    run_task("bands", [*base, "task.batch=2", "background.poly_degree=6"], tmp_path / "degree6")
    shutil.copy(tmp_path / "degree6" / "bands" / "demo" / "toys_0002.npz", tmp_path / "bands" / "demo")
    with pytest.raises(ConfigError, match="toys_0002.npz was made with other settings"):
        run_task("bands", [*base, "task.merge=true"], tmp_path)
