"""Figures of one mass window: the fit, the signal at its limit, S/B."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from hps_bayes.errors import InputError
from hps_bayes.plots.scan import _GREEN, _YELLOW
from hps_bayes.plots.style import (
    _SIGNAL_COLOR,
    _WINDOW_MARGINS,
    MASS_LABEL,
    _header,
    _log_limits,
    _set_linear_y,
    _set_log_y,
    hep_figure,
    save_figure,
)
from hps_bayes.results.objects import WindowFitArrays


# --------------------------------------------------------------------------------------------
# public: one mass window
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Window:
    """WindowFitArrays in display units (MeV) as float arrays."""

    edges: np.ndarray
    centres: np.ndarray
    counts: np.ndarray
    bkg_free: np.ndarray
    sig_free: np.ndarray
    bkg_limit: np.ndarray
    sig_limit: np.ndarray
    mass_mev: float
    ylabel: str


def _window(arrays: WindowFitArrays) -> _Window:
    edges = np.asarray(arrays.edges, dtype=float) * 1e3
    n = edges.size - 1
    fields = {k: np.asarray(getattr(arrays, k), dtype=float) for k in
              ("counts", "background_free", "signal_free", "background_limit", "signal_limit")}
    bad = {k: v.shape for k, v in fields.items() if v.shape != (n,)}
    if n < 1 or bad:
        raise InputError(f"window arrays of {arrays.dataset!r} at m = {arrays.mass * 1e3:.2f} MeV do not "
                         f"match {n} bins ({edges.size} edges): shapes {bad}")
    widths = np.diff(edges)
    uniform = np.allclose(widths, widths[0], rtol=1e-6)
    return _Window(edges=edges, centres=0.5 * (edges[1:] + edges[:-1]), counts=fields["counts"],
                   bkg_free=fields["background_free"], sig_free=fields["signal_free"],
                   bkg_limit=fields["background_limit"], sig_limit=fields["signal_limit"],
                   mass_mev=arrays.mass * 1e3,
                   ylabel=f"Events / {widths[0]:.3g} MeV" if uniform else "Events / bin")


def _draw_data(ax: Axes, w: _Window) -> None:
    ax.errorbar(w.centres, w.counts, yerr=np.sqrt(np.clip(w.counts, 0, None)), ls="none", marker="o",
                ms=5, color="black", elinewidth=1.5, label="Data (√n errors)", zorder=4)


def _mark_mass(ax: Axes, w: _Window, *, label: bool = False) -> None:
    ax.axvline(w.mass_mev, color="#808080", ls=":", lw=2,
               label=f"$m$ = {w.mass_mev:.1f} MeV" if label else None)


def _info_box(ax: Axes, lines: list[str]) -> None:
    ax.text(0.04, 0.95, "\n".join(lines), transform=ax.transAxes, ha="left", va="top", fontsize=18,
            bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "#808080"})


def _set_window_y(ax: Axes, w: _Window, curves: list[np.ndarray], yscale: Literal["linear", "log"]) -> None:
    err = np.sqrt(np.clip(w.counts, 0, None))
    if yscale == "log":
        _set_log_y(ax, _log_limits([w.counts, *curves], headroom=0.3, fallback=(0.5, 10.0)))
    elif yscale == "linear":
        _set_linear_y(ax, [w.counts + err, w.counts - err, *curves], headroom=0.35)
    else:
        raise InputError(f"yscale={yscale!r} is not a choice: use 'linear' or 'log'")
    ax.set_ylabel(w.ylabel)


def _two_panels(fig: Figure) -> tuple[Axes, Axes]:
    ax, axr = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 1.2), "hspace": 0.05})
    return ax, axr


def plot_fit_full(arrays: WindowFitArrays, path: str | Path, *,
                  yscale: Literal["linear", "log"] = "log") -> Path:
    """Data in the window with the free fit (background and background + Â·T), and pulls.

    Upper panel: counts with √n errors, the free fit's background b_i and b_i + Â·T_i, the
    mass hypothesis (dotted).  Lower panel: (n_i − ν_i)/√ν_i with ν_i = b_i + Â·T_i.
    """
    w = _window(arrays)
    fit = w.bkg_free + w.sig_free
    pull = np.where(fit > 0, (w.counts - fit) / np.sqrt(np.where(fit > 0, fit, 1.0)), np.nan)
    with hep_figure((10.0, 10.0), _WINDOW_MARGINS) as fig:
        ax, axr = _two_panels(fig)
        _draw_data(ax, w)
        ax.stairs(w.bkg_free, w.edges, color="#3f6fd8", lw=2.5, label="Background (free fit)")
        ax.stairs(fit, w.edges, color="#e42536", lw=2, ls="--", label=r"Background + $\hat{A}\,T$")
        _mark_mass(ax, w)
        _set_window_y(ax, w, [w.bkg_free, fit], yscale)
        ax.legend(loc="upper right", fontsize=16)
        _info_box(ax, [f"$m$ = {w.mass_mev:.1f} MeV", rf"$\hat{{A}}$ = {arrays.A_hat:.4g} events",
                       f"$Z$ = {arrays.Z:.2f}"])
        _draw_pulls(axr, w, pull)
        _header(ax, arrays.dataset)
        return save_figure(fig, path)


def _draw_pulls(ax: Axes, w: _Window, pull: np.ndarray) -> None:
    finite = pull[np.isfinite(pull)]
    lim = max(3.5, math.ceil(float(np.abs(finite).max())) + 0.5) if finite.size else 3.5
    ax.axhspan(-2, 2, color=_YELLOW, alpha=0.5, lw=0)
    ax.axhspan(-1, 1, color=_GREEN, alpha=0.4, lw=0)
    ax.axhline(0, color="black", lw=1)
    ax.plot(w.centres, pull, ls="none", marker="o", ms=5, color="black")
    _mark_mass(ax, w)
    ax.set_ylim(-lim, lim)
    ax.set_xlim(w.edges[0], w.edges[-1])
    ax.set_xlabel(MASS_LABEL)
    ax.set_ylabel("(n − ν)/√ν", fontsize=20)


def plot_blind_ul(arrays: WindowFitArrays, path: str | Path, *,
                  yscale: Literal["linear", "log"] = "log") -> Path:
    """The signal at its upper limit, A_up·T, stacked (filled) on the background of the fit at the limit.

    Upper panel: data with √n errors, the background b_i of the fit with A fixed at A_up, and
    b_i + A_up·T_i filled above it.  Lower panel: the same on a background-subtracted scale,
    n_i − b_i with √n errors and A_up·T_i filled, where a signal of a per cent of the
    background is still visible.
    """
    w = _window(arrays)
    total = w.bkg_limit + w.sig_limit
    with hep_figure((10.0, 10.0), _WINDOW_MARGINS) as fig:
        ax, axr = _two_panels(fig)
        ax.stairs(total, w.edges, baseline=w.bkg_limit, fill=True, color=_SIGNAL_COLOR,
                  label=r"Signal at limit $A_{up}\,T$")
        ax.stairs(w.bkg_limit, w.edges, color="#3f6fd8", lw=2.5, label="Background (fit at $A_{up}$)")
        _draw_data(ax, w)
        _mark_mass(ax, w)
        _set_window_y(ax, w, [total, w.bkg_limit], yscale)
        ax.legend(loc="upper right", fontsize=16)
        _info_box(ax, [f"$m$ = {w.mass_mev:.1f} MeV", f"$A_{{up}}$ = {arrays.A_up:.4g} events (95% CL)"])
        _draw_subtracted(axr, w)
        _header(ax, arrays.dataset)
        return save_figure(fig, path)


def _draw_subtracted(ax: Axes, w: _Window) -> None:
    err = np.sqrt(np.clip(w.counts, 0, None))
    resid = w.counts - w.bkg_limit
    ax.stairs(w.sig_limit, w.edges, fill=True, color=_SIGNAL_COLOR)
    ax.axhline(0, color="#3f6fd8", lw=2)
    ax.errorbar(w.centres, resid, yerr=err, ls="none", marker="o", ms=4, color="black", elinewidth=1.2)
    _mark_mass(ax, w)
    _set_linear_y(ax, [resid + err, resid - err, w.sig_limit], headroom=0.0)
    ax.set_xlim(w.edges[0], w.edges[-1])
    ax.set_xlabel(MASS_LABEL)
    ax.set_ylabel("n − b", fontsize=20)


def plot_s_over_b_ul(arrays: WindowFitArrays, path: str | Path) -> Path:
    """Per-bin signal-to-background, A_up·T_i / b_i (fit at the limit), in per cent, vs mass."""
    w = _window(arrays)
    ratio = np.where(w.bkg_limit > 0, w.sig_limit / np.where(w.bkg_limit > 0, w.bkg_limit, 1.0), np.nan)
    with hep_figure((10.0, 9.0), _WINDOW_MARGINS) as fig:
        ax = fig.subplots()
        ax.stairs(100 * ratio, w.edges, color="#e42536", lw=2.5, label="Signal at the 95% CL limit")
        ax.axhline(0, color="black", lw=1)
        _mark_mass(ax, w, label=True)
        top = float(np.nanmax(100 * ratio)) if np.isfinite(ratio).any() else 1.0
        ax.set_ylim(0, 1.4 * top if top > 0 else 1.0)
        ax.set_xlim(w.edges[0], w.edges[-1])
        ax.set_xlabel(MASS_LABEL)
        ax.set_ylabel(r"$S/B$ per bin [%]")
        ax.legend(loc="upper right", fontsize=16)
        _info_box(ax, [f"$A_{{up}}$ = {arrays.A_up:.4g} events"])
        _header(ax, arrays.dataset)
        return save_figure(fig, path)
