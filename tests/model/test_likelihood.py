"""One likelihood: the compiled PyMC objective and the batched NumPy toy objective agree with the HSGP on,
and the closed-form Hessian both use is PyTensor's Hessian of the PyMC graph."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from hps_bayes.core import FitData
from hps_bayes.fit.newton import newton_fit
from hps_bayes.inputs.spectrum import Spectrum
from hps_bayes.model.objective import WindowObjective
from hps_bayes.model.settings import BackgroundSettings
from hps_bayes.model.window import make_window
from hps_bayes.physics.presets import load_preset
from hps_bayes.physics.signal import sigma_m, signal_template

#: measured worst differences over 20 random points (as below) x 3 kernels x 30/70/120 MeV: value 1.6e-11
#: relative, gradient 1.6e-12 and Hessian 1.3e-15 of the largest entry (closed form against PyTensor's
#: Hessian of the graph: 5.6e-16 to 1.1e-15 here); the tolerances are 10-15x that
RTOL_VALUE, RTOL_GRAD, RTOL_HESS = 2e-10, 2e-11, 2e-14


def _objective(spectrum: Spectrum, mass: float, settings: BackgroundSettings) -> WindowObjective:
    sigma = float(sigma_m(mass, load_preset("2015")))
    window = make_window(spectrum.edges, spectrum.counts, mass=mass, sigma=sigma, settings=settings,
                         template=signal_template(spectrum.edges, mass, sigma), range_lo=0.02, range_hi=0.13)
    return WindowObjective(replace(window, spurious=200.0), settings)


@pytest.mark.parametrize("kernel", ["expquad", "matern52"])
@pytest.mark.parametrize("mass", [0.03, 0.12])
def test_compiled_and_batched_objectives_agree_with_the_gp_on(spectrum_2015: Spectrum, kernel: str,
                                                              mass: float) -> None:
    settings = BackgroundSettings(eta=0.05, lengthscale=4.0, kernel=kernel)  # type: ignore[arg-type]
    obj = _objective(spectrum_2015, mass, settings)
    assert obj.window.eta == 0.05
    rng = np.random.default_rng(17)
    theta = newton_fit(obj, obj.observed()).theta + 0.02 * rng.normal(size=obj.n_params)
    beta = obj.model.slices["beta"]
    theta[beta] = rng.normal(size=settings.n_basis)  # the GP weights at a typical prior draw
    theta[0], theta[-1] = abs(rng.normal(0.0, 200.0)), rng.normal()
    aux = 0.3 * rng.normal(size=obj.model.n_aux)
    counts = rng.poisson(obj.expected_counts(theta)).astype(float)
    f1, g1, h1 = obj.nll_grad_hess(theta, FitData(counts, aux))
    f, g, h = (x[0] for x in obj.nll_grad_hess_batch(theta[None], counts[None], aux[None]))
    assert f == pytest.approx(f1, rel=RTOL_VALUE)
    np.testing.assert_allclose(g, g1, rtol=0, atol=RTOL_GRAD * np.abs(g1).max())
    np.testing.assert_allclose(h, h1, rtol=0, atol=RTOL_HESS * np.abs(h1).max())
    # the closed-form Hessian is the PyMC graph's NLL differentiated twice by PyTensor
    reference = obj.model.graph_hessian(theta, obj.window, FitData(counts, aux))
    np.testing.assert_allclose(h1, reference, rtol=0, atol=RTOL_HESS * np.abs(reference).max())
    # the GP is really on: its weights move the likelihood by far more than the tolerance
    off = theta.copy()
    off[beta] = 0.0
    assert abs(obj.nll(off, FitData(counts, aux)) - f1) > 1e3 * RTOL_VALUE * abs(f1)


def test_non_integer_counts_are_not_rounded(spectrum_2015: Spectrum) -> None:
    """Asimov data sets have non-integer counts: the compiled objective takes them as they are,
    like the batched one (a discrete observed variable would floor them)."""
    settings = BackgroundSettings()
    obj = _objective(spectrum_2015, 0.05, settings)
    theta = newton_fit(obj, obj.observed()).theta
    asimov = obj.expected_counts(theta)
    aux = np.zeros(obj.model.n_aux)
    f_asimov = obj.nll(theta, FitData(asimov, aux))
    f_floor = obj.nll(theta, FitData(np.floor(asimov), aux))
    f_batch = obj.nll_batch(theta[None], asimov[None], aux[None])[0]
    assert f_asimov == pytest.approx(f_batch, rel=RTOL_VALUE)
    # flooring moves the NLL by 2e-3 here (n log mu - ln n! nearly cancels its change near n = mu), far above
    # the agreement tolerance
    assert abs(f_asimov - f_floor) > 1e3 * RTOL_VALUE * abs(f_asimov)


def test_closed_form_hessian_is_the_graphs_without_a_gp(spectrum_2015: Spectrum) -> None:
    """The default model (no GP weights, spurious-signal nuisance on): Hessian against PyTensor's."""
    obj = _objective(spectrum_2015, 0.05, BackgroundSettings())
    assert obj.model.n_basis == 0
    rng = np.random.default_rng(3)
    theta = newton_fit(obj, obj.observed()).theta + 0.02 * rng.normal(size=obj.n_params)
    theta[0] = 300.0
    data = FitData(rng.poisson(obj.expected_counts(theta)).astype(float), np.array([0.4]))
    _, _, hess = obj.nll_grad_hess(theta, data)
    reference = obj.model.graph_hessian(theta, obj.window, data)
    np.testing.assert_allclose(hess, reference, rtol=0, atol=RTOL_HESS * np.abs(reference).max())
    assert np.abs(reference[0, -1]) > 0 and np.abs(reference[1:-1, 1:-1]).min() > 0  # blocks all present
