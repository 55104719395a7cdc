"""The selection's truths at each mass, free of a signal there, and the sideband-only choices (hps_bayes.studies.truths_at_mass)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import least_squares

from hps_bayes.analysis.grid import prepare_spectrum, whole_range_spectrum
from hps_bayes.analysis.settings import AnalysisSettings, resolve_settings
from hps_bayes.inputs.root_io import load_spectrum
from hps_bayes.inputs.spectrum import Spectrum, crop
from hps_bayes.inputs.turnon import fit_shape, missing_bins, shape_fit, shape_model
from hps_bayes.model.settings import BackgroundSettings
from hps_bayes.model.window import SIGNAL_REGION, make_window
from hps_bayes.physics.demo import write_demo_file
from hps_bayes.physics.presets import load_preset
from hps_bayes.physics.signal import sigma_m, signal_template
from hps_bayes.studies.selection import candidate_settings, data_cell
from hps_bayes.studies.spurious import fit_truth, truth_of_fit
from hps_bayes.studies.truth_noise import Linearised, TruthNoise
from hps_bayes.studies.truths_at_mass import TruthsAtMass

MASS = 0.05
YIELD = 15000.0


@pytest.fixture(scope="module")
def settings() -> AnalysisSettings:
    return resolve_settings("demo")


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "demo.root"
    return write_demo_file(path, load_preset("demo"), n_events=21.5e6, seed=3, shape="2015", structured=True)


@pytest.fixture(scope="module")
def whole(data: Path, settings: AnalysisSettings) -> Spectrum:
    return whole_range_spectrum(load_spectrum(data, "invariant_mass"), settings)


def _with_signal(whole: Spectrum, settings: AnalysisSettings) -> Spectrum:
    """``whole`` with YIELD expected signal events at MASS added."""
    tpl = signal_template(whole.edges, MASS, float(sigma_m(MASS, settings.dataset)))
    return replace(whole, counts=np.asarray(whole.counts, float) + YIELD * tpl)


def _region(whole: Spectrum, settings: AnalysisSettings) -> np.ndarray:
    centers = 0.5 * (whole.edges[1:] + whole.edges[:-1])
    return np.asarray(np.abs(centers - MASS) <= SIGNAL_REGION * float(sigma_m(MASS, settings.dataset)))


@pytest.mark.parametrize("family", ["smooth", "flexible", "expcheb"])
def test_the_refit_is_the_least_squares_fit_with_a_free_signal(whole: Spectrum, settings: AnalysisSettings,
                                                              family: str) -> None:
    """Gauss–Newton from the whole fit reaches SciPy's least squares of the same model (turn-on held, a signal
    of free size added)."""
    edges, counts = np.asarray(whole.edges), np.asarray(whole.counts, float)
    fit = fit_shape(edges, counts, family)
    tpl = signal_template(edges, MASS, float(sigma_m(MASS, settings.dataset)))
    refit, size, error, factor = Linearised.at(whole, fit).with_signal(tpl, with_factor=False)
    m, w = 0.5 * (edges[1:] + edges[:-1]), np.diff(edges)
    model, _ = shape_model(family, float(edges[0]), float(edges[-1]))
    use, err = ~missing_bins(counts), np.sqrt(np.maximum(counts, 1.0))

    def resid(q: np.ndarray) -> np.ndarray:
        mu = w * np.exp(model(m, np.r_[fit.params[:2], q[:-1]])) + q[-1] * tpl
        return np.asarray((mu - counts)[use] / err[use])

    ls = least_squares(resid, np.r_[fit.params[2:], 0.0], x_scale="jac", ftol=1e-14, xtol=1e-14, gtol=1e-12,
                       max_nfev=4000)
    expected = shape_fit(edges, counts, family, np.r_[fit.params[:2], ls.x[:-1]]).expected
    np.testing.assert_allclose(refit.expected, expected, rtol=1e-6)
    assert size == pytest.approx(ls.x[-1], rel=1e-4, abs=1.0)
    # the error of the signal's size: from the least-squares Jacobian (SciPy's, by finite differences)
    assert error == pytest.approx(float(np.sqrt(np.linalg.inv(ls.jac.T @ ls.jac)[-1, -1])), rel=1e-3)
    assert factor.shape == (len(m), 0)


def test_a_signal_pulls_the_whole_fit_and_little_the_signal_free_one(whole: Spectrum,
                                                                     settings: AnalysisSettings) -> None:
    """On this spectrum the whole fits take up 13,200 (smooth) and 14,500 (flexible) of the 15,000 events in the
    signal region; the signal-free refits differ by 900 and 2,500 there (their turn-ons, held at the whole fits',
    differ), and the signal they find grows by 14,100 and 12,400."""
    names = ["smooth", "flexible"]
    plain = TruthsAtMass.fit(whole, settings, names, ["flexible"])
    signal = TruthsAtMass.fit(_with_signal(whole, settings), settings, names, ["flexible"])
    region = _region(whole, settings)
    for name, bound in (("smooth", 0.1), ("flexible", 0.2)):
        pulled = float(np.sum((signal.truths[name].counts - plain.truths[name].counts)[region]))
        tpl = signal_template(whole.edges, MASS, float(sigma_m(MASS, settings.dataset)))
        refit_plain = truth_of_fit(whole, plain.fits[name].with_signal(tpl, with_factor=False)[0])  # no gate
        free = float(np.sum((signal.at(MASS)[name].truth.counts - refit_plain.counts)[region]))
        assert pulled > 0.8 * YIELD  # the whole fit takes up most of the signal ...
        assert abs(free) < bound * pulled  # ... the refit with the signal free a small part of it
    # the noise factor comes with the truths counted beyond their noise, and only with them
    at = signal.at(MASS)
    assert at["flexible"].factor.shape[0] == whole.n_bins and at["flexible"].factor.shape[1] > 20
    assert at["smooth"].factor.shape[1] == 0
    assert "less a signal of" in at["smooth"].truth.source


def test_the_window_evidence_has_a_signal_free(whole: Spectrum, settings: AnalysisSettings) -> None:
    """η, ℓ chosen by the window's evidence with a signal at the tested mass free: 15,000 events there move η
    by 0.3 % (0.0799 → 0.0797 at 70 MeV); the evidence of the background alone raises it to 1.73."""
    from hps_bayes.model.coordinate import lnm_coordinate
    from hps_bayes.model.evidence import marginal_likelihood_hyperparameters

    bkg = BackgroundSettings.from_dict(settings.background.to_dict() | {
        "poly_degree": 3, "window_sigmas": 10.0, "hyper": "marginal", "hyper_scope": "window",
        "lengthscale_min": 4.0, "n_basis": 20, "selection": "", "spurious": "off", "degree_table": ()})
    mass = 0.07
    sigma = float(sigma_m(mass, settings.dataset))
    tpl = signal_template(whole.edges, mass, sigma)
    found = []
    for size in (0.0, YIELD):
        counts = np.asarray(whole.counts, float) + size * tpl
        w = make_window(whole.edges, counts, mass=mass, sigma=sigma, template=tpl, settings=bkg,
                        range_lo=float(whole.edges[0]), range_hi=float(whole.edges[-1]))
        t, half = lnm_coordinate(w.edges)
        alone = marginal_likelihood_hyperparameters(t, w.counts, w.log_offset, degree=3, settings=bkg,
                                                    ell_min=4.0 * sigma / mass / half)
        found.append((w.eta, w.lengthscale_t, alone.eta))
    (plain, ell, alone_plain), (signal, ell_signal, alone_signal) = found
    assert plain > 0  # the GP is on here
    assert signal == pytest.approx(plain, rel=0.01) and ell_signal == pytest.approx(ell, rel=0.01)
    assert alone_signal > 10 * alone_plain


def test_a_truth_is_judged_on_the_sidebands(data: Path, whole: Spectrum, settings: AnalysisSettings) -> None:
    """The truth's p-value in a window leaves out the signal region: 20 % more there changes its Â, not its p."""
    spectrum = load_spectrum(data, "invariant_mass")
    own = candidate_settings(settings, "w7_d3", {"poly_degree": 3, "window_sigmas": 7.0}, spectrum)
    spec = prepare_spectrum(spectrum, own)
    truth = crop(fit_truth(whole, "smooth"), float(spec.edges[0]), float(spec.edges[-1]))
    centers = 0.5 * (truth.edges[1:] + truth.edges[:-1])
    region = np.abs(centers - MASS) <= SIGNAL_REGION * float(sigma_m(MASS, settings.dataset))
    bumped = replace(truth, counts=np.where(region, 1.2 * np.asarray(truth.counts), truth.counts))
    plain, _, _ = data_cell(spec, [truth], MASS, own, [own], min_p_without_gp=1e-3)
    bump, _, _ = data_cell(spec, [bumped], MASS, own, [own], min_p_without_gp=1e-3)
    assert bump["p_smooth"] == plain["p_smooth"] and plain["p_smooth"] > 1e-3
    assert bump["A_smooth"] > plain["A_smooth"] + 0.1 * float(np.sum(np.asarray(truth.counts)[region]))


def test_a_truth_counts_the_bias_a_signal_there_does_not_explain(data: Path, settings: AnalysisSettings) -> None:
    """YIELD events at MASS raise the w7_d3 window's Â on the data's whole fits by 6,600 (smooth) and 12,600
    (flexible): the fits take the signal up; on their refits with the signal free, by 900 and 1,300.  S counts
    the smaller of the two |Â| of each truth."""
    raw = load_spectrum(data, "invariant_mass")
    tpl = signal_template(raw.edges, MASS, float(sigma_m(MASS, settings.dataset)))
    cells = []
    for size in (0.0, YIELD):
        spectrum = replace(raw, counts=np.asarray(raw.counts, float) + size * tpl)
        own = candidate_settings(settings, "w7_d3", {"poly_degree": 3, "window_sigmas": 7.0}, spectrum)
        spec = prepare_spectrum(spectrum, own)
        whole = whole_range_spectrum(spectrum, settings)
        at_mass = TruthsAtMass.fit(whole, settings, ["smooth", "flexible"], [])
        truths = [crop(at_mass.truths[f], float(spec.edges[0]), float(spec.edges[-1])) for f in ("smooth", "flexible")]
        # every refit, also where the truth finds no signal (without the signal: TruthsAtMass.at leaves those out)
        on_whole = signal_template(whole.edges, MASS, float(sigma_m(MASS, settings.dataset)))
        free = {f: TruthNoise(truth_of_fit(whole, lin.with_signal(on_whole, with_factor=False)[0]),
                              np.zeros((whole.n_bins, 0))) for f, lin in at_mass.fits.items()}
        cell, _, _ = data_cell(spec, truths, MASS, own, [own, own], min_p_without_gp=1e-3, free=free)
        cells.append(cell)
        assert cell["n_truths"] == 2
        assert cell["spurious_raw"] == max(min(abs(cell[f"A_{f}"]), abs(cell[f"A_free_{f}"])) for f in ("smooth", "flexible"))
        if size:  # with the signal both truths find it: the selection's own refits are these
            assert set(at_mass.at(MASS)) == {"smooth", "flexible"}
    plain, signal = cells
    for name in ("smooth", "flexible"):
        assert signal[f"A_{name}"] - plain[f"A_{name}"] > 0.4 * YIELD
        assert abs(signal[f"A_free_{name}"] - plain[f"A_free_{name}"]) < 0.1 * YIELD


def test_a_truth_that_finds_no_signal_keeps_its_whole_fit(whole: Spectrum, settings: AnalysisSettings) -> None:
    """Where the smooth truth finds no signal (|a| < MIN_SIGNAL_Z times its error), a refit would differ from the
    whole fit by noise: :meth:`TruthsAtMass.at` gives none, and the cells count the whole fits alone; where it
    finds one, every truth's refit counts (the flexible one's too, which finds the signal less clearly)."""
    smooth = TruthsAtMass.fit(whole, settings, ["smooth"], []).truths["smooth"]
    on_itself = TruthsAtMass.fit(smooth, settings, ["smooth"], [])  # a smooth spectrum: no signal anywhere
    assert on_itself.at(MASS) == {}
    on_itself = TruthsAtMass.fit(smooth, settings, ["smooth", "flexible"], [])
    assert on_itself.at(MASS) == {}
    signal = TruthsAtMass.fit(_with_signal(whole, settings), settings, ["smooth", "flexible"], [])
    assert set(signal.at(MASS)) == {"smooth", "flexible"}
