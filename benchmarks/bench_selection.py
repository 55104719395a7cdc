"""Benchmark: the background selection (task=select) and a scan that uses it, on a structured demo spectrum.

Run:  OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_selection.py [--dataset 2016] [--step 0.001]
      [--select task.beyond_noise=[flexible] ...]

Prints the time of ``task=select`` (19 candidates at every 2 MeV), of the scan with its selection
(first pass: each chosen model compiled or loaded from the cache; second pass: warm, every model built)
per mass (and, warm, per chosen model), the same for the default background, and the peak resident memory.
Not a test: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np

import hps_bayes
from hps_bayes.cli.tasks import run_task
from hps_bayes.physics.demo import write_demo_file
from hps_bayes.physics.presets import load_preset

EVENTS = {"2015": 21_500_000, "2016": 7_500_000, "2021": 11_000_000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="2015", choices=sorted(EVENTS))
    parser.add_argument("--step", type=float, default=0.001, help="scan step in GeV (default 0.001)")
    parser.add_argument("--select", nargs="*", default=[], metavar="OVERRIDE",
                        help="overrides of task=select, e.g. task.beyond_noise=[flexible]")
    args = parser.parse_args()
    preset = {"2015": "demo", "2016": "demo2016", "2021": "demo2021"}[args.dataset]
    name = load_preset(preset).name
    with tempfile.TemporaryDirectory() as tmp:
        data = write_demo_file(Path(tmp) / "demo.root", load_preset(preset), n_events=EVENTS[args.dataset], seed=3,
                               shape=args.dataset, structured=True)  # type: ignore[arg-type]
        common = [f"dataset={preset}", f"dataset.path={data}"]
        t0 = time.perf_counter()
        run_task("select", [*common, *args.select], Path(tmp) / "select")
        t_select = time.perf_counter() - t0
        selection = Path(tmp) / "select" / f"selection_{name}.json"
        spectrum = hps_bayes.load_spectrum(str(data), load_preset(preset).hist_name)
        config = {"background": {"selection": str(selection)}, "scan": {"step": args.step}}
        for label, cfg in (("selection", config), ("default", {"scan": {"step": args.step}})):
            for attempt in ("first", "warm"):
                t0 = time.perf_counter()
                frame = hps_bayes.run_scan(spectrum, dataset=preset, config=cfg, progress=False)
                seconds = time.perf_counter() - t0
                print(f"scan with the {label} background ({attempt}): {len(frame)} masses, "
                      f"{(frame.status == 'ok').sum()} ok, {seconds:.1f} s, {1e3 * seconds / len(frame):.1f} ms per mass "
                      f"(median of the per-mass column {1e3 * np.median(frame.seconds):.1f} ms)")
                if label == "selection" and attempt == "warm":
                    by_model = frame.groupby("background_model").seconds.median() * 1e3
                    print("  per mass by model (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in by_model.items()))
    print(f"task=select{' ' + ' '.join(args.select) if args.select else ''}: {t_select:.1f} s")
    print(f"peak resident memory: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
