"""Ask/tell active learner over a box: a Gaussian-process surrogate and an acquisition function.

The objective's box is mapped to the unit cube (after a log transform of the axes named in
``log_axes``), where the surrogate (:mod:`hps_bayes.active.surrogate`: GP with hyperparameters
fitted on at most ``max_fit`` points, the posterior conditioned on every finite value told) and
the acquisition (:mod:`hps_bayes.active.acquisition`, maximised over a dense scrambled-Sobol
candidate set or the candidates given) choose the next points.  Batches of q > 1 are filled with
the hyperparameters fixed: for a contour by default by stepwise uncertainty reduction
(:func:`~hps_bayes.active.acquisition.sur_batch`); ``batch="auto"`` turns to the Kriging believer
once the contour is located.

Non-finite values (failed evaluations) are kept in the history, left out of
the fit, and their points are never proposed again.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from scipy.special import ndtr
from scipy.stats import qmc

from hps_bayes.active.acquisition import (
    CONTOUR,
    Acquisition,
    acquisition_values,
    believer_batch,
    maximin_design,
    sur_batch,
)
from hps_bayes.active.surrogate import Posterior, fit_hyperparameters
from hps_bayes.core import FloatArray
from hps_bayes.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["CONTOUR", "Acquisition", "ActiveLearner", "Prediction", "acquisition_values"]


@dataclass(frozen=True)
class Prediction:
    """Latent posterior of the surrogate at some points (original units in ``points``)."""

    points: FloatArray
    mean: FloatArray
    std: FloatArray


class ActiveLearner:
    """Ask/tell active learning over a box of parameters.

    Parameters
    ----------
    bounds : sequence of (low, high)
        The box, one pair per axis, in the objective's own units.
    log_axes : sequence of bool or int, optional
        Axes to model in log10 (bools, one per axis, or the axis indices); they need low > 0.
    acquisition : {"straddle", "misclassification", "entropy", "pi", "ei", "ucb"}
        Contour acquisitions need ``threshold``; the others look for the maximum
        (the minimum with ``maximize=False``).
    threshold : float, optional
        Contour level t.
    rng : numpy.random.Generator
        Source of randomness (candidates, initial design, restarts).
    candidates : int or array (n, d), optional
        Number of scrambled-Sobol candidates in the box (default 1024·d, at most
        8192) or explicit candidate points in the objective's units.
    n_init : int, optional
        Space-filling points asked before the surrogate is used (default 5·d).
    noise : bool
        Fit a white-noise term (nugget; a tiny floor keeps it there for deterministic values too).
    max_fit : int
        Most points used to fit the hyperparameters (the posterior uses all).
    n_restarts : int
        Random optimizer restarts of every hyperparameter fit (besides the default start).
    lengthscale_prior : (median, width) or None
        A log-normal prior on every lengthscale (unit-cube units; ``width`` the sd of ln ℓ): the
        hyperparameters are the posterior mode (MAP) instead of the maximum-likelihood values, which on
        10–20 points often put one lengthscale at its bound (a surface flat along that axis).  Default
        (0.3, 1.0): ℓ within a factor e of 0.3 at 1 sd.  ``None``: maximum likelihood.
    batch : {"auto", "sur", "believer-sur", "believer"}
        How a contour acquisition fills a batch of q > 1: ``"sur"`` (default) takes each point to
        lower the expected summed misclassification probability most given the earlier ones
        (:func:`~hps_bayes.active.acquisition.sur_batch`; ``"believer-sur"``: the same with the mean held fixed);
        ``"believer"`` takes the largest acquisition again after each believed point;
        ``"auto"``: ``"sur"`` while the estimated misclassified fraction
        (:meth:`misclassified_fraction`) is above ``sur_until``, ``"believer"`` once it is below.  SUR
        places a batch best while the contour is still to be found (after the initial design: 1.9%
        misclassified after one batch of 10, against 3.0% for the believer); once the contour is
        located, points on it, where the acquisition is largest, correct the surrogate more than
        SUR's, which counts on the surrogate's own variance.  So ``"auto"`` is more accurate for a
        given number of evaluations, but SUR lowers the estimate the stopping rule reads, which
        therefore stops sooner with ``"sur"`` (benchmarks/bench_active.py, README).
        q = 1 and the extremum acquisitions always use the acquisition itself with the believer.
    sur_until : float
        The estimated misclassified fraction below which ``batch="auto"`` turns from SUR to the believer.
    prior_mean : float, optional
        The GP's prior mean in the objective's units: far from every point the surrogate returns to it.
        ``None`` (default): the mean of the values told.  For a capped target such as the wedge's
        min(log10(A_up/N), cap), the cap says "not excluded" where nothing was evaluated, while the mean
        of the values, pulled down by the points chosen near the contour, puts the surrogate near the
        threshold there and spends evaluations in empty regions.

    Examples
    --------
    >>> learner = ActiveLearner([(0.0, 1.0)], acquisition="ei", rng=np.random.default_rng(1), n_init=3)
    >>> x = learner.ask(3); learner.tell(x, -(x[:, 0] - 0.3) ** 2)
    >>> learner.ask(1).shape
    (1, 1)
    """

    def __init__(self, bounds: Sequence[Sequence[float]], *, log_axes: Sequence[bool] | Sequence[int] = (),
                 acquisition: Acquisition = "straddle", threshold: float | None = None,
                 rng: np.random.Generator, candidates: int | FloatArray | None = None, n_init: int | None = None,
                 maximize: bool = True, noise: bool = True, max_fit: int = 300, n_restarts: int = 2,
                 xi: float = 0.0, kappa: float = 2.0, calibrate: bool = True,
                 batch: Literal["auto", "sur", "believer-sur", "believer"] = "sur", sur_until: float = 0.02,
                 prior_mean: float | None = None,
                 lengthscale_prior: tuple[float, float] | None = (0.3, 1.0)) -> None:
        self.bounds = np.asarray(bounds, dtype=np.float64).reshape(-1, 2)
        self.dim = len(self.bounds)
        self.log_axes = _log_mask(log_axes, self.dim)
        _check_box(self.bounds, self.log_axes)
        if acquisition not in get_args(Acquisition):
            raise ConfigError(f"acquisition={acquisition!r} is not known; choose one of {list(get_args(Acquisition))}")
        if acquisition in CONTOUR and threshold is None:
            raise ConfigError(f"acquisition={acquisition!r} finds a contour: give its level, e.g. threshold=0.0")
        self.acquisition, self.threshold, self.maximize = acquisition, threshold, maximize
        self.rng, self.noise, self.max_fit, self.n_restarts = rng, noise, max_fit, n_restarts
        self.xi, self.kappa, self.calibrate = xi, kappa, calibrate
        if batch not in ("auto", "sur", "believer-sur", "believer"):
            raise ConfigError(f"batch={batch!r} is not known; choose 'auto', 'sur', 'believer-sur' or 'believer'")
        if not 0.0 < sur_until < 1.0:
            raise ConfigError(f"sur_until={sur_until!r} is a misclassified fraction: give a value in (0, 1), e.g. 0.02")
        self.batch, self.sur_until = batch, float(sur_until)
        if prior_mean is not None and not math.isfinite(float(prior_mean)):
            raise ConfigError(f"prior_mean={prior_mean!r} must be a finite number (objective units) or None")
        self.prior_mean = None if prior_mean is None else float(prior_mean)
        if lengthscale_prior is not None:
            values = tuple(float(v) for v in lengthscale_prior)
            if len(values) != 2 or not (values[0] > 0 and values[1] > 0):
                raise ConfigError(f"lengthscale_prior={list(lengthscale_prior)}: give [median, width of ln], both > 0, "
                                  f"or None for maximum likelihood")
            lengthscale_prior = (values[0], values[1])
        self.lengthscale_prior = lengthscale_prior
        self.n_init = 5 * self.dim if n_init is None else int(n_init)
        self._cand_u = self._make_candidates(candidates)
        self.x_u = np.empty((0, self.dim))
        self.y = np.empty(0)
        self.iteration = np.empty(0)
        self._gp: object | None = None
        self._post: Posterior | None = None
        self._scale_cache: float | None = None

    # ------------------------------------------------------------------ coordinates
    def to_unit(self, points: FloatArray) -> FloatArray:
        """Map points (n, d) in the objective's units to the unit cube of the surrogate."""
        x = np.array(points, dtype=np.float64).reshape(-1, self.dim)
        lo, hi = self.bounds[:, 0].copy(), self.bounds[:, 1].copy()
        la = self.log_axes
        x[:, la], lo[la], hi[la] = np.log10(x[:, la]), np.log10(lo[la]), np.log10(hi[la])
        return (x - lo) / (hi - lo)

    def from_unit(self, u: FloatArray) -> FloatArray:
        """Inverse of :meth:`to_unit`."""
        u = np.asarray(u, dtype=np.float64).reshape(-1, self.dim)
        lo, hi = self.bounds[:, 0].copy(), self.bounds[:, 1].copy()
        la = self.log_axes
        lo[la], hi[la] = np.log10(lo[la]), np.log10(hi[la])
        x = lo + u * (hi - lo)
        x[:, la] = 10.0 ** x[:, la]
        return x

    def _make_candidates(self, candidates: int | FloatArray | None) -> FloatArray:
        if candidates is not None and not np.isscalar(candidates):
            return np.clip(self.to_unit(np.asarray(candidates, dtype=np.float64)), 0.0, 1.0)
        n = int(candidates) if candidates is not None else min(1024 * self.dim, 8192)
        m = max(1, math.ceil(math.log2(max(n, 2))))
        sobol = qmc.Sobol(self.dim, scramble=True, seed=self.rng)
        return np.asarray(sobol.random_base2(m)[:n], dtype=np.float64)

    @property
    def candidates(self) -> FloatArray:
        """The candidate points in the objective's units."""
        return self.from_unit(self._cand_u)

    # ------------------------------------------------------------------ history
    @property
    def points(self) -> FloatArray:
        """Every point told (failed ones included), in the objective's units."""
        return self.from_unit(self.x_u)

    @property
    def n_told(self) -> int:
        return len(self.y)

    @property
    def n_finite(self) -> int:
        return int(np.isfinite(self.y).sum())

    def tell(self, points: FloatArray, values: Sequence[float] | FloatArray, *,
             iteration: Sequence[int] | FloatArray | None = None) -> None:
        """Add evaluated points (n, d) and their values (NaN/inf: failed; kept, not fitted) and refit.

        ``iteration`` labels the points (default: the number of ``tell`` calls so far, from 1).
        """
        u = self.to_unit(points)
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        if len(v) != len(u):
            raise ConfigError(f"tell got {len(u)} points but {len(v)} values; give one value per point")
        finite = np.isfinite(v)
        label = np.full(len(v), (self.iteration.max() + 1) if len(self.iteration) else 1.0)
        self.iteration = np.concatenate([self.iteration, label if iteration is None else np.asarray(iteration, float)])
        self.x_u = np.vstack([self.x_u, u])
        self.y = np.concatenate([self.y, v])
        if (~finite).any():
            log.warning("%d failed evaluation(s) (non-finite values) recorded; their points are not asked again",
                        int((~finite).sum()))
        self._refit()

    # ------------------------------------------------------------------ surrogate
    def _refit(self) -> None:
        self._scale_cache = None
        ok = np.isfinite(self.y)
        if ok.sum() < max(2, min(self.n_init, 3)):
            self._post = None
            return
        x, y = self.x_u[ok], self.y[ok]
        self._gp = fit_hyperparameters(x, y, self._fit_subset(x, y), previous=self._gp, noise=self.noise,
                                        n_restarts=self.n_restarts, rng=self.rng, prior=self.lengthscale_prior,
                                        offset=self.prior_mean)
        self._post = Posterior(self._gp, x, y, offset=self.prior_mean)

    def _fit_subset(self, x: FloatArray, y: FloatArray) -> np.ndarray:
        """Indices of at most ``max_fit`` points for the hyperparameter fit: half the most relevant, half random."""
        n = len(y)
        if n <= self.max_fit:
            return np.arange(n)
        if self.threshold is not None and self.acquisition in CONTOUR:
            score = np.abs(y - self.threshold)
        else:
            score = -y if self.maximize else y
        near = np.argsort(score, kind="stable")[: self.max_fit // 2]
        rest = np.setdiff1d(np.arange(n), near)
        return np.concatenate([near, self.rng.choice(rest, self.max_fit - len(near), replace=False)])

    def predict(self, points: FloatArray) -> Prediction:
        """Latent posterior mean and standard deviation at ``points`` (objective units)."""
        if self._post is None:
            raise ConfigError(f"the surrogate needs >= 3 finite values before it can predict; told {self.n_finite}")
        mean, std = self._post.predict(self.to_unit(points))
        return Prediction(np.asarray(points, dtype=np.float64).reshape(-1, self.dim), mean, std)

    @property
    def sigma_scale(self) -> float:
        """Calibration factor of σ from leave-one-out residuals at the points told nearest the contour.

        z_i = (y_i − μ₋ᵢ)/σ₋ᵢ in closed form (Rasmussen & Williams, Eq. 5.12: y_i − μ₋ᵢ = [K⁻¹y]_i/[K⁻¹]_ii,
        σ²₋ᵢ = 1/[K⁻¹]_ii, noise included) over the third of the finite points with the smallest |y − t|
        (at least 10); scale = 1.4826·median|z| clipped to [1, 30]: σ is widened where the surrogate is
        overconfident and never narrowed, so the estimate stays conservative.  1 with fewer than 10
        points, without a contour threshold, or with ``calibrate=False``.

        (Residuals of the newly chosen points, before they were told, are biased high: the
        acquisition picks them where the surrogate is least sure; the benchmark found them to scatter
        the estimate by a factor 6 against the truth, the raw estimate by a factor 2.)
        """
        post = self._post
        if not self.calibrate or post is None or self.threshold is None or len(post.x) < 10:
            return 1.0
        if self._scale_cache is not None:
            return self._scale_cache
        z = self.loo_residuals()
        y = self.y[np.isfinite(self.y)]  # the posterior's points, in order
        near = np.argsort(np.abs(y - self.threshold), kind="stable")[: max(10, len(y) // 3)]
        scale = float(np.clip(1.4826 * np.median(np.abs(z[near])), 1.0, 30.0))
        self._scale_cache = scale
        return scale

    def loo_residuals(self) -> FloatArray:
        """Standardised leave-one-out residuals (y_i − μ₋ᵢ)/σ₋ᵢ of the finite points (σ₋ᵢ with the noise),
        with the hyperparameters held fixed."""
        return np.empty(0) if self._post is None else self._post.loo_residuals()

    def misclassified_fraction(self, points: FloatArray | None = None, *, calibrated: bool = True) -> float:
        """The surrogate's own estimate of the misclassified fraction, mean Φ(−|μ − t|/σ), over the candidates.

        The latent posterior's probability that the sign of g − t at a point differs from that of μ − t,
        averaged over the candidates (uniform in the unit cube, like a regular truth grid).
        ``calibrated=True`` scales σ by :attr:`sigma_scale` (≥ 1).  Against the 60×60 truth grid of the
        wedge (benchmarks/bench_active.py) it overestimates the truth by about 1.6× on average.
        """
        if self.threshold is None:
            raise ConfigError("misclassified_fraction needs a contour threshold")
        if self._post is None:
            return 1.0
        u = self._cand_u if points is None else self.to_unit(points)
        mean, std = self._post.predict(u)
        scale = self.sigma_scale if calibrated else 1.0
        return float(np.mean(ndtr(-np.abs(mean - self.threshold) / np.maximum(scale * std, 1e-12))))

    # ------------------------------------------------------------------ ask
    def ask(self, q: int = 1) -> FloatArray:
        """The next ``q`` points to evaluate (q, d), in the objective's units."""
        if q < 1:
            raise ConfigError(f"ask(q={q}): q must be >= 1")
        free = self._free_candidates()
        if self._post is None or self.n_finite < self.n_init:
            return self.from_unit(maximin_design(self._cand_u[free], self.x_u, q, rng=self.rng))
        if len(free) == 0:
            raise ConfigError("every candidate point has been evaluated; give more candidates")
        return self.from_unit(self._batch(self._cand_u[free], q))

    def _free_candidates(self) -> np.ndarray:
        """Indices of candidates not yet told (successful or failed)."""
        if not len(self.x_u):
            return np.arange(len(self._cand_u))
        from scipy.spatial import cKDTree

        dist, _ = cKDTree(self.x_u).query(self._cand_u, k=1)
        return np.flatnonzero(dist > 1e-9)

    def _best(self) -> float:
        ok = np.isfinite(self.y)
        return float(np.max(self.y[ok]) if self.maximize else -np.min(self.y[ok]))

    def _batch(self, pool: FloatArray, q: int) -> FloatArray:
        """q points of ``pool`` with fixed hyperparameters: SUR or the Kriging believer (``batch``)."""
        assert self._post is not None
        rule = self.batch_rule() if q > 1 and self.acquisition in CONTOUR else "believer"
        if rule in ("sur", "believer-sur"):
            assert self.threshold is not None
            return pool[sur_batch(self._post, pool, q, acquisition=self.acquisition, threshold=self.threshold,
                                  exact=rule == "sur")]
        return pool[believer_batch(self._post, pool, q, acquisition=self.acquisition, threshold=self.threshold,
                                   best=self._best(), maximize=self.maximize, xi=self.xi, kappa=self.kappa)]

    def batch_rule(self) -> str:
        """The rule the next contour batch is filled by: ``batch``, with ``"auto"`` resolved (``sur_until``)."""
        if self.batch != "auto":
            return self.batch
        return "sur" if self.misclassified_fraction() > self.sur_until else "believer"

    def best_value(self) -> float:
        """The best finite value told (largest, or smallest with ``maximize=False``)."""
        ok = np.isfinite(self.y)
        return float(np.max(self.y[ok]) if self.maximize else np.min(self.y[ok]))

    def best_point(self) -> FloatArray:
        """The point of :meth:`best_value`, in the objective's units."""
        y = np.where(np.isfinite(self.y), self.y if self.maximize else -self.y, -np.inf)
        return self.from_unit(self.x_u[int(np.argmax(y))])[0]

    def max_expected_improvement(self) -> tuple[float, float]:
        """(largest EI over the free candidates, spread max − min of the finite values)."""
        assert self._post is not None
        free = self._free_candidates()
        ok = self.y[np.isfinite(self.y)]
        spread = float(ok.max() - ok.min()) or 1.0
        if not len(free):
            return 0.0, spread
        mean, std = self._post.predict(self._cand_u[free])
        sign = 1.0 if self.maximize else -1.0
        ei = acquisition_values("ei", sign * mean, std, best=self._best(), xi=self.xi)
        return float(np.max(ei)), spread

    def state(self) -> dict[str, float]:
        """Diagnostics of the current surrogate (kernel hyperparameters, calibration)."""
        info: dict[str, float] = {"n_told": self.n_told, "n_finite": self.n_finite, "sigma_scale": self.sigma_scale}
        if self._post is not None:
            info["noise_std"] = math.sqrt(self._post.noise_var) * self._post.y_std
            for i, ls in enumerate(np.atleast_1d(self._post.lengthscale)):
                info[f"lengthscale_{i}"] = float(ls)
        return info


# ---------------------------------------------------------------------------- helpers
def _log_mask(log_axes: Sequence[bool] | Sequence[int], dim: int) -> np.ndarray:
    values = list(log_axes)
    if values and all(isinstance(v, (bool, np.bool_)) for v in values):
        if len(values) != dim:
            raise ConfigError(f"log_axes has {len(values)} flags for {dim} axes; give one per axis")
        return np.asarray(values, dtype=bool)
    mask = np.zeros(dim, dtype=bool)
    for i in values:
        if not 0 <= int(i) < dim:
            raise ConfigError(f"log_axes index {i} is outside 0..{dim - 1}")
        mask[int(i)] = True
    return mask


def _check_box(bounds: FloatArray, log_axes: np.ndarray) -> None:
    if bounds.size == 0 or not np.all(np.isfinite(bounds)) or np.any(bounds[:, 0] >= bounds[:, 1]):
        raise ConfigError(f"bounds must be finite (low, high) pairs with low < high, got {bounds.tolist()}")
    if np.any(bounds[log_axes, 0] <= 0):
        raise ConfigError(f"a log axis needs low > 0, got bounds {bounds.tolist()} with log_axes {log_axes.tolist()}")

