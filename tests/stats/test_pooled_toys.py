"""Toys made in batches and pooled (:class:`PooledToyCalculator`): exactly one ensemble made of the same
toys, the statistics of one ensemble of as many toys, and a clear error where a batch lacks a tested μ."""

from __future__ import annotations

import numpy as np
import pytest

from hps_bayes.errors import ConfigError, InputError
from hps_bayes.stats import KnownBackgroundObjective, PooledToyCalculator, ToyCalculator, upper_limit
from hps_bayes.stats.limits import scan_mu_values
from hps_bayes.stats.toys import empirical_pvalue

OBJ = KnownBackgroundObjective(np.full(3, 100.0), np.array([0.2, 0.6, 0.2]))
DATA = OBJ.fit_data(np.array([95.0, 110.0, 102.0]))


def _batch_calculators(n_batches: int, n_toys: int) -> list[ToyCalculator]:
    calcs = [ToyCalculator(OBJ, DATA, n_toys=n_toys, rng=np.random.default_rng(100 + k)) for k in range(n_batches)]
    for calc in calcs:  # a batch job: the μ a toy limit tests
        upper_limit(calc, rtol=1e-3, scan=12)
    return calcs


def test_one_pooled_batch_is_its_calculator() -> None:
    (calc,) = _batch_calculators(1, 400)
    batch = calc.batch()
    pooled = PooledToyCalculator(OBJ, DATA, [batch])
    assert pooled.n_toys == 400 and batch.mu.size >= 12
    for mu in batch.mu:
        assert pooled.pvalues(mu) == calc.pvalues(mu)
        assert pooled.expected_pvalues(mu) == calc.expected_pvalues(mu)
        assert pooled.expected_errors(mu) == calc.expected_errors(mu)
    assert pooled.discovery() == calc.discovery()
    ours, theirs = upper_limit(pooled, rtol=1e-3, scan=12), upper_limit(calc, rtol=1e-3, scan=12)
    assert ours.mu_up == theirs.mu_up and ours.mu_up_expected == theirs.mu_up_expected
    assert ours.mu_up_expected_error == theirs.mu_up_expected_error
    # CLs and its error at the limit come from the nearest tested μ: here the limit itself, which the batch tested
    assert ours.mu_up_error == theirs.mu_up_error and ours.cls_at_limit == theirs.cls_at_limit


def test_pooled_batches_stack_the_toys() -> None:
    calcs = _batch_calculators(3, 300)
    batches = [c.batch() for c in calcs]
    pooled = PooledToyCalculator(OBJ, DATA, batches)
    assert pooled.n_toys == 900 and pooled.n_batches == 3
    common = [mu for mu in batches[0].mu if all(np.isclose(b.mu, mu, rtol=1e-12).any() for b in batches)]
    assert len(common) >= 12  # the scan's μ; a batch's own extensions are not in the others
    for mu in common[::3]:
        sb = np.concatenate([c.distributions(mu)[0] for c in calcs])
        b = np.concatenate([c.distributions(mu)[1] for c in calcs])
        q = calcs[0].teststat(mu)
        pv = pooled.pvalues(mu)
        assert pv.clsb == empirical_pvalue(sb, q) and pv.clb == empirical_pvalue(b, q) and pv.n_toys == 900
    q0 = pooled.discovery().q0
    n_above = sum(int(np.count_nonzero(b.q0 >= q0 - 1e-6)) for b in batches)
    assert pooled.discovery().p0 == n_above / 900


def test_pooled_limit_agrees_with_one_ensemble_of_as_many_toys() -> None:
    pooled = PooledToyCalculator(OBJ, DATA, [c.batch() for c in _batch_calculators(4, 1000)])
    ours = upper_limit(pooled, rtol=1e-3, scan=12)
    one = upper_limit(ToyCalculator(OBJ, DATA, n_toys=4000, rng=np.random.default_rng(7)), rtol=1e-3, scan=12)
    assert ours.converged and ours.n_toys == 4000
    assert abs(ours.mu_up - one.mu_up) < 3 * np.hypot(ours.mu_up_error, one.mu_up_error)
    for n in range(1, 5):  # the -2 sigma limit needs ~10k toys to be resolved
        assert abs(ours.mu_up_expected[n] - one.mu_up_expected[n]) < 3 * np.hypot(
            ours.mu_up_expected_error[n], one.mu_up_expected_error[n])


def test_a_mu_some_batch_did_not_test_is_refused() -> None:
    calcs = _batch_calculators(2, 200)
    calcs[1].pvalues(123.0)  # only batch 1 tests it
    pooled = PooledToyCalculator(OBJ, DATA, [c.batch() for c in calcs])
    with pytest.raises(InputError, match=r"mu = 123 was not tested by every one of the 2 toy batches"):
        pooled.pvalues(123.0)
    with pytest.raises(ConfigError, match="at least one ToyBatch"):
        PooledToyCalculator(OBJ, DATA, [])


@pytest.mark.parametrize("method", ["cls", "pl", "pcl"])
def test_scan_mu_values_are_what_the_pooled_search_needs(method: str) -> None:
    """Batches that test scan_mu_values (as a band batch job does) give the pooled search every μ it asks for,
    for CLs and for the one-sided limits (whose search extends to its floor)."""
    calcs = [ToyCalculator(OBJ, DATA, n_toys=500, rng=np.random.default_rng(200 + k)) for k in range(3)]
    for calc in calcs:
        for mu in scan_mu_values(calc, scan=12, method=method):  # type: ignore[arg-type]
            calc.distributions(mu)
    pooled = PooledToyCalculator(OBJ, DATA, [c.batch() for c in calcs])
    limit = upper_limit(pooled, rtol=1e-3, scan=12, method=method)  # type: ignore[arg-type]
    assert limit.converged, limit.message
    # 12 scan values and two above; below two more (CLs) or the one-sided search's floor
    assert len(pooled.batch().mu) == (16 if method == "cls" else 15)
