"""Acquisition functions and the batch rules (Kriging believer, SUR on the misclassification) of the learner.

Acquisitions (maximised over a dense scrambled-Sobol candidate set, or the
candidates given), with μ, σ the latent posterior mean and standard deviation:

- ``straddle`` (Bryan et al., NIPS 2005): 1.96σ − |μ − t|
- ``misclassification``: Φ(−|μ − t|/σ);  ``entropy``: H(p), p = Φ((μ − t)/σ)
- ``pi``: Φ((μ − f* − ξ)/σ);  ``ei``: (μ − f* − ξ)Φ(z) + σφ(z), z = (μ − f* − ξ)/σ
  (Jones, Schonlau, Welch 1998, Eq. 15);  ``ucb``: μ + κσ (Srinivas et al. 2010)
  — for a maximum (``maximize=False`` turns them to a minimum).

A batch of q points is filled with the hyperparameters fixed, by rank-one variance updates of
the surrogate's posterior (:mod:`hps_bayes.active.surrogate`): :func:`believer_batch` takes the
largest acquisition again after each believed point; for a contour, :func:`sur_batch` takes each
point to lower the summed misclassification probability most.  Before the surrogate is used,
:func:`maximin_design` spreads the first points over the candidates.

>>> acquisition_values("straddle", np.array([0.0, 1.0]), np.array([1.0, 1.0]), threshold=0.0).round(2).tolist()
[1.96, 0.96]
"""

from __future__ import annotations

import math
from typing import Literal, get_args

import numpy as np
from scipy.linalg import solve_triangular
from scipy.special import ndtr

from hps_bayes.active.surrogate import Posterior
from hps_bayes.core import FloatArray
from hps_bayes.errors import ConfigError

Acquisition = Literal["straddle", "misclassification", "entropy", "pi", "ei", "ucb"]
CONTOUR: frozenset[str] = frozenset({"straddle", "misclassification", "entropy"})
_SQRT2PI = math.sqrt(2.0 * math.pi)


def acquisition_values(kind: Acquisition, mean: FloatArray, std: FloatArray, *, threshold: float | None = None,
                       best: float = -np.inf, xi: float = 0.0, kappa: float = 2.0) -> FloatArray:
    """The acquisition ``kind`` at points with posterior mean ``mean`` and std ``std`` (module docstring)."""
    s = np.maximum(std, 1e-12)
    if kind in CONTOUR:
        if threshold is None:
            raise ConfigError(f"acquisition {kind!r} needs a threshold (the contour level), e.g. threshold=0")
        gap = np.abs(mean - threshold)
        if kind == "straddle":
            return np.asarray(1.96 * std - gap)
        if kind == "misclassification":
            return np.asarray(ndtr(-gap / s))
        p = np.clip(ndtr((mean - threshold) / s), 1e-300, 1 - 1e-16)
        return np.asarray(-(p * np.log(p) + (1 - p) * np.log1p(-p)))
    improvement = mean - best - xi
    z = improvement / s
    if kind == "pi":
        return np.asarray(ndtr(z))
    if kind == "ei":
        return np.asarray(improvement * ndtr(z) + s * np.exp(-0.5 * z * z) / _SQRT2PI)
    if kind == "ucb":
        return np.asarray(mean + kappa * std)
    raise ConfigError(f"acquisition={kind!r} is not known; choose one of {list(get_args(Acquisition))}")


def believer_batch(post: Posterior, pool: FloatArray, q: int, *, acquisition: Acquisition,
                   threshold: float | None, best: float, maximize: bool, xi: float, kappa: float) -> np.ndarray:
    """Indices into ``pool`` (unit cube) of q points by Kriging believer: the largest acquisition, then
    again after each believed point (rank-one variance updates, the mean unchanged).  ``best``: the best
    value so far, sign-flipped when minimising."""
    mean, var, cross = post.predict_joint(pool)
    sign = 1.0 if maximize else -1.0
    chosen: list[int] = []
    updates: list[FloatArray] = []
    for _ in range(min(q, len(pool))):
        std = np.sqrt(np.maximum(var, 0.0)) * post.y_std
        acq = acquisition_values(acquisition, sign * mean, std, threshold=threshold, best=best, xi=xi, kappa=kappa)
        acq[chosen] = -np.inf
        j = int(np.argmax(acq))
        chosen.append(j)
        c = cross(j) - sum((w * w[j] for w in updates), np.zeros(len(pool)))
        w = c / math.sqrt(max(var[j], 0.0) + post.noise_var + 1e-12)
        updates.append(w)
        var = var - w * w
    return np.asarray(chosen, dtype=int)


def sur_batch(post: Posterior, pool: FloatArray, q: int, *, acquisition: Acquisition, threshold: float,
              shortlist: int = 256, exact: bool = True) -> np.ndarray:
    """Indices into ``pool`` of q points for a contour by greedy multi-point stepwise uncertainty reduction.

    SUR on the misclassification probability (Bect et al., Stat. Comput. 22, 2012; Chevalier et al.,
    Technometrics 56, 2014), with fixed hyperparameters.  At a pool point x with gap a = |μ − t|,
    current variance s², and variance s_B² once a batch B is observed (rank-one updates), the future
    mean is normal with variance γ² = s² − s_B², so the expected misclassification probability after
    B is exactly

        E[Φ(−|μ_B − t|/s_B)] = 2·T(a/s, s_B/γ)          (T: Owen's T function),

    which is Φ(−a/s) for γ → 0 and 0 for s_B → 0.  Each batch point is the one of the ``shortlist``
    candidates of largest acquisition that, added to the points already in the batch, lowers
    Σ_x 2T(a/s, s_B/γ) most (``exact=False``: Σ_x Φ(−a/s_B) instead, the mean held at μ).
    The sum runs over the pool points whose misclassification probability is not negligible.
    """
    from scipy.special import owens_t

    mean, var0, _ = post.predict_joint(pool)
    gap = np.abs(mean - threshold) / post.y_std  # in units of the normalised target
    std0 = np.sqrt(np.maximum(var0, 1e-300))
    acq = acquisition_values(acquisition, mean, std0 * post.y_std, threshold=threshold)
    short = np.argsort(-acq, kind="stable")[: min(shortlist, len(pool))]
    base0 = ndtr(-gap / std0)
    rows = np.flatnonzero(base0 > 1e-6 * max(float(base0.max()), 1e-300))
    rows = np.union1d(rows, short)
    v_all = solve_triangular(post.chol, post.signal(pool[rows], post.x).T, lower=True)
    v_short = solve_triangular(post.chol, post.signal(pool[short], post.x).T, lower=True)
    cov = np.asarray(post.signal(pool[rows], pool[short])) - v_all.T @ v_short  # (rows, k)
    pos = np.searchsorted(rows, short)  # shortlist positions among the rows
    var = var0[rows].copy()
    h = (gap / std0)[rows][:, None]
    v0 = var0[rows][:, None]
    chosen: list[int] = []
    taken: list[int] = []
    for _ in range(min(q, len(short))):
        denom = np.maximum(var[pos], 0.0) + post.noise_var + 1e-12
        new_var = np.maximum(var[:, None] - cov**2 / denom[None, :], 1e-300)
        if exact:
            gamma = np.sqrt(np.maximum(v0 - new_var, 1e-300))
            future = 2.0 * owens_t(h, np.sqrt(new_var) / gamma)
        else:
            future = ndtr(-h * np.sqrt(v0 / new_var))
        score = np.sum(future, axis=0)
        score[taken] = np.inf
        k = int(np.argmin(score))
        taken.append(k)
        chosen.append(int(short[k]))
        w = cov[:, k] / math.sqrt(denom[k])
        var = var - w * w
        cov = cov - w[:, None] * w[pos][None, :]
    return np.asarray(chosen, dtype=int)


def maximin_design(pool: FloatArray, told: FloatArray, q: int, *, rng: np.random.Generator) -> FloatArray:
    """Space-filling points: the ``pool`` points farthest from everything ``told`` (greedy maximin; the
    first pick random when nothing was told)."""
    chosen: list[int] = []
    random_first = not len(told)
    dist = _min_dist(pool, told) if len(told) else rng.random(len(pool))  # first pick: random
    for _ in range(min(q, len(pool))):
        j = int(np.argmax(dist))
        chosen.append(j)
        step = np.linalg.norm(pool - pool[j], axis=1)
        # the random scores of the first pick are not distances: drop them once a point is chosen, so
        # that a batch of q is the same design as q single asks
        dist = step if random_first else np.minimum(dist, step)
        random_first = False
        dist[j] = -np.inf
    return pool[chosen]


def _min_dist(a: FloatArray, b: FloatArray) -> FloatArray:
    from scipy.spatial import cKDTree

    return np.asarray(cKDTree(b).query(a, k=1)[0], dtype=np.float64)
