"""The PyMC window model (Legendre mean, HSGP in ln m where on; Poisson), compiled once and kept on disk.

The model is built with PyMC and compiled by PyTensor (numba backend) the first time a graph-fixing
setting (:data:`CompileKey`) is used on a machine; the compiled functions are then pickled into
PyTensor's compile folder (:func:`persisted_path`) and later processes load them instead of building
the model again.  PyTensor keeps the numba code in its own cache but always rebuilds the graph and
reruns its rewrites; loading the pickled, already rewritten graph skips those and the PyMC import
(about 1.5 s of every process's start).  The compiled graph holds only PyTensor operations: PyMC's
parameter checks (μ ≥ 0 of the Poisson) are taken out before compiling, since the objective never
evaluates the likelihood where an expected count is ≤ 0 (:meth:`WindowObjective.nll`).  A stored
function is used only under the same key, package version, source of this module and versions of
Python, NumPy, PyTensor and numba; an unreadable one is rebuilt.  One function gives the NLL, its
gradient (PyTensor's) and its Hessian (written out on the graph, :meth:`CompiledWindowModel._closed_hessian`),
another the background counts: on a machine's first run numba's compile of them is most of a job's time.
The HSGP basis φ√S, fixed by the window's t, η and ℓ, is an input of both, evaluated once per window
by the model's own HSGP graph (:meth:`CompiledWindowModel.gp_basis`) rather than at every call.

In a process started by the command line (:mod:`hps_bayes.__main__` sets
``HPS_BAYES_NUMBA_EXTENSIONS=off``, inherited by its job processes) numba's extension entry points
are not loaded: the only one installed with the package's dependencies is awkward's (awkward
arrays inside numba functions, which the package never uses), and loading it imports awkward and
pyarrow at the first compiled call, ≈ 0.4 s of a one-mass run.  numba has no setting for this;
its ``entrypoints._already_initialized`` flag is set before its first compilation.  Library users
keep numba's default.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import pickle
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytensor
import pytensor.tensor as pt
from numpy.polynomial import legendre
from pytensor.graph.traversal import ancestors

from hps_bayes import __version__
from hps_bayes.core import FitData, FloatArray
from hps_bayes.errors import ConfigError
from hps_bayes.results.files import atomic_path, content_hash

if TYPE_CHECKING:  # types only: the window module imports this one; PyMC only where a model is built
    import pymc as pm

    from hps_bayes.model.window import Window

log = logging.getLogger(__name__)

if os.environ.get("HPS_BAYES_NUMBA_EXTENSIONS", "on").strip().lower() == "off":
    from numba.core import entrypoints as _numba_entrypoints

    _numba_entrypoints._already_initialized = True

#: ``(poly_degree, n_basis, c, kernel)`` of :meth:`BackgroundSettings.compile_key` (n_basis = 0: no GP).
CompileKey = tuple[int, int, float, str]


def _cov_func(kernel: str, eta: Any, ell: Any) -> Any:
    import pymc as pm

    cls = {"expquad": pm.gp.cov.ExpQuad, "matern52": pm.gp.cov.Matern52, "matern32": pm.gp.cov.Matern32}
    return eta**2 * cls[kernel](1, ls=ell)


class CompiledWindowModel:
    """The PyMC window model, compiled once; evaluate it on any :class:`Window`.

    ``key`` is :meth:`BackgroundSettings.compile_key`: ``(degree, n_basis, c, kernel)``.  With
    ``n_basis = 0`` the model has no GP (no HSGP, no weights β): θ = (A, c, ν), aux = (ν⁰,).
    """

    def __init__(self, key: CompileKey) -> None:
        degree, n_basis, c, kernel = key
        if n_basis < 0:
            raise ConfigError(f"n_basis={n_basis} in the compile key {key}: use 0 (no GP) or more")
        self.key = key
        self.poly_degree, self.n_basis, self.c, self.kernel = int(degree), int(n_basis), float(c), kernel
        d, m = self.poly_degree, self.n_basis
        self.n_params = 1 + (d + 1) + m + 1
        self.slices = {"A": slice(0, 1), "coef": slice(1, d + 2), "beta": slice(d + 2, d + 2 + m),
                       "spurious": slice(d + 2 + m, d + 3 + m)}
        self.n_aux = m + 1
        functions = _load_persisted(self.key)
        if functions is None:
            functions = self._compile()
            _persist(self.key, functions)
        self._fn_full, self._fn_parts, self._fn_gp_basis = functions

    @functools.cached_property
    def pymc_model(self) -> pm.Model:
        """The PyMC model itself (built on first use: a process that loaded the compiled functions has none)."""
        return self._build_model()

    def _build_model(self) -> pm.Model:
        import pymc as pm

        d, m = self.poly_degree, self.n_basis
        t0 = np.linspace(-1.0, 1.0, 16)
        with pm.Model(check_bounds=False) as model:
            t = pm.Data("t", t0)
            basis = pm.Data("legendre", legendre.legvander(t0, d))
            template = pm.Data("template", np.zeros_like(t0))
            log_offset = pm.Data("log_offset", np.zeros_like(t0))
            counts = pm.Data("counts", np.zeros_like(t0))
            beta_centre = pm.Data("beta_centre", np.zeros(m + 1))
            eta = pm.Data("eta", 0.1)
            ell = pm.Data("lengthscale", 0.5)
            spurious_size = pm.Data("spurious_size", 0.0)
            amp = pm.Flat("A")
            coef = pm.Flat("coef", shape=d + 1)
            log_b = log_offset + basis @ coef
            if m:  # pm.gp.HSGP needs m >= 1: without a GP the graph has no HSGP and no weights
                gp = pm.gp.HSGP(m=[m], L=[self.c], cov_func=_cov_func(self.kernel, eta, ell))
                phi, sqrt_psd = gp.prior_linearized(X=t[:, None])
                beta = pm.Normal("beta", mu=beta_centre[:m], sigma=1.0, shape=m)
                gp_basis = pm.Deterministic("gp_basis", phi * sqrt_psd)
                log_b = log_b + gp_basis @ beta
            nu = pm.Normal("spurious", mu=beta_centre[m], sigma=1.0)
            pm.Deterministic("background", pt.exp(log_b))
            # Poisson log-likelihood of the counts as a potential, not an observed variable: PyMC casts
            # observed data of a discrete distribution to integers, which would floor the non-integer
            # counts of Asimov data sets (the asymptotic calculator fits them).
            expected = pt.exp(log_b) + (amp + spurious_size * nu) * template
            pm.Potential("n", pm.logp(pm.Poisson.dist(mu=expected), counts).sum())
        return model

    def _graph(self) -> tuple[list[Any], list[Any], Any, Any, Any, dict[str, Any]]:
        """The graph of the PyMC model as functions of θ and the window's data: ``(args, givens, nll,
        grad, background, inputs)``."""
        model = self.pymc_model
        theta = pt.dvector("theta")
        values = {model.rvs_to_values[model[name]]: theta[sl] for name, sl in self.slices.items()
                  if name in model.named_vars}  # no "beta" without a GP
        values[model.rvs_to_values[model["A"]]] = theta[0]
        values[model.rvs_to_values[model["spurious"]]] = theta[self.n_params - 1]
        inputs = {name: pt.dvector(name) for name in ("t", "template", "log_offset", "counts", "beta_centre")}
        inputs |= {name: pt.dscalar(name) for name in ("eta", "lengthscale", "spurious_size")}
        inputs["legendre"] = pt.dmatrix("legendre")
        givens = [(model[k], v) for k, v in inputs.items()]
        inputs["gp_basis"] = pt.tensor("gp_basis", shape=(None, self.n_basis), dtype="float64")
        logp = model.logp(jacobian=False)
        (bkg,) = model.replace_rvs_by_values([model["background"]])
        nll, bkg = pytensor.graph.replace.graph_replace([-logp, bkg], replace=values,  # type: ignore[list-item]
                                                        strict=False)
        nll, bkg = _without_parameter_checks([nll, bkg])
        if self.n_basis:  # φ √S depends on t, η and ℓ alone: an input, made once per window (gp_basis)
            copies = {v: inputs["gp_basis"] for v in ancestors([nll, bkg]) if v.name == "gp_basis"}
            if not copies:
                raise RuntimeError("the PyMC window model has no 'gp_basis' in its likelihood")
            nll, bkg = pytensor.graph.replace.graph_replace([nll, bkg], replace=copies,  # type: ignore[arg-type]
                                                            strict=False)
        args = [theta] + [inputs[k] for k in ("counts", "beta_centre", "legendre", "gp_basis", "template",
                                              "log_offset", "spurious_size")]
        return args, givens, nll, pt.grad(nll, theta), bkg, inputs

    def _closed_hessian(self, theta: Any, bkg: Any, inputs: dict[str, Any]) -> Any:
        """The NLL's Hessian written out on the graph's background counts e (it is exact: the log link
        makes μ = e + (A + S ν) T log-linear in γ = (c, β)):

            H = Jᵀ diag(n/μ²) J + Bᵀ diag((1 − n/μ) e) B (γγ block) + I (β, ν: the N(·, 1) constraints),
            J = ∂μ/∂θ = (T, e·B, S·T),  B = (Legendre basis, HSGP basis φ √S).

        Built here rather than by differentiating the gradient again: numba compiles PyTensor's
        vectorised Jacobian of the gradient (twice the nodes of NLL and gradient) in ≈ 15 s on a
        machine's first run, this form in ≈ 3 s, and evaluates it faster.  ``tests/model/
        test_likelihood.py`` checks it against PyTensor's Hessian (:meth:`graph_hessian`)."""
        basis, template, counts, size = (inputs[k] for k in ("legendre", "template", "counts", "spurious_size"))
        if self.n_basis:
            basis = pt.concatenate([basis, inputs["gp_basis"]], axis=1)
        mu = bkg + (theta[0] + size * theta[-1]) * template
        r = counts / mu
        ce = r * bkg / mu
        h_gg = (basis.T * (bkg * (ce + 1.0 - r))) @ basis
        h_ag = basis.T @ (ce * template)
        h_aa = (r / mu * template) @ template
        row_a = pt.concatenate([h_aa[None], h_ag])
        upper = pt.concatenate([row_a[:, None], pt.concatenate([h_ag[None, :], h_gg], axis=0)], axis=1)
        hess = pt.concatenate([pt.concatenate([upper, size * row_a[:, None]], axis=1),
                               pt.concatenate([size * row_a, (size * size * h_aa)[None]])[None, :]], axis=0)
        constrained = np.r_[np.zeros(self.slices["beta"].start), np.ones(self.n_params - self.slices["beta"].start)]
        return hess + np.diag(constrained)

    def _compile(self) -> tuple[Any, Any, Any]:
        args, givens, nll, grad, bkg, inputs = self._graph()
        log.info("compiling the window model (%d parameters); the first compile takes a while", self.n_params)
        opts: dict[str, Any] = {"givens": givens, "on_unused_input": "ignore", "trust_input": True}
        (hess,) = _without_parameter_checks([self._closed_hessian(args[0], bkg, inputs)])
        # no function of the NLL alone: numba's compile of it on a machine's first run (≈ 1 s) costs more
        # than its faster calls in the line searches save in a scan
        full = pytensor.function(args, [nll, grad, hess], **opts)
        parts = pytensor.function(args[:1] + args[3:], bkg, **opts)
        fn_gp_basis = None
        if self.n_basis:
            (gp_basis,) = _without_parameter_checks(self.pymc_model.replace_rvs_by_values([self.pymc_model["gp_basis"]]))
            fn_gp_basis = pytensor.function([inputs["t"], inputs["eta"], inputs["lengthscale"]],
                                            gp_basis, givens=givens, on_unused_input="ignore")
        return full, parts, fn_gp_basis

    def graph_hessian(self, theta: FloatArray, window: Window, data: FitData) -> FloatArray:
        """PyTensor's Hessian of the PyMC graph's NLL (the gradient differentiated again), evaluated
        without compiling (PyTensor's Python linker): the reference that the closed form
        (:meth:`_closed_hessian`) is checked against."""
        args, givens, _, grad, _, _ = self._graph()
        hess = pytensor.gradient.jacobian(grad, args[0], vectorize=True)
        fn = pytensor.function(args, hess, givens=givens, on_unused_input="ignore", mode="FAST_COMPILE")
        return np.asarray(fn(np.asarray(theta, dtype=float), *self.arguments(window, data)))

    def window_arguments(self, window: Window) -> list[Any]:
        """The compiled functions' inputs that ``window`` fixes (its HSGP basis evaluated here)."""
        return [window.legendre, self.gp_basis(window), window.template, window.log_offset,
                np.asarray(window.spurious, dtype=float)]

    def arguments(self, window: Window, data: FitData) -> list[Any]:
        """The compiled functions' inputs after θ: the data, then :meth:`window_arguments`."""
        return [data.counts, data.aux, *self.window_arguments(window)]

    def gp_basis(self, window: Window) -> FloatArray:
        """The HSGP basis ``φ_j(t_i) √S(λ_j)`` of ``window`` (n_bins × m, m = 0 without a GP), from the PyMC
        graph."""
        return self.hsgp_basis(window.t, window.eta, window.lengthscale_t)

    def hsgp_basis(self, t: FloatArray, eta: float, ell_t: float) -> FloatArray:
        """The HSGP basis ``φ_j(t) √S(λ_j; η, ℓ)`` at the points ``t`` (len(t) × m; m = 0: no columns)."""
        if self._fn_gp_basis is None:
            return np.zeros((len(t), 0))
        return np.asarray(self._fn_gp_basis(np.asarray(t, dtype=float), np.asarray(eta, dtype=float),
                                            np.asarray(ell_t, dtype=float)))


def _without_parameter_checks(outputs: list[Any]) -> list[Any]:
    """``outputs`` with PyMC's parameter checks (``CheckParameterValue``) replaced by the value they guard."""
    from pymc.logprob.utils import CheckParameterValue

    checks = {var: var.owner.inputs[0] for var in ancestors(outputs)
              if var.owner is not None and isinstance(var.owner.op, CheckParameterValue)}
    if not checks:
        return outputs
    return list(pytensor.graph.replace.graph_replace(outputs, replace=checks, strict=False))  # type: ignore[arg-type]


def persisted_path(key: CompileKey) -> Path:
    """Where the compiled functions of ``key`` are kept: PyTensor's compile folder (``PYTENSOR_FLAGS=
    compiledir=...`` moves it), under a hash of the key, this module's source and the versions."""
    import numba

    stamp = json.dumps([list(key), __version__, content_hash(__file__), platform.python_version(),
                        np.__version__, pytensor.__version__, numba.__version__])
    name = hashlib.sha256(stamp.encode()).hexdigest()[:20]
    return Path(pytensor.config.compiledir) / "hps_bayes" / f"window_{name}.pkl"


def _load_persisted(key: CompileKey) -> tuple[Any, Any, Any] | None:
    path = persisted_path(key)
    if not path.exists():
        return None
    try:
        with path.open("rb") as fh:
            functions = pickle.load(fh)  # written by this module into the user's own compile folder
    except Exception as exc:  # noqa: BLE001 - any unreadable file is rebuilt
        log.warning("the stored window model %s could not be loaded (%s: %s); building it again", path,
                    type(exc).__name__, exc)
        return None
    log.debug("window model %s loaded from %s", key, path)
    return tuple(functions)  # type: ignore[return-value]


def _persist(key: CompileKey, functions: tuple[Any, Any, Any]) -> None:
    path = persisted_path(key)
    try:
        with atomic_path(path) as tmp, tmp.open("wb") as fh:
            pickle.dump(functions, fh, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - storing is only a speed-up: the model in memory is fine
        log.warning("the compiled window model could not be stored in %s (%s); later processes compile it "
                    "again", path, exc)


@functools.lru_cache(maxsize=8)
def compiled_model(settings_key: CompileKey) -> CompiledWindowModel:
    """One compiled model per process and graph-fixing settings (:meth:`BackgroundSettings.compile_key`)."""
    return CompiledWindowModel(settings_key)
