"""Start-up: whole-process wall time of one mass, warm, with and without its plots, and where it goes.

Run:  OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_startup.py [--runs 5] [--no-breakdown]

Two commands, each run once to warm the compile caches and the demo file, then ``--runs``
times, interleaved:

* ``test``: ``python -m hps_bayes task=test mass=0.05`` (one mass, its three plots, the table);
* ``scan1``: ``python -m hps_bayes task=scan scan.mass_min=0.05 scan.mass_max=0.05
  plots.summary=false`` (the same mass, no plots).

Printed: median (min-max) wall seconds, CPU seconds and peak resident memory of each, the
load average; then one more run of each with its stages timed in the process (imports, Hydra
composition, input, turn-on fit, PyMC model build, PyTensor compile, the fit and limits,
plots, output files: wrappers around those functions, no profiler).  Not a test: timings
depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "MPLBACKEND": "Agg", "HYDRA_FULL_ERROR": "1"}
COMMANDS = {
    "test": ["task=test", "mass=0.05"],
    "scan1": ["task=scan", "scan.mass_min=0.05", "scan.mass_max=0.05", "plots.summary=false"],
}
#: Stages timed inside one run: (label, module, attribute); the attribute is wrapped with a timer
#: before the command runs (a class method as ``Class.method``).  The stages nest: the fit of the
#: mass contains the model build and the compile.
STAGES = [
    ("Hydra composition", "hydra._internal.config_loader_impl", "ConfigLoaderImpl.load_configuration"),
    ("input: read + validate the spectrum", "hps_bayes.cli.inputs", "load_validated"),
    ("turn-on fit", "hps_bayes.analysis.grid", "_measure_turn_on"),
    ("the mass point (fit, Z, limits, with the two below)", "hps_bayes.cli.task_scan", "run_scan"),
    ("the mass point (fit, Z, limits, with the two below)", "hps_bayes.cli.task_scan", "scan_points"),
    ("  PyMC model build", "hps_bayes.model.compiled", "CompiledWindowModel._build_model"),
    ("  PyTensor compile (rewrites + numba cache load)", "hps_bayes.model.compiled", "CompiledWindowModel._compile"),
    ("per-mass plots (refit + three figures)", "hps_bayes.cli.task_scan", "_per_mass_plots"),
    ("result export (tables, HEPData)", "hps_bayes.cli.task_scan", "export_scan"),
]
#: Run in a child process: time the imports, wrap the stages, run the command line as
#: ``python -m hps_bayes`` does, write the times from an exit handler.
DRIVER = """
import atexit, importlib, json, os, sys, time
t0 = time.perf_counter()
times = {}
import hps_bayes.__main__ as entry
times["imports: command line (Hydra, SciPy)"] = time.perf_counter() - t0
t1 = time.perf_counter()
importlib.import_module("hps_bayes.cli.task_scan")
times["imports: task module (PyTensor, numba)"] = time.perf_counter() - t1
def timed(label, function):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            times[label] = times.get(label, 0.0) + time.perf_counter() - start
    return wrapper
for label, module, attribute in json.loads(os.environ["BENCH_STAGES"]):
    owner = importlib.import_module(module)
    *path, name = attribute.split(".")
    for part in path:
        owner = getattr(owner, part)
    if hasattr(owner, name):
        setattr(owner, name, timed(label, getattr(owner, name)))
def record():
    times["total (in Python, after start-up)"] = time.perf_counter() - t0
    with open(os.environ["BENCH_TIMES"], "w") as fh:
        json.dump(times, fh)
atexit.register(record)
sys.argv = ["hps_bayes", *sys.argv[1:]]
entry.main()  # as `python -m hps_bayes`: runs the exit handlers, then ends the process
"""


def run(args: list[str], run_dir: Path, *, cwd: Path | None = None) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds (user + sys) and peak resident memory (MB) of one
    ``python -m hps_bayes`` process (in ``cwd``)."""
    cmd = [sys.executable, *args, f"run_dir={run_dir}", f"hydra.run.dir={run_dir}/hydra"]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=ENV, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed ({os.waitstatus_to_exitcode(status)}): {' '.join(cmd)}\n"
                         f"{proc.stderr.read().decode() if proc.stderr else ''}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def breakdown(name: str, tmp: Path) -> None:
    """One run of ``name`` with its stages timed (:data:`STAGES`), printed beside the process wall time."""
    out = tmp / f"{name}.json"
    ENV["BENCH_STAGES"], ENV["BENCH_TIMES"] = json.dumps(STAGES), str(out)
    try:
        wall, _, _ = run(["-c", DRIVER, *COMMANDS[name]], tmp / f"stages_{name}")
    finally:
        del ENV["BENCH_STAGES"], ENV["BENCH_TIMES"]
    times = json.loads(out.read_text())
    print(f"\n{name}: one run, {wall:.2f} s wall; its stages (seconds, share of the wall time)")
    for label in ["imports: command line (Hydra, SciPy)", "imports: task module (PyTensor, numba)",
                  *dict.fromkeys(label for label, _, _ in STAGES), "total (in Python, after start-up)"]:
        if label in times:
            print(f"  {label:52s} {times[label]:6.2f} s  {100 * times[label] / wall:4.0f} %")
    print(f"  {'interpreter start and exit':52s} {wall - times['total (in Python, after start-up)']:6.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each command (default 5)")
    parser.add_argument("--no-breakdown", action="store_true", help="skip the timed stages")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        for name, overrides in COMMANDS.items():  # warm: demo file, PyTensor/numba caches
            run(["-m", "hps_bayes", *overrides], tmp / f"warm_{name}")
        results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in COMMANDS}
        loads = []
        for i in range(args.runs):
            for name, overrides in COMMANDS.items():
                results[name].append(run(["-m", "hps_bayes", *overrides], tmp / f"{name}{i}"))
                loads.append(os.getloadavg()[0])
        print(f"whole process, warm, {args.runs} interleaved runs each; load average (1 min) "
              f"{min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} CPUs")
        for name, rows in results.items():
            walls = [w for w, _, _ in rows]
            print(f"  {name:6s} {statistics.median(walls):6.2f} s wall median ({min(walls):.2f}-{max(walls):.2f}), "
                  f"{statistics.median(c for _, c, _ in rows):.2f} s CPU, peak {max(m for _, _, m in rows):.0f} MB"
                  f"   python -m hps_bayes {' '.join(COMMANDS[name])}")
        if not args.no_breakdown:
            for name in COMMANDS:
                breakdown(name, tmp)


if __name__ == "__main__":
    main()
