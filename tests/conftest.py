"""Shared fixtures: one canonical small HPS-like spectrum (2015-like, seeded)."""

from __future__ import annotations

import os
import tempfile

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("MPLBACKEND", "Agg")
# The spectrum read cache of this test run (shared with the processes the tests start), not the user's.
os.environ.setdefault("HPS_BAYES_CACHE", tempfile.mkdtemp(prefix="hps_bayes_cache_"))

import numpy as np
import pytest

from hps_bayes.inputs.spectrum import Spectrum, crop, rebin
from hps_bayes.physics.demo import expected_spectrum, simulate_spectrum

N_EVENTS = 2_000_000


def _prepare(spectrum: Spectrum) -> Spectrum:
    """0.05 MeV bins rebinned to 0.5 MeV and cropped to the 2015 range, as the preset does."""
    return crop(rebin(spectrum, 10), 0.020, 0.130)


@pytest.fixture(scope="session")
def spectrum_2015() -> Spectrum:
    """A 2015-like spectrum with 2M events, 0.5 MeV bins over 20-130 MeV (seed 7)."""
    return _prepare(simulate_spectrum("2015", n_events=N_EVENTS, rng=np.random.default_rng(7)))


@pytest.fixture(scope="session")
def expected_2015() -> Spectrum:
    """The noise-free expected counts of the same spectrum."""
    return _prepare(expected_spectrum("2015", n_events=N_EVENTS))


@pytest.fixture(scope="session")
def raw_spectrum_2015() -> Spectrum:
    """The fine-binned (0.05 MeV) spectrum as a ROOT file would hold it (for the public API)."""
    return simulate_spectrum("2015", n_events=N_EVENTS, rng=np.random.default_rng(7))


def _assert_png(path, figsize=(12.0, 10.0), min_coloured=2e-4):
    """``path`` is a PNG of ``figsize`` inches at the plots' DPI with data drawn on it: more than
    ``min_coloured`` of its pixels coloured (axes, labels and text are grey; an empty figure has none)."""
    from matplotlib.image import imread

    from hps_bayes.plots.style import DPI

    image = imread(path)[..., :3]
    assert image.shape[:2] == (round(figsize[1] * DPI), round(figsize[0] * DPI)), (path, image.shape)
    coloured = float(np.mean(image.max(axis=-1) - image.min(axis=-1) > 0.2))
    assert coloured > min_coloured, f"{path}: only {coloured:.2e} of the pixels are coloured (no data drawn?)"


@pytest.fixture(scope="session")
def assert_png():
    """The check of a written figure: size, and data drawn on it (see ``_assert_png``)."""
    return _assert_png
