"""Chunked runs, resume and safety: chunks merge to the single-process result, a rerun
recomputes only missing or failed points, SIGKILL loses at most the point in progress,
SIGTERM/SIGUSR2 stop cleanly with everything done flushed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from hps_bayes.analysis import rundir, scan
from hps_bayes.analysis.scan import run_scan
from hps_bayes.analysis.seeds import chunk_seeds
from hps_bayes.analysis.settings import AnalysisSettings
from hps_bayes.cli.config import load_config, settings_from_config
from hps_bayes.cli.tasks import run_task
from hps_bayes.inputs.root_io import load_spectrum
from hps_bayes.physics.demo import write_demo_file
from hps_bayes.physics.presets import load_preset

N_POINTS = 7  # demo grid 30-90 MeV at step 0.01
# The scale-out machinery is tested, not the background model: no spurious-signal table needed.
NO_TABLE = ["background.spurious=off"] if "spurious" in load_config().background else []


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "demo.root"
    return write_demo_file(path, load_preset("demo"), n_events=2e6, seed=5, shape="2015")


@pytest.fixture(scope="module")
def setup(demo_file: Path) -> tuple[AnalysisSettings, dict[str, Any]]:
    cfg = load_config([f"dataset.path={demo_file}", "scan.step=0.01", "plots.summary=false",
                       *NO_TABLE])
    from hps_bayes.cli.config import _plain

    return settings_from_config(cfg), _plain(cfg)


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path).drop(columns=["seconds"])


def test_chunked_run_equals_single_process(tmp_path: Path, demo_file: Path,
                                           setup: tuple[AnalysisSettings, dict[str, Any]]) -> None:
    settings, _ = setup
    overrides = [f"dataset.path={demo_file}", "scan.step=0.01", "plots.summary=false", *NO_TABLE]
    run_task("scan", overrides, tmp_path / "single")
    run = tmp_path / "chunked"
    for k in (2, 0, 1):
        run_task("scan", [*overrides, "scan.n_chunks=3", f"scan.chunk={k}"], run)
    assert sorted(p.name for p in run.glob("results_chunk*.csv")) == [
        f"results_chunk{k}_demo.csv" for k in range(3)]
    merged = run_task("merge", [*overrides, "plots.summary=true"], run)
    assert len(merged) == N_POINTS
    pd.testing.assert_frame_equal(read(run / "results_single.csv"), read(tmp_path / "single" / "results_single.csv"))
    report = json.loads((run / "merge_report.json").read_text())
    assert report["complete"] and report["datasets"][0]["n_ok"] == N_POINTS
    assert (run / "summary_plots" / "eps2_ul_demo.png").exists()
    seeds = [json.loads((run / "chunks" / f"demo_chunk{k}.json").read_text())["chunk_seed"] for k in range(3)]
    assert seeds == chunk_seeds(settings.seed, 3) and len(set(seeds)) == 3


class Killed(Exception):
    pass


def test_kill_and_rerun_recomputes_only_missing(tmp_path: Path, setup: tuple[AnalysisSettings, dict[str, Any]],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    settings, _ = setup
    spectrum = load_spectrum(settings.dataset.path, settings.dataset.hist_name)
    evaluated: list[float] = []
    real = scan.evaluate_point

    def counting(spec: Any, mass: float, s: AnalysisSettings, **kwargs: Any) -> Any:
        evaluated.append(round(mass, 4))
        return real(spec, mass, s, **kwargs)

    monkeypatch.setattr(scan, "evaluate_point", counting)

    def die_after_three(result: Any) -> None:
        if len(evaluated) == 3:
            raise Killed

    with pytest.raises(Killed):
        run_scan(spectrum, config=settings, out_dir=tmp_path, on_result=die_after_three)
    assert evaluated == [0.03, 0.04, 0.05]
    evaluated.clear()
    frame = run_scan(spectrum, config=settings, out_dir=tmp_path)
    assert evaluated == [0.06, 0.07, 0.08, 0.09]
    assert frame.attrs == {"computed": 4, "reused": 3} and len(frame) == N_POINTS
    # a failed point is recorded with its error and retried by the next run
    monkeypatch.setenv(rundir.FAULT_ENV, "fail_at=0.05")
    (tmp_path / "m050MeV" / "demo" / "numbers.json").unlink()
    evaluated.clear()
    frame = run_scan(spectrum, config=settings, out_dir=tmp_path)
    failed = json.loads((tmp_path / "m050MeV" / "demo" / "numbers.json").read_text())
    assert failed["result"]["status"] == "error" and "injected failure" in failed["result"]["message"]
    assert "RuntimeError" in failed["provenance"]["traceback"]
    assert list(frame.status).count("error") == 1
    monkeypatch.delenv(rundir.FAULT_ENV)
    frame = run_scan(spectrum, config=settings, out_dir=tmp_path)
    assert evaluated == [0.05] and frame.attrs["computed"] == 1 and set(frame.status) == {"ok"}


def cli(*args: str, env: dict[str, str] | None = None, **kw: Any) -> subprocess.Popen:
    full_env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
                **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "hps_bayes", *args], env=full_env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, **kw)


def done_points(run: Path) -> list[str]:
    return sorted(p.parent.parent.name for p in run.glob("m*MeV/demo/numbers.json"))


def test_sigkill_loses_at_most_the_current_point(tmp_path: Path, demo_file: Path) -> None:
    run = tmp_path / "run"
    args = [f"dataset.path={demo_file}", "scan.step=0.01", "plots.summary=false", *NO_TABLE,
            f"hydra.run.dir={run}"]
    proc = cli(*args, env={rundir.FAULT_ENV: "kill_at=0.06"}, cwd=tmp_path)
    proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL
    assert done_points(run) == ["m030MeV", "m040MeV", "m050MeV"]
    proc = cli(*args, cwd=tmp_path)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-3000:]
    info = json.loads((run / "chunks" / "demo_chunk0.json").read_text())
    assert (info["computed"], info["reused"], info["state"]) == (4, 3, "done")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR2], ids=["SIGTERM", "SIGUSR2"])
def test_signal_stops_cleanly_and_flushes(tmp_path: Path, demo_file: Path, signum: int) -> None:
    run = tmp_path / "run"
    args = [f"dataset.path={demo_file}", "scan.step=0.01", "plots.summary=false", *NO_TABLE,
            f"hydra.run.dir={run}"]
    proc = cli(*args, env={rundir.FAULT_ENV: "sleep=0.7"}, cwd=tmp_path)
    deadline = time.time() + 90
    while len(done_points(run)) < 2 and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signum)
    out, _ = proc.communicate(timeout=60)
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum, out[-3000:]
    assert f"caught {name}: finishing the mass point in progress" in out
    assert f"scan stopped by {name}" in out
    done = done_points(run)
    assert 2 <= len(done) < N_POINTS
    info = json.loads((run / "chunks" / "demo_chunk0.json").read_text())
    assert info["state"] == "interrupted" and info["n_done"] == len(done)
    assert len(pd.read_csv(run / "results_single.csv")) == len(done)  # flushed
    proc = cli(*args, cwd=tmp_path)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-3000:]
    assert f"{N_POINTS - len(done)} mass points computed, {len(done)} reused" in out


def test_a_point_stored_before_one_of_todays_columns_is_computed_again(
        tmp_path: Path, setup: tuple[AnalysisSettings, dict[str, Any]]) -> None:
    """Same key, but the stored result lacks a column (an earlier version's file): not reused."""
    settings, _ = setup
    spectrum = load_spectrum(settings.dataset.path, settings.dataset.hist_name)
    run_scan(spectrum, config=settings, masses=[0.05, 0.06], out_dir=tmp_path)
    path = tmp_path / "m050MeV" / "demo" / "numbers.json"
    payload = json.loads(path.read_text())
    del payload["result"]["sigma_A_hesse"]
    path.write_text(json.dumps(payload))
    frame = run_scan(spectrum, config=settings, masses=[0.05, 0.06], out_dir=tmp_path)
    assert frame.attrs == {"computed": 1, "reused": 1}
    assert "sigma_A_hesse" in json.loads(path.read_text())["result"]
