"""Tests of hps_bayes.stats against closed forms (arXiv:1007.1727) and internal consistency.

pyhf comparisons live in tests/validation/test_pyhf_asymptotic.py.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.special import ndtr, ndtri

from hps_bayes.core import FitData
from hps_bayes.errors import ConfigError, InputError
from hps_bayes.stats import (
    AsymptoticCalculator,
    KnownBackgroundObjective,
    UpperLimit,
    asymptotic_pvalues,
    cls_upper_limit,
    eq89_expected_limits,
    expected_cls,
    fit_free,
    hypotest,
    q0,
    q_mu_tilde,
    upper_limit,
)

ALPHA = 0.05
N_SIGMA = (-2, -1, 0, 1, 2)


def single_bin(n: float, b: float) -> tuple[KnownBackgroundObjective, FitData]:
    obj = KnownBackgroundObjective([b], [1.0])
    return obj, obj.fit_data([n])


def k_cls(n_sigma: float, alpha: float = ALPHA) -> float:
    """√q_{μ,A} at the expected CLs limit of band N: N + Φ⁻¹(1 − αΦ(N))."""
    return float(n_sigma + ndtri(1.0 - alpha * ndtr(n_sigma)))


# --- test statistics: closed forms for one bin, known background (μ̂ = n − b) --------------------------
@pytest.mark.parametrize(("n", "b"), [(130.0, 100.0), (100.0, 100.0), (7.0, 2.5), (1e6 + 3e3, 1e6)])
def test_q0_single_bin_closed_form(n: float, b: float) -> None:
    obj, data = single_bin(n, b)
    expected = 2.0 * (n * np.log(n / b) - (n - b))
    assert q0(obj, data) == pytest.approx(expected, rel=1e-8, abs=1e-10)


def test_q0_is_zero_for_a_deficit() -> None:
    obj, data = single_bin(80.0, 100.0)
    assert q0(obj, data) == 0.0


def test_discovery_large_background_gaussian_limit() -> None:
    b = 1e6
    n = b + 3.0 * np.sqrt(b)
    obj, data = single_bin(n, b)
    disc = AsymptoticCalculator(obj, data).discovery()
    assert disc.z0 == pytest.approx((n - b) / np.sqrt(b), rel=2e-3)
    assert disc.z0 == pytest.approx(np.sqrt(2.0 * (n * np.log(n / b) - (n - b))), rel=1e-8)
    assert disc.p0 == pytest.approx(1.0 - ndtr(disc.z0), rel=1e-10)
    assert disc.mu_hat == pytest.approx(n - b, rel=1e-9)


@pytest.mark.parametrize(
    ("n", "mu", "branch"),
    [(120.0, 10.0, "mu_hat > mu"), (110.0, 30.0, "0 <= mu_hat <= mu"), (85.0, 30.0, "mu_hat < 0")],
)
def test_q_mu_tilde_three_branches(n: float, mu: float, branch: str) -> None:
    b = 100.0
    obj, data = single_bin(n, b)
    nu = b + mu
    if branch == "mu_hat > mu":
        expected = 0.0
    elif branch == "0 <= mu_hat <= mu":  # -2 ln λ(μ), μ̂ = n − b
        expected = 2.0 * (nu - n - n * np.log(nu / n))
    else:  # denominator at μ = 0
        expected = 2.0 * (nu - b - n * np.log(nu / b))
    assert q_mu_tilde(obj, data, mu) == pytest.approx(expected, rel=1e-8, abs=1e-12)


def test_test_statistics_reuse_given_fits() -> None:
    obj = KnownBackgroundObjective([50.0, 60.0, 55.0], [0.3, 0.5, 0.2], background_cov=np.diag([4.0, 9.0, 4.0]))
    data = obj.fit_data([45.0, 58.0, 50.0])
    free = fit_free(obj, data)
    assert free.poi(obj) < 0
    assert q_mu_tilde(obj, data, 12.0, free=free) == pytest.approx(q_mu_tilde(obj, data, 12.0), rel=1e-10)
    assert q0(obj, data, free=free) == 0.0


# --- asymptotic p-values -----------------------------------------------------------------------------------
def _pyhf_style_pvalues(q: float, qa: float) -> tuple[float, float]:
    """The same p-values written in pyhf's √q space (t, shifted normal), an independent form."""
    sq, sqa = np.sqrt(q), np.sqrt(qa)
    t = sq - sqa if sq <= sqa else (q - qa) / (2.0 * sqa)
    return float(ndtr(-(t + sqa))), float(ndtr(-t))


@pytest.mark.parametrize("qa", [0.3, 3.84, 25.0])
def test_cls_branches_continuous_at_q_asimov(qa: float) -> None:
    below = asymptotic_pvalues(qa * (1 - 1e-12), qa)
    above = asymptotic_pvalues(qa * (1 + 1e-12), qa)
    np.testing.assert_allclose(below, above, rtol=1e-9)
    # at q = qA: p_{s+b} = 1 − Φ(√qA), CL_b = 1/2
    assert below[0] == pytest.approx(1.0 - ndtr(np.sqrt(qa)), rel=1e-9)
    assert below[1] == pytest.approx(0.5, rel=1e-9)


@pytest.mark.parametrize("qa", [0.3, 3.84, 25.0])
def test_cls_all_branches_match_shifted_normal_form(qa: float) -> None:
    for q in np.linspace(0.0, 4.0 * qa + 10.0, 57):
        clsb, clb, cls = asymptotic_pvalues(q, qa)
        ref_sb, ref_b = _pyhf_style_pvalues(q, qa)
        assert clsb == pytest.approx(ref_sb, rel=1e-10, abs=1e-300)
        assert clb == pytest.approx(ref_b, rel=1e-10)
        assert cls == pytest.approx(ref_sb / ref_b, rel=1e-9)


def test_cls_stays_finite_far_in_the_tail() -> None:
    clsb, clb, cls = asymptotic_pvalues(81.0, 1.0)  # Φ(−41)/Φ(−40): both tails underflow
    assert clsb == 0.0 and clb == 0.0
    assert cls == pytest.approx(np.exp(-40.5) * 40.0 / 41.0, rel=0.01)  # Mills-ratio asymptotics
    assert asymptotic_pvalues(0.0, 0.0) == (0.5, 0.5, 1.0)


def test_expected_cls_formula() -> None:
    qa = 7.3
    got = expected_cls(qa)
    want = [ndtr(n - np.sqrt(qa)) / ndtr(n) for n in N_SIGMA]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert list(got) == sorted(got)


# --- limits: closed forms -------------------------------------------------------------------------------
@pytest.mark.parametrize("b", [3.0, 100.0, 1e4])
def test_expected_limits_single_bin_exact_asimov(b: float) -> None:
    """One bin, known b: q_{μ,A} = 2[μ − b ln(1 + μ/b)], so each expected limit solves √q_{μ,A} = k_N."""
    obj, data = single_bin(b, b)
    lim = upper_limit(AsymptoticCalculator(obj, data), rtol=1e-8)
    assert lim.converged, lim.message
    for n_sigma, got in zip(N_SIGMA, lim.mu_up_expected, strict=True):
        want = brentq(lambda mu, k: np.sqrt(2.0 * (mu - b * np.log1p(mu / b))) - k,
                      1e-9, 1e3 * (b + 10), args=(k_cls(n_sigma),))
        assert got == pytest.approx(want, rel=1e-6)
    # n = b: the observed data are the Asimov data, observed limit = median expected
    assert lim.mu_up == pytest.approx(lim.mu_up_expected[2], rel=1e-6)


@pytest.mark.parametrize("b", [3.0, 100.0, 1e4])
@pytest.mark.parametrize("method", ["cls", "pl"])
def test_asymptotic_expected_limits_are_exact_at_the_default_tolerance(b: float, method: str) -> None:
    """The asymptotic expected limits solve √q_{μ,A}(μ) = k_N by secant steps, which settle far below
    the default rtol = 1e-4 (measured: ≤ 2.7e-7 relative on these single bins; Brent's method on
    the same equation left up to 1.4e-5 on the demo windows)."""
    obj, data = single_bin(b, b)
    lim = upper_limit(AsymptoticCalculator(obj, data), method=method)  # type: ignore[arg-type]
    assert lim.converged, lim.message
    for n_sigma, got in zip(N_SIGMA, lim.mu_up_expected, strict=True):
        k = k_cls(n_sigma) if method == "cls" else n_sigma + float(ndtri(1.0 - ALPHA))
        if k <= 0:  # one-sided, N = -2: every mu > 0 is excluded
            assert got == 0.0
            continue
        want = brentq(lambda mu, k: np.sqrt(2.0 * (mu - b * np.log1p(mu / b))) - k,
                      1e-9, 1e3 * (b + 10), args=(k,), xtol=1e-14, rtol=1e-15)
        assert got == pytest.approx(want, rel=1e-6)


def test_expected_limits_follow_eq89_when_sigma_is_constant() -> None:
    """Large counts: σ = (Σ s²/b)^(-1/2) is constant and μ_up(N) = σ(Φ⁻¹(1 − αΦ(N)) + N)."""
    b = np.full(5, 1e7)
    s = np.array([0.05, 0.25, 0.4, 0.25, 0.05])
    sigma = 1.0 / np.sqrt(np.sum(s**2 / b))
    lim = cls_upper_limit(b, b, s, rtol=1e-7)
    np.testing.assert_allclose(lim.mu_up_expected, eq89_expected_limits(sigma), rtol=1e-3)
    assert lim.mu_up_expected[2] == pytest.approx(sigma * ndtri(1.0 - ALPHA / 2.0), rel=1e-3)


def test_observed_limit_wald_form_for_deficit_and_excess() -> None:
    """Large counts: observed μ_up = σ(N + Φ⁻¹(1 − αΦ(N))) with N = μ̂/σ, on both q̃μ branches."""
    b = np.full(4, 1e7)
    s = np.array([0.1, 0.4, 0.4, 0.1])
    sigma = 1.0 / np.sqrt(np.sum(s**2 / b))
    for n_hat in (-1.5, 0.7):
        lim = cls_upper_limit(b + n_hat * sigma * s, b, s, rtol=1e-7)
        assert lim.mu_up == pytest.approx(sigma * k_cls(n_hat), rel=2e-3)


def test_sigma_scales() -> None:
    n, b = 400.0, 300.0
    obj, data = single_bin(n, b)
    calc = AsymptoticCalculator(obj, data)
    assert calc.sigma_hesse == pytest.approx(np.sqrt(n), rel=1e-8)  # σ̂² = n / s²
    assert calc.sigma_hesse_asimov() == pytest.approx(np.sqrt(b), rel=1e-8)
    mu = 40.0
    assert calc.sigma_mu(mu) == pytest.approx(mu / np.sqrt(2.0 * (mu - b * np.log1p(mu / b))), rel=1e-8)


# --- the Asimov data set ------------------------------------------------------------------------------
def test_asimov_constraint_centres_are_moved_to_the_background_only_fit() -> None:
    b = np.array([100.0, 120.0, 110.0, 90.0])
    s = np.array([0.1, 0.5, 0.3, 0.1])
    obj = KnownBackgroundObjective(b, s, background_cov=np.diag((0.1 * b) ** 2))
    calc = AsymptoticCalculator(obj, obj.fit_data([130.0, 170.0, 150.0, 80.0]))
    z0 = calc.fit_at_zero.theta[1:]
    assert np.max(np.abs(z0)) > 0.5  # the data pull the background
    np.testing.assert_allclose(calc.asimov_data.aux, z0)
    np.testing.assert_allclose(calc.asimov_data.counts, b + 0.1 * b * z0)
    closure = fit_free(obj, calc.asimov_data)  # the Asimov data's best fit is (0, θ̂̂(0))
    assert closure.poi(obj) == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(closure.theta[1:], z0, atol=1e-6)


# --- the known-background objective ------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["none", "diagonal", "dense"])
def test_gradient_and_hessian_match_finite_differences(kind: str) -> None:
    b = np.array([40.0, 55.0, 60.0, 52.0])
    s = np.array([0.1, 0.4, 0.4, 0.1])
    cov = {"none": None, "diagonal": np.diag([4.0, 0.0, 9.0, 6.0]),
           "dense": 16.0 * np.exp(-np.subtract.outer(np.arange(4), np.arange(4)) ** 2 / 4.0)}[kind]
    obj = KnownBackgroundObjective(b, s, background_cov=cov)
    data = FitData(counts=np.array([38.0, 70.0, 66.0, 50.0]), aux=np.linspace(-0.3, 0.4, obj.n_nuisances))
    theta = np.concatenate(([7.0], np.linspace(0.2, -0.5, obj.n_nuisances)))
    _, grad, hess = obj.nll_grad_hess(theta, data)
    eps = 1e-5
    for j in range(obj.n_params):
        step = np.zeros(obj.n_params)
        step[j] = eps
        num_g = (obj.nll(theta + step, data) - obj.nll(theta - step, data)) / (2 * eps)
        assert grad[j] == pytest.approx(num_g, rel=1e-6, abs=1e-7)
        _, gp, _ = obj.nll_grad_hess(theta + step, data)
        _, gm, _ = obj.nll_grad_hess(theta - step, data)
        np.testing.assert_allclose(hess[:, j], (gp - gm) / (2 * eps), rtol=1e-5, atol=1e-7)
    assert obj.n_nuisances == {"none": 0, "diagonal": 3, "dense": 4}[kind]


def test_nll_is_infinite_below_the_mu_floor_and_initial_is_inside() -> None:
    obj = KnownBackgroundObjective([10.0, 10.0], [0.0, 2.0])
    data = obj.fit_data([0.0, 0.0])
    assert obj.nll(np.array([-5.0]), data) == np.inf
    assert np.isfinite(obj.nll(np.array([-4.9]), data))
    assert np.all(obj.expected_counts(obj.initial(data)) > 0)


def test_diagonal_and_dense_covariance_paths_agree() -> None:
    b = np.array([80.0, 100.0, 90.0])
    s = np.array([0.2, 0.6, 0.2])
    n = [85.0, 95.0, 92.0]
    cov = np.diag([16.0, 25.0, 9.0])
    nearly = cov + 1e-9 * (np.ones((3, 3)) - np.eye(3))  # forces the Cholesky path
    a = cls_upper_limit(n, b, s, background_cov=cov, rtol=1e-8)
    d = cls_upper_limit(n, b, s, background_cov=nearly, rtol=1e-8)
    np.testing.assert_allclose([a.mu_up, *a.mu_up_expected], [d.mu_up, *d.mu_up_expected], rtol=1e-6)
    known = cls_upper_limit(n, b, s, rtol=1e-8)
    assert a.mu_up_expected[2] > known.mu_up_expected[2]  # uncertainty weakens the expected limit


def test_zero_counts_give_a_finite_limit_below_expectation() -> None:
    obj = KnownBackgroundObjective([5.0, 5.0, 5.0], [0.2, 0.6, 0.2])
    calc = AsymptoticCalculator(obj, obj.fit_data([0.0, 0.0, 0.0]))
    lim = upper_limit(calc)
    assert calc.mu_hat < 0
    assert lim.converged, lim.message
    assert 0 < lim.mu_up < lim.mu_up_expected[2]
    assert calc.pvalues(lim.mu_up).teststat > calc.pvalues(lim.mu_up).teststat_asimov


# --- calculator bookkeeping and results --------------------------------------------------------------------
def test_calculator_caches_fits_and_needs_at_most_two_per_mu() -> None:
    b = np.full(6, 200.0)
    s = np.array([0.05, 0.2, 0.25, 0.25, 0.2, 0.05])
    obj = KnownBackgroundObjective(b, s, background_cov=np.diag((0.05 * b) ** 2))
    calc = AsymptoticCalculator(obj, obj.fit_data(b + np.array([3.0, -5.0, 8.0, 2.0, -4.0, 1.0])))
    assert calc.n_fits == 3
    calc.pvalues(40.0)
    calc.expected_pvalues(40.0)
    assert calc.n_fits <= 5
    before = calc.n_fits
    calc.pvalues(40.0)
    calc.expected_pvalues(40.0)
    assert calc.n_fits == before
    lim = upper_limit(calc)
    assert calc.n_fits <= 2 * lim.n_evaluations + 3
    assert calc.converged and calc.messages == ()


def test_upper_limit_result_and_hypotest_are_consistent() -> None:
    lim = cls_upper_limit([95.0, 110.0, 102.0], [100.0, 100.0, 100.0], [0.2, 0.6, 0.2], rtol=1e-8)
    assert lim.converged and lim.message == "converged"
    assert lim.cls_at_limit == pytest.approx(ALPHA, rel=1e-5)
    assert list(lim.mu_up_expected) == sorted(lim.mu_up_expected)
    obj = KnownBackgroundObjective([100.0, 100.0, 100.0], [0.2, 0.6, 0.2])
    calc = AsymptoticCalculator(obj, obj.fit_data([95.0, 110.0, 102.0]))
    assert hypotest(calc, lim.mu_up).cls == pytest.approx(ALPHA, rel=1e-5)
    for i, mu in enumerate(lim.mu_up_expected):
        assert hypotest(calc, mu).cls_expected[i] == pytest.approx(ALPHA, rel=1e-5)
    assert UpperLimit.from_dict(lim.to_dict()) == lim


# --- input validation --------------------------------------------------------------------------------------
GOOD = {"observed": [5.0, 6.0], "background": [5.0, 5.0], "template": [0.5, 0.5]}


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"observed": [5.0]}, "observed has 1 bins"),
        ({"template": [0.5, 0.5, 0.0]}, "background has 2 bins but template has 3"),
        ({"background": [5.0, 0.0]}, "background[1] = 0.0"),
        ({"template": [0.5, -0.1]}, "template[1] = -0.1"),
        ({"template": [0.0, 0.0]}, "zero in every bin"),
        ({"observed": [5.0, -1.0]}, "observed[1] = -1.0"),
        ({"observed": [5.0, np.nan]}, "non-finite"),
        ({"background": [[5.0, 5.0]]}, "1-D"),
        ({"background_cov": np.eye(3)}, "shape (3, 3)"),
        ({"background_cov": np.array([[1.0, 0.5], [0.1, 1.0]])}, "not symmetric"),
        ({"background_cov": np.array([[1.0, 2.0], [2.0, 1.0]])}, "not positive definite"),
    ],
)
def test_bad_inputs_raise_input_error(change: dict, fragment: str) -> None:
    with pytest.raises(InputError, match=re.escape(fragment)):
        cls_upper_limit(**{**GOOD, **change})


def test_bad_settings_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="n_toys = 5"):
        cls_upper_limit(**GOOD, method="toys", n_toys=5)
    with pytest.raises(ConfigError, match="'bayes'"):
        cls_upper_limit(**GOOD, method="bayes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="alpha = 1.5"):
        cls_upper_limit(**GOOD, alpha=1.5)
    obj = KnownBackgroundObjective([5.0], [1.0])
    calc = AsymptoticCalculator(obj, obj.fit_data([5.0]))
    with pytest.raises(ConfigError, match="mu = -1.0"):
        calc.pvalues(-1.0)
    with pytest.raises(ConfigError, match="rtol"):
        upper_limit(calc, rtol=0.5)


def test_data_without_constraint_centres_is_rejected() -> None:
    obj = KnownBackgroundObjective([5.0, 5.0], [1.0, 1.0], background_cov=np.eye(2))
    with pytest.raises(InputError, match="fit_data"):
        AsymptoticCalculator(obj, FitData(counts=np.array([5.0, 5.0])))
