"""Combination of datasets with a shared ε²: Fisher-information closure and self-combination."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from hps_bayes.analysis.combine import CombinedObjective, datasets_covering, evaluate_combined
from hps_bayes.analysis.grid import prepare_spectrum
from hps_bayes.analysis.point import build_window, evaluate_point
from hps_bayes.analysis.settings import resolve_settings
from hps_bayes.fit.newton import newton_fit
from hps_bayes.inputs.spectrum import Spectrum
from hps_bayes.model.objective import WindowObjective
from hps_bayes.physics.demo import simulate_spectrum
from hps_bayes.results.objects import CombinedResult

S2015 = resolve_settings("2015")
S2016 = resolve_settings("2016")
MASS = 0.07  # inside both the 2015 (20-130 MeV) and the 2016 (35-210 MeV) ranges


@pytest.fixture(scope="module")
def spectrum_2016() -> Spectrum:
    return simulate_spectrum("2016", n_events=1_000_000, rng=np.random.default_rng(8))


def test_combined_gradient_and_hessian_follow_the_chain_rule(raw_spectrum_2015: Spectrum,
                                                             spectrum_2016: Spectrum) -> None:
    objs = [WindowObjective(build_window(prepare_spectrum(sp, s), MASS, s), s.background)
            for sp, s in ((raw_spectrum_2015, S2015), (spectrum_2016, S2016))]
    comb = CombinedObjective(objs, [2.0e8, 5.0e8], scale=1e-5)
    data = comb.join_data([o.observed() for o in objs])
    theta = newton_fit(comb, data).theta + 0.003
    _, g, h = comb.nll_grad_hess(theta, data)
    for k in (0, 1, comb.n_params - 1):
        e = np.zeros_like(theta)
        e[k] = 1e-4
        fp, gp, _ = comb.nll_grad_hess(theta + e, data)
        fm, gm, _ = comb.nll_grad_hess(theta - e, data)
        assert g[k] == pytest.approx((fp - fm) / 2e-4, rel=1e-4, abs=1e-4)
        np.testing.assert_allclose(h[:, k], (gp - gm) / 2e-4, rtol=2e-4, atol=1e-4 * np.abs(h).max())


def test_combined_sensitivity_matches_added_fisher_information(raw_spectrum_2015: Spectrum,
                                                               spectrum_2016: Spectrum) -> None:
    settings = {"2015": S2015, "2016": S2016}
    spectra = {"2015": raw_spectrum_2015, "2016": spectrum_2016}
    result = evaluate_combined(spectra, MASS, settings)
    assert result.status == "ok", result.message
    assert result.datasets == "2015+2016"
    singles = {n: evaluate_point(prepare_spectrum(spectra[n], s), MASS, s) for n, s in settings.items()}
    # σ(ε²) of the combination: 1/σ² = Σ 1/σ_d² (Fisher information adds), within a few %
    # (σ from the Asimov q of the combination vs Hessian σ of each dataset)
    predicted = 1.0 / np.sqrt(np.sum(1.0 / np.square(result.sigma_eps2_single)))
    assert result.sigma_eps2 == pytest.approx(predicted, rel=0.05)
    exp_single = [r.eps2_up_expected[2] for r in singles.values()]
    assert result.eps2_up_expected[2] < min(exp_single)
    assert result.eps2_up_expected[2] == pytest.approx(1.96 * result.sigma_eps2, rel=0.05)
    again = CombinedResult.from_dict(result.to_row())
    assert again.k_factors == pytest.approx(result.k_factors)


def test_a_dataset_combined_with_itself_gains_sqrt2(raw_spectrum_2015: Spectrum) -> None:
    twin = replace(S2015, dataset=replace(S2015.dataset, name="2015b"))
    result = evaluate_combined({"2015": raw_spectrum_2015, "2015b": raw_spectrum_2015}, 0.05,
                               {"2015": S2015, "2015b": twin})
    single = evaluate_point(prepare_spectrum(raw_spectrum_2015, S2015), 0.05, S2015)
    k = result.k_factors[0]
    assert result.k_factors[0] == pytest.approx(result.k_factors[1])
    # the same data twice: same ε̂², σ smaller by √2, q0 doubled (Z × √2)
    assert result.eps2_hat == pytest.approx(single.A_hat / k, rel=1e-3, abs=1e-3 * single.sigma_A / k)
    assert result.sigma_eps2 == pytest.approx(single.sigma_A / k / np.sqrt(2), rel=0.01)
    assert result.q0 == pytest.approx(2 * single.q0, rel=1e-3, abs=1e-6)
    assert result.eps2_up_expected[2] == pytest.approx(single.eps2_up_expected[2] / np.sqrt(2), rel=0.01)


def test_datasets_covering_uses_each_range() -> None:
    settings = {"2015": S2015, "2016": S2016}
    assert datasets_covering(0.03, settings) == ["2015"]
    assert datasets_covering(0.07, settings) == ["2015", "2016"]
    assert datasets_covering(0.15, settings) == ["2016"]


def test_combined_batch_methods_equal_the_single_ones(raw_spectrum_2015: Spectrum, spectrum_2016: Spectrum) -> None:
    objs = [WindowObjective(build_window(prepare_spectrum(sp, s), MASS, s), s.background)
            for sp, s in ((raw_spectrum_2015, S2015), (spectrum_2016, S2016))]
    comb = CombinedObjective(objs, [2.0e8, 5.0e8], scale=1e-5)
    data = comb.join_data([o.observed() for o in objs])
    rng = np.random.default_rng(2)
    base = newton_fit(comb, data).theta
    thetas = base + rng.normal(scale=0.01, size=(3, comb.n_params))
    counts = np.tile(data.counts, (3, 1))
    aux = rng.normal(scale=0.1, size=(3, len(data.aux)))
    f, g, h = comb.nll_grad_hess_batch(thetas, counts, aux)
    for k in range(3):
        fk, gk, hk = comb.nll_grad_hess(thetas[k], type(data)(counts[k], aux[k]))
        assert f[k] == pytest.approx(fk, rel=1e-10)
        np.testing.assert_allclose(g[k], gk, rtol=1e-7, atol=1e-7 * np.abs(gk).max())
        np.testing.assert_allclose(h[k], hk, rtol=1e-7, atol=1e-9 * np.abs(hk).max())
    np.testing.assert_allclose(comb.expected_counts_batch(thetas)[1], comb.expected_counts(thetas[1]), rtol=1e-10)


@pytest.mark.slow
def test_combined_toy_limit_agrees_with_asymptotic_at_large_counts(raw_spectrum_2015: Spectrum,
                                                                   spectrum_2016: Spectrum) -> None:
    settings = {"2015": S2015, "2016": S2016}
    spectra = {"2015": raw_spectrum_2015, "2016": spectrum_2016}
    asym = evaluate_combined(spectra, MASS, settings)
    toys = evaluate_combined(spectra, MASS, settings, method="toys", n_toys=2000, rng=np.random.default_rng(4))
    assert toys.status == "ok" and toys.method == "toys"
    # thousands of events per bin: the asymptotic formulae hold; 2000 toys leave a few % of MC error
    assert toys.eps2_up == pytest.approx(asym.eps2_up, rel=0.08)
    assert toys.eps2_up_expected[2] == pytest.approx(asym.eps2_up_expected[2], rel=0.08)


def test_combined_point_inherits_a_members_range_end_flag(raw_spectrum_2015: Spectrum,
                                                          spectrum_2016: Spectrum) -> None:
    """A search extended by hand to 125 MeV, where the 2015 window is cut by its range end (130 MeV):
    the combined row is not "ok" and its message names the dataset, as the single-dataset row's."""
    s2015 = replace(S2015, scan=replace(S2015.scan, mass_max=0.125))
    settings = {"2015": s2015, "2016": S2016}
    spectra = {"2015": raw_spectrum_2015, "2016": spectrum_2016}
    assert datasets_covering(0.125, {"2015": S2015, "2016": S2016}) == ["2016"]  # the default search ends at ~96 MeV
    single = evaluate_point(prepare_spectrum(raw_spectrum_2015, s2015), 0.125, s2015)
    assert single.status != "ok"
    result = evaluate_combined(spectra, 0.125, settings)
    assert result.datasets == "2015+2016"
    assert result.status in {"unreliable", "inconsistent"} and "2015:" in result.message
