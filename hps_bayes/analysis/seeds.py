"""Seeds: every random stream of a run derives from its base seed, here and nowhere else.

One derivation, :class:`numpy.random.SeedSequence`, keyed two ways:

* by entropy ``[seed, *key]`` (:func:`sequence`): a mass point's streams use the key
  ``(mass in 0.1 keV, purpose)`` (:func:`point_key`), so that a point draws the same
  numbers in a chunked run, a single-process run and a rerun; a run-wide stream uses the
  mass key 0; a spurious-signal cell uses ``(shape index, mass index)``;
* by spawn key ``(index,)`` (:func:`spawned`, the children of ``SeedSequence(seed).spawn``):
  the chunks of a scan and the active-learning loop.

A stream's seed is recorded as its entropy, a list of integers:
``numpy.random.default_rng(numpy.random.SeedSequence(entropy))`` reproduces it.

Purposes (the last entry of a point's key):

============  =====  ===========================================================
name          value  stream
============  =====  ===========================================================
TOYS          0      a mass point's toy calculator (``stats=toys``: limits and p0)
LEE_SCANS     2      the look-elsewhere toy scans of a run (mass key 0)
TOY_P0        3      a mass point's background-only toys for a large excess
POSTERIOR     6      a mass point's NUTS sampler (an integer seed, :func:`integer`)
COMBINED      7      a combination's toys at one mass
SELECT        8      the Z-spread toys of the background selection (mass key 0)
BAND_TOYS     9      + batch k as a fourth entry: batch k of a mass point's band toys (``task=bands``)
INJECTION     1000   + 100 · truth index + yield index: injection pseudo-experiments
COVERAGE      5000   + 100 · model + 10 · method + yield index: coverage ensembles
============  =====  ===========================================================
"""

from __future__ import annotations

import numpy as np

from hps_bayes.analysis.settings import AnalysisSettings

TOYS = 0
LEE_SCANS = 2
TOY_P0 = 3
POSTERIOR = 6
COMBINED = 7
SELECT = 8
BAND_TOYS = 9
INJECTION = 1000
COVERAGE = 5000


def sequence(seed: int, *key: int) -> np.random.SeedSequence:
    """The stream of ``key`` under the base ``seed``: ``SeedSequence([seed, *key])``."""
    return np.random.SeedSequence([int(seed), *(int(k) for k in key)])


def generator(seed: int, *key: int) -> np.random.Generator:
    """A generator of the stream of ``key`` (:func:`sequence`)."""
    return np.random.default_rng(sequence(seed, *key))


def integer(seed: int, *key: int) -> int:
    """An integer seed (uint32) of the stream of ``key``: the first word of its state, for
    libraries that take an integer (e.g. a sampler's ``random_seed``)."""
    return _first_word(sequence(seed, *key))


def spawned(seed: int, index: int) -> np.random.SeedSequence:
    """Child ``index`` of ``SeedSequence(seed).spawn(n)`` (for any n > index)."""
    return np.random.SeedSequence(int(seed), spawn_key=(int(index),))


def _first_word(seq: np.random.SeedSequence) -> int:
    return int(seq.generate_state(1, dtype=np.uint32)[0])


def mass_key(mass: float) -> int:
    """A mass (GeV) as a key: in units of 0.1 keV, so that rounding noise in the grid does not matter."""
    return round(mass * 1e7)


def point_key(seed: int, mass: float, purpose: int = TOYS) -> list[int]:
    """The entropy of one mass point's stream: ``[seed, mass in 0.1 keV, purpose]``; it is what
    ``numbers.json`` records as the point's seed (:func:`generator` of it reproduces the toys).

    >>> point_key(20151, 0.030)
    [20151, 300000, 0]
    """
    return [int(seed), mass_key(mass), int(purpose)]


def point_rng(settings: AnalysisSettings, mass: float, *, purpose: int = TOYS) -> np.random.Generator:
    """The generator of one mass point's stream ``purpose`` (:func:`point_key`)."""
    return generator(*point_key(settings.seed, mass, purpose))


def posterior_seed(seed: int, mass: float) -> int:
    """The sampler seed of one mass point: :func:`integer` of ``[seed, mass in 0.1 keV, POSTERIOR]``."""
    return integer(*point_key(seed, mass, POSTERIOR))


def run_rng(seed: int, purpose: int) -> np.random.Generator:
    """A run-wide stream (mass key 0), e.g. ``LEE_SCANS``."""
    return generator(seed, 0, purpose)


def cell_seed(seed: int, shape_index: int, mass_index: int) -> int:
    """The integer toy seed of one spurious-signal cell: :func:`integer` of ``[seed, shape, mass index]``."""
    return integer(seed, shape_index, mass_index)


def chunk_seeds(seed: int, n_chunks: int) -> list[int]:
    """One integer seed per chunk: the first word of each child of ``SeedSequence(seed).spawn(n_chunks)``."""
    return [_first_word(spawned(seed, k)) for k in range(n_chunks)]


def loop_rng(seed: int) -> np.random.Generator:
    """The active-learning loop's generator: child 0 of ``SeedSequence(seed).spawn``."""
    return np.random.default_rng(spawned(seed, 0))
