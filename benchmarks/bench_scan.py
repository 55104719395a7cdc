"""Benchmark: asymptotic scan of the demo spectrum (per-mass-point time, whole scan, peak memory).

Run:  OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_scan.py [--points 300]

Prints the compile time (the first window fit: cold when the PyTensor/numba
cache is empty, warm otherwise), then the per-point time of a scan over the
2015-like demo spectrum with the default settings, and the peak resident memory.
Not a test: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np

import hps_bayes
from hps_bayes.physics.demo import simulate_spectrum


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=300, help="mass points in the scan (default 300)")
    parser.add_argument("--dataset", default="2015", choices=["2015", "2016", "2021"])
    args = parser.parse_args()
    spectrum = simulate_spectrum(args.dataset, n_events={"2015": 21_500_000, "2016": 7_500_000,  # type: ignore[arg-type]
                                                          "2021": 11_000_000}[args.dataset],
                                 rng=np.random.default_rng(1))
    preset_range = {"2015": (0.025, 0.095), "2016": (0.045, 0.19), "2021": (0.04, 0.22)}[args.dataset]
    t0 = time.perf_counter()
    first = hps_bayes.evaluate_mass(spectrum, float(np.mean(preset_range)), dataset=args.dataset)
    t_first = time.perf_counter() - t0
    masses = np.linspace(*preset_range, args.points)
    t0 = time.perf_counter()
    frame = hps_bayes.run_scan(spectrum, dataset=args.dataset, masses=masses, progress=False)
    t_scan = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ok = int((frame.status == "ok").sum())
    print(f"dataset {args.dataset}: first mass point (includes model compile) {t_first:.2f} s [{first.status}]")
    print(f"scan of {len(masses)} masses: {t_scan:.2f} s total, {1e3 * t_scan / len(masses):.1f} ms per point "
          f"(median {1e3 * frame.seconds.median():.1f} ms), {ok}/{len(masses)} ok")
    print(f"peak resident memory: {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
