"""Start-up: a run imports only what its task needs (no PyMC once the compiled model is stored, no uproot
once the spectrum was read, no scipy.optimize once its turn-on was fitted, no pandas for a scan's tables and
figures, no pyarrow or hepdata_lib in a scan's own process: its Parquet copy and HEPData record are written by a
child process), and ``python -m hps_bayes`` ends with the command's status."""

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
print(sorted(m for m in ("arviz", "matplotlib", "mplhep", "pymc", "uproot", "awkward", "scipy.optimize", "pandas",
                         "pyarrow", "hepdata_lib") if m in sys.modules))
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
    # numba's default: its extensions (awkward's, with pyarrow) load at the first compiled call
    (["plots.summary=false"], "on", "['awkward', 'pyarrow']"),
])
def test_a_scan_imports_plotting_only_to_plot(demo_file: Path, tmp_path: Path, extra: list[str], extensions: str,
                                              loaded: str) -> None:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(demo_file), str(tmp_path / "run"), *extra], cwd=tmp_path,
                          env={**ENV, "HPS_BAYES_NUMBA_EXTENSIONS": extensions}, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == loaded
    # written by the child process: the Parquet copy and the HEPData record of the one mass's limit
    assert (tmp_path / "run" / "results_single.parquet").stat().st_size > 0
    assert (tmp_path / "run" / "submission.tar.gz").stat().st_size > 0


def test_an_error_of_the_export_child_is_raised_in_the_scan(tmp_path: Path) -> None:
    from hps_bayes.cli.task_scan import _export_in_child

    blocked = tmp_path / "not_a_folder"
    blocked.write_text("a file where the run folder should be")
    rows = [{"dataset": "demo", "mass": 0.05, "status": "ok", "A_up": 1.0, "eps2_up": 1e-6}]
    with pytest.raises(OSError, match="not_a_folder"):
        _export_in_child(rows, blocked)


def test_the_command_line_exits_with_the_commands_status(tmp_path: Path) -> None:
    """The process ends without the interpreter's teardown, so the status is passed on by hand."""
    def status(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "hps_bayes", *args, f"hydra.run.dir={tmp_path / 'run'}"],
                              cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300, check=False)

    failed = status("task=test")  # no mass: a configuration error
    assert failed.returncode == 2 and "task=test needs a mass" in failed.stdout + failed.stderr
    shown = status("--help")
    assert shown.returncode == 0 and "hps-bayes" in shown.stdout


def test_ctrl_c_ends_the_command_line_without_a_traceback(demo_file: Path, tmp_path: Path) -> None:
    """SIGINT during a scan: status 130, one sentence instead of a traceback, the finished points kept."""
    import signal
    import time

    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "hps_bayes", f"dataset.path={demo_file}", f"run_dir={run}",
                             "stats=toys", "scan.step=0.004", "plots.summary=false"], cwd=tmp_path, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(run.glob("m0*/*/numbers.json")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "interrupted (Ctrl-C): the mass points finished so far are kept" in err and "Traceback" not in err
    assert list(run.glob("m0*/*/numbers.json"))
