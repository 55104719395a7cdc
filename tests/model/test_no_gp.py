"""Without a GP (η = 0, fixed hyperparameters) the model has no GP weights and fits as the dead-weight model."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from hps_bayes.core import FitData
from hps_bayes.errors import ConfigError
from hps_bayes.inputs.spectrum import Spectrum
from hps_bayes.model.objective import WindowObjective
from hps_bayes.model.settings import BackgroundSettings
from hps_bayes.model.window import Window, make_window
from hps_bayes.physics.presets import load_preset
from hps_bayes.physics.signal import sigma_m, signal_template
from hps_bayes.stats import AsymptoticCalculator, upper_limit

SETTINGS = BackgroundSettings()

#: measured worst differences (no GP vs 20 GP weights at η = 0) over 30/50/70/90/120 MeV with S = 200:
#: Â 4.4e-14 σ_A, σ_A 1.0e-11, observed limit 3.3e-11 and expected limits 9.0e-11 relative, minimum NLL
#: 2.0e-13 relative; the tolerances are about 10x that
ATOL_A_HAT, RTOL_SIGMA, RTOL_LIMIT, RTOL_EXPECTED, RTOL_NLL = 5e-13, 1e-10, 3e-10, 1e-9, 2e-12
#: batched vs compiled without a GP, worst over 20 random points (as below) x the same masses: value 1.2e-11
#: relative, gradient 1.6e-12 and Hessian 1.7e-15 of the largest entry; the tolerances are 10x that
RTOL_BATCH_VALUE, RTOL_BATCH_GRAD, RTOL_BATCH_HESS = 1.2e-10, 1.6e-11, 1.7e-14


def _window(spectrum: Spectrum, mass: float, settings: BackgroundSettings = SETTINGS) -> Window:
    sigma = float(sigma_m(mass, load_preset("2015")))
    window = make_window(spectrum.edges, spectrum.counts, mass=mass, sigma=sigma, settings=settings,
                         template=signal_template(spectrum.edges, mass, sigma), range_lo=0.02, range_hi=0.13)
    return replace(window, spurious=200.0)


def test_default_settings_compile_no_gp_weights(spectrum_2015: Spectrum) -> None:
    assert SETTINGS.eta == 0.0 and SETTINGS.hyper == "fixed" and SETTINGS.n_basis == 20
    obj = WindowObjective(_window(spectrum_2015, 0.05), SETTINGS)
    d = SETTINGS.poly_degree
    assert SETTINGS.compile_key()[1] == obj.model.n_basis == 0
    assert "beta" not in obj.model.pymc_model.named_vars
    assert obj.n_params == 1 + (d + 1) + 1 and obj.model.n_aux == 1  # θ = (A, c, ν); aux = (ν⁰,)
    assert obj.design().basis.shape == obj.window.legendre.shape
    assert obj.model.gp_basis(obj.window).shape == (obj.window.n_bins, 0)
    # the GP weights stay where the GP can switch on
    for gp in (replace(SETTINGS, eta=0.05), replace(SETTINGS, hyper="marginal")):
        assert gp.compile_key()[1] == SETTINGS.n_basis
    assert SETTINGS.compile_key(with_gp=True)[1] == SETTINGS.n_basis
    # ... but a window whose GP the evidence switched off (η = 0) gets the model without the weights
    marginal = replace(SETTINGS, hyper="marginal")
    assert WindowObjective(obj.window, marginal).model.n_basis == 0
    assert WindowObjective(obj.window, marginal, keep_gp_weights=True).model.n_basis == SETTINGS.n_basis


@pytest.mark.parametrize("mass", [0.05, 0.09])
def test_asymptotic_fit_equals_the_fit_with_the_gp_weights_kept(spectrum_2015: Spectrum, mass: float) -> None:
    window = _window(spectrum_2015, mass)
    assert window.eta == 0.0
    new = WindowObjective(window, SETTINGS)
    # hyper="marginal" with keep_gp_weights compiles the 20 GP weights; the window's η = 0 leaves them without effect
    old = WindowObjective(window, replace(SETTINGS, hyper="marginal"), keep_gp_weights=True)
    assert (new.n_params, old.n_params) == (13, 33)
    calc_new, calc_old = AsymptoticCalculator(new, new.observed()), AsymptoticCalculator(old, old.observed())
    fit_new, fit_old = calc_new.free_fit, calc_old.free_fit
    assert fit_new.converged and fit_old.converged
    assert np.all(fit_old.theta[old.model.slices["beta"]] == 0.0)  # the dead weights sit at their centres
    sigma = calc_new.sigma_mu()
    assert fit_new.theta[0] == pytest.approx(fit_old.theta[0], rel=0, abs=ATOL_A_HAT * sigma)
    assert sigma == pytest.approx(calc_old.sigma_mu(), rel=RTOL_SIGMA)
    # the NLLs differ by the Gaussian normalisations of the 20 weights, ½ ln 2π each
    assert fit_new.nll == pytest.approx(fit_old.nll - 10.0 * np.log(2.0 * np.pi), rel=RTOL_NLL)
    lim_new, lim_old = upper_limit(calc_new), upper_limit(calc_old)
    assert lim_new.mu_up == pytest.approx(lim_old.mu_up, rel=RTOL_LIMIT)
    np.testing.assert_allclose(lim_new.mu_up_expected, lim_old.mu_up_expected, rtol=RTOL_EXPECTED)


def test_batched_objective_without_gp_is_the_compiled_one(spectrum_2015: Spectrum) -> None:
    obj = WindowObjective(_window(spectrum_2015, 0.07), SETTINGS)
    rng = np.random.default_rng(11)
    theta = AsymptoticCalculator(obj, obj.observed()).free_fit.theta + 0.02 * rng.normal(size=obj.n_params)
    theta[0], theta[-1] = 300.0, rng.normal()
    aux = 0.3 * rng.normal(size=obj.model.n_aux)
    counts = rng.poisson(obj.expected_counts(theta)).astype(float)
    f1, g1, h1 = obj.nll_grad_hess(theta, FitData(counts, aux))
    f, g, h = (x[0] for x in obj.nll_grad_hess_batch(theta[None], counts[None], aux[None]))
    assert f == pytest.approx(f1, rel=RTOL_BATCH_VALUE)
    np.testing.assert_allclose(g, g1, rtol=0, atol=RTOL_BATCH_GRAD * np.abs(g1).max())
    np.testing.assert_allclose(h, h1, rtol=0, atol=RTOL_BATCH_HESS * np.abs(h1).max())


def test_a_window_with_a_gp_needs_settings_that_compile_one(spectrum_2015: Spectrum) -> None:
    window = replace(_window(spectrum_2015, 0.05), eta=0.05)
    with pytest.raises(ConfigError, match="eta=0.05"):
        WindowObjective(window, SETTINGS)
