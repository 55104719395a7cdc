"""Benchmark: seconds per mass point of the Bayesian cross-check (NUTS on one window).

Run:  OPENBLAS_NUM_THREADS=1 .venv/bin/python benchmarks/bench_posterior.py [--masses 0.03 0.05 0.09]

For each mass of a 2015-like demo spectrum: the CLs point (scan.evaluate_point), then the
posterior with the default settings of conf/posterior/default.yaml (2 chains one after the
other, 1000 tuning + 1500 draws each).  Prints the time per point (the first includes
PyTensor's compile of the sampler's C code when its cache is cold), the diagnostics and the
ratio credible/CLs limit.  Not a test: timings depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import os
import time

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np

from hps_bayes.analysis.grid import prepare_spectrum
from hps_bayes.analysis.point import build_window, evaluate_point
from hps_bayes.analysis.seeds import posterior_seed
from hps_bayes.analysis.settings import resolve_settings
from hps_bayes.physics.demo import simulate_spectrum
from hps_bayes.posterior.model import PosteriorSettings
from hps_bayes.posterior.sampling import sample_mass_point


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masses", type=float, nargs="+", default=[0.03, 0.05, 0.07, 0.09, 0.11])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--draws", type=int, default=PosteriorSettings().draws)
    args = parser.parse_args()
    settings = resolve_settings("2015", {"background": {"spurious": "off"}})
    spectrum = prepare_spectrum(simulate_spectrum("2015", n_events=args.events, rng=np.random.default_rng(7)),
                                settings)
    times = []
    for mass in args.masses:
        freq = evaluate_point(spectrum, mass, settings)
        window = build_window(spectrum, mass, settings)
        t0 = time.perf_counter()
        r = sample_mass_point(window, settings.background, draws=args.draws, seed=posterior_seed(1, mass))
        times.append(time.perf_counter() - t0)
        print(f"m={mass * 1e3:6.1f} MeV  {times[-1]:5.1f} s (sampling {r.seconds_sampling:4.1f} s)  "
              f"A_up CLs {freq.A_up:8.1f}  credible {r.A_up_credible:8.1f}  ratio {r.A_up_credible / freq.A_up:.3f}  "
              f"R-hat {r.r_hat_max:.4f}  ESS {r.ess_bulk_min:.0f}/{r.ess_tail_min:.0f}  div {r.divergences}  "
              f"E-BFMI {r.bfmi_min:.2f}  {'passed' if r.passed else 'FAILED: ' + '; '.join(r.problems)}", flush=True)
    rest = times[1:] or times
    print(f"first point {times[0]:.1f} s (includes compile); median of the others {np.median(rest):.1f} s per point")


if __name__ == "__main__":
    main()
