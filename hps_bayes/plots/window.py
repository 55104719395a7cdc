"""Figures of one mass window: the fit, the signal at its limit, S/B (one-off or redrawn per mass).

:class:`WindowPlotter` builds each figure once and then only moves its data, limits and
labels for the next mass, so a scan with per-mass plots does not create the axes, ticks,
markers and fonts again for every mass; the ``plot_*`` functions draw one figure once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, Protocol, Self

import numpy as np
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.text import Text
from matplotlib.ticker import ScalarFormatter

from hps_bayes.errors import InputError
from hps_bayes.plots.label import ExperimentLabel, current_label
from hps_bayes.plots.scan import _GREEN, _YELLOW
from hps_bayes.plots.style import (
    _SIGNAL_COLOR,
    _WINDOW_MARGINS,
    DPI,
    MASS_LABEL,
    _header,
    _log_limits,
    _set_linear_y,
    _set_log_y,
    hep_style,
    save_figure,
)
from hps_bayes.results.objects import WindowFitArrays

Kind = Literal["fit_full", "blind_ul", "s_over_b_ul"]
#: The per-mass figures, in the order :meth:`WindowPlotter.plot_all` writes them (file name = kind).
KINDS: tuple[Kind, ...] = ("fit_full", "blind_ul", "s_over_b_ul")
YScale = Literal["linear", "log"]


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

    @property
    def err(self) -> np.ndarray:
        """√n errors of the counts."""
        return np.sqrt(np.clip(self.counts, 0, None))


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


# --------------------------------------------------------------------------------------------
# artists: made once, moved per mass
# --------------------------------------------------------------------------------------------
def _draw_data(ax: Axes, w: _Window) -> ErrorbarContainer:
    return ax.errorbar(w.centres, w.counts, yerr=w.err, ls="none", marker="o", ms=5, color="black",
                       elinewidth=1.5, label="Data (√n errors)", zorder=4)


def _move_errorbar(bars: ErrorbarContainer, x: np.ndarray, y: np.ndarray, yerr: np.ndarray) -> None:
    """Put the points, bars (and caps, if any) of ``bars`` at ``y ± yerr``."""
    line, caps, (cols, *_) = bars.lines
    line.set_data(x, y)
    low, high = y - yerr, y + yerr
    cols.set_segments(list(np.stack([np.column_stack([x, low]), np.column_stack([x, high])], axis=1)))
    for cap, ends in zip(caps, (low, high), strict=False):
        cap.set_data(x, ends)


def _mark_mass(ax: Axes, w: _Window, *, label: bool = False) -> Line2D:
    return ax.axvline(w.mass_mev, color="#808080", ls=":", lw=2,
                      label=f"$m$ = {w.mass_mev:.1f} MeV" if label else None)


def _info_box(ax: Axes) -> Text:
    return ax.text(0.04, 0.95, "", transform=ax.transAxes, ha="left", va="top", fontsize=18,
                   bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "#808080"})


def _set_window_y(ax: Axes, w: _Window, curves: list[np.ndarray], yscale: YScale) -> None:
    if yscale == "log":
        _set_log_y(ax, _log_limits([w.counts, *curves], headroom=0.3, fallback=(0.5, 10.0)))
    else:
        _set_linear_y(ax, [w.counts + w.err, w.counts - w.err, *curves], headroom=0.35)
    ax.set_ylabel(w.ylabel)


def _two_panels(fig: Figure) -> tuple[Axes, Axes]:
    ax, axr = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 1.2), "hspace": 0.05})
    return ax, axr


def _finish_lower(ax: Axes, w: _Window, ylabel: str) -> Line2D:
    mass = _mark_mass(ax, w)
    ax.set_xlabel(MASS_LABEL)
    ax.set_ylabel(ylabel, fontsize=20)
    return mass


class _Header:
    """The experiment label above ``ax``, placed again only when its text or the y offset text changes.

    mplhep moves the label right of a ×10^k offset text, which it measures with a full draw of
    the figure; the label is therefore made after the limits are set, and again for a new offset.
    """

    def __init__(self, ax: Axes, dataset: str) -> None:
        self.ax, self.dataset = ax, dataset
        self.key: tuple[str, ExperimentLabel] | None = None
        self.artists: list[Artist] = []

    def update(self) -> None:
        key = (_y_offset_text(self.ax), current_label())
        if key == self.key:
            return
        for artist in self.artists:
            artist.remove()
        before = set(self.ax.get_children())
        _header(self.ax, self.dataset)
        self.artists = [a for a in self.ax.get_children() if a not in before]
        self.key = key


def _y_offset_text(ax: Axes) -> str:
    """The y axis' offset text (e.g. ×10^5) at the current limits; empty without an offset formatter."""
    formatter = ax.yaxis.get_major_formatter()
    if not isinstance(formatter, ScalarFormatter) or not formatter.get_useOffset():
        return ""
    formatter.set_locs(list(ax.yaxis.get_majorticklocs()))
    return formatter.get_offset()


class _Drawing(Protocol):
    """One kind of figure whose artists exist; ``update`` moves them to another mass window."""

    def update(self, w: _Window, arrays: WindowFitArrays) -> None: ...


class _FitFull:
    """The artists of :func:`plot_fit_full`."""

    def __init__(self, fig: Figure, w: _Window, arrays: WindowFitArrays, yscale: YScale) -> None:
        self.yscale = yscale
        self.ax, self.axr = _two_panels(fig)
        self.data = _draw_data(self.ax, w)
        self.bkg = self.ax.stairs(w.bkg_free, w.edges, color="#3f6fd8", lw=2.5, label="Background (free fit)")
        self.fit = self.ax.stairs(w.bkg_free + w.sig_free, w.edges, color="#e42536", lw=2, ls="--",
                                  label=r"Background + $\hat{A}\,T$")
        self.mass = _mark_mass(self.ax, w)
        self.ax.legend(loc="upper right", fontsize=16)
        self.info = _info_box(self.ax)
        self.axr.axhspan(-2, 2, color=_YELLOW, alpha=0.5, lw=0)
        self.axr.axhspan(-1, 1, color=_GREEN, alpha=0.4, lw=0)
        self.axr.axhline(0, color="black", lw=1)
        (self.pulls,) = self.axr.plot(w.centres, w.counts, ls="none", marker="o", ms=5, color="black")
        self.mass_lower = _finish_lower(self.axr, w, "(n − ν)/√ν")
        self.header = _Header(self.ax, arrays.dataset)

    def update(self, w: _Window, arrays: WindowFitArrays) -> None:
        fit = w.bkg_free + w.sig_free
        pull = np.where(fit > 0, (w.counts - fit) / np.sqrt(np.where(fit > 0, fit, 1.0)), np.nan)
        _move_errorbar(self.data, w.centres, w.counts, w.err)
        self.bkg.set_data(w.bkg_free, w.edges)
        self.fit.set_data(fit, w.edges)
        _set_window_y(self.ax, w, [w.bkg_free, fit], self.yscale)
        self.info.set_text("\n".join([f"$m$ = {w.mass_mev:.1f} MeV", rf"$\hat{{A}}$ = {arrays.A_hat:.4g} events",
                                      f"$Z$ = {arrays.Z:.2f}"]))
        finite = pull[np.isfinite(pull)]
        lim = max(3.5, math.ceil(float(np.abs(finite).max())) + 0.5) if finite.size else 3.5
        self.pulls.set_data(w.centres, pull)
        for line in (self.mass, self.mass_lower):
            line.set_xdata([w.mass_mev, w.mass_mev])
        self.axr.set_ylim(-lim, lim)
        self.axr.set_xlim(w.edges[0], w.edges[-1])
        self.header.update()


class _BlindUL:
    """The artists of :func:`plot_blind_ul`."""

    def __init__(self, fig: Figure, w: _Window, arrays: WindowFitArrays, yscale: YScale) -> None:
        self.yscale = yscale
        self.ax, self.axr = _two_panels(fig)
        self.signal = self.ax.stairs(w.bkg_limit + w.sig_limit, w.edges, baseline=w.bkg_limit, fill=True,
                                     color=_SIGNAL_COLOR, label=r"Signal at limit $A_{up}\,T$")
        self.bkg = self.ax.stairs(w.bkg_limit, w.edges, color="#3f6fd8", lw=2.5,
                                  label="Background (fit at $A_{up}$)")
        self.data = _draw_data(self.ax, w)
        self.mass = _mark_mass(self.ax, w)
        self.ax.legend(loc="upper right", fontsize=16)
        self.info = _info_box(self.ax)
        self.signal_lower = self.axr.stairs(w.sig_limit, w.edges, fill=True, color=_SIGNAL_COLOR)
        self.axr.axhline(0, color="#3f6fd8", lw=2)
        self.resid = self.axr.errorbar(w.centres, w.counts, yerr=w.err, ls="none", marker="o", ms=4,
                                       color="black", elinewidth=1.2)
        self.mass_lower = _finish_lower(self.axr, w, "n − b")
        self.header = _Header(self.ax, arrays.dataset)

    def update(self, w: _Window, arrays: WindowFitArrays) -> None:
        total = w.bkg_limit + w.sig_limit
        resid = w.counts - w.bkg_limit
        self.signal.set_data(total, w.edges, baseline=w.bkg_limit)  # type: ignore[arg-type]  # arrays are documented
        self.bkg.set_data(w.bkg_limit, w.edges)
        _move_errorbar(self.data, w.centres, w.counts, w.err)
        _set_window_y(self.ax, w, [total, w.bkg_limit], self.yscale)
        self.info.set_text("\n".join([f"$m$ = {w.mass_mev:.1f} MeV",
                                      f"$A_{{up}}$ = {arrays.A_up:.4g} events (95% CL)"]))
        self.signal_lower.set_data(w.sig_limit, w.edges)
        _move_errorbar(self.resid, w.centres, resid, w.err)
        for line in (self.mass, self.mass_lower):
            line.set_xdata([w.mass_mev, w.mass_mev])
        _set_linear_y(self.axr, [resid + w.err, resid - w.err, w.sig_limit], headroom=0.0)
        self.axr.set_xlim(w.edges[0], w.edges[-1])
        self.header.update()


class _SOverB:
    """The artists of :func:`plot_s_over_b_ul`."""

    def __init__(self, fig: Figure, w: _Window, arrays: WindowFitArrays, yscale: YScale) -> None:
        self.ax = fig.subplots()
        self.ratio = self.ax.stairs(w.sig_limit, w.edges, color="#e42536", lw=2.5,
                                    label="Signal at the 95% CL limit")
        self.ax.axhline(0, color="black", lw=1)
        self.mass = _mark_mass(self.ax, w, label=True)
        self.ax.set_xlabel(MASS_LABEL)
        self.ax.set_ylabel(r"$S/B$ per bin [%]")
        legend = self.ax.legend(loc="upper right", fontsize=16)
        self.mass_label = next(t for t in legend.get_texts() if t.get_text() == self.mass.get_label())
        self.info = _info_box(self.ax)
        self.header = _Header(self.ax, arrays.dataset)

    def update(self, w: _Window, arrays: WindowFitArrays) -> None:
        ratio = np.where(w.bkg_limit > 0, w.sig_limit / np.where(w.bkg_limit > 0, w.bkg_limit, 1.0), np.nan)
        self.ratio.set_data(100 * ratio, w.edges)
        self.mass.set_xdata([w.mass_mev, w.mass_mev])
        self.mass_label.set_text(f"$m$ = {w.mass_mev:.1f} MeV")
        top = float(np.nanmax(100 * ratio)) if np.isfinite(ratio).any() else 1.0
        self.ax.set_ylim(0, 1.4 * top if top > 0 else 1.0)
        self.ax.set_xlim(w.edges[0], w.edges[-1])
        self.info.set_text(f"$A_{{up}}$ = {arrays.A_up:.4g} events")
        self.header.update()


_DRAWINGS: dict[Kind, tuple[type[_FitFull | _BlindUL | _SOverB], tuple[float, float]]] = {
    "fit_full": (_FitFull, (10.0, 10.0)), "blind_ul": (_BlindUL, (10.0, 10.0)), "s_over_b_ul": (_SOverB, (10.0, 9.0))}


# --------------------------------------------------------------------------------------------
# public: a plotter for many masses, and one-off figures
# --------------------------------------------------------------------------------------------
class WindowPlotter:
    """Draws the per-mass figures of a scan, reusing one figure (and its artists) per kind.

    The first figure of a kind is built in mplhep's ROOT style; every later mass only moves
    the artists' data, the axis limits and the text, so the axes, ticks, markers and the
    mathtext of the fixed labels are made once per scan instead of once per mass.  The PNG
    files are written with zlib level ``png_compress_level`` (1: fast, a few per cent larger
    than matplotlib's default 6).

    Parameters
    ----------
    yscale : y axis of the upper panels of ``fit_full`` and ``blind_ul``.
    png_compress_level : zlib level 0-9 of the PNG files (other formats ignore it).

    Examples
    --------
    >>> with WindowPlotter() as plotter:                                       # doctest: +SKIP
    ...     for arrays in per_mass_arrays:
    ...         plotter.plot_all(arrays, folder_of(arrays), ext="png")
    """

    def __init__(self, *, yscale: YScale = "log", png_compress_level: int = 1) -> None:
        if yscale not in ("linear", "log"):
            raise InputError(f"yscale={yscale!r} is not a choice: use 'linear' or 'log'")
        if not 0 <= png_compress_level <= 9:
            raise InputError(f"png_compress_level={png_compress_level!r} is not a zlib level: use 0 (none) to 9")
        self.yscale: YScale = yscale
        self.png_compress_level = png_compress_level
        self._figures: dict[Kind, tuple[Figure, _Drawing, str]] = {}

    def plot(self, kind: Kind, arrays: WindowFitArrays, path: str | Path) -> Path:
        """Draw figure ``kind`` of one mass window into ``path`` (the format from its suffix)."""
        if kind not in _DRAWINGS:
            raise InputError(f"kind={kind!r} is not a window figure: use one of {list(_DRAWINGS)}")
        w = _window(arrays)
        with hep_style():
            fig, drawing = self._figure(kind, w, arrays)
            drawing.update(w, arrays)
            if not isinstance(fig.canvas, FigureCanvasAgg):
                # one renderer for every later save, with its mathtext and text-size caches; set after
                # the first header, whose text placement would otherwise draw the whole figure once more
                FigureCanvasAgg(fig)
            return save_figure(fig, path, clear=False, png_compress_level=self.png_compress_level)

    def plot_all(self, arrays: WindowFitArrays, folder: str | Path, *, ext: Literal["png", "pdf"] = "png"
                 ) -> list[Path]:
        """The three figures of one mass window, ``<folder>/<kind>.<ext>`` for each of :data:`KINDS`."""
        return [self.plot(kind, arrays, Path(folder) / f"{kind}.{ext}") for kind in KINDS]

    def close(self) -> None:
        """Clear the figures (their artists are freed); a later call builds them again."""
        for fig, _, _ in self._figures.values():
            fig.clear()
        self._figures.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _figure(self, kind: Kind, w: _Window, arrays: WindowFitArrays) -> tuple[Figure, _Drawing]:
        """The figure of ``kind``, built on first use and again for another dataset (its header)."""
        if kind in self._figures and self._figures[kind][2] == arrays.dataset:
            fig, drawing, _ = self._figures[kind]
            return fig, drawing
        if kind in self._figures:
            self._figures[kind][0].clear()
        cls, figsize = _DRAWINGS[kind]
        fig = Figure(figsize=figsize, dpi=DPI)
        fig.subplots_adjust(**_WINDOW_MARGINS)
        drawing = cls(fig, w, arrays, self.yscale)
        self._figures[kind] = (fig, drawing, arrays.dataset)
        return fig, drawing


def plot_fit_full(arrays: WindowFitArrays, path: str | Path, *, yscale: YScale = "log") -> Path:
    """Data in the window with the free fit (background and background + Â·T), and pulls.

    Upper panel: counts with √n errors, the free fit's background b_i and b_i + Â·T_i, the
    mass hypothesis (dotted).  Lower panel: (n_i − ν_i)/√ν_i with ν_i = b_i + Â·T_i.
    For many masses use :class:`WindowPlotter`, which draws the same figure faster.
    """
    with WindowPlotter(yscale=yscale) as plotter:
        return plotter.plot("fit_full", arrays, path)


def plot_blind_ul(arrays: WindowFitArrays, path: str | Path, *, yscale: YScale = "log") -> Path:
    """The signal at its upper limit, A_up·T, stacked (filled) on the background of the fit at the limit.

    Upper panel: data with √n errors, the background b_i of the fit with A fixed at A_up, and
    b_i + A_up·T_i filled above it.  Lower panel: the same on a background-subtracted scale,
    n_i − b_i with √n errors and A_up·T_i filled, where a signal of a per cent of the
    background is still visible.  For many masses use :class:`WindowPlotter`.
    """
    with WindowPlotter(yscale=yscale) as plotter:
        return plotter.plot("blind_ul", arrays, path)


def plot_s_over_b_ul(arrays: WindowFitArrays, path: str | Path) -> Path:
    """Per-bin signal-to-background, A_up·T_i / b_i (fit at the limit), in per cent, vs mass.

    For many masses use :class:`WindowPlotter`.
    """
    with WindowPlotter() as plotter:
        return plotter.plot("s_over_b_ul", arrays, path)
