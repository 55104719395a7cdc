"""The objective protocols the fits use and their frozen fit results.

The fit layer knows nothing about the physics: it minimises the negative
log-likelihood (NLL) of any :class:`Objective`, either with every parameter
free or with the parameter of interest (POI, the signal yield ``A`` or
``mu``) held fixed.  The stats layer builds every test statistic from these
two fits.

An objective is evaluated on :class:`FitData`: the observed counts and the
constraint centres ("global observables", ``aux``) of its constrained
nuisances.  Changing the data (Asimov data, toys) therefore needs no
re-compilation and no state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from hps_bayes.core import FitData, FloatArray


class Objective(Protocol):
    """A negative log-likelihood with a parameter of interest at ``poi_index``."""

    n_params: int
    poi_index: int

    def nll(self, theta: FloatArray, data: FitData) -> float:
        """NLL at ``theta``; ``inf`` where some expected count is not positive."""
        ...

    def nll_grad_hess(self, theta: FloatArray, data: FitData) -> tuple[float, FloatArray, FloatArray]:
        """NLL, its gradient and its Hessian at ``theta``."""
        ...

    def expected_counts(self, theta: FloatArray) -> FloatArray:
        """Expected counts per bin (background + signal) at ``theta``."""
        ...

    def aux_at(self, theta: FloatArray) -> FloatArray:
        """Constraint centres that make ``theta``'s nuisances the constraints' modes (Asimov)."""
        ...

    def initial(self, data: FitData) -> FloatArray:
        """A starting point for fits of ``data``."""
        ...


@dataclass(frozen=True)
class FitResult:
    """Outcome of one Newton fit.

    Attributes
    ----------
    theta : best-fit parameters.
    nll : NLL at ``theta``.
    converged : True when the Newton decrement fell below tolerance.
    n_iter : Newton iterations used.
    poi_fixed : the fixed POI value, or None for the free fit.
    covariance : inverse Hessian of the free parameters (fixed POI row/column zero).
    message : why the fit stopped.
    """

    theta: FloatArray
    nll: float
    converged: bool
    n_iter: int
    poi_fixed: float | None
    covariance: FloatArray
    message: str = ""

    def poi(self, objective: Objective) -> float:
        return float(self.theta[objective.poi_index])

    def poi_error(self, objective: Objective) -> float:
        """Standard deviation of the POI from the inverse Hessian (free fit only)."""
        var = float(self.covariance[objective.poi_index, objective.poi_index])
        return float(np.sqrt(var)) if var > 0 else float("nan")


# --- batched fits of many toy data sets ---------------------------------------------------------

class BatchObjective(Objective, Protocol):
    """An :class:`Objective` that also evaluates K data sets at K parameter points at once.

    Shapes: ``thetas (K, p)``, ``counts (K, n)``, ``aux (K, q)``.  Row k of every
    output is the single-data-set method at ``(thetas[k], FitData(counts[k], aux[k]))``.
    """

    def nll_batch(self, thetas: FloatArray, counts: FloatArray, aux: FloatArray) -> FloatArray:
        """NLL per row, shape (K,); ``inf`` where some expected count is not positive."""
        ...

    def nll_grad_batch(self, thetas: FloatArray, counts: FloatArray,
                       aux: FloatArray) -> tuple[FloatArray, FloatArray]:
        """NLL (K,) and gradient (K, p)."""
        ...

    def nll_grad_hess_batch(self, thetas: FloatArray, counts: FloatArray,
                            aux: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """NLL (K,), gradient (K, p) and Hessian (K, p, p)."""
        ...

    def expected_counts_batch(self, thetas: FloatArray) -> FloatArray:
        """Expected counts (K, n)."""
        ...


@dataclass(frozen=True)
class BatchFitResult:
    """Outcome of :func:`newton_fit_batch` over K data sets.

    Attributes
    ----------
    theta : best-fit parameters, shape (K, p).
    nll : NLL at ``theta``, shape (K,).
    converged : per data set, shape (K,).
    n_iter : iterations per data set (shared-Hessian plus full-Newton ones), shape (K,).
    poi_fixed : the fixed POI value, or None for the free fit.
    n_full_newton : data sets that needed batched full-Newton steps after the shared-Hessian phase.
    n_fallback : data sets refitted one by one with :func:`newton_fit`.
    """

    theta: FloatArray
    nll: FloatArray
    converged: NDArray[np.bool_]
    n_iter: NDArray[np.int_]
    poi_fixed: float | None
    n_full_newton: int
    n_fallback: int

    @property
    def n_failed(self) -> int:
        """Data sets whose fit did not converge even one by one."""
        return int(np.count_nonzero(~self.converged))

    def poi(self, objective: Objective) -> FloatArray:
        """POI column, shape (K,)."""
        return np.asarray(self.theta[:, objective.poi_index])
