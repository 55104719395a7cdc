"""The root finders of the limit searches: secant steps settle smooth monotone curves to far below
their step tolerance, and hand over (None) where a curve is not monotone or the target is near 0."""

from __future__ import annotations

import pytest

from hps_bayes.stats.roots import solve_bracketed, solve_increasing, solve_secant


def test_solve_increasing_settles_a_slowly_varying_sigma() -> None:
    """s(μ) = μ/σ(μ) with σ = 2 + 0.01 μ, as √q_{μ,A} with a slowly growing σ_A: the root of s = 1.5 is
    μ = 3/0.985; the step tolerance 1e-4 leaves an error of the order of the step squared."""
    root = solve_increasing(lambda mu: mu / (2.0 + 0.01 * mu), 1.5, 2.0, rtol=1e-4)
    assert root == pytest.approx(3.0 / 0.985, rel=3e-9)  # measured: 2.0e-9
    assert solve_increasing(lambda mu: -mu, 1.0, 1.0, rtol=1e-4) is None  # decreasing: bracket instead
    assert solve_increasing(lambda mu: mu, 0.01, 1.0, rtol=1e-4) is None  # target near 0: bracket instead


def test_solve_secant_agrees_with_brent_and_hands_over() -> None:
    def f(mu: float) -> float:
        return 1.0 - mu / 3.0 + 0.01 * (mu - 3.0) ** 2  # decreasing near its root 3

    root = solve_secant(f, 2.0, 3.0, rtol=1e-4)
    brent, why = solve_bracketed(f, 2.0, rtol=1e-12, what="test")
    assert why == "" and root == pytest.approx(3.0, rel=1e-9) and brent == pytest.approx(3.0, rel=1e-11)
    assert solve_secant(lambda mu: mu - 3.0, 2.0, 3.0, rtol=1e-4) is None  # increasing: bracket instead
    assert solve_secant(lambda mu: 0.5 - mu, 1.0, 1.0, rtol=1e-4, floor=0.6) == 0.0  # excluded at the floor
    assert solve_secant(lambda mu: 2.0 - mu, 2.0, 1.0, rtol=1e-4) == 2.0  # the guess is the root
