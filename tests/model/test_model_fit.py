"""The compiled window model and the Newton fitter."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy.special import gammaln

from hps_bayes.core import FitData
from hps_bayes.fit.newton import newton_fit
from hps_bayes.inputs.spectrum import Spectrum
from hps_bayes.model.objective import WindowObjective
from hps_bayes.model.settings import BackgroundSettings
from hps_bayes.model.window import make_window
from hps_bayes.physics.presets import load_preset
from hps_bayes.physics.signal import sigma_m, signal_template

SETTINGS = BackgroundSettings()
PRESET = load_preset("2015")


def _objective(spectrum: Spectrum, mass: float, counts: np.ndarray | None = None,
               settings: BackgroundSettings = SETTINGS) -> WindowObjective:
    sigma = float(sigma_m(mass, PRESET))
    tpl = signal_template(spectrum.edges, mass, sigma)
    window = make_window(spectrum.edges, spectrum.counts if counts is None else counts, mass=mass,
                         sigma=sigma, template=tpl, settings=settings, range_lo=0.02, range_hi=0.13)
    return WindowObjective(window, settings)


def _hsgp_expquad(t: np.ndarray, *, m: int, L: float, eta: float, ell: float) -> np.ndarray:
    """Independent HSGP basis (Solin & Särkkä): φ_j(t) √S(√λ_j) for the ExpQuad kernel."""
    j = np.arange(1, m + 1)
    sqrt_lam = np.pi * j / (2 * L)
    phi = np.sin(sqrt_lam[None, :] * (t[:, None] + L)) / np.sqrt(L)
    psd = eta**2 * np.sqrt(2 * np.pi) * ell * np.exp(-0.5 * (ell * sqrt_lam) ** 2)
    return phi * np.sqrt(psd)[None, :]


@pytest.mark.parametrize("eta", [0.0, 0.05])
def test_nll_matches_an_independent_numpy_likelihood(spectrum_2015: Spectrum, eta: float) -> None:
    settings = replace(SETTINGS, eta=eta)
    obj = _objective(spectrum_2015, 0.05, settings=settings)
    m = obj.model.n_basis
    assert m == (settings.n_basis if eta else 0)  # eta = 0 with fixed hyperparameters: no GP weights
    w = obj.window
    rng = np.random.default_rng(3)
    theta = obj.initial(obj.observed())
    theta[0] = 300.0
    theta[obj.model.slices["beta"]] = rng.normal(size=m)
    theta[-1] = 0.4
    aux = rng.normal(size=m + 1) * 0.3
    basis = _hsgp_expquad(w.t, m=m, L=settings.c, eta=w.eta, ell=w.lengthscale_t)
    beta = theta[obj.model.slices["beta"]]
    log_b = w.log_offset + w.legendre @ theta[obj.model.slices["coef"]] + basis @ beta
    mu = np.exp(log_b) + theta[0] * w.template
    n = w.counts
    constrained = np.append(beta, theta[-1])
    expected = -np.sum(n * np.log(mu) - mu - gammaln(n + 1)) + 0.5 * np.sum((constrained - aux) ** 2) \
        + 0.5 * len(constrained) * np.log(2 * np.pi)
    got = obj.nll(theta, FitData(n, aux))
    assert got == pytest.approx(expected, rel=1e-10)
    np.testing.assert_allclose(obj.expected_counts(theta), mu, rtol=1e-10)


def test_gradient_and_hessian_match_finite_differences(spectrum_2015: Spectrum) -> None:
    obj = _objective(spectrum_2015, 0.04)
    data = obj.observed()
    theta = newton_fit(obj, data).theta + 0.01
    theta[0] += 50.0
    _, g, h = obj.nll_grad_hess(theta, data)
    for k in (0, 1, 3, obj.n_params - 1):
        step = 1e-3 if k else 1.0
        e = np.zeros_like(theta)
        e[k] = step
        fp, gp, _ = obj.nll_grad_hess(theta + e, data)
        fm, gm, _ = obj.nll_grad_hess(theta - e, data)
        assert g[k] == pytest.approx((fp - fm) / (2 * step), rel=1e-4, abs=1e-5)
        np.testing.assert_allclose(h[:, k], (gp - gm) / (2 * step), rtol=1e-4, atol=1e-4 * np.abs(h).max())


@pytest.mark.parametrize("mass", [0.025, 0.03, 0.06, 0.11])
def test_newton_fits_converge_and_fixed_fit_is_consistent(spectrum_2015: Spectrum, mass: float) -> None:
    obj = _objective(spectrum_2015, mass)
    data = obj.observed()
    free = newton_fit(obj, data)
    assert free.converged, free.message
    _, g, _ = obj.nll_grad_hess(free.theta, data)
    assert np.abs(g * np.sqrt(np.diag(free.covariance))).max() < 1e-4
    sigma = free.poi_error(obj)
    fixed = newton_fit(obj, data, poi_fixed=free.theta[0] + sigma, init=free.theta)
    assert fixed.converged and fixed.theta[0] == free.theta[0] + sigma
    # Δ(-2 ln L) one standard deviation away from the minimum is ~1 (less exactly in the
    # low-count tail, where the profile likelihood is not parabolic and the window, shifted
    # to keep its full width inside the range, holds the mass off-centre)
    assert 2 * (fixed.nll - free.nll) == pytest.approx(1.0, abs=0.05 if mass < 0.1 else 0.2)


def test_injected_signal_is_recovered_on_expected_counts(expected_2015: Spectrum) -> None:
    mass, injected = 0.06, 3000.0
    sigma = float(sigma_m(mass, PRESET))
    counts = expected_2015.counts + injected * signal_template(expected_2015.edges, mass, sigma)
    obj = _objective(expected_2015, mass, counts=counts)
    free = newton_fit(obj, obj.observed())
    assert free.converged
    assert free.theta[0] == pytest.approx(injected, abs=0.2 * free.poi_error(obj))


def test_window_is_clipped_at_the_range_end_and_flagged(spectrum_2015: Spectrum) -> None:
    obj = _objective(spectrum_2015, 0.025, settings=BackgroundSettings(edge="clip"))
    assert obj.window.clipped_low and not obj.window.clipped_high
    assert obj.window.edges[0] >= 0.02 - 1e-12
    shifted = _objective(spectrum_2015, 0.025).window  # default edge="shift": full width, not flagged
    assert not (shifted.clipped_low or shifted.clipped_high) and shifted.edges[0] >= 0.02 - 1e-12
    assert shifted.edges[-1] - shifted.edges[0] >= 2 * SETTINGS.window_sigmas * shifted.sigma - 1e-3


def test_a_window_with_too_few_bins_is_an_input_error(spectrum_2015: Spectrum) -> None:
    from hps_bayes.errors import InputError

    with pytest.raises(InputError, match="min_bins"):
        _objective(spectrum_2015, 0.0201, settings=BackgroundSettings(window_sigmas=0.5))


def test_log_linear_design_is_the_compiled_likelihood(spectrum_2015: Spectrum) -> None:
    obj = _objective(spectrum_2015, 0.07)
    obj = WindowObjective(replace(obj.window, spurious=250.0), SETTINGS)
    design = obj.design()
    rng = np.random.default_rng(5)
    theta = newton_fit(obj, obj.observed()).theta + rng.normal(size=obj.n_params) * 0.01
    theta[0], theta[-1] = 400.0, -0.7
    aux = rng.normal(size=obj.model.n_aux) * 0.2
    gamma = theta[1:-1]
    mu = np.exp(design.offset + design.basis @ gamma) + (theta[0] + design.spurious * theta[-1]) * design.template
    n = obj.window.counts
    constrained = np.append(gamma[design.n_free_basis:], theta[-1])
    nll = np.sum(mu - n * np.log(mu) + gammaln(n + 1)) + 0.5 * np.sum((constrained - aux) ** 2) \
        + 0.5 * len(constrained) * np.log(2 * np.pi)
    assert design.n_params == obj.n_params
    assert obj.nll(theta, FitData(n, aux)) == pytest.approx(nll, rel=1e-10)


def test_spurious_nuisance_widens_sigma_a_in_quadrature(spectrum_2015: Spectrum) -> None:
    base = _objective(spectrum_2015, 0.05)
    sigma_a = newton_fit(base, base.observed()).poi_error(base)
    s_size = 0.5 * sigma_a
    with_s = WindowObjective(replace(base.window, spurious=s_size), SETTINGS)
    fit = newton_fit(with_s, with_s.observed())
    assert fit.poi_error(with_s) == pytest.approx(np.hypot(sigma_a, s_size), rel=1e-3)


def test_marginal_likelihood_switches_the_gp_on_only_where_the_mean_cannot_follow() -> None:
    from hps_bayes.model.evidence import laplace_neg_log_evidence, marginal_likelihood_hyperparameters

    t = np.linspace(-1, 1, 200)
    offset = np.zeros_like(t)
    smooth = np.exp(9.0 - 1.5 * t - 0.8 * t**2)  # exactly a degree-2 exp-polynomial: no GP needed
    settings = BackgroundSettings(n_basis=40)
    fit = marginal_likelihood_hyperparameters(t, smooth, offset, degree=4, settings=settings, ell_min=0.05)
    assert fit.eta == 0.0 and fit.eta_at_bound
    wiggly = smooth * np.exp(0.05 * np.sin(12 * t))  # structure on ℓ ~ 0.1 that degree 4 cannot follow
    fit = marginal_likelihood_hyperparameters(t, wiggly, offset, degree=4, settings=settings, ell_min=0.05)
    assert fit.eta > 0.01 and 0.05 <= fit.lengthscale < 0.5
    assert fit.neg_log_evidence < fit.neg_log_evidence_no_gp - 10
    # the evidence is continuous at eta -> 0 (the GP block of the Hessian tends to the identity)
    free = np.polynomial.legendre.legvander(t, 4)
    tiny = np.full((len(t), 3), 1e-9)
    assert laplace_neg_log_evidence(offset, free, tiny, wiggly)[0] == pytest.approx(
        laplace_neg_log_evidence(offset, free, np.zeros((len(t), 0)), wiggly)[0], abs=1e-6)


@pytest.mark.parametrize("kernel", ["expquad", "matern52"])
def test_the_evidence_gradient_is_the_derivative_of_the_evidence(kernel: str) -> None:
    """laplace_gradient (per GP column, chained to ln η and ln ℓ as the search does) against central differences
    of the Laplace evidence, each fitted to convergence from the same start: measured agreement ≤ 1.6e-6
    relative with expquad, ≤ 1.4e-5 with matern52 (its smallest slope, 1.49 in ln ℓ; the differences' own
    error), asserted 2e-5."""
    from hps_bayes.model.evidence import (
        _gp_basis,
        _log_scale_slope,
        laplace_gradient,
        laplace_neg_log_evidence,
    )

    rng = np.random.default_rng(1)
    t = np.linspace(-1, 1, 120)
    counts = rng.poisson(np.exp(8 + 0.5 * t - 0.3 * t**2 + 0.05 * np.sin(7 * t))).astype(float)
    settings = BackgroundSettings(eta=0.05, kernel=kernel)  # type: ignore[arg-type]
    free, offset = np.polynomial.legendre.legvander(t, 3), np.zeros_like(t)

    def evidence(ln_eta: float, ln_ell: float, start: np.ndarray | None = None) -> tuple[float, np.ndarray]:
        basis = _gp_basis(t, float(np.exp(ln_eta)), float(np.exp(ln_ell)), settings)
        return laplace_neg_log_evidence(offset, free, basis, counts, start)

    for ln_eta, ln_ell in ((np.log(0.03), np.log(0.3)), (np.log(0.1), np.log(0.8)), (np.log(0.01), np.log(0.15))):
        _, gamma = evidence(ln_eta, ln_ell)
        eta, ell = float(np.exp(ln_eta)), float(np.exp(ln_ell))
        per_column = laplace_gradient(offset, free, _gp_basis(t, eta, ell, settings), counts, gamma)
        analytic = np.array([per_column.sum(), per_column @ _log_scale_slope(t, eta, ell, settings)])
        h = 1e-5
        numeric = np.array([(evidence(ln_eta + h, ln_ell, gamma)[0] - evidence(ln_eta - h, ln_ell, gamma)[0]) / (2 * h),
                            (evidence(ln_eta, ln_ell + h, gamma)[0] - evidence(ln_eta, ln_ell - h, gamma)[0]) / (2 * h)])
        np.testing.assert_allclose(analytic, numeric, rtol=2e-5)
        assert np.all(np.abs(numeric) > 1.0)  # a real slope, not a flat point


def test_marginal_hyperparameters_are_chosen_once_per_spectrum(expected_2015: Spectrum) -> None:
    settings = BackgroundSettings(window_sigmas=1000, poly_degree=6, n_basis=40, hyper="marginal")
    a = _objective(expected_2015, 0.05, settings=settings).window
    b = _objective(expected_2015, 0.08, settings=settings).window
    assert a.eta > 0 and a.eta == b.eta  # degree 6 cannot follow the whole range: the GP is on
    assert a.lengthscale_t == pytest.approx(b.lengthscale_t)
    fixed = _objective(expected_2015, 0.05, settings=replace(settings, hyper="fixed")).window
    assert fixed.eta == settings.eta
    with pytest.raises(Exception, match="hyper"):
        BackgroundSettings(hyper="map")  # type: ignore[arg-type]
