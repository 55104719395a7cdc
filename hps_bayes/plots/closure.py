"""Figures of the closure studies (``task=inject``, ``task=coverage``), in mplhep's HEP style.

Plots never compute statistics: every number drawn is a column of the tables written by
:mod:`hps_bayes.closure` (``inject.csv``, ``coverage.csv``); the only arithmetic is GeV → MeV.
Figures are pyplot-free ``Figure`` objects drawn inside ``matplotlib.style.context``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes

from hps_bayes.errors import InputError
from hps_bayes.plots.style import _header as style_header
from hps_bayes.plots.style import hep_figure, save_figure

DPI = 110
MASS_LABEL = r"$m(e^{+}e^{-})$ [MeV]"
_BAND = "#d0d0d0"
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def _figure(figsize: tuple[float, float]) -> Any:
    return hep_figure(figsize, {"left": 0.13, "right": 0.97, "bottom": 0.09, "top": 0.94}, dpi=DPI)


def _header(ax: Axes, right: str, left: str) -> None:
    style_header(ax, right, left, fontsize=20)


def _ok(frame: pd.DataFrame, what: str) -> pd.DataFrame:
    ok = frame[frame.status == "ok"] if "status" in frame else frame
    if ok.empty:
        raise InputError(f"no successful {what} cells to plot")
    return ok


def plot_injection_pulls(frame: pd.DataFrame, path: str | Path, *, dataset_label: str,
                         mean_tol: float = 0.1, width: tuple[float, float] = (0.9, 1.1)) -> Path:
    """Pull mean (top, with its error) and width (bottom) of (Â − A_inj)/σ_A versus mass.

    One colour per truth, one marker per injected yield (in units of the expected σ_A), slightly
    offset in mass; grey bands: the ±``mean_tol`` and ``width`` criteria.
    """
    ok = _ok(frame, "injection")
    yields = sorted(ok.A_inj_sigmas.round(3).unique())
    truths = list(dict.fromkeys(ok.truth))
    step = float(np.min(np.diff(np.unique(ok.mass)))) * 1e3 if ok.mass.nunique() > 1 else 1.0
    n_series = len(truths) * len(yields)
    with _figure((12.0, 10.0)) as fig:
        top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 1], "hspace": 0.05})
        top.axhspan(-mean_tol, mean_tol, color=_BAND, alpha=0.6, lw=0)
        bottom.axhspan(*width, color=_BAND, alpha=0.6, lw=0)
        for i, truth in enumerate(truths):
            for j, value in enumerate(yields):
                g = ok[(ok.truth == truth) & (ok.A_inj_sigmas.round(3) == value)].sort_values("mass")
                k = i * len(yields) + j
                x = g.mass.to_numpy() * 1e3 + (k - (n_series - 1) / 2) * 0.5 * step / max(n_series, 1)
                style = {"fmt": _MARKERS[j % len(_MARKERS)], "color": f"C{i}", "ms": 5, "capsize": 0}
                top.errorbar(x, g.pull_mean, yerr=g.pull_mean_err, label=f"{truth}, $A_{{inj}}$ = {value:g}σ", **style)
                bottom.errorbar(x, g.pull_width, yerr=g.pull_width_err, **style)
        top.set_ylabel(r"pull mean, $(\hat{A}-A_{inj})/\sigma_A$", fontsize=18)
        bottom.set_ylabel("pull width", fontsize=18)
        bottom.set_xlabel(MASS_LABEL)
        lim = max(0.3, float(np.nanmax(np.abs(ok.pull_mean) + ok.pull_mean_err)) * 1.2)
        top.set_ylim(-lim, 1.6 * lim)
        top.legend(fontsize=11, ncol=len(truths), loc="upper left")
        _header(top, dataset_label, "injection")
        return save_figure(fig, path)


def plot_injection_linearity(frame: pd.DataFrame, path: str | Path, *, dataset_label: str) -> Path:
    """Mean Â versus A_inj, both in units of the expected σ_A, per truth and mass; the line Â = A_inj."""
    ok = _ok(frame, "injection")
    with _figure((11.0, 10.0)) as fig:
        top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1], "hspace": 0.05})
        top_x = float(ok.A_inj_sigmas.max())
        top.plot([0, top_x * 1.05], [0, top_x * 1.05], "k--", lw=1, label=r"$\hat{A} = A_{inj}$")
        bottom.axhline(0.0, color="k", ls="--", lw=1)
        masses = sorted(ok.mass.unique())
        for i, truth in enumerate(dict.fromkeys(ok.truth)):
            for j, mass in enumerate(masses):
                g = ok[(ok.truth == truth) & (ok.mass == mass)].sort_values("A_inj_sigmas")
                x = g.A_inj_sigmas.to_numpy() + (i - 1) * 0.06
                y = (g.A_hat_mean / g.sigma_A_expected).to_numpy()
                err = (g.A_hat_mean_err / g.sigma_A_expected).to_numpy()
                label = truth if j == 0 else None
                top.errorbar(x, y, yerr=err, fmt=_MARKERS[i % len(_MARKERS)], color=f"C{i}", ms=4, label=label)
                bottom.errorbar(x, y - g.A_inj_sigmas.to_numpy(), yerr=err, fmt=_MARKERS[i % len(_MARKERS)],
                                color=f"C{i}", ms=4)
        top.set_ylabel(r"mean $\hat{A}/\sigma_A$")
        bottom.set_ylabel(r"(mean $\hat{A} - A_{inj})/\sigma_A$", fontsize=16)
        bottom.set_xlabel(r"$A_{inj}/\sigma_A$ (expected $\sigma_A$)")
        top.legend(fontsize=13, loc="upper left", title=f"{len(masses)} masses", title_fontsize=12)
        _header(top, dataset_label, "injection")
        return save_figure(fig, path)


def plot_coverage(frame: pd.DataFrame, path: str | Path, *, dataset_label: str, cl: float = 0.95) -> Path:
    """Coverage (fraction of pseudo-experiments with A_up ≥ A_true, binomial errors) versus A_true/σ_A,
    one series per model and method (masses pooled in the legend label when several)."""
    if frame.empty:
        raise InputError("no coverage cells to plot")
    series = list(dict.fromkeys(zip(frame.model, frame.method, frame.mass, strict=True)))
    with _figure((11.0, 8.5)) as fig:
        ax = fig.subplots()
        ax.axhline(cl, color="k", ls="--", lw=1.2, label=f"{cl:.0%} CL")
        for k, (model, method, mass) in enumerate(series):
            g = frame[(frame.model == model) & (frame.method == method) & (frame.mass == mass)]
            g = g.sort_values("A_true_sigmas")
            x = g.A_true_sigmas.to_numpy() + (k - (len(series) - 1) / 2) * 0.04
            n = int(g.n_experiments.max())
            toys = f", {int(g.n_toys.max())} toys" if method == "toys" else ""
            mass_txt = f" {mass * 1e3:.0f} MeV" if frame.mass.nunique() > 1 else ""
            ax.errorbar(x, g.coverage, yerr=g.error, fmt=_MARKERS[k % len(_MARKERS)], color=f"C{k}", ms=6,
                        label=f"{model}{mass_txt}, {method} (N = {n}{toys})")
        ax.set_xlabel(r"$A_{true}/\sigma_A$")
        ax.set_ylabel(r"coverage: fraction with $A_{up} \geq A_{true}$")
        lo = float(np.nanmin(frame.coverage - frame.error))
        ax.set_ylim(min(0.85, lo - 0.02), 1.06)
        ax.legend(fontsize=11, loc="lower left", ncol=2)
        _header(ax, dataset_label, "coverage")
        return save_figure(fig, path)
