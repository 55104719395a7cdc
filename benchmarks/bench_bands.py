"""Toy expected bands of the whole grid, end to end: chunked over masses, and in batches of toys.

Run:  .venv/bin/python benchmarks/bench_bands.py [--toys 10000] [--chunks 2] [--batches 10] [overrides ...]

Two ways to the same 10k-toy bands of the bundled 2015-like demo (62 masses), each as a user runs them
through ``hydra/launcher=local`` (submitit local processes, all jobs at once on this machine's CPUs),
then ``task=merge``:

* ``chunks``:  ``-m stats=toys stats.n_toys=T scan.n_chunks=C 'scan.chunk=range(C)'`` (each job all
  toys of its masses);
* ``batches``: ``-m task=bands task.toys_per_batch=T/B task.n_batches=B 'task.batch=range(B)'`` (each job
  T/B toys of every mass; the merge pools them).

Printed: wall seconds of the multirun and of the merge, the peak resident memory of each command (its
waited-for processes included, ``os.wait4``), and from the results the toy/asymptotic ratio of the
median expected limit (batches) or the median seconds per mass (chunks).  Extra arguments are Hydra
overrides given to every command (e.g. ``scan.mass_max=0.05`` for a quick run).  Not a test: timings
depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import pandas as pd
from bench_jobs import run  # the same whole-process timer (wall, peak memory) as the job benchmarks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toys", type=int, default=10000, help="toys per ensemble and mass (default 10000)")
    parser.add_argument("--chunks", type=int, default=2, help="mass chunks of the chunked run (default 2)")
    parser.add_argument("--batches", type=int, default=10, help="toy batches of the batched run (default 10)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every command")
    args = parser.parse_args()
    extra = list(args.overrides)
    local = ["-m", "hydra/launcher=local"]
    with tempfile.TemporaryDirectory() as tmp:
        chunks, batches = Path(tmp, "chunks"), Path(tmp, "batches")
        runs = {
            "chunks": [*local, "stats=toys", f"stats.n_toys={args.toys}", f"scan.n_chunks={args.chunks}",
                       f"scan.chunk=range({args.chunks})", f"hydra.sweep.dir={chunks}", *extra],
            "batches": [*local, "task=bands", f"task.toys_per_batch={args.toys // args.batches}",
                        f"task.n_batches={args.batches}", f"task.batch=range({args.batches})",
                        f"hydra.sweep.dir={batches}", "hydra.sweep.subdir=.", f"run_dir={batches}", *extra],
        }
        folders = {"chunks": chunks, "batches": batches}
        print(f"toy bands end to end: {args.toys} toys per mass; {args.chunks} mass chunks or {args.batches} "
              f"toy batches; {os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f}")
        for name, command in runs.items():
            wall, peak = run(command)
            merge_wall, merge_peak = run(["task=merge", f"run_dir={folders[name]}"])
            frame = pd.read_csv(folders[name] / ("results_single.csv" if name == "chunks" else "bands.csv"))
            if name == "chunks":
                what = f"median {frame.seconds.median():.2f} s per mass (one core)"
            else:
                toys, asym = frame[frame.method == "toys"], frame[frame.method == "asymptotic"]
                ratio = toys.A_up_expected_median.to_numpy() / asym.A_up_expected_median.to_numpy()
                what = f"toy/asymptotic median expected limit {pd.Series(ratio).median():.3f}"
            ok = int((frame.status == "ok").sum())
            print(f"  {name:8s} multirun {wall:6.1f} s ({peak:.0f} MB), merge {merge_wall:5.1f} s ({merge_peak:.0f} MB), "
                  f"end to end {wall + merge_wall:6.1f} s; {ok} of {len(frame)} rows ok; {what}")


if __name__ == "__main__":
    main()
