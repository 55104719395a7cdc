"""WindowPlotter: a figure redrawn for another mass is the figure the one-off functions draw."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from hps_bayes.errors import InputError
from hps_bayes.plots import window as plots_window
from hps_bayes.plots.label import ExperimentLabel, experiment_label
from hps_bayes.results.objects import WindowFitArrays


def _window_arrays(mass: float, *, scale: float, seed: int) -> WindowFitArrays:
    """A ±10σ window of a falling background (``scale`` × 2·10^4 at ``mass``) with a Gaussian template."""
    sigma = 0.05 * mass
    edges = np.arange(mass - 10 * sigma, mass + 10 * sigma + 1e-12, 0.0005)
    centres = 0.5 * (edges[1:] + edges[:-1])
    background = scale * 2e4 * (centres / mass) ** -3
    template = np.diff([0.5 * (1 + math.erf((e - mass) / (sigma * math.sqrt(2)))) for e in edges])
    counts = np.random.default_rng(seed).poisson(background).astype(float)
    return WindowFitArrays(
        dataset="2015", mass=mass, sigma_m=sigma, edges=edges, counts=counts, background_free=background,
        signal_free=150 * scale * template, background_limit=0.998 * background,
        signal_limit=900 * scale * template, A_hat=150.0 * scale, A_up=900.0 * scale, Z=0.6)


@pytest.fixture(scope="module")
def two_masses() -> tuple[WindowFitArrays, WindowFitArrays]:
    """Two windows unlike in every drawn respect: mass, bins, counts (no ×10^k offset on a linear axis
    vs ×10^6, which moves the header), limits."""
    return _window_arrays(0.030, scale=0.01, seed=1), _window_arrays(0.060, scale=50.0, seed=2)


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(imread(path))


@pytest.mark.parametrize("yscale", ["log", "linear"])
def test_redrawn_figures_equal_the_one_off_figures(two_masses: tuple[WindowFitArrays, WindowFitArrays],
                                                   yscale: plots_window.YScale, tmp_path: Path) -> None:
    """Pixel for pixel (the redraw moves artists and limits, and places the header again when the
    linear axis' ×10^k offset changes); measured difference 0, so no tolerance."""
    first, second = two_masses
    one_off = {"fit_full": plots_window.plot_fit_full(second, tmp_path / "one" / "fit_full.png", yscale=yscale),
               "blind_ul": plots_window.plot_blind_ul(second, tmp_path / "one" / "blind_ul.png", yscale=yscale),
               "s_over_b_ul": plots_window.plot_s_over_b_ul(second, tmp_path / "one" / "s_over_b_ul.png")}
    with plots_window.WindowPlotter(yscale=yscale) as plotter:
        plotter.plot_all(first, tmp_path / "first")
        redrawn = plotter.plot_all(second, tmp_path / "second")
    assert [p.name for p in redrawn] == [f"{kind}.png" for kind in plots_window.KINDS]
    for path in redrawn:
        expected = _pixels(one_off[path.stem])
        got = _pixels(path)
        assert got.shape == expected.shape, path.name
        assert int((got != expected).any(axis=-1).sum()) == 0, f"{path.name} differs from the one-off figure"
    assert not np.array_equal(_pixels(tmp_path / "first" / "fit_full.png"), _pixels(redrawn[0]))


@pytest.mark.parametrize("change", ["label", "dataset"])
def test_a_new_label_or_dataset_redraws_the_header(two_masses: tuple[WindowFitArrays, WindowFitArrays],
                                                   change: str, tmp_path: Path) -> None:
    first, _ = two_masses
    label = ExperimentLabel(kind="demo", status="Preliminary") if change == "label" else ExperimentLabel()
    other = WindowFitArrays(**{**first.__dict__, "dataset": "2016" if change == "dataset" else first.dataset})
    with experiment_label(label):
        expected = _pixels(plots_window.plot_s_over_b_ul(other, tmp_path / "one.png"))
    with plots_window.WindowPlotter() as plotter:
        before = _pixels(plotter.plot("s_over_b_ul", first, tmp_path / "first.png"))
        with experiment_label(label):
            got = _pixels(plotter.plot("s_over_b_ul", other, tmp_path / "second.png"))
    assert not np.array_equal(before, expected)
    np.testing.assert_array_equal(got, expected)


def test_pdf_and_png_levels(two_masses: tuple[WindowFitArrays, WindowFitArrays], tmp_path: Path) -> None:
    first, _ = two_masses
    with plots_window.WindowPlotter(png_compress_level=9) as plotter:
        pdf = plotter.plot("fit_full", first, tmp_path / "fit_full.pdf")
        small = plotter.plot("fit_full", first, tmp_path / "fit_full_9.png")
    with plots_window.WindowPlotter(png_compress_level=0) as plotter:
        raw = plotter.plot("fit_full", first, tmp_path / "fit_full_0.png")
    assert pdf.read_bytes()[:5] == b"%PDF-"
    np.testing.assert_array_equal(_pixels(small), _pixels(raw))
    assert small.stat().st_size < raw.stat().st_size / 5, "zlib level 9 should shrink the PNG several-fold"


def test_an_opaque_png_is_written_as_rgb_with_the_pixels_savefig_writes(
        two_masses: tuple[WindowFitArrays, WindowFitArrays], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    from hps_bayes.plots import style

    first, _ = two_masses
    with plots_window.WindowPlotter() as plotter:
        rgb = plotter.plot("blind_ul", first, tmp_path / "rgb.png")
    monkeypatch.setattr(style, "_save_png_rgb", lambda *args, **kwargs: False)  # matplotlib's savefig
    with plots_window.WindowPlotter() as plotter:
        rgba = plotter.plot("blind_ul", first, tmp_path / "rgba.png")
    with Image.open(rgb) as a:
        a.verify()  # chunk lengths and CRCs of the hand-written file
    with Image.open(rgb) as a, Image.open(rgba) as b:
        assert (a.mode, b.mode) == ("RGB", "RGBA") and a.info["dpi"] == b.info["dpi"]
        assert a.info["Software"] == b.info["Software"]
        got, expected = np.asarray(a), np.asarray(b)
    assert (expected[..., 3] == 255).all()
    np.testing.assert_array_equal(got, expected[..., :3])


def test_bad_choices_raise(two_masses: tuple[WindowFitArrays, WindowFitArrays], tmp_path: Path) -> None:
    with pytest.raises(InputError, match="yscale='lin'"):
        plots_window.WindowPlotter(yscale="lin")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="png_compress_level=12"):
        plots_window.WindowPlotter(png_compress_level=12)
    with pytest.raises(InputError, match="kind='pulls'"):
        plots_window.WindowPlotter().plot("pulls", two_masses[0], tmp_path / "x.png")  # type: ignore[arg-type]
    assert not (tmp_path / "x.png").exists()


def test_worker_processes_draw_the_same_files_with_the_callers_label(tmp_path: Path) -> None:
    """plot_windows in two worker processes writes byte-identical files to one process, under the label
    of the caller (the workers do not inherit it by themselves)."""
    from hps_bayes.plots.parallel import MIN_MASSES_PER_WORKER, plot_windows

    items = [_window_arrays(0.03 + 0.002 * k, scale=1.0 + k, seed=k) for k in range(2 * MIN_MASSES_PER_WORKER)]
    label = ExperimentLabel(kind="simulation", status="Preliminary")
    calls: list[int] = []  # the caller's other work runs once, in the caller's process, in both paths

    def meanwhile() -> None:
        calls.append(os.getpid())

    with experiment_label(label):
        serial = plot_windows([(a, tmp_path / "one" / f"m{k}") for k, a in enumerate(items)], workers=1,
                              meanwhile=meanwhile)
        pooled = plot_windows([(a, tmp_path / "two" / f"m{k}") for k, a in enumerate(items)], workers=2,
                              meanwhile=meanwhile)
    assert calls == [os.getpid(), os.getpid()]
    assert len(serial) == len(pooled) == 3 * len(items)
    for one, two in zip(serial, pooled, strict=True):
        assert one.relative_to(tmp_path / "one") == two.relative_to(tmp_path / "two")
        assert one.read_bytes() == two.read_bytes(), two
    with experiment_label(ExperimentLabel()):
        plot_windows([(items[0], tmp_path / "data")], workers=2)  # one mass: drawn here, not in a worker
    assert not np.array_equal(_pixels(tmp_path / "data" / "fit_full.png"), _pixels(serial[0]))
