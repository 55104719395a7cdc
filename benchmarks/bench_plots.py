"""Per-mass plots: seconds per mass for the three window figures, one-off functions vs WindowPlotter.

Run:  OPENBLAS_NUM_THREADS=1 MPLBACKEND=Agg .venv/bin/python benchmarks/bench_plots.py [--masses 10] [--repeats 3]

The window arrays (free fit and fit at the limit) of ``--masses`` masses of the 2015-like demo
spectrum (``dataset=demo2015``, generated on first use) are computed once; then, in interleaved
rounds, the three figures of every mass (``fit_full``, ``blind_ul``, ``s_over_b_ul``, PNG) are
drawn by the one-off functions (a new figure per call, as a script drawing one mass does) and
by one :class:`~hps_bayes.plots.window.WindowPlotter` (one figure per kind, reused; what
``plots.per_mass=true`` uses in one process).  Printed: the median wall and CPU seconds per mass of
each, the machine's load average and the size of the files.  Then ``--pool-masses`` masses drawn by
:func:`~hps_bayes.plots.parallel.plot_windows` as a scan does, in one process and in ``--workers``
processes (default: the CPUs available), wall seconds per mass with the workers' start included.
Not a test: timings depend on the load.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np

from hps_bayes.analysis.point import analysable, evaluate_point, window_fit_arrays
from hps_bayes.cli.config import _plain, load_config, settings_from_config
from hps_bayes.cli.inputs import ensure_input
from hps_bayes.inputs.root_io import load_spectrum
from hps_bayes.plots import window as plots_window
from hps_bayes.results.objects import WindowFitArrays


def demo_arrays(n_masses: int) -> list[WindowFitArrays]:
    """Window arrays of ``n_masses`` masses (30-80 MeV) of the 2015-like demo spectrum."""
    cfg = load_config(["dataset=demo2015"])
    settings = settings_from_config(cfg)
    spectrum = load_spectrum(ensure_input(settings, _plain(cfg)), settings.dataset.hist_name)
    settings, spec, scale = analysable(spectrum, settings)
    arrays = []
    for mass in np.linspace(0.030, 0.080, n_masses):
        result = evaluate_point(spec, float(mass), settings, weight_scale=scale)
        arrays.append(window_fit_arrays(spec, result, settings))
    return arrays


def one_off(arrays: WindowFitArrays, folder: Path) -> None:
    """The three figures by the public functions, a new figure each."""
    plots_window.plot_fit_full(arrays, folder / "fit_full.png")
    plots_window.plot_blind_ul(arrays, folder / "blind_ul.png")
    plots_window.plot_s_over_b_ul(arrays, folder / "s_over_b_ul.png")


def timed_round(draw: Callable[[WindowFitArrays, Path], object], arrays: list[WindowFitArrays],
                folder: Path) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of ``draw`` for every mass."""
    wall, cpu = [], []
    for i, a in enumerate(arrays):
        w0, c0 = time.perf_counter(), time.process_time()
        draw(a, folder / f"m{i}")
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masses", type=int, default=10, help="masses of the demo spectrum (default 10)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds of each path (default 3)")
    parser.add_argument("--pool-masses", type=int, default=40, help="masses drawn by plot_windows (default 40)")
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: the CPUs available)")
    args = parser.parse_args()
    arrays = demo_arrays(max(args.masses, args.pool_masses))
    pool_arrays, arrays = arrays[:args.pool_masses], arrays[:args.masses]
    times: dict[str, tuple[list[float], list[float]]] = {"one-off functions": ([], []), "WindowPlotter": ([], [])}
    loads = []
    with tempfile.TemporaryDirectory() as tmp, plots_window.WindowPlotter() as plotter:
        one_off(arrays[0], Path(tmp) / "warm")  # fonts, mathtext parser, first imports
        paths: dict[str, Callable[[WindowFitArrays, Path], object]] = {
            "one-off functions": one_off, "WindowPlotter": plotter.plot_all}
        for _ in range(args.repeats):
            for name, draw in paths.items():
                wall, cpu = timed_round(draw, arrays, Path(tmp) / name.replace(" ", "_"))
                times[name][0].extend(wall)
                times[name][1].extend(cpu)
                loads.append(os.getloadavg()[0])
        sizes = [p.stat().st_size for p in Path(tmp, "WindowPlotter").rglob("*.png")]
    print(f"{args.masses} masses of the demo 2015 spectrum, {args.repeats} interleaved rounds; "
          f"load average (1 min) {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} CPUs")
    for name, (wall, cpu) in times.items():
        print(f"  {name:18s}: {statistics.median(wall):.3f} s wall, {statistics.median(cpu):.3f} s CPU "
              f"per mass (three figures, median)")
    print(f"  PNG files: {np.mean(sizes) / 1024:.0f} kB on average")
    from hps_bayes.plots.parallel import available_workers, plot_windows

    workers = args.workers or available_workers()
    with tempfile.TemporaryDirectory() as tmp:
        for n in (1, workers):
            items = [(a, Path(tmp) / f"w{n}" / f"m{i}") for i, a in enumerate(pool_arrays)]
            w0, c0 = time.perf_counter(), time.process_time()
            plot_windows(items, workers=n)
            wall = time.perf_counter() - w0
            print(f"  plot_windows, {n} worker(s), {len(items)} masses: {wall / len(items):.3f} s wall per mass "
                  f"(start included; {time.process_time() - c0:.1f} s CPU in this process)")


if __name__ == "__main__":
    main()
