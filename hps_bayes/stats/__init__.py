"""Statistics layer: test statistics, calculators, CLs limits (arXiv:1007.1727).

Built only on :mod:`hps_bayes.fit`: ``teststat`` (q0, q̃μ from fits) →
``asymptotics`` (the formulae) → ``calculators`` and ``toys`` (asymptotic and toy-based, one :class:`Calculator`
interface) → ``limits`` (hypotest; CLs, one-sided and power-constrained upper limits
with expected bands) →
``simple`` (a known-background model and :func:`cls_upper_limit`).
"""

from hps_bayes.stats.calculators import (
    AsymptoticCalculator,
    Calculator,
    Discovery,
    PValues,
    asymptotic_pvalues,
    expected_cls,
    expected_clsb,
)
from hps_bayes.stats.limits import (
    LIMIT_METHODS,
    HypoTestResult,
    LimitMethod,
    UpperLimit,
    eq89_expected_limits,
    hypotest,
    upper_limit,
)
from hps_bayes.stats.pooled import PooledToyCalculator
from hps_bayes.stats.simple import KnownBackgroundObjective, cls_upper_limit, known_background_sigma
from hps_bayes.stats.teststat import fit_fixed, fit_free, q0, q0_from_fits, q_mu_tilde, q_mu_tilde_from_fits
from hps_bayes.stats.toys import (
    ToyBatch,
    ToyCalculator,
    ToyEnsemble,
    draw_toys,
    empirical_pvalue,
)

__all__ = [
    "LIMIT_METHODS",
    "AsymptoticCalculator",
    "Calculator",
    "Discovery",
    "HypoTestResult",
    "KnownBackgroundObjective",
    "LimitMethod",
    "PValues",
    "PooledToyCalculator",
    "ToyBatch",
    "ToyCalculator",
    "ToyEnsemble",
    "UpperLimit",
    "asymptotic_pvalues",
    "cls_upper_limit",
    "draw_toys",
    "empirical_pvalue",
    "eq89_expected_limits",
    "expected_cls",
    "expected_clsb",
    "fit_fixed",
    "fit_free",
    "hypotest",
    "known_background_sigma",
    "q0",
    "q0_from_fits",
    "q_mu_tilde",
    "q_mu_tilde_from_fits",
    "upper_limit",
]
