"""Figures of the Bayesian cross-check (``task=posterior``), in mplhep's HEP style.

Like :mod:`hps_bayes.plots` these only draw arrays computed upstream (by
:mod:`hps_bayes.posterior`): draws per chain, the CLs and credible limits, the
posterior-predictive band.  The only arithmetic is display arithmetic (GeV → MeV,
ranks of the pooled draws for the rank plot).  Figures are made without pyplot.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hps_bayes.errors import InputError
from hps_bayes.plots.style import hep_figure, save_figure
from hps_bayes.results.objects import PosteriorArrays

DPI = 100
_CHAIN_COLORS = ("#3f6fd8", "#e42536", "#f89c20", "#5790fc", "#964a8b", "#9c9ca1")


def _figure(figsize: tuple[float, float]) -> Any:
    return hep_figure(figsize, dpi=DPI, layout="constrained")



def plot_trace_rank(draws: Mapping[str, np.ndarray], path: str | Path, *, title: str) -> Path:
    """Trace (left) and rank histograms per chain (right) of scalar parameters.

    ``draws`` maps a label (with units) to an array (chain, draw).  Flat, overlapping rank
    histograms mean the chains sample the same distribution (Vehtari et al. 2021).
    """
    if not draws:
        raise InputError("plot_trace_rank needs at least one parameter's draws")
    with _figure((13.0, 3.6 * len(draws))) as fig:
        axes = fig.subplots(len(draws), 2, squeeze=False, gridspec_kw={"width_ratios": (2.2, 1)})
        for (label, x), (ax_t, ax_r) in zip(draws.items(), axes, strict=True):
            x = np.atleast_2d(np.asarray(x, dtype=float))
            ranks = np.argsort(np.argsort(x.ravel())).reshape(x.shape)
            bins = np.linspace(0, x.size, 21)
            for k, chain in enumerate(x):
                color = _CHAIN_COLORS[k % len(_CHAIN_COLORS)]
                ax_t.plot(chain, lw=0.6, color=color, alpha=0.8, label=f"chain {k}")
                ax_r.hist(ranks[k], bins=bins, histtype="step", lw=2, color=color)
            ax_r.axhline(x.shape[1] / 20, color="gray", ls=":", lw=1.5)
            ax_t.set_ylabel(label, fontsize=16)
            ax_t.set_xlabel("draw", fontsize=16)
            ax_r.set_xlabel("rank (all chains)", fontsize=16)
            ax_r.set_yticks([])
        axes[0, 0].legend(fontsize=12, loc="upper right", ncol=2)
        axes[0, 0].set_title(title, fontsize=16, loc="left")
        return save_figure(fig, path)


def plot_A_posterior(A: np.ndarray, path: str | Path, *, A_up_credible: float, A_up_cls: float,
                     A_hat: float, title: str) -> Path:
    """Posterior of A (all draws) with the credible limit, the CLs limit and the fitted Â."""
    A = np.asarray(A, dtype=float).ravel()
    with _figure((10.0, 7.5)) as fig:
        ax = fig.subplots()
        ax.hist(A, bins=60, density=True, histtype="stepfilled", color="#5790fc", alpha=0.6,
                label="posterior of $A$ (flat prior, $A \\geq 0$)")
        ax.axvline(A_up_credible, color="#3f6fd8", lw=2.5, label=f"95% credible limit {A_up_credible:.4g}")
        ax.axvline(A_up_cls, color="#e42536", lw=2.5, ls="--", label=f"95% CL$_s$ limit {A_up_cls:.4g}")
        if np.isfinite(A_hat):
            ax.axvline(A_hat, color="gray", lw=1.5, ls=":", label=f"$\\hat{{A}}$ = {A_hat:.4g}")
        ax.set_xlabel("signal yield $A$ [events]")
        ax.set_ylabel("posterior density [1/event]")
        ax.set_ylim(0, None)
        ax.legend(fontsize=14, loc="upper right")
        ax.set_title(title, fontsize=16, loc="left")
        return save_figure(fig, path)


def plot_ppc(edges: np.ndarray, counts: np.ndarray, band: np.ndarray, path: str | Path, *, mass: float,
             title: str) -> Path:
    """Posterior-predictive check: data with the predictive median and 68%/95% bands, and residuals.

    ``band`` holds the quantiles (2.5, 16, 50, 84, 97.5)% of the predictive counts per bin.
    """
    e = np.asarray(edges, dtype=float) * 1e3
    band = np.asarray(band, dtype=float)
    if band.shape != (5, e.size - 1) or np.shape(counts) != (e.size - 1,):
        raise InputError(f"plot_ppc: band {band.shape} and counts {np.shape(counts)} must match "
                         f"(5, {e.size - 1}) and ({e.size - 1},)")
    centres = 0.5 * (e[1:] + e[:-1])
    med = band[2]
    scale = np.sqrt(np.where(med > 0, med, 1.0))
    with _figure((10.0, 10.0)) as fig:
        ax, axr = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 1.3)})
        for axis, norm, ref in ((ax, 1.0, 0.0), (axr, scale, med)):
            axis.stairs((band[4] - ref) / norm, e, baseline=(band[0] - ref) / norm, fill=True, color="#ffd800",
                        label="95% predictive")
            axis.stairs((band[3] - ref) / norm, e, baseline=(band[1] - ref) / norm, fill=True, color="#00c000",
                        label="68% predictive")
            axis.errorbar(centres, (counts - ref) / norm, yerr=np.sqrt(np.clip(counts, 0, None)) / norm,
                          ls="none", marker="o", ms=4, color="black", label="data")
            axis.axvline(mass * 1e3, color="gray", ls=":", lw=2)
        ax.stairs(med, e, color="#3f6fd8", lw=1.5, label="predictive median")
        ax.set_yscale("log")
        ax.set_ylabel("events / bin")
        ax.legend(fontsize=14, loc="upper right")
        ax.set_title(title, fontsize=16, loc="left")
        axr.set_ylabel("(n − median)/√median", fontsize=16)
        axr.set_xlabel(r"$m(e^{+}e^{-})$ [MeV]")
        return save_figure(fig, path)


def plot_posterior_point(arrays: PosteriorArrays, folder: str | Path, *, A_up_cls: float, A_hat: float,
                         fmt: str = "png") -> list[Path]:
    """The three figures of one sampled point in ``folder``: ``posterior_trace``, ``posterior_A``,
    ``posterior_ppc`` (trace/rank of A, η, ℓ; posterior of A vs CLs; posterior-predictive check)."""
    folder = Path(folder)
    flag = "" if arrays.passed else "  [FAILED diagnostics]"
    title = f"HPS {arrays.dataset}, m = {arrays.mass * 1e3:.2f} MeV{flag}"
    return [
        plot_trace_rank(arrays.trace_draws, folder / f"posterior_trace.{fmt}", title=title),
        plot_A_posterior(arrays.A, folder / f"posterior_A.{fmt}", A_up_credible=arrays.A_up_credible,
                         A_up_cls=A_up_cls, A_hat=A_hat, title=title),
        plot_ppc(arrays.edges, arrays.counts, arrays.band, folder / f"posterior_ppc.{fmt}", mass=arrays.mass,
                 title=title),
    ]


def plot_limit_comparison(mass: np.ndarray, A_up_cls: np.ndarray, A_up_credible: np.ndarray, passed: np.ndarray,
                          path: str | Path, *, dataset_label: str, scan_mass: np.ndarray | None = None,
                          scan_A_up: np.ndarray | None = None) -> Path:
    """Bayesian (flat prior, 95% credible) against CLs upper limits on A versus mass, ratio below.

    ``mass`` [GeV], ``A_up_cls``, ``A_up_credible`` and ``passed`` are the sampled points (rows of
    ``posterior_comparison_<dataset>.csv``); ``scan_mass``/``scan_A_up`` optionally draw the whole
    scan's CLs limit as a line behind them.  Points that failed the sampler diagnostics are drawn
    hollow and named in the legend.  The ratio panel marks 1 (the Gaussian-likelihood expectation).
    """
    m = np.asarray(mass, dtype=float) * 1e3
    cls_, cred = np.asarray(A_up_cls, dtype=float), np.asarray(A_up_credible, dtype=float)
    ok = np.asarray(passed, dtype=bool)
    if not (m.shape == cls_.shape == cred.shape == ok.shape) or m.size == 0:
        raise InputError(f"plot_limit_comparison: mass {m.shape}, A_up_cls {cls_.shape}, A_up_credible "
                         f"{cred.shape} and passed {ok.shape} must be equal, non-empty 1-d arrays")
    ratio = np.divide(cred, cls_, out=np.full_like(cred, np.nan), where=cls_ > 0)
    with _figure((10.0, 9.0)) as fig:
        ax, axr = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 1.4)})
        if scan_mass is not None and scan_A_up is not None:
            ax.plot(np.asarray(scan_mass) * 1e3, scan_A_up, color="#e42536", lw=1.5, alpha=0.6,
                    label="95% CL$_s$ limit, whole scan")
        ax.plot(m, cls_, "s", ms=14, mfc="none", mec="#e42536", mew=2.5, ls="none",
                label="95% CL$_s$ limit, sampled masses")
        for sel, marker, color, note in ((ok, "o", "#3f6fd8", ""), (~ok, "X", "#f89c20", " (FAILED diagnostics)")):
            if sel.any():
                ax.plot(m[sel], cred[sel], marker, ms=8, color=color, ls="none",
                        label=f"95% credible limit, flat prior $A\\geq 0${note}")
                axr.plot(m[sel], ratio[sel], marker, ms=9, color=color, ls="none")
        ax.set_yscale("log")
        ax.set_ylabel("95% upper limit on $A$ [events]")
        ax.legend(fontsize=14, loc="best")
        ax.set_title(f"{dataset_label}: Bayesian vs CL$_s$ limits", fontsize=16, loc="left")
        axr.axhline(1.0, color="gray", ls="--", lw=1.5)
        finite = ratio[np.isfinite(ratio)]
        half = max(0.1, 1.15 * float(np.max(np.abs(finite - 1.0)))) if finite.size else 0.2
        axr.set_ylim(1.0 - half, 1.0 + half)
        if m.size <= 12:  # few points: print the ratios
            for x, r in zip(m, ratio, strict=True):
                if np.isfinite(r):
                    axr.annotate(f"{r:.3f}", (x, r), xytext=(8, 0), textcoords="offset points", fontsize=13,
                                 va="center")
        axr.set_ylabel("credible / CL$_s$", fontsize=16)
        axr.set_xlabel(r"$m(e^{+}e^{-})$ [MeV]")
        ax.margins(x=0.08, y=0.12)  # markers and ratio labels off the frame
        if m.size == 1 and scan_mass is None:
            ax.set_xlim(m[0] - 5.0, m[0] + 5.0)
        return save_figure(fig, path)
