"""A known-background counting model and the public ``cls_upper_limit``.

Model (one mass window of ``n`` bins)::

    n_i ~ Poisson(ν_i),   ν = b0 + L z + μ s,   z_j ~ N(aux_j, 1)

with s the signal template, μ the signal yield and, when a background
covariance C is given, L its Cholesky factor (C = L Lᵀ; for a diagonal C
simply ν_i = b_i + σ_i z_i).  Since the background is linear in z this is
pyhf's ``staterror`` modifier (γ_i ~ N(1, δ_i), ν_i = γ_i b_i) with
γ_i = 1 + δ_i z_i and σ_i = δ_i b_i.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import xlogy

from hps_bayes.core import FitData, FloatArray
from hps_bayes.errors import ConfigError, InputError
from hps_bayes.stats.calculators import AsymptoticCalculator
from hps_bayes.stats.limits import UpperLimit, upper_limit
from hps_bayes.stats.toys import ToyCalculator

__all__ = ["KnownBackgroundObjective", "cls_upper_limit"]


def poisson_deviance(counts: ArrayLike, expected: ArrayLike) -> float:
    """The Poisson deviance D = 2 Σ_i [μ_i − n_i + n_i ln(n_i/μ_i)] of counts n against expected μ (n_i = 0 bins
    contribute 2μ_i): the goodness of fit of a window, χ²-distributed with bins − free parameters at high counts.

    >>> poisson_deviance([10.0, 0.0], [10.0, 0.5])
    1.0
    """
    n, mu = np.asarray(counts, dtype=float), np.asarray(expected, dtype=float)
    return float(2.0 * np.sum(mu - n + xlogy(n, n) - xlogy(n, mu)))


def known_background_sigma(template: ArrayLike, background: ArrayLike) -> float:
    """σ_A of a fit with the background known, σ_A⁰ = (Σ_i T_i² / b_i)^(−1/2): the floor any
    background model's σ_A is compared with (the Fisher information of A at A = 0 in Poisson bins).

    >>> round(known_background_sigma([0.5, 0.5], [100.0, 100.0]), 3)
    14.142
    """
    b, t = _validate_model(background, template)
    return float(1.0 / np.sqrt(np.sum(t**2 / b)))


def _as_vector(name: str, values: ArrayLike) -> FloatArray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise InputError(f"{name} must be a non-empty 1-D array of per-bin values; got shape {arr.shape}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise InputError(f"{name} has non-finite values at bins {bad[:5].tolist()} "
                         f"({arr[bad[:5]].tolist()}): remove or fill those bins")
    return arr


def _validate_model(background: ArrayLike, template: ArrayLike) -> tuple[FloatArray, FloatArray]:
    b, s = _as_vector("background", background), _as_vector("template", template)
    if b.shape != s.shape:
        raise InputError(f"background has {b.size} bins but template has {s.size}: give both per bin")
    if np.any(b <= 0):
        i = int(np.flatnonzero(b <= 0)[0])
        raise InputError(f"background[{i}] = {b[i]} is not > 0: every bin needs a positive expected background")
    if np.any(s < 0):
        i = int(np.flatnonzero(s < 0)[0])
        raise InputError(f"template[{i}] = {s[i]} is negative: the signal template must be >= 0")
    if not np.any(s > 0):
        raise InputError("template is zero in every bin: no signal to test (is the window off the mass?)")
    return b, s


def _validate_counts(counts: ArrayLike, n_bins: int) -> FloatArray:
    n = _as_vector("observed", counts)
    if n.size != n_bins:
        raise InputError(f"observed has {n.size} bins but the model has {n_bins}: give counts for every bin")
    if np.any(n < 0):
        i = int(np.flatnonzero(n < 0)[0])
        raise InputError(f"observed[{i}] = {n[i]} is negative: counts must be >= 0")
    return n


class _LinearShift:
    """The background shift L z; L dense (n×k), or diagonal on bins ``index`` with widths ``sigma``."""

    def __init__(self, n_bins: int, *, dense: FloatArray | None = None,
                 index: NDArray[np.intp] | None = None, sigma: FloatArray | None = None) -> None:
        self.n_bins, self.dense = n_bins, dense
        self.index = np.zeros(0, dtype=np.intp) if index is None else index
        self.sigma = np.zeros(0) if sigma is None else sigma
        self.k = dense.shape[1] if dense is not None else self.index.size

    def apply(self, z: FloatArray) -> FloatArray:
        """L z."""
        if self.dense is not None:
            return self.dense @ z
        out = np.zeros(self.n_bins)
        out[self.index] = self.sigma * z
        return out

    def rmatvec(self, w: FloatArray) -> FloatArray:
        """Lᵀ w."""
        return self.dense.T @ w if self.dense is not None else self.sigma * w[self.index]

    def gram(self, c: FloatArray) -> FloatArray:
        """Lᵀ diag(c) L."""
        if self.dense is not None:
            return self.dense.T @ (c[:, None] * self.dense)
        return np.diag(self.sigma**2 * c[self.index])

    def apply_batch(self, z: FloatArray) -> FloatArray:
        """Rows L z_k, shape (K, n)."""
        if self.dense is not None:
            return z @ self.dense.T
        out = np.zeros((z.shape[0], self.n_bins))
        out[:, self.index] = self.sigma * z
        return out

    def rmatvec_batch(self, w: FloatArray) -> FloatArray:
        """Rows Lᵀ w_k, shape (K, k)."""
        return w @ self.dense if self.dense is not None else self.sigma * w[:, self.index]

    def gram_batch(self, c: FloatArray) -> FloatArray:
        """Lᵀ diag(c_k) L per row, shape (K, k, k)."""
        if self.dense is not None:
            return np.swapaxes(self.dense[None] * c[:, :, None], 1, 2) @ self.dense
        out = np.zeros((c.shape[0], self.k, self.k))
        idx = np.arange(self.k)
        out[:, idx, idx] = self.sigma**2 * c[:, self.index]
        return out


def _factor_cov(cov: ArrayLike | None, n_bins: int) -> _LinearShift:
    """The linear shift L of a background covariance (diagonal: σ_i on the bins with σ_i > 0)."""
    if cov is None:
        return _LinearShift(n_bins)
    c = np.asarray(cov, dtype=float)
    if c.shape != (n_bins, n_bins):
        raise InputError(f"background_cov has shape {c.shape}; it must be ({n_bins}, {n_bins}), one row per bin")
    if not np.all(np.isfinite(c)) or np.any(np.diag(c) < 0):
        raise InputError("background_cov has non-finite or negative diagonal entries: it must be a covariance")
    if not np.allclose(c, c.T, rtol=1e-10, atol=0.0):
        raise InputError("background_cov is not symmetric: pass (C + C.T) / 2 if that is what you meant")
    if np.count_nonzero(c - np.diag(np.diag(c))) == 0:
        index = np.flatnonzero(np.diag(c) > 0)
        return _LinearShift(n_bins, index=index, sigma=np.sqrt(np.diag(c)[index]))
    try:
        return _LinearShift(n_bins, dense=np.linalg.cholesky(c))
    except np.linalg.LinAlgError as exc:
        raise InputError("background_cov is not positive definite: drop degenerate directions "
                         "or add a small diagonal term") from exc


class KnownBackgroundObjective:
    """NLL of n_i ~ Poisson(b_i + (L z)_i + μ s_i) with z ~ N(aux, 1); θ = (μ, z_1..z_k).

    Implements :class:`hps_bayes.fit.Objective` with an analytic gradient and
    Hessian.  Up to a θ-independent constant (the saturated Poisson model,
    which keeps the NLL small and precise for large counts)

    .. math:: \\mathrm{NLL}(\\theta) = \\sum_i [\\nu_i - n_i - n_i \\ln(\\nu_i / n_i)]
              + \\tfrac12 \\sum_j (z_j - \\mathrm{aux}_j)^2,

    ``inf`` where some ν_i ≤ 0; μ may be negative down to there.

    Parameters
    ----------
    background : expected background b_i per bin (> 0).
    template : signal template s_i per bin (≥ 0, not all 0); μ multiplies it.
    background_cov : covariance of the background (n×n), or None for a known background.
        A diagonal matrix gives one nuisance per bin with σ_i > 0; otherwise its
        Cholesky factor is used (it must be positive definite).

    Examples
    --------
    >>> obj = KnownBackgroundObjective([100.0, 100.0], [0.5, 0.5], background_cov=np.diag([25.0, 25.0]))
    >>> obj.n_params, obj.expected_counts(np.array([10.0, 1.0, -1.0])).tolist()
    (3, [110.0, 100.0])
    """

    poi_index: int = 0

    def __init__(self, background: ArrayLike, template: ArrayLike, *,
                 background_cov: ArrayLike | None = None) -> None:
        self._b, self._s = _validate_model(background, template)
        self._shift = _factor_cov(background_cov, self._b.size)
        self.n_params = 1 + self._shift.k

    @property
    def n_bins(self) -> int:
        """Number of bins."""
        return int(self._b.size)

    @property
    def n_nuisances(self) -> int:
        """Number of background nuisances z (0 for a known background)."""
        return int(self._shift.k)

    def fit_data(self, counts: ArrayLike) -> FitData:
        """Observed data: ``counts`` with the constraint centres at 0."""
        return FitData(counts=_validate_counts(counts, self.n_bins), aux=np.zeros(self.n_nuisances))

    def expected_counts(self, theta: FloatArray) -> FloatArray:
        """ν = b0 + L z + μ s."""
        return self._b + self._shift.apply(theta[1:]) + theta[0] * self._s

    def aux_at(self, theta: FloatArray) -> FloatArray:
        """Constraint centres that make ``theta``'s z the constraints' modes: z itself."""
        return np.array(theta[1:], dtype=float)

    def nll(self, theta: FloatArray, data: FitData) -> float:
        """NLL at ``theta`` (see the class docstring); ``inf`` where some ν_i ≤ 0."""
        nu = self.expected_counts(theta)
        if not np.all(nu > 0):
            return float("inf")
        n = data.counts
        ratio = nu / np.where(n > 0, n, 1.0)
        z = theta[1:] - data.aux
        return float(np.sum(nu - n - n * np.log(ratio)) + 0.5 * z @ z)

    def nll_grad_hess(self, theta: FloatArray, data: FitData) -> tuple[float, FloatArray, FloatArray]:
        """NLL, gradient and Hessian; with w = 1 − n/ν and c = n/ν²:

        ∂/∂μ = s·w, ∂/∂z = Lᵀw + (z − aux); H_μμ = Σ c s², H_μz = Lᵀ(c s), H_zz = Lᵀ diag(c) L + 1.
        """
        f = self.nll(theta, data)
        nu = self.expected_counts(theta)
        nu = np.where(nu > 0, nu, np.nan) if not np.isfinite(f) else nu
        n = data.counts
        w, c = 1.0 - n / nu, n / nu**2
        grad = np.concatenate(([self._s @ w], self._shift.rmatvec(w) + theta[1:] - data.aux))
        hess = np.empty((self.n_params, self.n_params))
        hess[0, 0] = c @ self._s**2
        hess[0, 1:] = hess[1:, 0] = self._shift.rmatvec(c * self._s)
        hess[1:, 1:] = self._shift.gram(c) + np.eye(self.n_params - 1)
        return f, grad, hess

    # --- batched evaluation (hps_bayes.fit.BatchObjective) ------------------------------------
    def expected_counts_batch(self, thetas: FloatArray) -> FloatArray:
        """ν_k = b0 + L z_k + μ_k s per row, shape (K, n)."""
        return self._b + self._shift.apply_batch(thetas[:, 1:]) + thetas[:, :1] * self._s

    def nll_batch(self, thetas: FloatArray, counts: FloatArray, aux: FloatArray) -> FloatArray:
        """:meth:`nll` per row, shape (K,)."""
        nu = self.expected_counts_batch(thetas)
        ok = np.all(nu > 0, axis=1)
        nu = np.where(nu > 0, nu, 1.0)
        ratio = nu / np.where(counts > 0, counts, 1.0)
        z = thetas[:, 1:] - aux
        f = np.sum(nu - counts - counts * np.log(ratio), axis=1) + 0.5 * np.sum(z * z, axis=1)
        return np.where(ok, f, np.inf)

    def nll_grad_batch(self, thetas: FloatArray, counts: FloatArray,
                       aux: FloatArray) -> tuple[FloatArray, FloatArray]:
        """:meth:`nll_grad_hess` without the Hessian, per row."""
        f = self.nll_batch(thetas, counts, aux)
        nu = self.expected_counts_batch(thetas)
        nu = np.where(np.isfinite(f)[:, None], nu, np.nan)
        w = 1.0 - counts / nu
        grad = np.concatenate([(w @ self._s)[:, None], self._shift.rmatvec_batch(w) + thetas[:, 1:] - aux], axis=1)
        return f, grad

    def nll_grad_hess_batch(self, thetas: FloatArray, counts: FloatArray,
                            aux: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """:meth:`nll_grad_hess` per row: (K,), (K, p), (K, p, p)."""
        f, grad = self.nll_grad_batch(thetas, counts, aux)
        nu = np.where(np.isfinite(f)[:, None], self.expected_counts_batch(thetas), np.nan)
        c = counts / nu**2
        hess = np.empty((len(f), self.n_params, self.n_params))
        hess[:, 0, 0] = c @ self._s**2
        cross = self._shift.rmatvec_batch(c * self._s)
        hess[:, 0, 1:] = cross
        hess[:, 1:, 0] = cross
        hess[:, 1:, 1:] = self._shift.gram_batch(c) + np.eye(self.n_params - 1)
        return f, grad, hess

    def initial(self, data: FitData) -> FloatArray:
        """Start: z = aux (0 if that makes a background ≤ 0), μ = (n − b)·s / s·s kept above the floor.

        μ is clipped to at least half the way from 0 to the floor
        max_i(−b_i / s_i) where the first expected count reaches 0.
        """
        n = _validate_counts(data.counts, self.n_bins)
        if data.aux.shape != (self.n_nuisances,):
            raise InputError(f"data.aux has shape {data.aux.shape} but the model has {self.n_nuisances} "
                             "nuisances: build the data with objective.fit_data(counts)")
        z = np.array(data.aux, dtype=float)
        b = self._b + self._shift.apply(z)
        if not np.all(b > 0):
            z, b = np.zeros_like(z), self._b
        floor = float(np.max(-b[self._s > 0] / self._s[self._s > 0]))
        mu = max(float((n - b) @ self._s / (self._s @ self._s)), 0.5 * floor)
        return np.concatenate(([mu], z))


def cls_upper_limit(
    observed: ArrayLike,
    background: ArrayLike,
    template: ArrayLike,
    *,
    background_cov: ArrayLike | None = None,
    alpha: float = 0.05,
    method: Literal["asymptotic", "toys"] = "asymptotic",
    rtol: float = 1e-4,
    n_toys: int = 1000,
    rng: np.random.Generator | int | None = None,
    scan: int | None = 13,
) -> UpperLimit:
    """CLs upper limit on the signal yield μ for a known (or Gaussian-uncertain) background.

    Model: n_i ~ Poisson(b_i + (Lz)_i + μ s_i), z ~ N(0, 1), C = L Lᵀ (see
    :class:`KnownBackgroundObjective`); test statistic q̃μ (arXiv:1007.1727,
    Eq. 16); CLs = p_{s+b} / CL_b with the asymptotic distributions
    (Eqs. 65-66); the limit solves CLs(μ) = alpha.

    Parameters
    ----------
    observed : observed counts per bin (≥ 0).
    background : expected background per bin (> 0).
    template : signal per unit μ per bin (≥ 0, not all 0); with a template
        normalised to 1, μ is the total signal yield A.
    background_cov : background covariance (n×n), or None.
    alpha : CLs level (0.05: 95% CL).
    method : "asymptotic" (Eqs. 65-66) or "toys" (:class:`~hps_bayes.stats.toys.ToyCalculator`:
        pseudo-data from the conditional fits at μ and at 0, constraint centres drawn too).
    rtol : relative tolerance of the limits (asymptotic).
    n_toys : toys per ensemble (method="toys").
    rng : a ``numpy.random.Generator`` or a seed (method="toys"); None: seed 0, so that
        repeated calls agree — pass your own for independent results.
    scan : method="toys": number of μ values of the CLs scan whose crossings are
        interpolated (see :func:`~hps_bayes.stats.limits.upper_limit`); None: Brent's method.

    Returns
    -------
    UpperLimit
        Observed and expected (N = −2..2) limits on μ; check ``converged``.

    Examples
    --------
    >>> lim = cls_upper_limit([100.0], [100.0], [1.0])
    >>> round(lim.mu_up / lim.mu_up_expected[2], 6)  # observed = median expected when n = b
    1.0
    """
    if method not in ("asymptotic", "toys"):
        raise ConfigError(f"method={method!r} is not allowed: use 'asymptotic' or 'toys'")
    objective = KnownBackgroundObjective(background, template, background_cov=background_cov)
    data = objective.fit_data(observed)
    if method == "asymptotic":
        return upper_limit(AsymptoticCalculator(objective, data), alpha=alpha, rtol=rtol)
    generator = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(0 if rng is None else rng)
    calculator = ToyCalculator(objective, data, n_toys=n_toys, rng=generator)
    return upper_limit(calculator, alpha=alpha, rtol=max(rtol, 1e-3), scan=scan)
