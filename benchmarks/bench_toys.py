"""Toy benchmarks (not a test): toy fit pairs per second per core, seconds per mass point for a
1000-toy CLs limit and a 10k-toy expected band, on the demo (2015-like) spectrum.

    OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 python benchmarks/bench_toys.py [--mass 0.05 0.09] [--band-toys 10000]

Prints a table.  One process, one BLAS thread: the numbers are per core.
"""

from __future__ import annotations

import argparse
import os
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np

from hps_bayes.analysis.grid import prepare_spectrum
from hps_bayes.analysis.settings import resolve_settings
from hps_bayes.fit.batch import newton_fit_batch
from hps_bayes.fit.newton import newton_fit
from hps_bayes.model.objective import WindowObjective
from hps_bayes.model.settings import BackgroundSettings
from hps_bayes.model.window import make_window
from hps_bayes.physics.demo import simulate_spectrum
from hps_bayes.physics.signal import sigma_m, signal_template
from hps_bayes.stats import ToyCalculator, draw_toys, upper_limit


def _objective(mass: float) -> WindowObjective:
    """The default window model (no spurious-signal term) on the 2015-like demo spectrum."""
    settings = resolve_settings("2015")
    spectrum = prepare_spectrum(simulate_spectrum("2015", n_events=2_000_000, rng=np.random.default_rng(7)),
                                settings)
    background = BackgroundSettings()
    sigma = float(sigma_m(mass, settings.dataset))
    lo, hi = settings.dataset.mass_range
    window = make_window(spectrum.edges, spectrum.counts, mass=mass, sigma=sigma,
                         template=signal_template(spectrum.edges, mass, sigma), settings=background,
                         range_lo=lo, range_hi=hi)
    return WindowObjective(window, background)


def fit_pairs_per_second(obj: WindowObjective, n_toys: int = 2000) -> float:
    """Free fit + fit at fixed A of background-only toys, both batched."""
    theta0 = newton_fit(obj, obj.observed(), poi_fixed=0.0).theta
    toys = draw_toys(obj, theta0, n_toys, np.random.default_rng(1))
    start = time.perf_counter()
    free = newton_fit_batch(obj, toys.counts, toys.aux, init=theta0)
    newton_fit_batch(obj, toys.counts, toys.aux, poi_fixed=float(np.std(free.theta[:, 0]) * 2), init=free.theta)
    return n_toys / (time.perf_counter() - start)


def limit_seconds(obj: WindowObjective, n_toys: int) -> tuple[float, float, float]:
    start = time.perf_counter()
    calc = ToyCalculator(obj, obj.observed(), n_toys=n_toys, rng=np.random.default_rng(2))
    lim = upper_limit(calc, scan=12, rtol=1e-3)
    return time.perf_counter() - start, lim.mu_up, lim.mu_up_error


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mass", type=float, nargs="+", default=[0.05, 0.09])
    parser.add_argument("--band-toys", type=int, default=10_000)
    args = parser.parse_args()
    print(f"{'m [MeV]':>8} {'bins':>5} {'pairs/s':>9} {'1k-toy limit [s]':>17} {'A_up':>14} "
          f"{f'{args.band_toys // 1000}k-toy band [s]':>17}")
    for mass in args.mass:
        obj = _objective(mass)
        newton_fit(obj, obj.observed())  # compile / warm the cache
        rate = fit_pairs_per_second(obj)
        t1, a_up, err = limit_seconds(obj, 1000)
        t10, _, _ = limit_seconds(obj, args.band_toys)
        print(f"{mass * 1e3:8.1f} {obj.window.n_bins:5d} {rate:9.0f} {t1:17.2f} {a_up:8.1f}±{err:<5.1f} {t10:17.2f}")


if __name__ == "__main__":
    main()
