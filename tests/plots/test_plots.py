"""Plots: every figure is written, non-trivial and not blank; failed rows are shown, not dropped."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from hps_bayes.errors import InputError
from hps_bayes.plots import scan as plots_scan
from hps_bayes.plots import window as plots_window
from hps_bayes.results.objects import MassPointResult, WindowFitArrays, results_frame

DATASET = "2015"


def _row(mass_mev: float, z: float, *, status: str = "ok") -> MassPointResult:
    eps2_median = 3e-6 * (1 + ((mass_mev - 45) / 40) ** 2)
    a_median = 400 + 5 * mass_mev
    factors = (0.55, 0.74, 1.0, 1.38, 1.9)
    sigma_a = a_median / 1.96
    return MassPointResult(
        dataset=DATASET, mass=mass_mev / 1e3, status=status, A_hat=z * sigma_a, sigma_A=sigma_a,
        Z=max(z, 0.0), p0=0.5 * math.erfc(max(z, 0.0) / math.sqrt(2)), A_up=a_median * math.exp(0.3 * z),
        A_up_expected=tuple(a_median * f for f in factors), eps2_up=eps2_median * math.exp(0.3 * z),
        eps2_up_expected=tuple(eps2_median * f for f in factors), converged=status == "ok")


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    rng = np.random.default_rng(1)
    masses = np.arange(20.0, 131.0, 5.0)
    rows = [_row(m, float(z)) for m, z in zip(masses, rng.normal(size=masses.size), strict=True)]
    rows.append(_row(62.5, 0.0, status="fit_failed"))  # one failed row, must be marked not dropped
    return results_frame(rows)


@pytest.fixture(scope="module")
def arrays() -> WindowFitArrays:
    rng = np.random.default_rng(2)
    mass, sigma = 0.030, 0.0013
    edges = np.arange(mass - 10 * sigma, mass + 10 * sigma + 1e-12, 0.0005)
    centres = 0.5 * (edges[1:] + edges[:-1])
    background = 2e4 * (centres / mass) ** -3
    cdf = np.array([0.5 * (1 + math.erf((e - mass) / (sigma * math.sqrt(2)))) for e in edges])
    template = np.diff(cdf)
    return WindowFitArrays(
        dataset=DATASET, mass=mass, sigma_m=sigma, edges=edges,
        counts=rng.poisson(background).astype(float), background_free=background,
        signal_free=150 * template, background_limit=0.998 * background, signal_limit=900 * template,
        A_hat=150.0, A_up=900.0, Z=0.6)


def _assert_drawn(path: Path) -> None:
    assert path.exists(), path
    assert path.stat().st_size > 10_000, f"{path} is suspiciously small ({path.stat().st_size} bytes)"
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 500 and image.shape[1] > 500
    assert float(np.var(image[..., :3])) > 0, f"{path} is blank"


def test_frame_plots_write_non_blank_pngs(frame: pd.DataFrame, tmp_path: Path) -> None:
    published = pd.DataFrame({"mass_GeV": [0.02, 0.04, 0.08], "epsilon2": [2e-5, 6e-6, 3e-5]})
    written = [
        plots_scan.plot_eps2_limits(frame, tmp_path / "eps2.png", dataset_label="HPS 2015", published=published,
                               title="test"),
        plots_scan.plot_A_limits(frame, tmp_path / "A.png", dataset_label="HPS 2015"),
        plots_scan.plot_p0(frame, tmp_path / "p0.png", dataset_label="HPS 2015"),
        plots_scan.plot_z_distribution(frame, tmp_path / "z.png", dataset_label="HPS 2015"),
        plots_scan.plot_z_distribution(frame, tmp_path / "z_signed.png", dataset_label="HPS 2015", z="signed"),
    ]
    for path in written:
        _assert_drawn(path)


def test_summary_plots_from_rows_are_the_frames(frame: pd.DataFrame, tmp_path: Path) -> None:
    """A command-line scan draws its summary from its rows (no pandas): the same files, byte for byte."""
    rows = frame.to_dict("records")[::-1]  # any order: the figures sort by mass
    published = pd.DataFrame({"mass_GeV": [0.04, 0.02, 0.08], "epsilon2": [6e-6, 2e-5, 3e-5]})
    for name, source, pub in (("frame", frame, published), ("rows", rows, published.to_dict("records"))):
        plots_scan.plot_eps2_limits(source, tmp_path / name / "eps2.png", dataset_label="HPS 2015", published=pub)
        plots_scan.plot_A_limits(source, tmp_path / name / "A.png", dataset_label="HPS 2015")
        plots_scan.plot_p0(source, tmp_path / name / "p0.png", dataset_label="HPS 2015")
        plots_scan.plot_z_distribution(source, tmp_path / name / "z.png", dataset_label="HPS 2015")
    for figure in ("eps2.png", "A.png", "p0.png", "z.png"):
        assert (tmp_path / "rows" / figure).read_bytes() == (tmp_path / "frame" / figure).read_bytes(), figure


def test_window_plots_write_non_blank_pngs(arrays: WindowFitArrays, tmp_path: Path) -> None:
    written = [
        plots_window.plot_fit_full(arrays, tmp_path / "fit_full.png"),
        plots_window.plot_fit_full(arrays, tmp_path / "fit_full_lin.png", yscale="linear"),
        plots_window.plot_blind_ul(arrays, tmp_path / "blind_ul.png"),
        plots_window.plot_blind_ul(arrays, tmp_path / "blind_ul_lin.png", yscale="linear"),
        plots_window.plot_s_over_b_ul(arrays, tmp_path / "sub" / "s_over_b_ul.png"),
    ]
    for path in written:
        _assert_drawn(path)


def test_failed_rows_are_marked_not_dropped(frame: pd.DataFrame) -> None:
    curve = plots_scan._limit_curve(frame, "eps2_up", "HPS 2015")
    assert curve.failed_mass_mev.tolist() == [62.5]
    assert 62.5 not in curve.mass_mev
    assert curve.failed_statuses == ("fit_failed",)
    assert curve.expected.shape == (5, curve.mass_mev.size)


def test_all_failed_frame_draws_a_labelled_plot(frame: pd.DataFrame, tmp_path: Path) -> None:
    """Chosen behaviour: a frame with only failed rows still gives a plot (red ticks + a note)."""
    failed = frame.assign(status="fit_failed")
    _assert_drawn(plots_scan.plot_eps2_limits(failed, tmp_path / "failed.png", dataset_label="HPS 2015"))
    _assert_drawn(plots_scan.plot_p0(failed, tmp_path / "failed_p0.png", dataset_label="HPS 2015"))


def test_empty_frame_raises_naming_the_dataset(frame: pd.DataFrame, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="HPS 2016"):
        plots_scan.plot_eps2_limits(frame.iloc[:0], tmp_path / "empty.png", dataset_label="HPS 2016")
    with pytest.raises(InputError, match="HPS 2016"):
        plots_scan.plot_A_limits(results_frame([]), tmp_path / "empty.png", dataset_label="HPS 2016")
    assert not (tmp_path / "empty.png").exists()


def test_mixed_datasets_and_bad_published_raise(frame: pd.DataFrame, tmp_path: Path) -> None:
    mixed = pd.concat([frame, frame.assign(dataset="2016")], ignore_index=True)
    with pytest.raises(InputError, match="mixes datasets"):
        plots_scan.plot_p0(mixed, tmp_path / "mixed.png", dataset_label="both")
    with pytest.raises(InputError, match="epsilon2"):
        plots_scan.plot_eps2_limits(frame, tmp_path / "pub.png", dataset_label="HPS 2015",
                               published=pd.DataFrame({"mass_GeV": [0.03], "eps": [1e-5]}))


def test_window_arrays_of_wrong_shape_raise(arrays: WindowFitArrays, tmp_path: Path) -> None:
    bad = WindowFitArrays(**{**arrays.__dict__, "counts": np.asarray(arrays.counts)[:-1]})
    with pytest.raises(InputError, match="do not match"):
        plots_window.plot_fit_full(bad, tmp_path / "bad.png")


def test_no_pyplot_figures_are_left_open(frame: pd.DataFrame, tmp_path: Path) -> None:
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    plots_scan.plot_p0(frame, tmp_path / "p0.png", dataset_label="HPS 2015")
    assert plt.get_fignums() == before


def test_selection_plot_breaks_a_candidates_line_where_it_has_no_fit(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from hps_bayes.plots import selection as plots_selection

    grid = np.round(np.arange(0.040, 0.0521, 0.002), 4)
    available = np.array([True, True, False, False, True, True, True])  # 44-46 MeV: a run of missing data
    cells = pd.DataFrame({"model": "w10_d10", "mass": grid, "available": available,
                          "passes": available, "ratio": np.linspace(2.0, 3.0, grid.size)})
    content = {"rows": [{"mass": float(m), "model": "w10_d10" if a else "", "ratio": 2.5, "z": 0.1,
                         "sigma_stat": 1.0, "sigma_tot": 1.1} for m, a in zip(grid, available, strict=True)]}
    drawn: list[np.ndarray] = []
    original = plots_selection.save_figure

    def keep_lines(fig, path):  # type: ignore[no-untyped-def]
        drawn.extend(np.asarray(line.get_ydata(), float) for line in fig.axes[0].get_lines()[:1])
        return original(fig, path)

    monkeypatch.setattr(plots_selection, "save_figure", keep_lines)
    out = plots_selection.plot_selection(cells, content, tmp_path / "selection.png", dataset_label="HPS 2015")
    assert out.stat().st_size > 10_000
    (solid,) = drawn
    np.testing.assert_array_equal(np.isnan(solid), ~available)  # no segment drawn across 44-46 MeV
