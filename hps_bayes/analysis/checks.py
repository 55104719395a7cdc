"""Self-consistency checks of one mass point: numbers that contradict each other are flagged.

Where the likelihood is close to Gaussian in A (the regime the asymptotic
formulas assume), the numbers of a mass point are tied together:

* the Asimov σ_A = μ/√q_{μ,A} equals the Hessian error of Â on the Asimov data;
* σ_A equals the Hessian error of Â on the observed data (``sigma_A_hesse``, every nuisance
  profiled, the spurious-signal nuisance S included, so S is not added to it a second time);
* the CLs limit is A_up = Â + σ_A Φ⁻¹(1 − α Φ(Â/σ_A)) (arXiv:1007.1727, for both signs of Â);
* the expected band is μ_up(N) = σ_A (Φ⁻¹(1 − α Φ(N)) + N), so its ratios to the
  median are fixed numbers (−2σ/median ≈ 0.54 at α = 0.05);
* the fitted background stays well above zero in every bin of the window.

The limit and band checks hold for CLs limits (``stats.limit=cls``); the band check for
asymptotic ones only (toy bands are not Gaussian by construction).

:func:`check_point` measures each of these and names every one that is off by
more than its tolerance; a point that fails any gets status "inconsistent".  The
tolerances are the spread measured on the clean demo spectra (2015, 2016, 2021
shapes, every grid point, asymptotic and toy limits) with a margin (the constants below).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import log_ndtr, ndtr, ndtri, ndtri_exp

from hps_bayes.core import FloatArray
from hps_bayes.errors import FitError

# Measured on the clean demo spectra (every default grid point of demo2015, demo2016, demo2021,
# asymptotic; demo with 300 toys per point): the largest deviation seen, then the tolerance.

#: Largest allowed |ln(σ_A / σ_Hesse,A)|, Asimov σ from q_{μ,A} against the Asimov Hessian
#: error.  Clean: at most 0.046 (demo2021); allowed 0.25 (a factor 1.28).
MAX_LOG_ASIMOV_HESSE = 0.25
#: Largest allowed |ln(σ_A / σ_stat)|, the Asimov σ against the observed Hessian error (both with
#: the spurious-signal nuisance profiled).  Clean: at most 0.074 (demo2021); allowed 0.25.
MAX_LOG_STAT = 0.25
#: Largest allowed |A_up − A_up,Gauss| / σ_A (the limit against Â and σ_A).  Clean: at most
#: 0.059 (asymptotic), 0.34 (300 toys); allowed 0.5, plus 4 Monte Carlo errors ``A_up_error``
#: of a toy limit.
MAX_LIMIT_PULL = 0.5
#: Largest allowed Monte Carlo error of a toy limit, ``A_up_error`` / σ_A; a toy limit whose error cannot be
#: estimated (NaN: no toy beyond the observed test statistic near the limit) fails too.  Clean: at most 0.34
#: (300 toys per point, demo2015), median 0.13; with 100 toys median 0.22, and errors of 10²⁹⁹ σ_A before
#: they were caught.  Allowed 0.5: a limit that uncertain is not a result; more toys make it one.
MAX_LIMIT_ERROR = 0.5
#: Smallest n_toys·α of a toy limit: the s+b toys expected beyond the observation where CLs = α (for CL_b = 1).
#: With fewer the crossing is not resolved: 10 toys at α = 0.05 gave A_up = 369 where σ_A = 2815 and the
#: asymptotic limit is about 5000, with an error estimate of 0.27 σ_A.  100 toys (5 expected) gave errors of
#: 0.22-0.33 σ_A and limits within them (demo2015, 15 masses).
MIN_TOYS_BEYOND = 5.0
#: Smallest allowed goodness-of-fit p-value of the window's free fit (:func:`window_gof`).  Clean: at least
#: 4.6e-3 over the default scans of the three bundled demos (351 masses; 2015 0.14, 2021 0.13), 2.1e-2 with their
#: selections, 7e-3 and 1.3e-2 on other draws of the structure (1.5×, 2.3× its size).  Allowed 1e-4.  Beside a
#: real 5σ_A signal its neighbours' windows (the signal in their sidebands, their Â pulled) fall below it in 1 of 12
#: pseudo-experiments (59 MeV for a signal at 50 MeV, p = 5e-5; the signal's own window 0.03-0.99).  A narrow spike in one analysis bin gave p ≈ 0 with Z = 114 and its neighbours Â = −95σ_A, all "ok"
#: before; a spectrum whose structure the default background does not follow, p < 1e-4 at 58 of 110 masses.
MIN_GOF_P = 1e-4
#: Largest allowed |ratio − Gaussian ratio| of an expected limit to the median one
#: (asymptotic limits; toy bands are not Gaussian by construction and are not checked).
#: Clean: at most 0.069 (demo2021); allowed 0.15.
MAX_BAND_SHAPE = 0.15
#: Smallest allowed ratio of the fitted background's smooth density in a bin (bin widths and turn-on factor
#: divided out) to its median over the window. Clean: at least 0.0062 (the 2021 demo with its selection: ±18σ(m)
#: and whole-range windows on a steep spectrum); 0.027-0.11 with the default background; allowed 0.002.
MIN_BACKGROUND_RATIO = 2e-3


@dataclass(frozen=True)
class PointNumbers:
    """The numbers of one mass point the checks compare (events, except ``alpha``)."""

    a_hat: float
    sigma_a: float
    sigma_hesse_asimov: float
    sigma_stat: float
    spurious: float
    a_up: float
    a_up_error: float
    a_up_expected: Sequence[float]
    alpha: float
    background: FloatArray = field(default_factory=lambda: np.ones(1))
    gof_p: float = float("nan")
    limit: str = "cls"
    toys: bool = False
    n_toys: int = 0


@dataclass(frozen=True)
class Consistency:
    """What :func:`check_point` measured (``values``), the checks that failed (``failures``) and what makes a
    limit too imprecise or empty to be a result (``imprecise``: too few toys, a profile-likelihood limit of 0;
    the point is "unreliable")."""

    values: dict[str, float]
    failures: tuple[str, ...]
    imprecise: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return not self.failures

    @property
    def message(self) -> str:
        """The failures in one line ("" when none)."""
        return "; ".join(self.failures)


def gaussian_limit(a_hat: float, sigma: float, alpha: float) -> float:
    """The asymptotic CLs limit of a Gaussian Â ~ N(A, σ): Â + σ Φ⁻¹(1 − α Φ(Â/σ)),
    computed as Â − σ Φ⁻¹(exp(ln α + ln Φ(Â/σ))) so that Â ≪ −σ stays finite."""
    return float(a_hat - sigma * ndtri_exp(math.log(alpha) + log_ndtr(a_hat / sigma)))


def gaussian_band_ratios(alpha: float) -> FloatArray:
    """Expected limits for N = −2..2 over the median, for a Gaussian Â: σ(Φ⁻¹(1 − αΦ(N)) + N)."""
    n = np.arange(-2.0, 3.0)
    band = ndtri(1.0 - alpha * ndtr(n)) + n
    return np.asarray(band / band[2], dtype=float)


def measure(p: PointNumbers) -> dict[str, float]:
    """The quantities the checks test, NaN where an input is missing."""
    nan = float("nan")
    expected = np.asarray(p.a_up_expected, dtype=float)
    shape = nan
    if expected.size == 5 and np.all(np.isfinite(expected)) and expected[2] > 0:
        shape = float(np.max(np.abs(expected / expected[2] - gaussian_band_ratios(p.alpha))))
    pull = nan
    if p.limit == "cls" and p.sigma_a > 0 and np.isfinite(p.a_up):
        pull = (p.a_up - gaussian_limit(p.a_hat, p.sigma_a, p.alpha)) / p.sigma_a
    bkg = np.asarray(p.background, dtype=float)
    floor = float(np.min(bkg) / np.median(bkg)) if bkg.size and np.median(bkg) > 0 else nan
    return {
        "log_asimov_hesse": _log_ratio(p.sigma_a, p.sigma_hesse_asimov),
        "log_stat": _log_ratio(p.sigma_a, p.sigma_stat),
        "limit_pull": float(pull),
        "band_shape": shape if p.limit == "cls" and not p.toys else nan,
        "background_floor": floor,
    }


def _log_ratio(a: float, b: float) -> float:
    return math.log(a / b) if a > 0 and b > 0 and math.isfinite(a) and math.isfinite(b) else float("nan")


def check_point(p: PointNumbers) -> Consistency:
    """Measure the point's consistency (:func:`measure`) and name every check it fails.

    A quantity that cannot be computed (NaN σ, a non-finite limit) fails its check:
    the point's numbers cannot be trusted then either.
    """
    v = measure(p)
    failures: list[str] = []
    ratio_checks = (("log_asimov_hesse", MAX_LOG_ASIMOV_HESSE, "Asimov sigma_A", "the Asimov Hessian error",
                     p.sigma_hesse_asimov),
                    ("log_stat", MAX_LOG_STAT, "sigma_A", "sigma_A_hesse of the observed fit (nuisances profiled)",
                     p.sigma_stat))
    for key, limit, what, other, value in ratio_checks:
        if not abs(v[key]) <= limit:
            failures.append(f"{what} = {p.sigma_a:.4g} disagrees with {other} = {value:.4g} "
                            f"(ratio {math.exp(v[key]) if math.isfinite(v[key]) else float('nan'):.3g}, "
                            f"allowed {math.exp(-limit):.2f}-{math.exp(limit):.2f})")
    imprecise: list[str] = []  # a limit its toys do not resolve, or an empty PL limit: "unreliable"
    if p.toys and p.n_toys * p.alpha < MIN_TOYS_BEYOND:
        imprecise.append(f"{p.n_toys} toys cannot resolve CLs = alpha = {p.alpha:g} (n_toys * alpha = "
                        f"{p.n_toys * p.alpha:.2g} < {MIN_TOYS_BEYOND:g}): raise stats.n_toys to at least "
                        f"{int(np.ceil(MIN_TOYS_BEYOND / p.alpha))} (1000 or more advised)")
    if p.limit == "pl" and not p.a_up > 0:
        imprecise.append(f"the one-sided profile-likelihood limit A_up = {p.a_up:.4g} excludes every signal "
                         f"(A_hat = {p.a_hat / p.sigma_a if p.sigma_a > 0 else float('nan'):.2f} sigma_A): a deficit the "
                         "PL limit does not protect against; use stats.limit=cls or pcl")
    relative_error = p.a_up_error / p.sigma_a if p.sigma_a > 0 else float("nan")
    if p.toys and not relative_error <= MAX_LIMIT_ERROR:
        imprecise.append(f"the toy limit's Monte Carlo error A_up_error = {p.a_up_error:.4g} is "
                        f"{'not estimable' if not np.isfinite(relative_error) else f'{relative_error:.2g} sigma_A'} "
                        f"(allowed {MAX_LIMIT_ERROR} sigma_A = {MAX_LIMIT_ERROR * p.sigma_a:.4g}): too few toys for "
                        "this limit; raise stats.n_toys (1000 or more)")
    pull_limit = MAX_LIMIT_PULL + 4.0 * (min(relative_error, MAX_LIMIT_ERROR) if np.isfinite(relative_error) else 0.0)
    if p.limit == "cls" and not abs(v["limit_pull"]) <= pull_limit:
        failures.append(f"A_up = {p.a_up:.4g} is {v['limit_pull']:.2f} sigma_A from the Gaussian limit "
                        f"{gaussian_limit(p.a_hat, p.sigma_a, p.alpha):.4g} of A_hat = {p.a_hat:.4g} and "
                        f"sigma_A = {p.sigma_a:.4g} (allowed {pull_limit:.2f})")
    if p.limit == "cls" and not p.toys and not v["band_shape"] <= MAX_BAND_SHAPE:
        ratio = p.a_up_expected[0] / p.a_up_expected[2] if p.a_up_expected[2] else float("nan")
        failures.append(f"expected band is not Gaussian-shaped: -2sigma/median = {ratio:.3f} "
                        f"(Gaussian {gaussian_band_ratios(p.alpha)[0]:.3f}; largest deviation "
                        f"{v['band_shape']:.3f} > {MAX_BAND_SHAPE})")
    if p.gof_p < MIN_GOF_P:  # NaN (not measured, e.g. a combination) passes
        failures.append(f"the window's fit does not describe its data: goodness-of-fit p = {p.gof_p:.2g} "
                        f"(< {MIN_GOF_P:g}): the background misses the spectrum's shape here, or the window holds a feature "
                        "at another mass (a signal there pulls this one's numbers) or narrower than a signal; where no "
                        "such feature is seen, run task=select for a background chosen on this spectrum")
    if not v["background_floor"] >= MIN_BACKGROUND_RATIO:
        failures.append(f"the fitted background falls to {v['background_floor']:.2g} of its median inside the "
                        f"window (allowed >= {MIN_BACKGROUND_RATIO:g}): empty or missing bins?")
    return Consistency(values=v, failures=tuple(failures), imprecise=tuple(imprecise))


#: The scan-level check of :func:`flag_local_pulls`: the RMS of Â/σ_A over the ok masses within
#: ``LOCAL_WINDOW_SIGMAS`` σ(m) of a mass, leaving out the largest |Â/σ_A| there and the masses within
#: ``LOCAL_PEAK_SIGMAS`` σ(m) of it (a signal and its side lobes), is at most ``MAX_LOCAL_PULL_RMS``.  Clean: at most
#: 1.40 over the default and selection scans of the three bundled demos and other draws of their structure (1.5×,
#: 2.3× its size, and a bumpier one); with a real signal of Z ≈ 5 in the data at most 1.85 (a full scan, and 12
#: pseudo-experiments of a 40-60 MeV scan; ±3 σ(m) left out instead of ±4.5 reached 3.6 there, on the side lobes).
#: Allowed 2.5: a spectrum whose structure the default background does not follow reached 7.5, and 50 of its 52
#: otherwise-ok masses (every one with |Â/σ_A| > 4, local Z up to 8) are flagged.
LOCAL_WINDOW_SIGMAS = 10.0
LOCAL_PEAK_SIGMAS = 4.5
LOCAL_MIN_MASSES = 5
MAX_LOCAL_PULL_RMS = 2.5


def local_pull_rms(masses: FloatArray, pulls: FloatArray, sigma_m: FloatArray) -> FloatArray:
    """Per mass: the RMS of ``pulls`` (Â/σ_A) over the masses within :data:`LOCAL_WINDOW_SIGMAS` σ(m) of it,
    leaving out the largest |pull| there and those within :data:`LOCAL_PEAK_SIGMAS` σ(m) of it; NaN where fewer
    than :data:`LOCAL_MIN_MASSES` remain.  About 1 where the background describes the data."""
    masses, pulls, sigma_m = (np.asarray(a, dtype=float) for a in (masses, pulls, sigma_m))
    out = np.full(masses.size, np.nan)
    for j in range(masses.size):
        near = np.abs(masses - masses[j]) <= LOCAL_WINDOW_SIGMAS * sigma_m[j]
        m, z = masses[near], pulls[near]
        keep = np.abs(m - m[int(np.argmax(np.abs(z)))]) > LOCAL_PEAK_SIGMAS * sigma_m[j]
        if keep.sum() >= LOCAL_MIN_MASSES:
            out[j] = float(np.sqrt(np.mean(z[keep] ** 2)))
    return out


def local_pull_notes(masses: FloatArray, pulls: FloatArray, sigma_m: FloatArray) -> list[str]:
    """For each of the ok points given: the reason it is "unreliable" by :func:`local_pull_rms` ("" where not)."""
    return [(f"A_hat/sigma_A of the masses within {LOCAL_WINDOW_SIGMAS:g} sigma(m) has an RMS of {value:.2f} (about 1 "
             f"where the background describes the data; allowed {MAX_LOCAL_PULL_RMS:g}; the largest one and its "
             f"{LOCAL_PEAK_SIGMAS:g} sigma(m) left out): the background does not follow this spectrum here and "
             "fakes or hides signals; run task=select on this spectrum and scan with background.selection")
            if value > MAX_LOCAL_PULL_RMS else "" for value in local_pull_rms(masses, pulls, sigma_m)]


def flag_local_pulls(results: list[Any]) -> list[Any]:
    """The scan's results with every "ok" point whose neighbourhood's Â/σ_A RMS (:func:`local_pull_rms`, over the
    ok points) exceeds :data:`MAX_LOCAL_PULL_RMS` made "unreliable", with the reason: the background does not follow
    the spectrum around it (its numbers.json keeps the point's own checks; this one needs the other masses)."""
    from dataclasses import replace

    ok = [k for k, r in enumerate(results) if r.status == "ok" and r.sigma_A > 0]
    notes = local_pull_notes(np.array([results[k].mass for k in ok]),
                             np.array([results[k].A_hat / results[k].sigma_A for k in ok]),
                             np.array([results[k].sigma_m for k in ok]))
    flagged = list(results)
    for k, note in zip(ok, notes, strict=True):
        if note:
            flagged[k] = replace(results[k], status="unreliable", message=note)
    return flagged


def flag_local_pulls_frame(frame: Any) -> Any:
    """:func:`flag_local_pulls` on a results table (a merged run's, read from its points' numbers.json)."""
    ok = (frame.status == "ok") & (frame.sigma_A > 0)
    notes = local_pull_notes(frame.mass[ok].to_numpy(), (frame.A_hat[ok] / frame.sigma_A[ok]).to_numpy(),
                             frame.sigma_m[ok].to_numpy())
    flagged = frame.copy()
    for index, note in zip(frame.index[ok], notes, strict=True):
        if note:
            flagged.loc[index, ["status", "message"]] = ["unreliable", note]
    return flagged


def sideband_excess(window: Any, residual: FloatArray) -> float:
    """The largest |Σ r|/√k over runs of k ≈ 2σ(m) consecutive sideband bins (``window.sidebands``) of the Pearson
    residuals ``r`` of a window's fit: a signal-like excess or deficit away from the tested mass, in σ."""
    k = max(1, round(2.0 * window.sigma / float(np.median(window.widths))))
    side = window.sidebands
    if side.sum() < k:
        return math.nan
    sums = np.convolve(np.where(side, residual, 0.0), np.ones(k), mode="valid")
    full = np.convolve(side.astype(float), np.ones(k), mode="valid") == k
    return float(np.max(np.abs(sums[full])) / math.sqrt(k)) if full.any() else math.nan


def window_gof(window: Any, expected: FloatArray) -> tuple[float, int, float]:
    """(deviance, ndf, p-value): the Poisson deviance of the window's counts against ``expected``, the counts of its
    fit (signal and background; :func:`~hps_bayes.stats.simple.poisson_deviance`), its degrees of freedom, bins −
    free coefficients (A and the Legendre ones; the constrained GP weights and S nuisance not counted), and its χ²
    p-value (NaN where no degree of freedom is left).  The scan's ``gof_p`` and ``task=select``'s."""
    from scipy.special import chdtrc

    from hps_bayes.stats.simple import poisson_deviance

    deviance = poisson_deviance(window.counts, expected)
    ndf = window.n_bins - 1 - window.legendre.shape[1]
    return deviance, ndf, float(chdtrc(ndf, deviance)) if ndf > 0 else float("nan")


def sigma_hesse_asimov(calc: Any) -> float:
    """The Asimov Hessian error of Â, NaN where the Asimov Hessian is singular (the check then fails)."""
    try:
        return calc.sigma_hesse_asimov()
    except FitError:
        return float("nan")


def point_status(converged: bool, limit_message: str, consistency: Consistency,
                 notes: list[str]) -> tuple[str, str]:
    """The point's status and message: "fit_failed", else "inconsistent" (a self-consistency check
    failed, :func:`check_point`), else "unreliable" (a window note,
    :func:`~hps_bayes.analysis.windows.window_notes`, or a toy limit too few toys resolve), else "ok"; the
    message lists every note and failed check."""
    if not converged:
        return "fit_failed", limit_message
    notes = [*notes, *consistency.imprecise]
    message = "; ".join([*notes, *consistency.failures])
    if consistency.failures:
        return "inconsistent", message
    return ("unreliable", message) if notes else ("ok", "")
