"""The noise of a truth's own fit in a candidate's bias on it (hps_bayes.studies.truth_noise, task.beyond_noise)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from hps_bayes.analysis.grid import prepare_spectrum, whole_range_spectrum
from hps_bayes.analysis.settings import AnalysisSettings, resolve_settings
from hps_bayes.analysis.windows import build_window
from hps_bayes.errors import ConfigError
from hps_bayes.fit.newton import newton_fit
from hps_bayes.inputs.root_io import load_spectrum
from hps_bayes.inputs.spectrum import Spectrum, crop
from hps_bayes.model.objective import WindowObjective
from hps_bayes.physics.demo import write_demo_file
from hps_bayes.physics.presets import load_preset
from hps_bayes.studies.selection import (
    Criteria,
    _truth_settings,
    candidate_settings,
    data_cell,
    run_selection,
)
from hps_bayes.studies.spurious import fit_truth
from hps_bayes.studies.truth_noise import TruthNoise
from hps_bayes.studies.truths_at_mass import TruthsAtMass

W7_D3 = {"poly_degree": 3, "window_sigmas": 7.0}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("data") / "demo.root"
    return write_demo_file(path, load_preset("demo"), n_events=21.5e6, seed=3, shape="2015", structured=True)


@pytest.fixture(scope="module")
def flexible(data: Path) -> tuple[Spectrum, TruthNoise]:
    whole = whole_range_spectrum(load_spectrum(data, "invariant_mass"), resolve_settings("demo"))
    return whole, TruthsAtMass.fit(whole, resolve_settings("demo"), ["flexible"], ["flexible"]).noise("flexible")


def _w7_d3_on(data: Path, noisy: TruthNoise) -> tuple[Spectrum, AnalysisSettings, Spectrum]:
    """The w7_d3 candidate's prepared data, settings, and the truth on the same range."""
    spectrum = load_spectrum(data, "invariant_mass")
    own = candidate_settings(resolve_settings("demo"), "w7_d3", W7_D3, spectrum)
    spec = prepare_spectrum(spectrum, own)
    return spec, own, crop(noisy.truth, float(spec.edges[0]), float(spec.edges[-1]))


def test_the_truth_is_the_one_fit_truth_makes(flexible: tuple[Spectrum, TruthNoise]) -> None:
    whole, noisy = flexible
    np.testing.assert_array_equal(noisy.truth.counts, fit_truth(whole, "flexible").counts)
    assert noisy.factor.shape[0] == noisy.truth.n_bins


def test_the_factor_gives_how_the_fit_follows_a_change_of_the_counts(flexible: tuple[Spectrum, TruthNoise]) -> None:
    """The refit of counts n + δ moves the expected counts by K W δ (K = L Lᵀ, W = 1/n: the Neyman weights),
    which is how K = J C Jᵀ propagates the counts' noise."""
    whole, noisy = flexible
    n = np.asarray(whole.counts, float)
    delta = 0.03 * np.sqrt(np.maximum(n, 1.0)) * np.random.default_rng(1).standard_normal(n.size)
    moved = fit_truth(replace(whole, counts=n + delta, variances=n + delta), "flexible").counts
    predicted = noisy.factor @ (noisy.factor.T @ (delta / np.maximum(n, 1.0)))
    change = moved - noisy.truth.counts
    # measured: the linear prediction misses the refit's change by 2.0 % of its size (with the turn-on of this
    # spectrum's flexible fit at its width bound); larger changes move the barely constrained turn-on to another
    # minimum (docs/background_selection.md)
    assert np.linalg.norm(change - predicted) < 0.025 * np.linalg.norm(change)


def test_sigma_is_the_linear_response_of_a_hat(data: Path, flexible: tuple[Spectrum, TruthNoise]) -> None:
    """With a one-column factor v, σ_n = |∂Â/∂n · v|: the change of the candidate's Â fitted to μ + εv."""
    _, noisy = flexible
    _, own, truth = _w7_d3_on(data, noisy)
    settings = _truth_settings(truth, own)
    window = build_window(truth, 0.05, settings)
    objective = WindowObjective(window, settings.background)
    fit = newton_fit(objective, objective.observed())
    i0 = int(np.argmin(np.abs(noisy.truth.edges - window.edges[0])))
    v = np.zeros(noisy.truth.n_bins)
    v[i0:i0 + window.n_bins] = np.sqrt(window.counts) * np.cos(np.linspace(0, 9, window.n_bins))
    eps = 1e-3
    pushed = WindowObjective(replace(window, counts=window.counts + eps * v[i0:i0 + window.n_bins]),
                             settings.background)
    slope = (newton_fit(pushed, pushed.observed()).theta[0] - fit.theta[0]) / eps
    sigma = TruthNoise(noisy.truth, v[:, None]).sigma(objective, fit)
    assert sigma == pytest.approx(abs(slope), rel=2e-6)  # measured: 5e-7 (the finite step's curvature)


def test_a_truth_counted_beyond_its_noise(data: Path, flexible: tuple[Spectrum, TruthNoise]) -> None:
    """data_cell counts a truth named in ``noise`` with √max(Â² − σ_n², 0) and records σ_n; the others as before."""
    _, noisy = flexible
    spec, own, truth = _w7_d3_on(data, noisy)
    plain, _, _ = data_cell(spec, [truth], 0.05, own, [_truth_settings(truth, own)], min_p_without_gp=1e-3)
    counted, _, _ = data_cell(spec, [truth], 0.05, own, [_truth_settings(truth, own)], min_p_without_gp=1e-3,
                              noise={"flexible": noisy})
    assert "noise_flexible" not in plain and plain["spurious_raw"] == abs(plain["A_flexible"])
    assert counted["A_flexible"] == plain["A_flexible"] and counted["noise_flexible"] > 0
    expected = np.sqrt(max(counted["A_flexible"] ** 2 - counted["noise_flexible"] ** 2, 0.0))
    assert counted["spurious_raw"] == pytest.approx(expected, rel=1e-12)
    assert counted["spurious_raw"] < plain["spurious_raw"] and counted["eta"] == 0


def test_a_gp_carried_window_leaves_the_truth_out(data: Path, flexible: tuple[Spectrum, TruthNoise]) -> None:
    """A window with an active GP does not count a truth of ``noise`` (its prior holds such structure); the
    truth stays its fallback where no other truth describes the window."""
    _, noisy = flexible
    spectrum = load_spectrum(data, "invariant_mass")
    gp = {"turn_on": "factor", "poly_degree": 3, "window_sigmas": 10.0, "hyper": "marginal", "hyper_scope": "window",
          "lengthscale_min": 4.0, "n_basis": 20}
    own = candidate_settings(resolve_settings("demo"), "gp_d3", gp, spectrum)
    spec = prepare_spectrum(spectrum, own)
    flex = crop(noisy.truth, float(spec.edges[0]), float(spec.edges[-1]))
    smooth = crop(fit_truth(whole_range_spectrum(spectrum, resolve_settings("demo")), "smooth"),
                  float(spec.edges[0]), float(spec.edges[-1]))
    wrong = replace(smooth, counts=1.05 * smooth.counts, variances=1.05 * smooth.counts, name="wrong")
    truths, settings = [smooth, flex], [_truth_settings(smooth, own), _truth_settings(flex, own)]
    cell, _, _ = data_cell(spec, truths, 0.05, own, settings, noise={"flexible": noisy})
    assert cell["eta"] > 0 and "A_flexible" not in cell and "noise_flexible" not in cell
    assert cell["n_truths"] == 1 and cell["spurious_raw"] == abs(cell["A_smooth"])
    alone, _, _ = data_cell(spec, [wrong, flex], 0.05, own, [settings[0], settings[1]], noise={"flexible": noisy},
                            fallback=(flex, settings[1]))
    assert alone["p_wrong"] < 1e-10 and alone["spurious_raw"] == abs(alone["A_flexible"])
    assert "noise_flexible" not in alone
    assert "S from the 'flexible' truth" in alone["truth_note"] and "control spectrum" in alone["truth_note"]


def test_a_truth_also_among_the_families_counts_in_full(data: Path) -> None:
    frame, _ = run_selection(load_spectrum(data, "invariant_mass"), resolve_settings("demo"), {"w7_d3": W7_D3},
                             families=["smooth", "flexible"], step=0.01, n_toys=2, seed=1,
                             criteria=Criteria(beyond_noise=("flexible",)), mass_min=0.04, mass_max=0.06)
    served = frame[frame.available & (frame.n_truths > 0)]
    assert len(served) == 3 and "noise_flexible" not in frame
    full = [_smaller(served, f).where(served[f"p_{f}"] >= served.truth_min_p, 0.0) for f in ("smooth", "flexible")]
    np.testing.assert_allclose(served.spurious_raw, np.max(full, axis=0), rtol=1e-12)


def test_an_unknown_truth_is_refused_with_the_key(data: Path) -> None:
    with pytest.raises(ConfigError, match=r"task.beyond_noise=\['flexibel'\].*take beyond_noise from"):
        run_selection(load_spectrum(data, "invariant_mass"), resolve_settings("demo"), {"w7_d3": W7_D3},
                      families=["smooth"], step=0.01, n_toys=2, seed=1, criteria=Criteria(beyond_noise=("flexibel",)))


def test_task_select_with_beyond_noise_records_it(data: Path, tmp_path: Path) -> None:
    """``task.beyond_noise=[flexible]`` through the command line: every served cell carries σ_n of the
    flexible truth, S is at least the flexible truth's bias beyond it, and the selection file records it."""
    import json

    import pandas as pd

    from hps_bayes.cli.tasks import run_task

    run_task("select", [f"dataset.path={data}", "task.use=[w7_d3]", "task.step=0.01", "task.mass_min=0.03",
                        "task.mass_max=0.07", "task.n_toys=4", "task.beyond_noise=[flexible]"], tmp_path)
    content = json.loads((tmp_path / "selection_demo.json").read_text())
    assert content["criteria"]["beyond_noise"] == ["flexible"]
    cells = pd.read_csv(tmp_path / "selection_cells.csv")
    served = cells[cells.available & (cells.n_truths > 0)]
    assert len(served) == 5 and (served.noise_flexible > 0).all()
    beyond = _smaller(served, "flexible", noisy=True)
    counted = [_smaller(served, f).where(served[f"p_{f}"] >= served.truth_min_p, 0.0)
               for f in ("expcheb", "powerlaw", "dijet", "smooth")]
    counted.append(beyond.where(served.p_flexible >= served.truth_min_p, 0.0))
    np.testing.assert_allclose(served.spurious_raw, np.max(counted, axis=0), rtol=1e-12)
    assert np.any(served.A_flexible.abs() > served.spurious_raw)  # the noise taken out somewhere


def _smaller(cells: pd.DataFrame, truth: str, *, noisy: bool = False) -> pd.Series:
    """A truth's bias as S counts it: the smaller of its whole fit's and, where the truth finds a signal at the
    mass, its refit's with that signal free (hps_bayes.studies.selection_cell), beyond their noise if ``noisy``."""
    def beyond(a: str, noise: str) -> pd.Series:
        if a not in cells:
            return pd.Series(np.nan, index=cells.index)
        return np.sqrt(np.maximum(cells[a] ** 2 - (cells[noise] ** 2 if noisy else 0.0), 0.0))

    return np.fmin(beyond(f"A_{truth}", f"noise_{truth}"), beyond(f"A_free_{truth}", f"noise_free_{truth}"))
