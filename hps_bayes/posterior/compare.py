"""Posterior limits beside the frequentist ones: mass selection, numbers.json entries, comparisons."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hps_bayes.core import FloatArray
from hps_bayes.errors import FitError
from hps_bayes.model.window import Window
from hps_bayes.posterior.model import PosteriorSettings
from hps_bayes.posterior.sampling import NAN, PosteriorResult, _draws, predictive_band
from hps_bayes.results.files import write_json
from hps_bayes.results.objects import PosteriorArrays, mass_label


def select_scan_masses(masses: FloatArray, z: FloatArray, ok: Any, *, top_z: int = 0,
                       explicit: tuple[float, ...] = (), tolerance: float = 0.0) -> tuple[list[float], list[float]]:
    """The scanned masses to sample: the ``top_z`` of largest local Z (``ok`` points only) and the
    grid point nearest each ``explicit`` mass within ``tolerance`` (GeV).

    Returns (selected masses, ascending; explicit masses with no grid point within ``tolerance``).

    >>> select_scan_masses(np.array([0.03, 0.04, 0.05]), np.array([0.5, 2.1, 1.0]), np.ones(3, bool),
    ...                    top_z=1, explicit=(0.0301,), tolerance=0.0005)
    ([0.03, 0.04], [])
    """
    masses, z, ok = np.asarray(masses, dtype=float), np.asarray(z, dtype=float), np.asarray(ok, dtype=bool)
    chosen: set[float] = set()
    if top_z > 0 and ok.any():
        order = np.argsort(-np.where(ok & np.isfinite(z), z, -np.inf), kind="stable")[:min(top_z, int(ok.sum()))]
        chosen.update(float(masses[i]) for i in order)
    unmatched = []
    for m in explicit:
        i = int(np.argmin(np.abs(masses - m))) if masses.size else -1
        if i >= 0 and abs(masses[i] - m) <= tolerance + 1e-12:
            chosen.add(float(masses[i]))
        else:
            unmatched.append(float(m))
    return sorted(chosen), unmatched


def numbers_entry(result: PosteriorResult, prior: PosteriorSettings, *, config_hash: str) -> dict[str, Any]:
    """The ``"posterior"`` entry of a point's ``numbers.json``: the summary, the sampler settings
    (:meth:`PosteriorSettings.sampler_dict`) and the frequentist config hash it was sampled with."""
    return {"result": result.to_dict(), "settings": prior.sampler_dict(), "config_hash": config_hash,
            "files": ["posterior.nc", "posterior.json"]}


def merge_into_numbers(path: str | Path, entry: Mapping[str, Any]) -> Path:
    """Add ``entry`` as key ``"posterior"`` of the ``numbers.json`` at ``path``, atomically.

    The rest of the file (the CLs result, its settings and provenance) is kept as it is.  Callers
    that share the file between processes hold a lock around this read-modify-write.
    """
    import json

    path = Path(path)
    if not path.is_file():
        raise FitError(f"{path} does not exist: the frequentist point must be written before its posterior")
    with open(path) as fh:
        payload = json.load(fh)
    payload["posterior"] = dict(entry)
    return write_json(path, payload)


def reusable(numbers: Mapping[str, Any], prior: PosteriorSettings, *, config_hash: str) -> bool:
    """Whether a point's ``numbers.json`` already holds a posterior of these settings and config hash."""
    entry = numbers.get("posterior") or {}
    return bool(entry) and entry.get("settings") == prior.sampler_dict() and entry.get("config_hash") == config_hash


def comparison_row(result: PosteriorResult, *, A_up_cls: float, A_hat: float, sigma_A: float,
                   status: str) -> dict[str, Any]:
    """One row of ``posterior_comparison.csv``: CLs and credible limits, their ratio, diagnostics.

    ``A_up_flat_gauss`` is the flat-prior limit of a Gaussian likelihood with the frequentist
    (Â, σ_A), ``(Φ(μ̂/σ) − Φ((μ̂ − A)/σ))/Φ(μ̂/σ) = credibility``: what the sampled limit should be
    with η, ℓ fixed and a Gaussian likelihood (equal to the asymptotic CLs limit for any Â).
    ``width_ratio`` = σ′/σ_A (:func:`effective_width`); to first order
    ``ratio − 1 ≈ e(Â/σ_A) (σ′/σ_A − 1)`` with e(x) = 1 − x g′(x)/g(x), g(x) = x − Φ⁻¹(0.05 Φ(x)).
    """
    return {"dataset": result.dataset, "mass": result.mass, "folder": mass_label(result.mass),
            "status": status, "A_hat": A_hat, "sigma_A": sigma_A, "A_up": A_up_cls,
            "A_up_flat_gauss": flat_prior_limit(A_hat, sigma_A, credibility=result.credibility),
            "A_up_credible": result.A_up_credible,
            "ratio": result.A_up_credible / A_up_cls if A_up_cls > 0 else NAN,
            "width_ratio": effective_width(A_hat, result.A_up_credible, credibility=result.credibility) / sigma_A
            if sigma_A > 0 else NAN,
            "A_mean": result.A_mean, "A_sd": result.A_sd, "eps2_up_credible": result.eps2_up_credible,
            "eta_mean": result.eta_mean, "lengthscale_mean": result.lengthscale_mean,
            "r_hat_max": result.r_hat_max, "ess_bulk_min": result.ess_bulk_min,
            "ess_tail_min": result.ess_tail_min, "divergences": result.divergences, "bfmi_min": result.bfmi_min,
            "passed": result.passed, "problems": "; ".join(result.problems), "seconds": result.seconds}


def effective_width(mu_hat: float, mu_up: float, *, credibility: float = 0.95) -> float:
    """The σ′ for which :func:`flat_prior_limit` (μ̂, σ′) equals ``mu_up``: the Gaussian width the
    posterior behaves as.  σ′/σ_A > 1 measures how much integrating η and ℓ widened it.

    >>> round(effective_width(0.0, 3.92), 3)
    2.0
    """
    from scipy.optimize import brentq

    if not (math.isfinite(mu_hat) and math.isfinite(mu_up) and mu_up > max(mu_hat, 0.0)):
        return NAN
    lo, hi = max(1e-6 * mu_up, abs(mu_hat) / 30.0), 10.0 * (mu_up + abs(mu_hat))  # Φ(μ̂/σ) > 0 at lo
    return float(brentq(lambda s: flat_prior_limit(mu_hat, s, credibility=credibility) - mu_up, lo, hi))


def flat_prior_limit(mu_hat: float, sigma: float, *, credibility: float = 0.95) -> float:
    """Credible upper limit of a Gaussian likelihood N(μ̂, σ) with a flat prior on μ ≥ 0.

    Solves ``(Φ(μ̂/σ) − Φ((μ̂ − μ)/σ)) / Φ(μ̂/σ) = credibility``; for μ̂ ≥ 0 this is also the
    asymptotic CLs limit (arXiv:1007.1727, Eqs. 59, 65).  μ̂ = 0: μ_up = σ Φ⁻¹(1 − (1 − cl)/2).

    >>> round(flat_prior_limit(0.0, 1.0), 4)
    1.96
    """
    from scipy.special import ndtr, ndtri

    if not (math.isfinite(mu_hat) and math.isfinite(sigma) and sigma > 0):
        return NAN
    p0 = float(ndtr(mu_hat / sigma))
    return float(mu_hat - sigma * ndtri(p0 * (1.0 - credibility)))


def posterior_arrays(result: PosteriorResult, window: Window, *, rng: np.random.Generator) -> PosteriorArrays:
    """Unpack a sampled point for plotting: draws (chain, draw) of A, η, ℓ and the predictive band."""
    if result.trace is None:
        raise FitError(f"m={result.mass * 1e3:.2f} MeV: the result holds no trace to plot (read it with "
                       f"read_posterior or sample again)")
    tr = result.trace
    draws = {"$A$ [events]": _draws(tr, "A"), r"$\eta$ [ln counts]": _draws(tr, "eta"),
             r"$\ell$ [$\sigma(m)/m$]": _draws(tr, "lengthscale")}
    return PosteriorArrays(dataset=result.dataset, mass=result.mass, edges=window.edges, counts=window.counts,
                           band=predictive_band(tr, window, rng=rng), trace_draws=draws,
                           A=_draws(tr, "A").ravel(), A_up_credible=result.A_up_credible, passed=result.passed)
