"""Toys of one mass point made in batches by separate jobs, pooled into one toy calculator.

Each batch job runs a :class:`~hps_bayes.stats.toys.ToyCalculator` on its own random stream and keeps
its test statistics at the tested μ (:meth:`~hps_bayes.stats.toys.ToyCalculator.batch`); here they
are stacked, so that the p-values, bands and Monte Carlo errors are those of one calculator holding
all the toys.  Nothing is drawn or fitted but the observed data's fits.
"""

from __future__ import annotations

import numpy as np

from hps_bayes.core import FitData, FloatArray
from hps_bayes.errors import ConfigError, InputError
from hps_bayes.fit.protocol import BatchObjective
from hps_bayes.stats.calculators import AsymptoticCalculator, _check_mu
from hps_bayes.stats.toys import ToyBatch, ToyCalculator

__all__ = ["MU_MATCH_RTOL", "PooledToyCalculator"]

#: Two tested μ of different batches are the same where they agree to this relative tolerance (each batch
#: job computes the μ from the same observed fits; the last bits may differ between machines).
MU_MATCH_RTOL = 1e-9


class PooledToyCalculator(ToyCalculator):
    """The toys of several :class:`ToyBatch` of one mass point, stacked: a toy calculator with all of them.

    Every batch must come from the same observed data and settings (a batch job's ToyCalculator on
    this ``objective`` and ``data``, with its own random stream).  At a μ that every batch tested, the
    s+b and background-only q̃μ of all batches are stacked, so the p-values, the expected band, their
    Monte Carlo errors and the toy p0 are those of one ensemble of ``sum(n)`` toys made of the same
    toys.  A μ that some batch did not test cannot be used: :meth:`distributions` raises
    :class:`~hps_bayes.errors.InputError` naming it (the limit search then fails at that mass with the
    reason).  Nothing is drawn or fitted here but the observed data's fits.
    """

    def __init__(self, objective: BatchObjective, data: FitData, batches: list[ToyBatch], *,
                 init: FloatArray | None = None) -> None:
        if not batches:
            raise ConfigError("PooledToyCalculator needs at least one ToyBatch; make the batches first "
                              "(ToyCalculator.batch())")
        self._objective = objective
        self._asym = AsymptoticCalculator(objective, data, init=init)
        self._shared = True
        self._n_toys = sum(b.n_toys for b in batches)
        self._b_q0 = np.concatenate([b.q0 for b in batches])
        self._failures = {}
        for b in batches:
            for what, n in b.failures.items():
                self._failures[what] = self._failures.get(what, 0) + int(n)
        self._sb, self._b_at_mu = {}, {}
        for mu in batches[0].mu:
            rows = [np.flatnonzero(np.isclose(b.mu, mu, rtol=MU_MATCH_RTOL, atol=0.0)) for b in batches]
            if all(r.size for r in rows):
                self._sb[float(mu)] = np.concatenate([b.sb[r[0]] for b, r in zip(batches, rows, strict=True)])
                self._b_at_mu[float(mu)] = np.concatenate([b.b[r[0]] for b, r in zip(batches, rows, strict=True)])
        self._n_batches = len(batches)
        self._tested = np.array(sorted(self._sb))  # the μ every batch tested

    @property
    def n_batches(self) -> int:
        return self._n_batches

    def nearest_tested(self, mu: float) -> float:
        """The μ tested by every batch nearest to ``mu``: where :func:`~hps_bayes.stats.upper_limit` takes
        CLs and its Monte Carlo error at the limit (``cls_at_limit``, the limit's error)."""
        tested = self._tested
        return float(tested[np.argmin(np.abs(tested - mu))]) if tested.size else float(mu)

    def distributions(self, mu: float) -> tuple[FloatArray, FloatArray]:
        """q̃μ of all batches' s+b and background-only toys at ``mu`` (a μ every batch tested)."""
        mu = _check_mu(mu)
        tested = self._tested
        match = np.flatnonzero(np.isclose(tested, mu, rtol=MU_MATCH_RTOL, atol=0.0))
        if match.size == 0:
            listed = ", ".join(f"{m:.6g}" for m in tested) or "none"
            raise InputError(f"mu = {mu:.6g} was not tested by every one of the {self._n_batches} toy batches "
                             f"(tested by all: {listed}); the pooled limit needs it: make the batches again with "
                             "the same settings, or give more toys per batch")
        key = float(tested[match[0]])
        return self._sb[key], self._b_at_mu[key]
