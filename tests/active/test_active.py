"""Active learning (hps_bayes.active): learner, acquisitions, stopping rule, failures, resume, task=active."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from hps_bayes.active import (
    ActiveLearner,
    CombinedExcessObjective,
    ExcessObjective,
    WedgeSignalModel,
    acquisition_values,
    grid_values,
    is_pure_eps2_scaling,
    make_executor,
    per_mass_eps2_limit,
    run_active,
    truth_grid,
)
from hps_bayes.analysis.settings import resolve_settings
from hps_bayes.errors import ConfigError
from hps_bayes.physics.demo import simulate_spectrum
from hps_bayes.physics.presets import load_preset
from hps_bayes.physics.signal import sigma_m

BOUNDS = [(0.015, 0.2), (1e-12, 1e-4)]
MODEL = WedgeSignalModel()


def _wedge_learner(seed: int = 1, **kwargs: object) -> ActiveLearner:
    return ActiveLearner(BOUNDS, log_axes=[0, 1], acquisition=kwargs.pop("acquisition", "straddle"),  # type: ignore[arg-type]
                         threshold=0.0, rng=np.random.default_rng(seed), **kwargs)  # type: ignore[arg-type]


def _misclassified(learner: ActiveLearner, n: int = 60) -> float:
    masses, eps2, truth = truth_grid(MODEL, BOUNDS, n)
    mm, ee = np.meshgrid(masses, eps2, indexing="ij")
    mean = learner.predict(np.c_[mm.ravel(), ee.ravel()]).mean.reshape(mm.shape)
    return float(np.mean((mean <= 0) != (truth <= 0)))


def test_acquisitions_match_their_formulas() -> None:
    mean, std = np.array([0.5, -1.0, 2.0]), np.array([0.2, 1.0, 0.5])
    np.testing.assert_allclose(acquisition_values("straddle", mean, std, threshold=0.0), 1.96 * std - np.abs(mean))
    np.testing.assert_allclose(acquisition_values("misclassification", mean, std, threshold=0.0),
                               norm.cdf(-np.abs(mean) / std))
    p = norm.cdf(mean / std)
    np.testing.assert_allclose(acquisition_values("entropy", mean, std, threshold=0.0),
                               -(p * np.log(p) + (1 - p) * np.log(1 - p)), rtol=1e-9)
    z = (mean - 1.0) / std
    np.testing.assert_allclose(acquisition_values("ei", mean, std, best=1.0),
                               (mean - 1.0) * norm.cdf(z) + std * norm.pdf(z))
    np.testing.assert_allclose(acquisition_values("pi", mean, std, best=1.0), norm.cdf(z))
    np.testing.assert_allclose(acquisition_values("ucb", mean, std, kappa=2.0), mean + 2 * std)
    with pytest.raises(ConfigError, match="threshold"):
        acquisition_values("straddle", mean, std)


def test_unit_cube_mapping_and_bad_input() -> None:
    learner = _wedge_learner()
    pts = np.array([[0.015, 1e-12], [0.2, 1e-4], [0.03, 3e-8]])
    u = learner.to_unit(pts)
    np.testing.assert_allclose(u[:2], [[0, 0], [1, 1]], atol=1e-12)
    np.testing.assert_allclose(learner.from_unit(u), pts, rtol=1e-12)
    with pytest.raises(ConfigError, match="log axis"):
        ActiveLearner([(0.0, 1.0)], log_axes=[True], acquisition="ei", rng=np.random.default_rng(0))
    with pytest.raises(ConfigError, match="threshold"):
        ActiveLearner([(0.0, 1.0)], acquisition="straddle", rng=np.random.default_rng(0))
    with pytest.raises(ConfigError, match="one value per point"):
        learner.tell(pts, [1.0])


def test_any_dimension_ask_tell() -> None:
    learner = ActiveLearner([(0, 1)] * 3, acquisition="ucb", rng=np.random.default_rng(2), candidates=512)
    for _ in range(4):
        x = learner.ask(5)
        assert x.shape == (5, 3)
        learner.tell(x, -np.sum((x - 0.3) ** 2, axis=1))
    assert learner.n_told == 20 and len({tuple(p) for p in learner.points}) == 20


@pytest.mark.parametrize(("acquisition", "q"), [("straddle", 10), ("entropy", 1)])
def test_wedge_contour_within_one_percent(acquisition: str, q: int) -> None:
    """≤1% of the 60×60 truth grid misclassified with ≤ 60 evaluations (1.7% of the grid)."""
    learner = _wedge_learner(acquisition=acquisition)
    while learner.n_told < 60:
        x = learner.ask(q)
        learner.tell(x, MODEL.log_mu95(x[:, 0], x[:, 1]))
        if learner.n_told >= 20 and _misclassified(learner) <= 0.01:
            break
    assert _misclassified(learner) <= 0.01, learner.n_told


def test_sur_batch_is_distinct_and_not_worse_than_believer() -> None:
    """A q=10 contour batch: ten distinct free candidates; after three batches no more misclassified than
    the plain Kriging believer's (same seed; the benchmark has the averages)."""
    mis = {}
    for batch in ("sur", "believer"):
        learner = _wedge_learner(acquisition="straddle", batch=batch)
        for _ in range(3):
            x = learner.ask(10)
            assert len({tuple(p) for p in x}) == 10
            learner.tell(x, MODEL.log_mu95(x[:, 0], x[:, 1]))
        mis[batch] = _misclassified(learner)
    assert mis["sur"] <= mis["believer"] + 1e-12, mis
    with pytest.raises(ConfigError, match="batch"):
        _wedge_learner(batch="qei")


def test_auto_batches_turn_from_sur_to_the_believer_once_the_contour_is_located() -> None:
    """batch="auto": SUR while the estimated misclassified fraction is above sur_until, then the same batch
    as batch="believer" from the same state."""
    import copy

    learner = _wedge_learner(acquisition="straddle", noise=False, batch="auto")
    x = learner.ask(10)
    learner.tell(x, MODEL.log_mu95(x[:, 0], x[:, 1]))
    assert learner.misclassified_fraction() > 0.02 and learner.batch_rule() == "sur"
    sur = copy.deepcopy(learner)
    sur.batch = "sur"
    np.testing.assert_array_equal(learner.ask(10), sur.ask(10))
    while learner.batch_rule() == "sur":
        assert learner.n_told < 100, learner.misclassified_fraction()
        x = learner.ask(10)
        learner.tell(x, MODEL.log_mu95(x[:, 0], x[:, 1]))
    assert learner.misclassified_fraction() <= 0.02
    believer = copy.deepcopy(learner)
    believer.batch = "believer"
    np.testing.assert_array_equal(learner.ask(10), believer.ask(10))
    sur = copy.deepcopy(learner)
    sur.batch = "sur"
    assert not np.array_equal(learner.ask(10), sur.ask(10))
    with pytest.raises(ConfigError, match="sur_until"):
        _wedge_learner(sur_until=1.5)


def test_prior_mean_is_where_the_surrogate_returns_far_from_the_points() -> None:
    """prior_mean: far from every point the posterior mean is the prior mean (default: the mean of the values);
    at the points (no nugget) it interpolates them either way.  conf/active/wedge.yaml sets it to the cap,
    the presets leave it to the values; the wedge's cap is one override away."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    x = np.array([[0.1], [0.15], [0.2], [0.25]])
    y = np.array([-1.0, -0.5, 0.3, -0.8])
    far = np.array([[0.95]])
    for prior_mean, expected in ((None, float(np.mean(y))), (2.0, 2.0)):
        learner = ActiveLearner([(0.0, 1.0)], acquisition="straddle", threshold=0.0, rng=np.random.default_rng(0),
                                n_init=3, noise=False, prior_mean=prior_mean, lengthscale_prior=(0.05, 0.3))
        learner.tell(x, y)
        assert learner.predict(far).mean[0] == pytest.approx(expected, abs=1e-3), prior_mean
        np.testing.assert_allclose(learner.predict(x).mean, y, atol=1e-3)
    with pytest.raises(ConfigError, match="prior_mean"):
        ActiveLearner([(0.0, 1.0)], rng=np.random.default_rng(0), threshold=0.0, prior_mean=float("nan"))
    conf = Path(__file__).resolve().parents[2] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        for preset, expected_mean in (("wedge", None), ("excess", None), ("callable", None)):
            cfg = compose(config_name="config", overrides=["task=active", f"active={preset}"])
            spec = OmegaConf.to_container(cfg.active, resolve=True)
            assert spec["prior_mean"] == expected_mean, preset  # type: ignore[index]
        cfg = compose(config_name="config", overrides=["task=active", "active.objective.model.cap=3.0",
                                                       "active.prior_mean=${active.objective.model.cap}"])
        assert OmegaConf.to_container(cfg.active, resolve=True)["prior_mean"] == 3.0  # type: ignore[index]


@pytest.mark.parametrize(("acquisition", "q", "seed", "noise"),
                         [("straddle", 10, 0, True), ("straddle", 10, 1, False), ("entropy", 10, 2, True),
                          ("entropy", 10, 3, False), ("entropy", 10, 4, True), ("straddle", 1, 5, False),
                          ("entropy", 1, 6, True), ("entropy", 1, 7, True)])
def test_stopping_rule_against_truth(acquisition: str, q: int, seed: int, noise: bool) -> None:
    """The rule (estimate ≤ 1% in 2 consecutive iterations) stops, and there the 60×60 truth grid is ≤ 1%
    misclassified and no more than 3× the estimate (+0.5% where the estimate is tiny).  Over 192 seeded runs
    (4 settings × 24 seeds × nugget on/off) the truth at the stop was ≤ 0.94% except 1.03% and 1.08% for
    straddle q=1 with a nugget.  Seed 7 (entropy, q=1) once stopped at 12 points with 12% misclassified: a
    fit that explained every value as noise around a constant (the noise guard of the rule)."""
    learner = _wedge_learner(seed=seed, acquisition=acquisition, noise=noise)
    summary, _ = run_active(MODEL, learner, axes=["mass_gev", "eps2"], max_evaluations=120, q=q,
                            target_misclassified=0.01, patience=2)
    truth = _misclassified(learner)
    assert summary.stop_reason == "converged", summary
    assert summary.estimated_misclassified <= 0.01
    assert truth <= 0.01, (truth, summary.estimated_misclassified)
    assert truth <= 3.0 * summary.estimated_misclassified + 0.005, (truth, summary.estimated_misclassified)
    assert learner.sigma_scale >= 1.0


def test_leave_one_out_residuals_match_the_posterior_without_the_point() -> None:
    """The closed-form LOO residuals behind ``sigma_scale`` equal the posterior without point i (same kernel,
    same normalisation), with noisy values (the noise term fitted)."""
    rng = np.random.default_rng(5)
    learner = _wedge_learner(seed=5, candidates=512)
    x = learner.from_unit(rng.random((30, 2)))
    learner.tell(x, MODEL.log_mu95(x[:, 0], x[:, 1]) + rng.normal(0.0, 0.3, 30))
    post = learner._post
    assert post is not None and post.noise_var > 1e-4
    gram = post.signal(post.x) + (post.noise_var + 1e-8) * np.eye(30)
    z = learner.loo_residuals()
    for i in (0, 7, 29):
        keep = np.arange(30) != i
        k_i = gram[keep, i]
        solve = np.linalg.solve(gram[np.ix_(keep, keep)], np.c_[post.yn[keep], k_i])
        mean, var = k_i @ solve[:, 0], gram[i, i] - k_i @ solve[:, 1]
        assert z[i] == pytest.approx((post.yn[i] - mean) / np.sqrt(var), rel=1e-6, abs=1e-9)
    assert learner.sigma_scale >= 1.0
    assert learner.misclassified_fraction() >= learner.misclassified_fraction(calibrated=False)


def test_failed_evaluations_are_kept_and_not_asked_again(tmp_path: Path) -> None:
    calls: list[tuple[float, float]] = []

    def flaky(point: np.ndarray) -> float:
        calls.append((float(point[0]), float(point[1])))
        if point[0] > 0.07:
            return float("nan")
        if len(calls) % 7 == 0:
            raise RuntimeError("job killed")
        return MODEL(point)

    learner = _wedge_learner(candidates=256)
    summary, _ = run_active(flaky, learner, axes=["mass_gev", "eps2"], max_evaluations=40, q=10,
                                  history_path=tmp_path / "h.csv", patience=99)
    saved = pd.read_csv(tmp_path / "h.csv")
    assert len(saved) == 40 and summary.n_failed == int((saved.status == "failed").sum()) > 0
    assert saved.loc[saved.status == "failed", "value"].isna().all()
    assert any("job killed" in str(m) for m in saved.message)
    assert len(set(calls)) == len(calls)  # no point asked twice, failed or not
    failed = saved[saved.status == "failed"][["mass_gev", "eps2"]].to_numpy()
    nxt = learner.ask(10)
    assert not any(np.allclose(p, f) for p in nxt for f in failed)


def test_resume_continues_the_saved_history(tmp_path: Path) -> None:
    path = tmp_path / "active_history.csv"
    run_active(MODEL, _wedge_learner(candidates=512), axes=["mass_gev", "eps2"], max_evaluations=20,
                          q=10, history_path=path, patience=99)
    second, _ = run_active(MODEL, _wedge_learner(candidates=512), axes=["mass_gev", "eps2"],
                               max_evaluations=30, q=10, history_path=path, patience=99)
    saved = pd.read_csv(path)
    assert second.resumed_from == 20 and len(saved) == 30 and list(saved.iteration.unique()) == [1, 2, 3]
    assert len(saved[["mass_gev", "eps2"]].drop_duplicates()) == 30
    assert (path.parent / "active_summary.json").exists()


def test_pure_eps2_scaling_is_detected_and_solved_per_mass() -> None:
    prompt = WedgeSignalModel(lifetime=False)
    masses, eps2 = np.geomspace(0.02, 0.1, 7), np.geomspace(1e-10, 1e-6, 5)
    assert is_pure_eps2_scaling(prompt.expected_yield, masses, eps2)
    assert not is_pure_eps2_scaling(MODEL.expected_yield, masses, eps2)
    limit = per_mass_eps2_limit(prompt.expected_yield, prompt.a_up, masses)
    np.testing.assert_allclose(prompt.expected_yield(masses, limit), prompt.a_up(masses), rtol=1e-12)


def test_wedge_model_is_a_wedge() -> None:
    _, _, g = truth_grid(MODEL, BOUNDS, 60)
    excluded = g <= 0
    assert 0.1 < excluded.mean() < 0.5
    assert excluded[0].any() and not excluded[-1].any()  # closes before the top mass: a tip
    column = excluded[0]
    assert not column[0] and not column[-1]  # allowed below and above: two branches
    assert np.all(g <= MODEL.cap)


def test_excess_search_finds_the_largest_local_z() -> None:
    """EI over the scan's 71 masses finds the full scan's largest Z within σ(m) with ≤ 20% of them."""
    preset = load_preset("demo")
    mass0 = 0.05
    spectrum = simulate_spectrum("2015", n_events=2e6, rng=np.random.default_rng(11), signal_mass=mass0,
                                 signal_yield=15000.0, sigma=float(sigma_m(mass0, preset)))
    overrides: dict[str, object] = {"scan": {"step": 0.001}}
    if "spurious" in _background_fields():
        overrides["background"] = {"spurious": "off"}
    objective = ExcessObjective(spectrum, resolve_settings("demo", overrides))
    grid = objective.grid()
    z_grid = grid_values(objective, grid[:, None])
    target = float(grid[np.nanargmax(z_grid)])
    learner = ActiveLearner(objective.bounds(), log_axes=[0], acquisition="ei", rng=np.random.default_rng(0),
                            candidates=grid[:, None], n_init=4)
    run_active(objective, learner, axes=["mass_gev"], max_evaluations=int(0.2 * len(grid)), q=1, patience=99)
    best = float(learner.best_point()[0])
    assert abs(best - target) <= float(sigma_m(target, preset)), (best, target, learner.n_told, len(grid))


@pytest.mark.parametrize(("mass0", "seed"), [(0.07, 21), (0.085, 9)])
def test_combined_excess_search_finds_the_largest_local_z(tmp_path: Path, mass0: float, seed: int) -> None:
    """active=excess_combined (conf/active/excess.yaml with objective.combined=true): EI over the union of the
    2015 and 2016 demo grids (50–100 MeV, 1 MeV steps, both datasets cover it) finds the mass of the largest
    combined local Z within σ(m) with ≤ 20% of the masses; the combination is used where both cover m."""
    from hps_bayes.active.runner import run_configured
    from hps_bayes.analysis.combine import evaluate_combined
    from hps_bayes.cli.config import load_config, task_settings

    overrides: dict[str, object] = {"scan": {"step": 0.001, "mass_min": 0.05, "mass_max": 0.1}}
    if "spurious" in _background_fields():
        overrides["background"] = {"spurious": "off"}
    settings = {n: resolve_settings(n, overrides) for n in ("2015", "2016")}
    spectra = {n: simulate_spectrum(n, n_events=2e6, rng=np.random.default_rng(seed + i), signal_mass=mass0,
                                    signal_yield=6000.0, sigma=float(sigma_m(mass0, settings[n].dataset)))
               for i, n in enumerate(settings)}
    objective = CombinedExcessObjective(spectra, settings)
    grid = objective.grid()
    z_grid = grid_values(objective, grid[:, None])
    target = float(grid[np.nanargmax(z_grid)])
    assert evaluate_combined(spectra, target, settings).datasets == "2015+2016"
    spec = task_settings(load_config(["task=active", "active=excess_combined", "active.patience=99",
                                      f"active.max_evaluations={int(0.2 * len(grid))}"])).active
    summary = run_configured(spec, settings["2015"], tmp_path, spectrum=lambda: spectra["2015"],
                             datasets=lambda: (spectra, settings))
    history = pd.read_csv(tmp_path / "active_history.csv")
    assert len(history) == summary.n_evaluations <= 0.2 * len(grid)
    best = summary.best_point[0]
    assert abs(best - target) <= objective.sigma_m(target), (best, target, history.mass_gev.tolist())
    assert summary.best_value == pytest.approx(float(np.nanmax(z_grid)), rel=1e-6)


def test_loop_through_local_processes(tmp_path: Path) -> None:
    """Batches through submitit's local executor (one process per point), history written, resumable."""
    executor = make_executor("local", tmp_path / "jobs", {"timeout_min": 2})
    learner = _wedge_learner(candidates=256, n_init=4)
    path = tmp_path / "active_history.csv"
    summary, frame = run_active(MODEL, learner, axes=["mass_gev", "eps2"], max_evaluations=8, q=4,
                                executor=executor, history_path=path, patience=99)
    assert summary.n_evaluations == 8 and summary.n_failed == 0 and summary.n_iterations == 2
    assert (frame.status == "ok").all()
    np.testing.assert_allclose(frame.value, MODEL.log_mu95(frame.mass_gev.to_numpy(), frame.eps2.to_numpy()))
    assert len(list((tmp_path / "jobs").glob("*_result.pkl"))) == 8  # each point ran as its own job
    resumed = _wedge_learner(candidates=256, n_init=4)
    second, _ = run_active(MODEL, resumed, axes=["mass_gev", "eps2"], max_evaluations=8, q=4, history_path=path)
    assert second.resumed_from == 8 and resumed.n_told == 8


def _background_fields() -> set[str]:
    from dataclasses import fields

    from hps_bayes.model.settings import BackgroundSettings

    return {f.name for f in fields(BackgroundSettings)}


def _cli(*args: str, cwd: Path, log_dir: Path) -> subprocess.CompletedProcess[str]:
    """``python -m hps_bayes task=active ...`` run from ``cwd``; Hydra's own log goes to ``log_dir``."""
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    command = [sys.executable, "-m", "hps_bayes", "task=active", *args, f"hydra.run.dir={log_dir}"]
    return subprocess.run(command, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          timeout=180, check=False)


def test_task_active_runs_through_submitit_and_resumes(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    run = tmp_path / "run"
    small = [f"run_dir={run}", "active.executor.cluster=debug", "active.candidates=1024", "active.patience=99"]
    proc = _cli(*small, "active.max_evaluations=20", cwd=root, log_dir=tmp_path / "hydra")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert len(pd.read_csv(run / "active_history.csv")) == 20
    assert (run / "active_plots" / "final_surrogate.png").exists()
    proc = _cli(*small, "active.max_evaluations=30", cwd=root, log_dir=tmp_path / "hydra")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "resuming" in proc.stdout and len(pd.read_csv(run / "active_history.csv")) == 30


def test_task_active_user_callable_and_prompt_model(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[2]
    proc = _cli(f"run_dir={tmp_path / 'a'}", "active=callable", "active.max_evaluations=20", cwd=root,
                log_dir=tmp_path / "hydra")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert len(pd.read_csv(tmp_path / "a" / "active_history.csv")) == 20
    proc = _cli(f"run_dir={tmp_path / 'b'}", "active.objective.model.lifetime=false", cwd=root,
                log_dir=tmp_path / "hydra")
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "pure eps^2 scaling" in proc.stdout and (tmp_path / "b" / "active_per_mass.csv").exists()


def test_task_active_excess_combined_from_the_command_line(tmp_path: Path) -> None:
    """active=excess_combined from the command line: the datasets of task.datasets are loaded (here two of
    the three demo presets), every point is evaluated and the best of the history is reported."""
    root = Path(__file__).resolve().parents[2]
    run = tmp_path / "run"
    two = "task.datasets=[{preset: demo2015, enabled: true}, {preset: demo2016, enabled: true}]"
    proc = _cli(f"run_dir={run}", "active=excess_combined", "active.max_evaluations=6", "active.n_init=3", two,
                cwd=root, log_dir=tmp_path / "hydra")
    assert proc.returncode == 0, proc.stdout[-3000:]
    history = pd.read_csv(run / "active_history.csv")
    assert len(history) == 6 and (history.status == "ok").all(), history
    assert set(json.loads((run / "validation_report.json").read_text())) == {"2015", "2016"}
    summary = json.loads((run / "active_summary.json").read_text())
    assert summary["best_value"] == pytest.approx(history.value.max())
    assert summary["best_point"][0] == pytest.approx(history.mass_gev[history.value.idxmax()])


def test_task_active_excess_with_toy_based_p0(tmp_path: Path) -> None:
    """active=excess with stats=toys: every value is a toy-based local significance, Z = Φ⁻¹(1 − p0) with p0
    a multiple of 1/n_toys (the asymptotic formula would give p0 off that lattice), fitted with a nugget."""
    from scipy.stats import norm

    root = Path(__file__).resolve().parents[2]
    run = tmp_path / "run"
    proc = _cli(f"run_dir={run}", "active=excess", "stats=toys", "stats.n_toys=200", "active.noise=true",
                "active.max_evaluations=5", "active.n_init=3", cwd=root, log_dir=tmp_path / "hydra")
    assert proc.returncode == 0, proc.stdout[-3000:]
    history = pd.read_csv(run / "active_history.csv")
    assert len(history) == 5 and (history.status == "ok").all(), history
    counts = norm.sf(history.value.to_numpy()) * 200
    assert np.any(np.abs(counts - 100) > 0.5), counts  # not only Z = 0 (p0 = 1/2, clipped deficits)
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-6)
