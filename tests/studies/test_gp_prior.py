"""The sandwich σ_A of a GP-carried window against the scatter of Â over toys."""

from __future__ import annotations

import numpy as np
import pytest

from hps_bayes.analysis.scan import prepare_scan
from hps_bayes.inputs.spectrum import Spectrum
from hps_bayes.studies.gp_prior import study

N_TOYS = 400
#: Three standard errors of a standard deviation estimated from N_TOYS toys (1/√(2(N − 1)) = 3.5 %).
SCATTER_TOL = 3.0 / np.sqrt(2.0 * (N_TOYS - 1))


def test_without_a_gp_the_sandwich_is_the_inverse_hessian(raw_spectrum_2015: Spectrum) -> None:
    prep = prepare_scan(raw_spectrum_2015, dataset="demo")  # the default background: no GP (η = 0)
    (row,) = study(prep.spectrum, prep.settings, [0.05])
    assert row["n_basis"] == 0
    assert row["sigma_sandwich"] == pytest.approx(row["sigma_inverse_hessian"], rel=1e-12)
    assert row["sigma_A"] == pytest.approx(row["sigma_inverse_hessian"], rel=0.02)  # Asimov against observed: 1.1 %


def test_toys_with_the_gp_weights_held_scatter_as_the_sandwich(raw_spectrum_2015: Spectrum) -> None:
    # a GP strong and short enough that its prior is a fifth of σ_A: the two variances are told apart
    config = {"background": {"poly_degree": 3, "window_sigmas": 10.0, "eta": 0.2, "lengthscale": 2.5, "n_basis": 20}}
    prep = prepare_scan(raw_spectrum_2015, dataset="demo", config=config)
    (row,) = study(prep.spectrum, prep.settings, [0.05], n_toys=N_TOYS, seed=3)
    assert row["n_basis"] == 20
    ratio = row["sigma_sandwich"] / row["sigma_inverse_hessian"]
    assert ratio == pytest.approx(0.80, abs=0.01)  # measured 0.804
    # the weights' centres held: Â scatters as the sandwich; every centre drawn (the package's toys): as H⁻¹
    assert row["toys_weights_held"] / row["sigma_sandwich"] == pytest.approx(1.0, abs=SCATTER_TOL)
    assert row["toys_all_drawn"] / row["sigma_inverse_hessian"] == pytest.approx(1.0, abs=SCATTER_TOL)
    assert row["toys_weights_held"] < (1.0 - SCATTER_TOL) * row["sigma_inverse_hessian"]
