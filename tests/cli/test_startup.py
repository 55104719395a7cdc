"""Start-up: a run imports only what its task needs (no PyMC once the compiled model is stored, no uproot
once the spectrum was read, no scipy.optimize once its turn-on was fitted, no pandas for a scan's tables and
figures), and ``python -m hps_bayes`` ends with the command's status."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hps_bayes.physics.demo import write_demo_file
from hps_bayes.physics.presets import load_preset

#: ``HPS_BAYES_NUMBA_EXTENSIONS=off`` as ``python -m hps_bayes`` sets it (numba's awkward extension not loaded).
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "MPLBACKEND": "Agg", "HPS_BAYES_NUMBA_EXTENSIONS": "off"}
#: A one-mass scan without posteriors (as the command line runs it: its table is not made a DataFrame),
#: then the plotting/sampling/table libraries it loaded.
SCRIPT = """
import sys
from hps_bayes.cli.tasks import task_function
from hps_bayes.cli.config import _plain, load_config, settings_from_config, task_settings
from pathlib import Path
cfg = load_config(["task=scan", f"dataset.path={sys.argv[1]}", "scan.mass_min=0.05", "scan.mass_max=0.05",
                   f"run_dir={sys.argv[2]}", *sys.argv[3:]])
task_function("scan")(settings_from_config(cfg), task_settings(cfg), _plain(cfg), Path(sys.argv[2]))
print(sorted(m for m in ("arviz", "matplotlib", "mplhep", "pymc", "uproot", "awkward", "scipy.optimize", "pandas")
             if m in sys.modules))
"""


@pytest.fixture(scope="module")
def demo_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo file, after one scan of it has stored the compiled window model (a fresh machine builds it
    once, with PyMC; later processes load it) and kept the spectrum in the read cache."""
    path = tmp_path_factory.mktemp("data") / "demo.root"
    write_demo_file(path, load_preset("demo"), n_events=2e6, seed=5, shape="2015")
    warm = subprocess.run([sys.executable, "-c", SCRIPT, str(path), str(path.parent / "warm"), "plots.summary=false"], env=ENV,
                          capture_output=True, text=True, timeout=300, check=False)
    assert warm.returncode == 0, warm.stderr[-3000:]
    return path


@pytest.mark.parametrize(("extra", "extensions", "loaded"), [
    (["plots.summary=false"], "off", "[]"),
    (["plots.summary=false", "plots.per_mass=true"], "off", "['matplotlib', 'mplhep']"),
    ([], "off", "['matplotlib', 'mplhep']"),  # the summary figures, drawn from the rows
    (["plots.summary=false"], "on", "['awkward']"),  # numba's default: its extensions (awkward's) load at the first compiled call
])
def test_a_scan_imports_plotting_only_to_plot(demo_file: Path, tmp_path: Path, extra: list[str], extensions: str,
                                              loaded: str) -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(demo_file), str(tmp_path / "run"), *extra], cwd=tmp_path,
                          env={**ENV, "HPS_BAYES_NUMBA_EXTENSIONS": extensions}, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == loaded


def test_the_command_line_exits_with_the_commands_status(tmp_path: Path) -> None:
    """The process ends without the interpreter's teardown, so the status is passed on by hand."""
    def status(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hps_bayes", *args, f"hydra.run.dir={tmp_path / 'run'}"],
                              cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300, check=False)

    failed = status("task=test")  # no mass: a configuration error
    assert failed.returncode == 2 and "task=test needs a mass" in failed.stdout + failed.stderr
    shown = status("--help")
    assert shown.returncode == 0 and "hps-bayes" in shown.stdout
