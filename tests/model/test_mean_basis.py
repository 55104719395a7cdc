"""The published background forms: exp(Chebyshev / Legendre in m) and the per-mass degree/window table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hps_bayes.errors import ConfigError
from hps_bayes.fit.newton import newton_fit
from hps_bayes.model.basis import mean_design, window_coordinate
from hps_bayes.model.objective import WindowObjective
from hps_bayes.model.settings import BackgroundSettings
from hps_bayes.model.window import make_window

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
TABLE = ((0.039, 5, 7.0), (1.0, 3, 6.5))
PUBLISHED = BackgroundSettings(mean_basis="chebyshev_m", degree_table=TABLE, eta=0.0, n_basis=1,
                               spurious="off", turn_on="off")


def _window_objective(counts: np.ndarray, edges: np.ndarray, mass: float,
                      settings: BackgroundSettings) -> WindowObjective:
    sigma = 0.05 * mass
    centers = 0.5 * (edges[1:] + edges[:-1])
    template = np.exp(-0.5 * ((centers - mass) / sigma) ** 2) * np.diff(edges) / (np.sqrt(2 * np.pi) * sigma)
    window = make_window(edges, counts, mass=mass, sigma=sigma, template=template, settings=settings,
                         range_lo=float(edges[0]), range_hi=float(edges[-1]))
    return WindowObjective(window, settings)


def test_design_columns_are_the_polynomials_of_the_mapped_mass() -> None:
    edges = np.linspace(0.030, 0.050, 41)
    x = window_coordinate(edges, "chebyshev_m")
    assert x[0] > -1 and x[-1] < 1 and np.allclose(np.diff(x), np.diff(x)[0])  # linear in m
    t = window_coordinate(edges, "legendre_lnm")
    assert not np.allclose(np.diff(t), np.diff(t)[0], rtol=1e-6)  # linear in ln m
    np.testing.assert_allclose(mean_design(edges, 3, "chebyshev_m")[:, 3], 4 * x**3 - 3 * x, atol=1e-13)
    np.testing.assert_allclose(mean_design(edges, 3, "legendre_m")[:, 3], 0.5 * (5 * x**3 - 3 * x), atol=1e-13)


def test_degree_table_picks_degree_and_window_per_mass() -> None:
    s = BackgroundSettings(degree_table=[[0.039, 5, 7], [1.0, 3, 6.5]])  # type: ignore[arg-type]
    assert s.degree_table == TABLE
    assert (s.at_mass(0.0389).poly_degree, s.at_mass(0.0389).window_sigmas) == (5, 7.0)
    assert (s.at_mass(0.039).poly_degree, s.at_mass(0.039).window_sigmas) == (3, 6.5)
    assert s.at_mass(2.0).poly_degree == 3  # above every m_max: the last row
    assert BackgroundSettings().at_mass(0.05) == BackgroundSettings()


@pytest.mark.parametrize("bad", [{"mean_basis": "legendre_ln"}, {"degree_table": ((0.05, 3, 6.0), (0.04, 5, 7.0))},
                                 {"degree_table": ((0.05, 20, 6.0),)}, {"degree_table": ((0.05, 3),)}])
def test_bad_mean_settings_are_config_errors(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError, match="background"):
        BackgroundSettings(**bad)  # type: ignore[arg-type]


def test_published_forms_fit_an_exp_polynomial_in_m_exactly() -> None:
    """Counts exp(cubic in m) (~1e8 per bin, rounded: the compiled likelihood takes integer counts):
    Chebyshev and Legendre in m (degree 3) reproduce them and agree with each other to the rounding
    (≤ 1e-8 relative; 1e-6 allowed); the window is 2 × 6.5σ wide above 39 MeV, 2 × 7σ below with degree 5."""
    edges = np.linspace(0.035, 0.080, 91)
    centers = 0.5 * (edges[1:] + edges[:-1])
    truth = np.round(np.exp(20.0 - 60.0 * centers + 300.0 * centers**2 - 1500.0 * centers**3))
    fits = {}
    for basis in ("chebyshev_m", "legendre_m"):
        obj = _window_objective(truth, edges, 0.055, BackgroundSettings(
            mean_basis=basis, degree_table=TABLE, eta=0.0, n_basis=1, spurious="off"))  # type: ignore[arg-type]
        fit = newton_fit(obj, obj.observed(), poi_fixed=0.0)
        assert fit.converged and obj.window.legendre.shape[1] == 4
        width = obj.window.edges[-1] - obj.window.edges[0]
        assert width == pytest.approx(13.0 * obj.window.sigma, abs=np.diff(edges)[0])
        fits[basis] = obj.background(fit.theta)
        np.testing.assert_allclose(fits[basis], truth[(centers >= obj.window.edges[0]) &
                                                       (centers <= obj.window.edges[-1])], rtol=1e-6)
    np.testing.assert_allclose(fits["chebyshev_m"], fits["legendre_m"], rtol=1e-6)
    low = _window_objective(truth, edges, 0.037, PUBLISHED)
    assert low.window.legendre.shape[1] == 6 and low.settings.poly_degree == 5
    assert low.window.edges[-1] - low.window.edges[0] == pytest.approx(14.0 * low.window.sigma,
                                                                       abs=np.diff(edges)[0])


def test_published_experiment_composes_into_settings() -> None:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from hps_bayes.analysis.settings import settings_from_mapping

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["experiment=hps2015_published"])
    settings = settings_from_mapping(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    assert settings.stats.limit == "pcl" and settings.background.mean_basis == "chebyshev_m"
    assert settings.background.degree_table == TABLE
    assert (settings.scan.mass_min, settings.scan.mass_max, settings.scan.step) == (0.020, 0.081, 0.0005)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["dataset=demo2016", "experiment=hps2016_published"])
    s2016 = settings_from_mapping(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    assert s2016.background.mean_basis == "legendre_m" and s2016.stats.limit == "pcl"
    degrees = {s2016.background.at_mass(m).poly_degree for m in (0.045, 0.065)}, s2016.background.at_mass(0.1)
    assert degrees[0] == {5} and degrees[1].poly_degree == 3
    assert all(3.0 <= row[2] <= 5.0 for row in s2016.background.degree_table)  # 6-10 sigma full width
