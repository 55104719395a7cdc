"""The learner's Gaussian-process surrogate: kernel, hyperparameter fit and the fixed-kernel posterior.

The surrogate is scikit-learn's :class:`~sklearn.gaussian_process.GaussianProcessRegressor`
with kernel C·Matérn-5/2(ARD) + White (a nugget for noisy, e.g. toy-based, values), on
values centred on the prior mean (the mean of the values, or ``prior_mean``) and scaled by their
standard deviation, on inputs in the unit cube.  Hyperparameters are fitted by type-II maximum
a posteriori (marginal likelihood × a log-normal prior on the lengthscales; plain maximum
likelihood without a prior) on a subset of the points (default start plus random restarts);
the posterior itself (:class:`Posterior`) always conditions on every finite value, through one
Cholesky factor, which also gives exact Kriging-believer batches:

    with fixed hyperparameters, adding the believed value μ(x_j) at x_j leaves μ
    unchanged and lowers the variance by the rank-one term
    σ²₊(x) = σ²(x) − c(x, x_j)² / (σ²(x_j) + s²)      (c: posterior covariance, s²: noise),

so a batch of q costs q rank-one updates over the candidate set, not q refits.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.linalg import cho_solve, cholesky, solve_triangular

from hps_bayes.core import FloatArray
from hps_bayes.errors import HpsBayesWarning


def kernel(dim: int, noise: bool) -> Any:
    from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel

    base = ConstantKernel(1.0, (1e-3, 1e3)) * Matern(length_scale=np.full(dim, 0.3),
                                                     length_scale_bounds=(0.03, 10.0), nu=2.5)
    return base + WhiteKernel(1e-4, (1e-8, 1e0)) if noise else base


def fit_hyperparameters(x: FloatArray, y: FloatArray, subset: np.ndarray, *, previous: object | None, noise: bool,
                         n_restarts: int, rng: np.random.Generator,
                         prior: tuple[float, float] | None = None, offset: float | None = None) -> object:
    """A fitted GaussianProcessRegressor (type-II ML, or MAP with a lengthscale ``prior``, on ``subset``) of the
    values centred on ``offset`` (default: their mean) and scaled by their standard deviation (the scaling
    :class:`Posterior` uses); ``previous`` is kept if the fit fails."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.gaussian_process import GaussianProcessRegressor

    # always from the default start plus random restarts: a warm start can stay in a degenerate optimum
    # (one lengthscale at its bound) found on the first few points
    dim = x.shape[1]
    gp = GaussianProcessRegressor(kernel(dim, noise), normalize_y=False, n_restarts_optimizer=n_restarts, alpha=1e-10,
                                  random_state=int(rng.integers(2**31)), optimizer=map_optimizer(dim, prior))
    centre, scale = standardisation(y, offset)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        try:
            gp.fit(x[subset], (y[subset] - centre) / scale)
        except (np.linalg.LinAlgError, ValueError) as exc:
            warnings.warn(f"GP hyperparameter fit failed ({exc}); keeping the previous kernel", HpsBayesWarning,
                          stacklevel=3)
            if previous is None:
                raise
            return previous
    return gp


def standardisation(y: FloatArray, offset: float | None) -> tuple[float, float]:
    """(centre, scale) of the values for the GP: the prior mean (``offset``, default the mean of ``y``) and
    the standard deviation of ``y`` (1 when it is 0)."""
    return (float(np.mean(y)) if offset is None else float(offset)), (float(np.std(y)) or 1.0)


def map_optimizer(dim: int, prior: tuple[float, float] | None) -> Any:
    """L-BFGS-B on −log marginal likelihood + a log-normal prior on each lengthscale (MAP, type-II);
    sklearn's own maximum-likelihood optimizer without a prior."""
    from scipy.optimize import minimize

    if prior is None:
        return "fmin_l_bfgs_b"
    centre, width = math.log(prior[0]), float(prior[1])
    lengthscales = slice(1, 1 + dim)  # theta: log C, log ℓ_1..ℓ_d (, log noise)

    def optimizer(obj_func: Callable[..., Any], initial_theta: FloatArray, bounds: FloatArray) -> tuple[Any, float]:
        def penalised(theta: FloatArray) -> tuple[float, FloatArray]:
            value, grad = obj_func(theta, eval_gradient=True)
            d = (theta[lengthscales] - centre) / width
            grad = np.array(grad, dtype=np.float64)
            grad[lengthscales] += d / width
            return float(value + 0.5 * np.sum(d * d)), grad

        res = minimize(penalised, initial_theta, jac=True, method="L-BFGS-B", bounds=bounds)
        return res.x, float(res.fun)

    return optimizer


class Posterior:
    """The GP posterior on all finite points with the fitted kernel held fixed (one Cholesky factor)."""

    def __init__(self, gp: object, x: FloatArray, y: FloatArray, offset: float | None = None) -> None:
        kernel = gp.kernel_  # type: ignore[attr-defined]
        names = {type(k).__name__: k for k in (getattr(kernel, "k1", None), getattr(kernel, "k2", None)) if k}
        if "WhiteKernel" in names:
            self.signal, self.noise_var = kernel.k1, float(kernel.k2.noise_level)
        else:
            self.signal, self.noise_var = kernel, 0.0
        self.lengthscale = self.signal.k2.length_scale
        self.x = x
        self.y_mean, self.y_std = standardisation(y, offset)
        self.yn = yn = (y - self.y_mean) / self.y_std
        gram = self.signal(x) + (self.noise_var + 1e-8) * np.eye(len(x))
        self.chol = cholesky(gram, lower=True)
        self.alpha = cho_solve((self.chol, True), yn)
        self.prior_var = float(self.signal.diag(x[:1])[0])

    def predict(self, u: FloatArray) -> tuple[FloatArray, FloatArray]:
        kx = self.signal(u, self.x)
        mean = kx @ self.alpha
        v = solve_triangular(self.chol, kx.T, lower=True)
        var = np.maximum(self.prior_var - np.einsum("ij,ij->j", v, v), 0.0)
        return mean * self.y_std + self.y_mean, np.sqrt(var) * self.y_std

    def predict_joint(self, u: FloatArray) -> tuple[FloatArray, FloatArray, Callable[[int], FloatArray]]:
        """Mean (original units), variance and a function j ↦ posterior covariance of all u with u_j
        (both in units of the normalised target)."""
        kx = self.signal(u, self.x)
        mean = kx @ self.alpha * self.y_std + self.y_mean
        v = solve_triangular(self.chol, kx.T, lower=True)
        var = np.maximum(self.prior_var - np.einsum("ij,ij->j", v, v), 0.0)
        signal = self.signal

        def cross(j: int) -> FloatArray:
            return np.asarray(signal(u, u[j : j + 1])[:, 0] - v.T @ v[:, j])

        return mean, var, cross

    def loo_residuals(self) -> FloatArray:
        """Standardised leave-one-out residuals (y_i − μ₋ᵢ)/σ₋ᵢ of the conditioning points (σ₋ᵢ with the noise),
        with the hyperparameters held fixed (Rasmussen & Williams, Eq. 5.12)."""
        inv_chol = solve_triangular(self.chol, np.eye(len(self.x)), lower=True)
        kinv_diag = np.einsum("ij,ij->j", inv_chol, inv_chol)
        return np.asarray(self.alpha / np.sqrt(kinv_diag), dtype=np.float64)
