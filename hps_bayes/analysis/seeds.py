"""Seeds: every random stream of a run derives from its base seed."""

from __future__ import annotations

import numpy as np

from hps_bayes.analysis.settings import AnalysisSettings


def chunk_seeds(seed: int, n_chunks: int) -> list[int]:
    """One seed per chunk from the base seed: ``numpy.random.SeedSequence(seed).spawn(n_chunks)``."""
    children = np.random.SeedSequence(seed).spawn(n_chunks)
    return [int(child.generate_state(1, dtype=np.uint32)[0]) for child in children]


def point_seed(seed: int, mass: float) -> int:
    """A seed for one mass point that does not depend on how the grid is chunked.

    ``SeedSequence(seed, spawn_key=(mass in keV,))``: a point draws the same
    toys in a chunked run, a single-process run and a rerun.
    """
    sequence = np.random.SeedSequence(seed, spawn_key=(round(mass * 1e6),))
    return int(sequence.generate_state(1, dtype=np.uint32)[0])


def point_rng(settings: AnalysisSettings, mass: float, *, purpose: int = 0) -> np.random.Generator:
    """The generator of one mass point: from ``settings.seed`` and the mass (in 0.1 keV), so that
    results do not depend on chunking or order (``numpy.random.SeedSequence``)."""
    return np.random.default_rng(np.random.SeedSequence([settings.seed, round(mass * 1e7), purpose]))
