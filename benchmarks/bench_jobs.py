"""Whole processes as a user runs them: one mass, ten masses, the full scan without and with per-mass
plots, warm and cold; wall seconds and peak memory.

Run:  .venv/bin/python benchmarks/bench_jobs.py [--runs 3] [--cold] [--against DIR] [--jobs 0,1,2]
      [extra Hydra overrides]

Each job is ``python -m hps_bayes ...`` on the bundled demo spectrum (2015-like), started as a
fresh process with one BLAS thread; warm runs are interleaved ``--runs`` times after one
unmeasured run that fills the compile caches; ``--cold`` first runs every job once with empty
PyTensor and numba caches (``PYTENSOR_FLAGS=base_compiledir=<new folder>``, ``NUMBA_CACHE_DIR``), as
on a fresh machine.  Printed: median (min-max) wall seconds and the peak resident memory of the
command's process (``os.wait4``; plot workers are forked from it and not counted).  ``--against DIR``
runs every warm job also with the package of another checkout (``PYTHONPATH=DIR``, in ``DIR``; e.g.
``git worktree add /tmp/base <commit>``), interleaved with this one, so that two versions are
compared under the same load; ``--jobs`` picks jobs by their number in :data:`JOBS`.  Not a test:
timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "MPLBACKEND": "Agg"}
JOBS = {
    "1 mass, no plots": ["task=test", "mass=0.05", "task.plots=false"],
    "10 masses, no plots": ["scan.mass_min=0.040", "scan.mass_max=0.049", "plots.summary=false"],
    "full scan, no plots": ["plots.summary=false"],
    "full scan, summary plots": [],
    "full scan, per-mass plots": ["plots.per_mass=true"],
}


def run(args: list[str], env: dict[str, str] = ENV, cwd: str | None = None) -> tuple[float, float]:
    """Wall seconds and peak resident MB of one ``python -m hps_bayes args`` (its waited-for children
    included, ``os.wait4``); a non-zero exit stops the benchmark with the end of the command's stderr
    (kept in a file: a pipe left unread would block a command that logs much)."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "hps_bayes", *args], env=env, cwd=cwd,
                                stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise SystemExit(f"failed: python -m hps_bayes {' '.join(args)}\n{err.read().decode()[-3000:]}")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="warm runs of each job (default 3)")
    parser.add_argument("--cold", action="store_true", help="also each job once with empty compile caches")
    parser.add_argument("--against", default=None, help="another checkout to run interleaved with this one")
    parser.add_argument("--jobs", default=None, help="the jobs to run, by number (default: all)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every job")
    args = parser.parse_args()
    chosen = list(JOBS) if args.jobs is None else [list(JOBS)[int(k)] for k in args.jobs.split(",")]
    jobs = {name: [*JOBS[name], *args.overrides] for name in chosen}
    versions: dict[str, tuple[dict[str, str], str | None]] = {"this": (ENV, None)}
    if args.against:
        versions[args.against] = ({**ENV, "PYTHONPATH": args.against}, args.against)
    with tempfile.TemporaryDirectory() as tmp:
        runs = iter(range(10**6))
        if args.cold:
            for name, job in jobs.items():
                caches = Path(tmp) / f"cold{next(runs)}"
                env = {**ENV, "PYTENSOR_FLAGS": f"base_compiledir={caches / 'pytensor'}",
                       "NUMBA_CACHE_DIR": str(caches / "numba")}
                wall, peak = run([*job, f"hydra.run.dir={Path(tmp) / f'run{next(runs)}'}"], env)
                print(f"cold  {name:28s} {wall:6.2f} s, peak {peak:.0f} MB")
        if args.runs < 1:
            return
        for job in jobs.values():
            for env, cwd in versions.values():  # fills the caches, the demo file
                run([*job, f"hydra.run.dir={Path(tmp) / f'run{next(runs)}'}"], env, cwd)
        walls: dict[tuple[str, str], list[float]] = {(n, v): [] for n in jobs for v in versions}
        peaks: dict[tuple[str, str], float] = dict.fromkeys(walls, 0.0)
        loads = []
        for _ in range(args.runs):
            for name, job in jobs.items():
                for version, (env, cwd) in versions.items():
                    wall, peak = run([*job, f"hydra.run.dir={Path(tmp) / f'run{next(runs)}'}"], env, cwd)
                    walls[name, version].append(wall)
                    peaks[name, version] = max(peaks[name, version], peak)
                    loads.append(os.getloadavg()[0])
    print(f"warm, {args.runs} interleaved runs; load average (1 min) {min(loads):.1f}-{max(loads):.1f} on "
          f"{os.cpu_count()} CPUs")
    for (name, version), values in walls.items():
        tag = "" if len(versions) == 1 else f" [{version}]"
        print(f"warm  {name:28s} {statistics.median(values):6.2f} s ({min(values):.2f}-{max(values):.2f}), "
              f"peak {peaks[name, version]:.0f} MB{tag}")


if __name__ == "__main__":
    main()
