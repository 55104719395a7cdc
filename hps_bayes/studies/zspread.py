"""The Z spread over masses that a candidate background shows on noise alone, and on the data locally.

Used by :mod:`hps_bayes.studies.selection` (step 2 of its docstring): Â/σ_A of neighbouring masses are
correlated (their windows overlap), so the spread a calibrated model shows is below 1 and is measured on
Poisson toys of the ``smooth`` truth; a signal's own mass and its side lobes are left out of both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from hps_bayes.core import FloatArray
from hps_bayes.fit.batch import poi_fits_batch
from hps_bayes.inputs.spectrum import edge_index
from hps_bayes.model.objective import WindowObjective

__all__ = ["PEAK_HALF", "local_spreads", "spread_reference", "toy_z"]


def spread_reference(z_toys: FloatArray, positions: FloatArray | None = None) -> tuple[float, float]:
    """The spread over masses of Â/σ_A that the candidate shows on noise alone: mean and standard deviation over
    the toys of each toy's spread, after the per-mass mean over the toys (the candidate's bias on the truth) is
    taken out.  It holds the correlation between masses (the windows overlap: a spread below 1 even for a
    calibrated model, about √(1 − ρ̄)) and the scatter of a spread measured on one spectrum.

    With the masses' grid ``positions``, each toy's largest |Â/σ_A| and its neighbours are left out
    (:func:`_peak_free`), as :func:`local_spreads` does on the data; every mass then needs two fitted toys,
    and three masses are needed."""
    z = np.asarray(z_toys, float)
    n = np.sum(np.isfinite(z), axis=0)
    if positions is None:
        z, n = z[:, n > 1], n[n > 1]  # masses no toy (or one) was fitted at say nothing
        if z.shape[1] < 2:
            return math.nan, math.nan
    elif z.shape[1] < 3 or np.any(n < 2):
        return math.nan, math.nan
    centred = (z - np.nanmean(z, axis=0)) * np.sqrt(n / (n - 1))
    if positions is None:
        spreads = np.nanstd(centred, axis=1, ddof=1)
    else:
        at = np.asarray(positions, float)
        spreads = np.array([np.std(_peak_free(row[fitted], at[fitted]), ddof=1)
                            for row in centred if (fitted := np.isfinite(row)).sum() >= 3])
    spreads = spreads[np.isfinite(spreads)]
    if spreads.size < 2:
        return math.nan, math.nan
    return float(np.mean(spreads)), float(np.std(spreads, ddof=1))


#: Grid masses on each side of the largest |Â/σ_A| that the local Z spread leaves out: a signal (what the
#: search looks for) raises Â/σ_A at its mass and its neighbours, and must not make every candidate
#: fail there; localized mis-modelling is the spurious-signal nuisance's part.
PEAK_HALF = 4


def _peak_free(z: FloatArray, positions: FloatArray) -> FloatArray:
    """``z`` without the entries within :data:`PEAK_HALF` grid positions of its largest |z| (only that entry
    where fewer than 3 would be left)."""
    centre = positions[int(np.nanargmax(np.abs(z)))]
    keep = np.abs(positions - centre) > PEAK_HALF
    if keep.sum() < 3:
        keep = positions != centre
    return z[keep]


def local_spreads(z_data: FloatArray, z_toys: FloatArray, half: int) -> FloatArray:
    """Per mass j, over the grid masses j − ``half`` … j + ``half`` where the candidate serves, leaving out the
    largest |Â/σ_A| and its :data:`PEAK_HALF` neighbours on each side (a signal's place): the spread of Â/σ_A on
    the data divided by the same spread of the toys there (:func:`spread_reference`, each toy's own peak left
    out), that reference and its scatter (columns of the returned M × 3 array; NaN where fewer than 3 masses are
    served)."""
    out = np.full((len(z_data), 3), np.nan)
    for j in range(len(z_data)):
        part = slice(max(0, j - half), j + half + 1)
        served = np.isfinite(z_data[part])
        if served.sum() < 3 or not np.isfinite(z_data[j]):
            continue
        positions = np.arange(part.start, min(part.stop, len(z_data)))[served].astype(float)
        expected, scatter = spread_reference(z_toys[:, part][:, served], positions)
        spread = float(np.std(_peak_free(z_data[part][served], positions), ddof=1))
        out[j] = (spread / expected, expected, scatter)
    return out


def toy_z(fitted: Sequence[tuple[WindowObjective, FloatArray] | None], edges: FloatArray,
          counts: FloatArray) -> FloatArray:
    """Â/σ_A of the candidate on Poisson toys ``counts`` (K × bins, bin ``edges``) at every mass of ``fitted`` (the
    data's window objective and best fit there, :func:`hps_bayes.studies.selection_cell.data_cell`; None where the candidate does not serve);
    NaN where it does not serve or a fit failed."""
    z = np.full((counts.shape[0], len(fitted)), np.nan)
    for j, item in enumerate(fitted):
        if item is None:
            continue
        objective, theta = item
        i0 = edge_index(edges, objective.window.edges[0])
        toys = counts[:, i0:i0 + objective.window.n_bins]
        aux = np.zeros((counts.shape[0], objective.model.n_aux))
        a_hat, err = poi_fits_batch(objective, toys, aux, np.tile(theta, (counts.shape[0], 1)))
        z[:, j] = a_hat / err
    return z
