"""The binned spectrum type and its reshaping (rebin, crop).

Examples
--------
>>> import numpy as np
>>> s = Spectrum(edges=np.array([0.0, 0.1, 0.2]), counts=np.array([3.0, 5.0]),
...              variances=np.array([3.0, 5.0]), name="h", source="example")
>>> s.n_bins, float(s.total)
(2, 8.0)
>>> rebin(s, 2).counts.tolist()
[8.0]
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hps_bayes.errors import ConfigError, HpsBayesWarning, InputError


@dataclass(frozen=True, eq=False)
class Spectrum:
    """A binned invariant-mass spectrum.

    Parameters
    ----------
    edges : ndarray of float64, shape (n + 1,)
        Bin edges in GeV; increasing for an analysable spectrum (checked by
        :func:`validate_spectrum`, not here, so that a bad file can be reported).
    counts : ndarray of float64, shape (n,)
        Bin contents n_i (event counts, or sums of weights).
    variances : ndarray of float64, shape (n,)
        Variance of each bin: the histogram's sum of squared weights Σw², or the
        counts themselves (Poisson) when the histogram has none.
    name : str
        The histogram's name (path inside the file, without cycle).
    source : str
        Where the spectrum came from (``"file.root:dir/name;cycle"``, ``"simulated ..."``).

    Raises
    ------
    InputError
        If the arrays are not 1-D or their lengths do not match.

    Notes
    -----
    The arrays are copied to float64 and made read-only, so a spectrum never
    changes after it is made.
    """

    edges: NDArray[np.float64]
    counts: NDArray[np.float64]
    variances: NDArray[np.float64]
    name: str
    source: str

    def __post_init__(self) -> None:
        arrays = {}
        for field in ("edges", "counts", "variances"):
            array = np.array(getattr(self, field), dtype=np.float64)
            if array.ndim != 1:
                raise InputError(
                    f"spectrum '{self.name}' ({self.source}): {field} must be 1-D, got shape {array.shape}; "
                    "pass a flat array"
                )
            array.setflags(write=False)
            arrays[field] = array
        n_bins = arrays["counts"].size
        if n_bins < 1 or arrays["edges"].size != n_bins + 1 or arrays["variances"].size != n_bins:
            raise InputError(
                f"spectrum '{self.name}' ({self.source}): need len(edges) = len(counts) + 1 = "
                f"len(variances) + 1 with at least one bin, got {arrays['edges'].size} edges, "
                f"{n_bins} counts, {arrays['variances'].size} variances"
            )
        for field, array in arrays.items():
            object.__setattr__(self, field, array)

    @property
    def centers(self) -> NDArray[np.float64]:
        """Bin centres (e_i + e_{i+1}) / 2 in GeV."""
        return 0.5 * (self.edges[:-1] + self.edges[1:])

    @property
    def widths(self) -> NDArray[np.float64]:
        """Bin widths e_{i+1} − e_i in GeV."""
        return np.diff(self.edges)

    @property
    def n_bins(self) -> int:
        """Number of bins n."""
        return int(self.counts.size)

    @property
    def total(self) -> float:
        """Sum of the counts Σ n_i."""
        return float(np.sum(self.counts))


# --------------------------------------------------------------------------- reshaping


def rebin(spectrum: Spectrum, factor: int) -> Spectrum:
    """Merge groups of ``factor`` adjacent bins.

    The new bin j holds N_j = Σ_{i = j·k}^{j·k + k − 1} n_i (and the same sum of
    variances), with k = ``factor``.

    Parameters
    ----------
    spectrum : Spectrum
        The spectrum to rebin.
    factor : int
        Number of bins k merged into one; 1 returns the spectrum unchanged.

    Returns
    -------
    Spectrum
        The rebinned spectrum.  When n_bins is not a multiple of k the last
        n_bins mod k bins are dropped, with an :class:`HpsBayesWarning`.

    Raises
    ------
    ConfigError
        If ``factor`` is not an integer ≥ 1 or is larger than the number of bins.
    """
    if isinstance(factor, bool) or not isinstance(factor, (int, np.integer)) or factor < 1:
        raise ConfigError(f"rebin factor must be an integer >= 1, got {factor!r}; use e.g. rebin=10")
    k = int(factor)
    if k > spectrum.n_bins:
        raise ConfigError(
            f"rebin factor {k} is larger than the {spectrum.n_bins} bins of '{spectrum.name}'; use a smaller one"
        )
    n_kept = (spectrum.n_bins // k) * k
    if n_kept < spectrum.n_bins:
        warnings.warn(
            f"'{spectrum.name}' has {spectrum.n_bins} bins, not a multiple of rebin factor {k}: "
            f"dropping the last {spectrum.n_bins - n_kept} bins above {spectrum.edges[n_kept]:.6g} GeV",
            HpsBayesWarning,
            stacklevel=2,
        )
    return Spectrum(
        edges=spectrum.edges[: n_kept + 1 : k],
        counts=spectrum.counts[:n_kept].reshape(-1, k).sum(axis=1),
        variances=spectrum.variances[:n_kept].reshape(-1, k).sum(axis=1),
        name=spectrum.name,
        source=spectrum.source,
    )


def crop(spectrum: Spectrum, lo: float, hi: float) -> Spectrum:
    """Keep the bins that lie entirely inside [lo, hi] (GeV).

    A bin [e_i, e_{i+1}] is kept when e_i ≥ lo − τ and e_{i+1} ≤ hi + τ, with
    a tolerance τ = 10⁻⁶ of the narrowest bin so that a range given at a bin
    edge keeps that bin despite rounding.

    Raises
    ------
    ConfigError
        If lo ≥ hi.
    InputError
        If no bin lies inside the range.
    """
    if not lo < hi:
        raise ConfigError(f"crop range [{lo}, {hi}] is empty; need lo < hi (GeV)")
    tol = 1e-6 * float(np.min(np.abs(spectrum.widths)))
    keep = (spectrum.edges[:-1] >= lo - tol) & (spectrum.edges[1:] <= hi + tol)
    index = np.flatnonzero(keep)
    if index.size == 0:
        raise InputError(
            f"no bin of '{spectrum.name}' (range {spectrum.edges[0]:.6g}–{spectrum.edges[-1]:.6g} GeV) "
            f"lies inside [{lo:.6g}, {hi:.6g}] GeV; choose a mass range inside the histogram (in GeV)"
        )
    first, last = int(index[0]), int(index[-1])
    return Spectrum(
        edges=spectrum.edges[first : last + 2],
        counts=spectrum.counts[first : last + 1],
        variances=spectrum.variances[first : last + 1],
        name=spectrum.name,
        source=spectrum.source,
    )


def edge_index(edges: ArrayLike, edge: float) -> int:
    """The index in ``edges`` of the bin edge nearest ``edge``: where a sub-range (a window, a crop) starts in a
    spectrum with the same binning."""
    return int(np.argmin(np.abs(np.asarray(edges, float) - float(edge))))
