"""The command line (``python -m hps_bayes``) as users run it: subprocesses into tmp folders.

Also: ``load_config`` composes the same config as the command line, and the
launcher presets and experiment files compose.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from hps_bayes.cli.config import CONF_DIR, load_config, settings_from_config
from hps_bayes.physics.demo import write_demo_file
from hps_bayes.physics.presets import load_preset

# The scale-out machinery is tested, not the background model: no spurious-signal table needed.
NO_TABLE = ["background.spurious=off"] if "spurious" in load_config().background else []
SMALL = ["scan.step=0.02", "plots.summary=false", *NO_TABLE]


def cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
    """``python -m hps_bayes args`` with one BLAS thread; stdout and stderr captured together."""
    full_env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
                **(env or {})}
    return subprocess.run([sys.executable, "-m", "hps_bayes", *args], check=False, cwd=cwd, env=full_env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small demo spectrum (2M events) shared by the module's runs."""
    path = tmp_path_factory.mktemp("data") / "demo.root"
    return write_demo_file(path, load_preset("demo"), n_events=2e6, seed=5, shape="2015")


def test_scan_writes_the_run_folder(tmp_path: Path, demo_file: Path) -> None:
    run = tmp_path / "run"
    proc = cli(f"dataset.path={demo_file}", *SMALL, f"hydra.run.dir={run}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    frame = pd.read_csv(run / "results_single.csv")
    assert len(frame) == 3 and set(frame.status) == {"ok"}
    payload = json.loads((run / "m060MeV" / "demo" / "numbers.json").read_text())
    assert payload["result"]["mass"] == pytest.approx(0.06)
    prov = payload["provenance"]
    assert prov["chunk"] == 0 and prov["n_chunks"] == 1 and prov["base_seed"] == 20151
    assert {"chunk_seed", "point_seed", "host", "slurm_job_id"} <= set(prov)
    chunk = json.loads((run / "chunks" / "demo_chunk0.json").read_text())
    assert chunk["state"] == "done" and chunk["computed"] == 3 and chunk["reused"] == 0
    assert json.loads((run / "validation_report.json").read_text())["demo"]["ok"]
    # the command line's composed config is the one load_config gives
    overrides = [f"dataset.path={demo_file}", *SMALL]
    saved = OmegaConf.load(run / ".hydra" / "config.yaml")
    assert OmegaConf.to_container(saved) == OmegaConf.to_container(load_config(overrides))
    # a rerun reuses every point
    again = cli(*overrides, f"hydra.run.dir={run}", cwd=tmp_path)
    assert again.returncode == 0 and "0 mass points computed, 3 reused" in again.stdout


@pytest.mark.parametrize(("overrides", "message"), [
    (["scan.no_such_key=1"], "Could not override 'scan.no_such_key'"),
    (["scan.step=abc"], "scan.step='abc': expected float"),
    (["scan.step=-0.001"], "scan.step=-0.001"),
    (["dataset=hps2099"], "Could not find 'dataset/hps2099'"),
    (["dataset=hps2015", "dataset.path=/no/such/file.root"], "does not exist"),
    (["DEMO", "dataset.hist_name=no_such_hist"], "histogram 'no_such_hist' not found"),
    (["DEMO", "task=test", "mass=0.5"], "outside dataset 'demo'"),
    (["DEMO", "task=test"], "task=test needs a mass"),
    (["task=merge"], "task=merge needs the folder"),
], ids=["unknown-key", "bad-type", "bad-value", "unknown-dataset", "missing-file", "missing-histogram",
        "mass-outside-range", "test-without-mass", "merge-without-run-dir"])
def test_bad_overrides_exit_2_with_a_clear_message(tmp_path: Path, demo_file: Path, overrides: list[str],
                                                   message: str) -> None:
    args = [f"dataset.path={demo_file}" if o == "DEMO" else o for o in overrides]
    proc = cli(*args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, timeout=60)
    assert proc.returncode == 2, proc.stdout[-3000:]
    assert message in proc.stdout
    assert "Traceback" not in proc.stdout


@pytest.mark.parametrize("mode", ["-m", "hydra.mode=MULTIRUN"])  # the flag, or the mode Hydra reads from the config
def test_multirun_over_single_masses(tmp_path: Path, demo_file: Path, mode: str) -> None:
    sweep = tmp_path / "sweep"
    proc = cli(mode, "task=test", "mass=0.030,0.045", f"dataset.path={demo_file}", *NO_TABLE, f"hydra.sweep.dir={sweep}",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:]
    for label in ("m030MeV", "m045MeV"):  # both jobs write into the one sweep folder
        result = json.loads((sweep / label / "demo" / "numbers.json").read_text())["result"]
        assert result["status"] == "ok"
        assert (sweep / label / "demo" / "fit_full.png").exists()
    assert (sweep / "0" / ".hydra" / "config.yaml").exists() and (sweep / "1").is_dir()


def test_load_config_validates_like_the_cli() -> None:
    cfg = load_config(["dataset=hps2016", "scan.step=0.002", "seed=7"])
    settings = settings_from_config(cfg)
    assert settings.dataset.name == "2016" and settings.scan.step == 0.002 and settings.seed == 7
    assert cfg.run_dir is None and cfg.task.name == "scan"
    assert load_config(["task=merge"]).task.strict is False


@pytest.mark.parametrize(("overrides", "target", "expected"), [
    (["hydra/launcher=slurm"], "SlurmLauncher", {"timeout_min": 60, "cpus_per_task": 1, "account": None}),
    (["hydra/launcher=local"], "LocalLauncher", {"timeout_min": 60, "cpus_per_task": 1}),
    (["experiment=slurm_scan"], "SlurmLauncher", {"max_num_timeout": 3}),
])
def test_launcher_presets_compose(overrides: list[str], target: str, expected: dict[str, object]) -> None:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith(target)
    for key, value in expected.items():
        assert launcher[key] == value


def test_chunked_experiment_sweeps_its_chunks() -> None:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=chunked_scan"], return_hydra_config=True)
    assert cfg.scan.n_chunks == 8 and cfg.hydra.sweeper.params["scan.chunk"] == "range(8)"


def test_run_dir_also_holds_hydras_log(tmp_path):
    import subprocess
    import sys

    target = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "hps_bayes", "task=simulate", f"run_dir={target}",
                           f"dataset.path={tmp_path / 'sim.root'}"], cwd=tmp_path, capture_output=True, text=True, check=False,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (target / "app.log").is_file() and (target / ".hydra" / "config.yaml").is_file()
    assert not (tmp_path / "outputs").exists()


def test_the_mode_probe_is_skipped_only_where_the_package_config_decides_the_mode() -> None:
    """Hydra composes the config a first time only to read ``hydra.mode``; the package's config never
    sets it, so the command line answers for the probe unless an argument could set it."""
    from hydra._internal.hydra import Hydra

    from hps_bayes.cli.app import _no_mode_probe

    probe = Hydra.get_mode
    with _no_mode_probe(["task=scan", "scan.mass_min=0.04"]):
        assert Hydra.get_mode is not probe and Hydra.get_mode(None, "config", []) is None  # type: ignore[arg-type]
    assert Hydra.get_mode is probe
    for args in (["hydra.mode=MULTIRUN"], ["+hydra.mode=RUN"], ["--config-dir", "/tmp/conf"], ["-cn", "other"],
                 ["hydra.searchpath=[file:///tmp/conf]"]):
        with _no_mode_probe(args):
            assert Hydra.get_mode is probe, args
    with pytest.raises(RuntimeError), _no_mode_probe([]):
        raise RuntimeError("the task failed")
    assert Hydra.get_mode is probe  # restored after an error too
