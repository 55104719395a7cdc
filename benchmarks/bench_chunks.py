"""Overhead of chunking: total CPU time of a scan split into N processes vs one process.

Each chunk is the command a SLURM array task runs (``python -m hps_bayes scan.n_chunks=N
scan.chunk=k run_dir=...``), started here as local processes at once; the CPU time
(user + sys) of every process is read with ``os.wait4``.  Every process pays a fixed cost
(Python + PyMC/PyTensor imports, one model compile); the rest scales with the points.

    python benchmarks/bench_chunks.py                       # demo scan, 4 chunks
    python benchmarks/bench_chunks.py --chunks 8 scan.step=0.0005 stats=toys

Extra arguments are Hydra overrides given to every run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
       "MPLBACKEND": "Agg"}


def run_processes(commands: list[list[str]]) -> tuple[list[float], float]:
    """Start all commands at once; CPU seconds of each (user + sys) and the wall time."""
    start = time.perf_counter()
    procs = {subprocess.Popen(c, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE).pid: c
             for c in commands}
    cpu = []
    for pid in list(procs):
        _, status, usage = os.wait4(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"failed ({os.waitstatus_to_exitcode(status)}): {' '.join(procs[pid])}")
        cpu.append(usage.ru_utime + usage.ru_stime)
    return cpu, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=4)
    parser.add_argument("overrides", nargs="*", help="Hydra overrides for every run, e.g. scan.step=0.0005")
    args = parser.parse_args()
    base = [sys.executable, "-m", "hps_bayes", "plots.summary=false", *args.overrides]
    with tempfile.TemporaryDirectory() as tmp:
        single_dir, chunk_dir = Path(tmp) / "single", Path(tmp) / "chunked"
        # warm-up: the demo file and any on-disk compile caches exist before timing
        run_processes([[*base, f"hydra.run.dir={tmp}/warm", "scan.step=0.05"]])
        (single_cpu,), single_wall = run_processes([[*base, f"hydra.run.dir={single_dir}"]])
        chunk_cpu, chunk_wall = run_processes([
            [*base, f"scan.n_chunks={args.chunks}", f"scan.chunk={k}", f"run_dir={chunk_dir}",
             f"hydra.run.dir={tmp}/job{k}"] for k in range(args.chunks)])
        n_points = len(pd.read_csv(single_dir / "results_single.csv"))
    total = sum(chunk_cpu)
    fixed = (total - single_cpu) / (args.chunks - 1) if args.chunks > 1 else 0.0
    print(f"scan: {n_points} mass points, overrides {args.overrides or 'none'}, {os.cpu_count()} CPUs")
    print(f"single process : CPU {single_cpu:7.2f} s   wall {single_wall:6.2f} s")
    print(f"{args.chunks} chunks       : CPU {total:7.2f} s   wall {chunk_wall:6.2f} s   "
          f"(per chunk: {', '.join(f'{c:.2f}' for c in chunk_cpu)} s)")
    print(f"CPU ratio chunked/single: {total / single_cpu:.3f}   "
          f"(fixed cost per extra process ~{fixed:.2f} s CPU: imports + one model compile)")


if __name__ == "__main__":
    main()
