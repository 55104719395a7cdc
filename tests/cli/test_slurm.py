"""A chunked scan on a REAL SLURM cluster through ``hydra/launcher=slurm`` (submitit job array).

``.ci/run`` starts a single-node cluster with ``../shared/tools/slurm-local-cluster.sh start``.
The test runs a 3-chunk multirun in which one chunk
kills itself hard (SIGKILL, as on a node failure), checks the jobs ran under SLURM (job ids in
the outputs), reruns the same command, adds two batches of look-elsewhere toy scans as a second
job array, merges, and compares with a single-process run; toy bands made in two batches of toys by a
third job array are pooled, and a batch equals the same batch made in this process.
Skipped, with the reason, where no cluster answers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hps_bayes.analysis.rundir import FAULT_ENV
from hps_bayes.analysis.toyscans import read_batch
from hps_bayes.cli.config import load_config
from hps_bayes.cli.tasks import run_task
from hps_bayes.physics.demo import write_demo_file
from hps_bayes.physics.presets import load_preset

pytestmark = pytest.mark.slurm

NO_TABLE = ["background.spurious=off"] if "spurious" in load_config().background else []
SCAN = ["scan.step=0.01", "plots.summary=false", *NO_TABLE]  # 7 masses, 30-90 MeV
N_CHUNKS = 3  # chunks of 3, 2, 2 masses; chunk 1 holds 60 and 70 MeV


def _cluster_problem() -> str | None:
    if shutil.which("sinfo") is None:
        return "no SLURM client (sinfo) on this machine; .ci/run starts a local cluster"
    try:
        state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 20 s: the SLURM controller is not up"
    states = state.stdout.split()
    if state.returncode != 0 or not any(s.rstrip("*~#") in ("idle", "mixed", "allocated") for s in states):
        return f"SLURM cluster not up (sinfo rc={state.returncode}, states={states}, {state.stderr.strip()[:200]})"
    return None


def run(*args: str, cwd: Path, env: dict[str, str] | None = None, limit: int = 240) -> subprocess.CompletedProcess:
    """``python -m hps_bayes args`` inside coreutils ``timeout`` (submitit can wait long on dead jobs)."""
    full_env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg",
                **(env or {})}
    return subprocess.run(["timeout", "-k", "10", str(limit), sys.executable, "-m", "hps_bayes", *args], cwd=cwd,
                          env=full_env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)


@pytest.fixture(scope="module")
def cluster() -> None:
    problem = _cluster_problem()
    if problem:
        pytest.skip(problem)


def test_chunked_slurm_run_killed_rerun_merged(cluster: None, tmp_path: Path) -> None:
    demo = write_demo_file(tmp_path / "demo.root", load_preset("demo"), n_events=2e6, seed=5, shape="2015")
    sweep = tmp_path / "sweep"
    multirun = ["-m", "hydra/launcher=slurm", "hydra.launcher.timeout_min=5", "hydra.launcher.mem_gb=1",
                f"dataset.path={demo}", *SCAN, f"scan.n_chunks={N_CHUNKS}", f"scan.chunk=range({N_CHUNKS})",
                f"hydra.sweep.dir={sweep}"]
    # 1. one array task dies hard at 70 MeV (after finishing 60 MeV): the multirun fails
    first = run(*multirun, cwd=tmp_path, env={FAULT_ENV: "kill_at=0.07"})
    assert first.returncode not in (0, 124), first.stdout[-4000:]
    labels = sorted(p.parent.parent.name for p in sweep.glob("m*MeV/demo/numbers.json"))
    assert labels == ["m030MeV", "m040MeV", "m050MeV", "m060MeV", "m080MeV", "m090MeV"]
    chunk0 = json.loads((sweep / "chunks" / "demo_chunk0.json").read_text())
    assert chunk0["slurm_array_job_id"] and chunk0["slurm_array_task_id"] == "0" and chunk0["slurm_job_id"]
    prov = json.loads((sweep / "m060MeV" / "demo" / "numbers.json").read_text())["provenance"]
    assert prov["slurm_array_job_id"] == chunk0["slurm_array_job_id"] and prov["slurm_array_task_id"] == "1"
    assert not (sweep / "chunks" / "demo_chunk1.json").exists()  # killed before it could flush
    # 2. the same command again: only 70 MeV is computed
    second = run(*multirun, cwd=tmp_path)
    assert second.returncode == 0, second.stdout[-4000:]
    chunks = [json.loads((sweep / "chunks" / f"demo_chunk{k}.json").read_text()) for k in range(N_CHUNKS)]
    assert [(c["computed"], c["reused"]) for c in chunks] == [(0, 3), (1, 1), (0, 2)]
    assert chunks[1]["slurm_array_job_id"] != chunk0["slurm_array_job_id"]  # a new job array
    # 3. look-elsewhere toy scans in two batches, a job array of their own, into the same run folder
    lee = run("-m", "hydra/launcher=slurm", "hydra.launcher.timeout_min=5", "hydra.launcher.mem_gb=1",
              f"dataset.path={demo}", *SCAN, "task=lee", "task.toys_per_batch=20", "task.n_batches=2",
              "task.batch=range(2)", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert lee.returncode == 0, lee.stdout[-4000:]
    # 3b. toy bands with every mass's toys in two batches, a job array; pooled by task=merge
    bands = ["task=bands", "task.toys_per_batch=200", f"dataset.path={demo}", *SCAN]
    made = run("-m", "hydra/launcher=slurm", "hydra.launcher.timeout_min=5", "hydra.launcher.mem_gb=1", *bands,
               "task.n_batches=2", "task.batch=range(2)", f"hydra.sweep.dir={tmp_path / 'bands'}",
               "hydra.sweep.subdir=.", f"run_dir={tmp_path / 'bands'}", cwd=tmp_path)
    assert made.returncode == 0, made.stdout[-4000:]
    pooled = run("task=merge", f"run_dir={tmp_path / 'bands'}", cwd=tmp_path)  # with the batches' own settings
    assert pooled.returncode == 0, pooled.stdout[-4000:]
    report = json.loads((tmp_path / "bands" / "bands_report.json").read_text())
    assert report["batches"] == [0, 1] and report["toys_per_mass_min"] == 400
    assert (pd.read_csv(tmp_path / "bands" / "bands.csv").query("method == 'toys'").n_toys == 400).all()
    run_task("bands", [*bands[1:], "task.batch=1", "task.n_batches=2"], tmp_path / "bands_local")
    with np.load(tmp_path / "bands" / "bands" / "demo" / "toys_0001.npz") as cluster_made, \
            np.load(tmp_path / "bands_local" / "bands" / "demo" / "toys_0001.npz") as here:
        assert sorted(cluster_made.files) == sorted(here.files)
        for name in here.files:  # batch k is the same whoever makes it
            np.testing.assert_array_equal(cluster_made[name], here[name])
    # 4. merge, and compare with one process
    merged = run("task=merge", f"run_dir={sweep}", "task.strict=true", f"hydra.run.dir={tmp_path / 'merge'}",
                 cwd=tmp_path)
    assert merged.returncode == 0, merged.stdout[-4000:]
    assert json.loads((sweep / "merge_report.json").read_text())["complete"]
    summary = json.loads((sweep / "summary.json").read_text())["look_elsewhere"]["demo"]
    assert summary["n_toy_scans"] == 40 and summary["batches"] == [0, 1] and summary["missing_batches"] == []
    local = run_task("lee", [f"dataset.path={demo}", *SCAN, "task.toys_per_batch=20", "task.batch=1"],
                     tmp_path / "local")
    np.testing.assert_array_equal(read_batch(sweep / "lee" / "demo" / "toys_0001.npz").z, local.z)
    single = run(f"dataset.path={demo}", *SCAN, f"hydra.run.dir={tmp_path / 'single'}", cwd=tmp_path)
    assert single.returncode == 0, single.stdout[-4000:]
    ours = pd.read_csv(sweep / "results_single.csv").drop(columns=["seconds"])
    reference = pd.read_csv(tmp_path / "single" / "results_single.csv").drop(columns=["seconds"])
    assert set(ours.status) == {"ok"}
    pd.testing.assert_frame_equal(ours, reference)
