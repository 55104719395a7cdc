"""The polynomial mean of the window background: Legendre in ln m, or Chebyshev / Legendre in m.

The background of a window is exp(Σ_k c_k P_k(x)) (times the bin-width offset), with x
the window coordinate mapped linearly onto [−1, 1] over the window's edges:

* ``"legendre_lnm"``: x = t, ln m mapped (the package's own model, with the HSGP residual);
* ``"chebyshev_m"``: Chebyshev polynomials T_k of m mapped, as in the HPS 2015 search;
* ``"legendre_m"``: Legendre polynomials P_k of m mapped, as in the HPS 2016 search.

The last two span the same functions (the polynomials of degree d in m), so their fits
agree; both are offered so that a configuration can name the form a publication used.
"""

from __future__ import annotations

import numpy as np
from numpy.polynomial import chebyshev, legendre

from hps_bayes.core import FloatArray
from hps_bayes.errors import ConfigError
from hps_bayes.model.coordinate import lnm_coordinate
from hps_bayes.model.settings import MEAN_BASES, MeanBasis

__all__ = ["mean_design", "window_coordinate"]


def window_coordinate(edges: FloatArray, basis: MeanBasis) -> FloatArray:
    """Bin centres of a window mapped onto [−1, 1]: in ln m for ``"legendre_lnm"``, else in m.

    Parameters
    ----------
    edges : the window's bin edges (GeV), increasing.
    basis : the mean's basis (see the module docstring).

    Returns
    -------
    FloatArray
        One value per bin, in (−1, 1).
    """
    if basis not in MEAN_BASES:
        raise ConfigError(f"background.mean_basis={basis!r}: use one of {list(MEAN_BASES)}")
    if basis == "legendre_lnm":
        return lnm_coordinate(edges)[0]
    centers = 0.5 * (edges[1:] + edges[:-1])
    lo, hi = float(edges[0]), float(edges[-1])
    return np.asarray(2.0 * (centers - lo) / (hi - lo) - 1.0)


def mean_design(edges: FloatArray, degree: int, basis: MeanBasis) -> FloatArray:
    """The design matrix (n_bins × (degree + 1)) of the polynomial mean of ln(background).

    Examples
    --------
    >>> edges = np.linspace(0.03, 0.04, 6)
    >>> mean_design(edges, 2, "chebyshev_m")[:, 2].round(2).tolist()  # T_2(x) = 2x² − 1
    [0.28, -0.68, -1.0, -0.68, 0.28]
    """
    x = window_coordinate(edges, basis)
    vander = chebyshev.chebvander if basis == "chebyshev_m" else legendre.legvander
    return np.asarray(vander(x, degree))
