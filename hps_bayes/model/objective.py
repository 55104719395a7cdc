"""The window objective: the compiled likelihood and the batched toy design behind the fit protocol."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np

from hps_bayes.core import FitData, FloatArray
from hps_bayes.errors import ConfigError
from hps_bayes.model.compiled import compiled_model
from hps_bayes.model.coordinate import least_squares_start
from hps_bayes.model.settings import BackgroundSettings
from hps_bayes.model.window import Window


@dataclass(frozen=True)
class LogLinearDesign:
    """The window likelihood written out for vectorised fits.

    With ``θ = (A, γ, ν)``, ``γ = (c, β)`` (the first ``n_free_basis`` entries of γ
    unconstrained, the rest ``β ~ N(β⁰, 1)``; none without a GP), and ``ν ~ N(ν⁰, 1)``:

        μ_i = exp(offset_i + Σ_k basis_ik γ_k) + (A + spurious·ν) T_i,
        NLL = Σ_i [μ_i − n_i ln μ_i + ln n_i!] + ½ Σ (β − β⁰)² + ½ (ν − ν⁰)² + const.

    This is the same function the compiled PyMC model evaluates (a test checks it).
    """

    offset: FloatArray
    basis: FloatArray
    template: FloatArray
    n_free_basis: int
    spurious: float

    @property
    def n_params(self) -> int:
        return 1 + self.basis.shape[1] + 1


class WindowObjective:
    """The window likelihood as a :class:`hps_bayes.fit.Objective` (POI = A at index 0)."""

    poi_index = 0

    def __init__(self, window: Window, settings: BackgroundSettings, *, keep_gp_weights: bool = False) -> None:
        """``keep_gp_weights``: compile the HSGP weights even where this window's η is 0 (by default a window
        whose GP the evidence switched off gets the model without them: they would be dead parameters)."""
        self.window = window
        self.settings = settings = settings.at_mass(window.mass)  # the degree of background.degree_table
        degree, n_basis, c, kernel = settings.compile_key()
        if window.eta == 0 and not keep_gp_weights:
            n_basis = 0
        self.model = compiled_model((degree, n_basis, c, kernel))
        if self.model.n_basis == 0 and window.eta != 0:
            raise ConfigError(f"the window at m={window.mass * 1e3:.2f} MeV has GP amplitude eta={window.eta}, but "
                              f"background eta={settings.eta}, hyper={settings.hyper!r} compile a model without a GP; "
                              f"build the objective with the settings the window was made with")
        self.n_params = self.model.n_params
        self._aux = slice(self.model.slices["beta"].start, self.n_params)
        self._window_args = self.model.window_arguments(window)  # the HSGP basis once per window

    def _args(self, data: FitData) -> list[Any]:
        return [data.counts, data.aux, *self._window_args]

    def nll(self, theta: FloatArray, data: FitData) -> float:
        """The NLL; ``inf`` where an expected count is ≤ 0 (there ln μ makes the compiled value NaN or
        +inf, and nothing else can: the background is an exponential)."""
        f = float(self.model._fn_full(theta, *self._args(data))[0])
        return f if np.isfinite(f) else float("inf")

    def nll_grad_hess(self, theta: FloatArray, data: FitData) -> tuple[float, FloatArray, FloatArray]:
        """NLL, gradient and Hessian; ``(inf, NaN, NaN)`` where an expected count is ≤ 0 (see :meth:`nll`)."""
        f, g, h = self.model._fn_full(theta, *self._args(data))
        if not np.isfinite(f):
            n = self.n_params
            return float("inf"), np.full(n, np.nan), np.full((n, n), np.nan)
        return float(f), np.asarray(g), np.asarray(h)

    def background(self, theta: FloatArray) -> FloatArray:
        return np.asarray(self.model._fn_parts(theta, *self._window_args))

    def expected_counts(self, theta: FloatArray) -> FloatArray:
        signal = theta[0] + self.window.spurious * theta[-1]
        return self.background(theta) + signal * self.window.template

    def aux_at(self, theta: FloatArray) -> FloatArray:
        return np.array(theta[self._aux], dtype=float)

    def observed(self) -> FitData:
        return FitData(self.window.counts, np.zeros(self.model.n_aux))

    def design(self) -> LogLinearDesign:
        """The window likelihood in closed form, for vectorised (numpy) fits of many toys."""
        w = self.window
        return LogLinearDesign(offset=w.log_offset, basis=np.hstack([w.legendre, self._window_args[1]]),
                               template=w.template, n_free_basis=w.legendre.shape[1], spurious=w.spurious)

    def initial(self, data: FitData) -> FloatArray:
        """Start from a weighted least-squares fit of ln(n + 1/2) by the Legendre mean, A = 0."""
        theta = np.zeros(self.n_params)
        theta[self.model.slices["coef"]] = least_squares_start(data.counts, self.window.log_offset,
                                                               self.window.legendre)
        theta[self._aux] = data.aux if len(data.aux) else 0.0
        return theta

    def a_min(self, theta: FloatArray) -> float:
        """Smallest A at which every expected count stays positive (nuisances at ``theta``)."""
        b = self.background(theta)
        tpl = self.window.template
        pos = tpl > 0
        return float(-np.min(b[pos] / tpl[pos])) if pos.any() else -np.inf

    # --- batched evaluation of many data sets (hps_bayes.fit.BatchObjective), numpy on design() ---
    @functools.cached_property
    def _batch_design(self) -> tuple[LogLinearDesign, float]:
        """The closed-form design and the NLL constant ½ q ln 2π of the q constrained nuisances."""
        return self.design(), 0.5 * self.model.n_aux * float(np.log(2.0 * np.pi))

    def _batch_parts(self, thetas: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """exp-part e (K, n), total signal strength A + S·ν (K,), expected counts μ (K, n)."""
        d, _ = self._batch_design
        e = np.exp(d.offset + thetas[:, 1:-1] @ d.basis.T)
        strength = thetas[:, 0] + d.spurious * thetas[:, -1]
        return e, strength, e + strength[:, None] * d.template

    def expected_counts_batch(self, thetas: FloatArray) -> FloatArray:
        """Expected counts per row, shape (K, n)."""
        return self._batch_parts(np.atleast_2d(thetas))[2]

    def nll_batch(self, thetas: FloatArray, counts: FloatArray, aux: FloatArray) -> FloatArray:
        """The compiled NLL (incl. ln n! and the Gaussian normalisations) per row; ``inf`` where μ ≤ 0."""
        return self._nll_batch(thetas, counts, aux, self._batch_parts(thetas)[2])

    def _nll_batch(self, thetas: FloatArray, counts: FloatArray, aux: FloatArray, mu: FloatArray) -> FloatArray:
        d, const = self._batch_design
        ok = np.all(mu > 0, axis=1)
        log_mu = np.log(np.where(mu > 0, mu, 1.0))
        z = thetas[:, 1 + d.n_free_basis:] - aux
        f = np.sum(mu - counts * log_mu, axis=1) + 0.5 * np.sum(z * z, axis=1) + const
        return np.where(ok, f + self._log_factorial_sum(counts), np.inf)

    def nll_grad_batch(self, thetas: FloatArray, counts: FloatArray,
                       aux: FloatArray) -> tuple[FloatArray, FloatArray]:
        """NLL (K,) and gradient (K, p): with w = 1 − n/μ, ∂/∂A = Σ w T, ∂/∂γ = Bᵀ(w e) (+ γ − γ⁰ where
        constrained), ∂/∂ν = S Σ w T + ν − ν⁰."""
        d, _ = self._batch_design
        e, _, mu = self._batch_parts(thetas)
        f = self._nll_batch(thetas, counts, aux, mu)
        w = 1.0 - counts / np.where(np.isfinite(f)[:, None], mu, np.nan)
        grad = np.empty_like(thetas)
        grad[:, 0] = w @ d.template
        grad[:, 1:-1] = (w * e) @ d.basis
        grad[:, -1] = d.spurious * grad[:, 0]
        grad[:, 1 + d.n_free_basis:] += thetas[:, 1 + d.n_free_basis:] - aux
        return f, grad

    def nll_grad_hess_batch(self, thetas: FloatArray, counts: FloatArray,
                            aux: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """NLL, gradient and Hessian per row: H = Jᵀ diag(n/μ²) J + Bᵀ diag(w e) B (γγ block) + I
        (constrained), J = ∂μ/∂θ = (T, e·B, S·T)."""
        d, _ = self._batch_design
        f, grad = self.nll_grad_batch(thetas, counts, aux)
        e, _, mu = self._batch_parts(thetas)
        mu = np.where(np.isfinite(f)[:, None], mu, np.nan)
        c, w = counts / mu**2, 1.0 - counts / mu
        jac = np.empty(mu.shape + (thetas.shape[1],))
        jac[:, :, 0] = d.template
        jac[:, :, 1:-1] = e[:, :, None] * d.basis[None]
        jac[:, :, -1] = d.spurious * d.template
        hess = np.swapaxes(jac * c[:, :, None], 1, 2) @ jac
        hess[:, 1:-1, 1:-1] += np.swapaxes(d.basis[None] * (w * e)[:, :, None], 1, 2) @ d.basis
        idx = np.arange(1 + d.n_free_basis, thetas.shape[1])
        hess[:, idx, idx] += 1.0
        return f, grad, hess


    @staticmethod
    @functools.lru_cache(maxsize=4)
    def _log_factorial_table(size: int) -> FloatArray:
        from scipy.special import gammaln

        return np.asarray(gammaln(np.arange(size) + 1.0))

    @staticmethod
    def _log_factorial_sum(counts: FloatArray) -> FloatArray:
        """Σ_i ln n_i! per row: a table lookup for integer counts (toys), ``gammaln`` otherwise (Asimov)."""
        from scipy.special import gammaln

        top = float(counts.max(initial=0.0))
        if top < 2**20:
            as_int = counts.astype(np.int64)
            if np.array_equal(as_int, counts):
                size = 1 << max(int(top).bit_length(), 8)
                return np.asarray(WindowObjective._log_factorial_table(size)[as_int].sum(axis=1))
        return np.asarray(gammaln(counts + 1.0).sum(axis=1))
