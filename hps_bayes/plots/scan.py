"""Figures of a scan: ε² and A limits with bands, p0, Z, overlays.

Plots never compute statistics: every number drawn was computed upstream and
stored in a result (a :func:`hps_bayes.results.results_frame` table — or its rows, a list of
dicts, as a command-line scan hands them without importing pandas — or a
:class:`hps_bayes.results.WindowFitArrays`).  The only arithmetic here is
display arithmetic (GeV → MeV, per-bin ratios and pulls, a unit-normal
reference curve, the p-values of the 1σ–5σ reference lines).

Two tiers, as in cabinetry: each public ``plot_*`` function unpacks a result
into plain arrays (``_limit_curve``, ``_scan_points``, ``_window``) and hands
them to a ``_draw_*`` function that only draws on an ``Axes``.

Figures are ``matplotlib.figure.Figure`` objects created without pyplot, so no
global backend or figure registry is touched; the style is applied through
``matplotlib.style.context`` and restored on exit.  Every function returns the
path it wrote (PNG or PDF, from the suffix) and clears its figure.

Failed mass points (``status != "ok"``) are never dropped silently: they are
left out of the curves and marked by red ticks along the bottom of the axes,
with their count in the legend.  A frame whose rows *all* failed still gives
a labelled plot (ticks plus a note); a frame with no rows at all, or with
several datasets mixed, raises :class:`hps_bayes.errors.InputError`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from matplotlib.axes import Axes

from hps_bayes.errors import InputError
from hps_bayes.plots.style import (
    _FAIL_COLOR,
    _LIMIT_FIGSIZE,
    _LIMIT_MARGINS,
    _WINDOW_MARGINS,
    MASS_LABEL,
    PUBLISHED_2015_LABEL,
    _header,
    _log_limits,
    _mark_failures,
    _set_log_y,
    hep_figure,
    save_figure,
)
from hps_bayes.results.objects import BAND_SUFFIXES
from hps_bayes.results.rows import Columns

if TYPE_CHECKING:  # a results table: a DataFrame, or its rows (one dict per row)
    import pandas as pd

    type Table = pd.DataFrame | Sequence[Mapping[str, Any]]

# suffixes of the expected-band columns written by MassPointResult.to_row, N = -2..+2
_GREEN, _YELLOW = "#00c000", "#ffd800"


# --------------------------------------------------------------------------------------------
# tier 1: unpack a results frame
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _LimitCurve:
    """Arrays of one limit scan: ok points (observed, expected N = -2..+2) and left-out points."""

    mass_mev: np.ndarray
    observed: np.ndarray
    expected: np.ndarray  # shape (5, n): N = -2, -1, 0, +1, +2
    failed_mass_mev: np.ndarray
    failed_statuses: tuple[str, ...]


def _check_frame(frame: Columns, columns: list[str], dataset_label: str) -> None:
    if frame.n == 0:
        raise InputError(f"the results frame for dataset {dataset_label!r} has no rows: nothing to plot; "
                         "run the scan first (or check the dataset selection)")
    missing = [c for c in columns if c not in frame.arrays]
    if missing:
        raise InputError(f"the results frame for dataset {dataset_label!r} lacks columns {missing}: "
                         "build it with hps_bayes.results.results_frame")
    datasets = sorted(set(frame.strings("dataset"))) if "dataset" in frame.arrays else []
    if len(datasets) > 1:
        raise InputError(f"the results frame for {dataset_label!r} mixes datasets {datasets}: plot one at "
                         "a time, e.g. frame[frame['dataset'] == '2015']")


def _ok_mask(frame: Columns, column: str) -> np.ndarray:
    """Rows drawn: status "ok" and a finite value in ``column``."""
    return (frame.strings("status") == "ok") & np.isfinite(frame.floats(column))


def _limit_curve(table: Any, prefix: Literal["eps2_up", "A_up"], dataset_label: str) -> _LimitCurve:
    band_cols = [f"{prefix}_expected_{s}" for s in BAND_SUFFIXES]
    frame = Columns.of(table)
    _check_frame(frame, ["mass", "status", prefix, *band_cols], dataset_label)
    frame = frame.sorted_by("mass")
    ok = _ok_mask(frame, prefix) & (frame.floats(prefix) > 0)
    mass_mev = frame.floats("mass") * 1e3
    return _LimitCurve(
        mass_mev=mass_mev[ok],
        observed=frame.floats(prefix)[ok],
        expected=np.stack([frame.floats(c)[ok] for c in band_cols]),
        failed_mass_mev=mass_mev[~ok],
        failed_statuses=tuple(sorted(set(frame.strings("status")[~ok]))),
    )


def _scan_points(table: Any, column: str, dataset_label: str) -> tuple[np.ndarray, ...]:
    """(mass_mev, value) of the ok rows and mass_mev of the others, sorted by mass."""
    frame = Columns.of(table)
    _check_frame(frame, ["mass", "status", column], dataset_label)
    frame = frame.sorted_by("mass")
    ok = _ok_mask(frame, column)
    mass_mev = frame.floats("mass") * 1e3
    return mass_mev[ok], frame.floats(column)[ok], mass_mev[~ok]


# --------------------------------------------------------------------------------------------
# tier 2: draw arrays
# --------------------------------------------------------------------------------------------
def _draw_brazil(ax: Axes, curve: _LimitCurve, *, observed_label: str) -> None:
    """Expected ±2σ (yellow), ±1σ (green), median (dashed) and the observed limit (black)."""
    m, exp = curve.mass_mev, curve.expected
    if np.isfinite(exp[[0, 4]]).any():
        ax.fill_between(m, exp[0], exp[4], color=_YELLOW, lw=0, label=r"Expected $\pm 2\sigma$")
    if np.isfinite(exp[[1, 3]]).any():
        ax.fill_between(m, exp[1], exp[3], color=_GREEN, lw=0, label=r"Expected $\pm 1\sigma$")
    if np.isfinite(exp[2]).any():
        ax.plot(m, exp[2], color="black", ls="--", lw=2, label="Expected median")
    if m.size:
        ax.plot(m, curve.observed, color="black", ls="-", lw=2, marker="o", ms=4, label=observed_label)


def _draw_limit_axes(ax: Axes, curve: _LimitCurve, *, ylabel: str, extra: list[np.ndarray],
                     fallback: tuple[float, float], title: str | None = None) -> None:
    """Log-y, labels, failure ticks, a note when nothing converged, and the legend."""
    _mark_failures(ax, curve.failed_mass_mev, label="not drawn: status ≠ ok")
    _set_log_y(ax, _log_limits([curve.observed, curve.expected, *extra], headroom=0.35, fallback=fallback))
    ax.set_xlabel(MASS_LABEL)
    ax.set_ylabel(ylabel)
    if curve.mass_mev.size == 0:
        ax.text(0.5, 0.5, "no mass point with status 'ok'\nstatuses: " + ", ".join(curve.failed_statuses),
                transform=ax.transAxes, ha="center", va="center", color=_FAIL_COLOR, fontsize=20)
    ax.legend(loc="upper left", ncols=2, fontsize=17, title=title or None, title_fontsize=17)


def _draw_published(ax: Axes, published: Any) -> np.ndarray:
    table = Columns.of(published)
    missing = [c for c in ("mass_GeV", "epsilon2") if c not in table.arrays]
    if missing:
        raise InputError(f"the published curve lacks columns {missing} (has {list(table.arrays)}); "
                         "read shared/data/hps2015_published_limit.csv with pandas.read_csv(..., comment='#')")
    pub = table.sorted_by("mass_GeV")
    eps2 = pub.floats("epsilon2")
    ax.plot(pub.floats("mass_GeV") * 1e3, eps2, color="#7a21dd", lw=2.5, ls="-.", label=PUBLISHED_2015_LABEL)
    return eps2


def _draw_sigma_lines(ax: Axes, n_max: int = 5) -> None:
    """Horizontal lines at the one-sided p-values of 1σ … n_max σ, labelled at the right edge."""
    for n in range(1, n_max + 1):
        p = 0.5 * math.erfc(n / math.sqrt(2.0))
        ax.axhline(p, color="#c03030", ls=":", lw=1.5)
        ax.text(0.99, p, f"{n}σ", transform=ax.get_yaxis_transform(), ha="right", va="bottom",
                color="#c03030", fontsize=18)


# --------------------------------------------------------------------------------------------
# public: scan summaries
# --------------------------------------------------------------------------------------------
def plot_eps2_limits(frame: Table, path: str | Path, *, dataset_label: str,
                     published: Table | None = None, title: str | None = None) -> Path:
    """95% CL upper limit on ε² vs mass with the expected (Brazil) band, log-y.

    Parameters
    ----------
    frame : one dataset's :func:`~hps_bayes.results.results_frame` (columns ``mass`` [GeV],
        ``status``, ``eps2_up``, ``eps2_up_expected_{m2,m1,median,p1,p2}``).
    path : where to write (suffix ``.png`` or ``.pdf``).
    dataset_label : shown above the axes and named in errors.
    published : optional reference curve with columns ``mass_GeV``, ``epsilon2``, drawn as
        :data:`PUBLISHED_2015_LABEL`.
    title : optional legend title.

    Rows with ``status != "ok"`` (or no finite limit) are left out of the lines and marked by red
    ticks at the bottom.  If every row failed the plot is still drawn (ticks plus a note); an
    empty frame raises :class:`~hps_bayes.errors.InputError` (a ``ValueError``).
    """
    curve = _limit_curve(frame, "eps2_up", dataset_label)
    with hep_figure(_LIMIT_FIGSIZE, _LIMIT_MARGINS) as fig:
        ax = fig.subplots()
        _draw_brazil(ax, curve, observed_label="Observed 95% CL limit")
        extra = [] if published is None else [_draw_published(ax, published)]
        _draw_limit_axes(ax, curve, ylabel=r"$\epsilon^{2}$ upper limit (95% CL)", extra=extra,
                         fallback=(2e-7, 3e-3), title=title)
        _header(ax, dataset_label)
        return save_figure(fig, path)


def plot_A_limits(frame: Table, path: str | Path, *, dataset_label: str) -> Path:
    """95% CL upper limit on the signal yield A [events] vs mass with the Brazil band, log-y.

    Same conventions as :func:`plot_eps2_limits`, on the columns ``A_up`` and
    ``A_up_expected_{m2,m1,median,p1,p2}``.
    """
    curve = _limit_curve(frame, "A_up", dataset_label)
    with hep_figure(_LIMIT_FIGSIZE, _LIMIT_MARGINS) as fig:
        ax = fig.subplots()
        _draw_brazil(ax, curve, observed_label="Observed 95% CL limit")
        _draw_limit_axes(ax, curve, ylabel="A upper limit (95% CL) [events]", extra=[],
                         fallback=(2.0, 3e5))
        _header(ax, dataset_label)
        return save_figure(fig, path)


def plot_p0(frame: Table, path: str | Path, *, dataset_label: str) -> Path:
    """Local p0 vs mass on log-y, with reference lines at the one-sided p-values of 1σ…5σ.

    p0 = 1 − Φ(√q0) (arXiv:1007.1727, Eq. 52) as stored in the ``p0`` column; points with
    Â < 0 have q0 = 0 and p0 = 0.5 (Eq. 12).  Failed rows are marked by red ticks.
    """
    mass, p0, failed = _scan_points(frame, "p0", dataset_label)
    with hep_figure(_LIMIT_FIGSIZE, _LIMIT_MARGINS) as fig:
        ax = fig.subplots()
        ax.plot(mass, p0, color="black", lw=2, marker="o", ms=4, label="Local $p_0$")
        _draw_sigma_lines(ax)
        _mark_failures(ax, failed, label="not drawn: status ≠ ok")
        finite = p0[np.isfinite(p0) & (p0 > 0)]
        p5 = 0.5 * math.erfc(5 / math.sqrt(2.0))
        _set_log_y(ax, (min(float(finite.min()) if finite.size else 1.0, p5) / 20, 2.0))
        ax.set_xlabel(MASS_LABEL)
        ax.set_ylabel("Local $p_0$")
        # between the 4σ and 5σ lines: empty unless an excess beyond 4σ, and clear of the failure ticks
        ax.legend(loc="center left", bbox_to_anchor=(0.0, 0.285), fontsize=17)
        _header(ax, dataset_label)
        return save_figure(fig, path)


def plot_z_distribution(frame: Table, path: str | Path, *, dataset_label: str,
                        z: Literal["wald", "signed"] = "wald") -> Path:
    """Histogram of the local significance over the scan, with a unit normal N(0, 1) overlaid.

    ``z="wald"`` (default) histograms Â/σ_A, which equals √q0 asymptotically for Â ≥ 0
    (arXiv:1007.1727, Eqs. 26 and 53) and keeps its sign for Â < 0, so a background-only
    scan gives ≈ N(0, 1).  ``z="signed"`` histograms sign(Â)·Z from the ``Z`` column; since
    q0 = 0 for Â < 0 (Eq. 12) about half the entries then sit at 0.  Neighbouring mass
    windows overlap, so entries are correlated: expect more bin-to-bin scatter than for
    independent draws.  Failed rows are left out and counted in the legend.
    """
    values, n_failed, xlabel = _signed_z(frame, z, dataset_label)
    lim = max(5.0, math.ceil(float(np.abs(values).max())) + 0.5) if values.size else 5.0
    edges = np.arange(-lim, lim + 1e-9, 0.25 if values.size >= 400 else 0.5)
    counts, _ = np.histogram(values, bins=edges)
    with hep_figure((10.0, 9.0), _WINDOW_MARGINS) as fig:
        ax = fig.subplots()
        ax.stairs(counts, edges, fill=True, color="#9cb9f0", label=f"Mass points ({values.size})")
        ax.stairs(counts, edges, color="#3f6fd8", lw=2)
        grid = np.linspace(edges[0], edges[-1], 400)
        width = float(edges[1] - edges[0])
        ax.plot(grid, values.size * width * np.exp(-0.5 * grid**2) / math.sqrt(2 * math.pi),
                color="black", lw=2, ls="--", label="Unit normal $N(0,1)$")
        if n_failed:
            ax.plot([], [], ls="none", marker="|", ms=18, mew=2.5, color=_FAIL_COLOR,
                    label=f"left out: status ≠ ok ({n_failed})")
        ax.set_xlim(edges[0], edges[-1])
        ax.set_ylim(0, max(float(counts.max()) if counts.size else 1.0, values.size * width * 0.4) * 1.6)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(f"Mass points / {width:g}")
        _stat_box(ax, values)
        ax.legend(loc="upper left", fontsize=17)
        _header(ax, dataset_label)
        return save_figure(fig, path)


def _signed_z(table: Any, z: Literal["wald", "signed"], dataset_label: str
              ) -> tuple[np.ndarray, int, str]:
    """The histogrammed values of the ok rows, the number left out, and the axis label."""
    frame = Columns.of(table)
    if z == "wald":
        _check_frame(frame, ["status", "A_hat", "sigma_A"], dataset_label)
        values = frame.floats("A_hat") / frame.floats("sigma_A")
        label = r"Local significance $\hat{A}/\sigma_{A}$"
    elif z == "signed":
        _check_frame(frame, ["status", "A_hat", "Z"], dataset_label)
        values = np.sign(frame.floats("A_hat")) * frame.floats("Z")
        label = r"Local significance sign$(\hat{A})\,Z$"
    else:
        raise InputError(f"z={z!r} is not a choice: use 'wald' or 'signed'")
    ok = (frame.strings("status") == "ok") & np.isfinite(values)
    return values[ok], int((~ok).sum()), label


def _stat_box(ax: Axes, values: np.ndarray) -> None:
    """ROOT-like statistics box: entries, mean, standard deviation of the histogrammed values."""
    if values.size < 2:
        return
    text = f"Entries {values.size}\nMean {values.mean():+.2f}\nStd dev {values.std(ddof=1):.2f}"
    ax.text(0.97, 0.96, text, transform=ax.transAxes, ha="right", va="top", fontsize=17,
            bbox={"boxstyle": "square", "facecolor": "white", "edgecolor": "black"})


# --------------------------------------------------------------------------------------------
# public: toy vs asymptotic expected-limit bands (task=bands)
# --------------------------------------------------------------------------------------------
_ASYM_COLOR = "#1f4fbf"


def _draw_asymptotic_band(ax: Axes, curve: _LimitCurve) -> None:
    """The asymptotic expected median (dashed), ±1σ/±2σ edges (dotted) and observed limit (thin), in blue."""
    m, exp = curve.mass_mev, curve.expected
    ax.plot(m, exp[2], color=_ASYM_COLOR, ls="--", lw=1.8, label="Asymptotic expected median")
    for n, lw in ((1, 1.4), (0, 1.0)):
        ax.plot(m, exp[n], color=_ASYM_COLOR, ls=":", lw=lw, label=r"Asymptotic $\pm 1\sigma$, $\pm 2\sigma$"
                if n == 1 else None)
        ax.plot(m, exp[4 - n], color=_ASYM_COLOR, ls=":", lw=lw)
    ax.plot(m, curve.observed, color=_ASYM_COLOR, ls="-", lw=1.2, label="Asymptotic observed")


def plot_limit_bands(toys: Table, asymptotic: Table, path: str | Path, *,
                     quantity: Literal["A_up", "eps2_up"], dataset_label: str) -> Path:
    """Toy-based Brazil band with the observed (toy) limit, and the asymptotic band drawn over it.

    Parameters
    ----------
    toys, asymptotic : :func:`~hps_bayes.results.results_frame` tables of one dataset computed with
        ``stats.method=toys`` and ``asymptotic`` on the same masses (``task=bands``).
    path : where to write (``.png`` or ``.pdf``).
    quantity : ``"A_up"`` (signal yield, events) or ``"eps2_up"`` (ε²).
    dataset_label : shown above the axes.
    """
    curve, asym = _limit_curve(toys, quantity, dataset_label), _limit_curve(asymptotic, quantity, dataset_label)
    counts = Columns.of(toys)
    n_toys = int(counts.floats("n_toys").max()) if "n_toys" in counts.arrays and counts.n else 0
    ylabel = "A upper limit (95% CL) [events]" if quantity == "A_up" else r"$\epsilon^{2}$ upper limit (95% CL)"
    fallback = (2.0, 3e5) if quantity == "A_up" else (2e-7, 3e-3)
    with hep_figure(_LIMIT_FIGSIZE, _LIMIT_MARGINS) as fig:
        ax = fig.subplots()
        _draw_brazil(ax, curve, observed_label=f"Observed 95% CL limit (toys, {n_toys} per ensemble)")
        _draw_asymptotic_band(ax, asym)
        _draw_limit_axes(ax, curve, ylabel=ylabel, extra=[asym.observed, asym.expected], fallback=fallback,
                         title="Expected bands: toys (filled), asymptotic (blue)")
        _header(ax, dataset_label)
        return save_figure(fig, path)


# --------------------------------------------------------------------------------------------
# several datasets and their combination
# --------------------------------------------------------------------------------------------
_OVERLAY_COLORS = ("#e42536", "#5790fc", "#f89c20", "#964a8b", "#9c9ca1")


def plot_eps2_overlay(frames: Mapping[str, Table], path: str | Path, *,
                      published: Table | None = None, combined: str | None = "combined") -> Path:
    """Observed (solid) and expected median (dashed) ε² limits of several datasets on one log plot.

    ``frames`` maps a legend label to a results frame (one dataset or the combination);
    the entry named ``combined`` is drawn in black, with its ±1σ band.  Failed rows are
    left out of the lines (each frame's own plot marks them).
    """
    if not frames:
        raise InputError("plot_eps2_overlay needs at least one results frame")
    curves = {label: _limit_curve(frame, "eps2_up", label) for label, frame in frames.items()}
    with hep_figure(_LIMIT_FIGSIZE, _LIMIT_MARGINS) as fig:
        ax = fig.subplots()
        colors = iter(_OVERLAY_COLORS)
        for label, c in curves.items():
            color = "black" if label == combined else next(colors)
            if label == combined and c.mass_mev.size:
                ax.fill_between(c.mass_mev, c.expected[1], c.expected[3], color=_GREEN, lw=0, alpha=0.6,
                                label=f"{label}: expected $\\pm 1\\sigma$")
            ax.plot(c.mass_mev, c.observed, color=color, lw=2, label=f"{label}: observed")
            ax.plot(c.mass_mev, c.expected[2], color=color, lw=1.5, ls="--", label=f"{label}: expected")
        extra = [] if published is None else [_draw_published(ax, published)]
        values = [v for c in curves.values() for v in (c.observed, c.expected[1:4])]
        _set_log_y(ax, _log_limits([*values, *extra], headroom=0.45, fallback=(2e-7, 3e-3)))
        ax.set_xlabel(MASS_LABEL)
        ax.set_ylabel(r"$\epsilon^{2}$ upper limit (95% CL)")
        ax.legend(loc="upper left", ncols=2, fontsize=13)
        _header(ax, "all datasets")
        return save_figure(fig, path)


def plot_p0_overlay(frames: Mapping[str, Table], path: str | Path, *,
                    combined: str | None = "combined") -> Path:
    """Local p0 vs mass of several datasets and their combination (black) on one log plot."""
    if not frames:
        raise InputError("plot_p0_overlay needs at least one results frame")
    points = {label: _scan_points(frame, "p0", label) for label, frame in frames.items()}
    with hep_figure(_LIMIT_FIGSIZE, _LIMIT_MARGINS) as fig:
        ax = fig.subplots()
        colors = iter(_OVERLAY_COLORS)
        for label, (mass, p0, _) in points.items():
            color = "black" if label == combined else next(colors)
            ax.plot(mass, p0, color=color, lw=2 if label == combined else 1.5, label=label)
        _draw_sigma_lines(ax)
        finite = np.concatenate([p[1][np.isfinite(p[1]) & (p[1] > 0)] for p in points.values()])
        p5 = 0.5 * math.erfc(5 / math.sqrt(2.0))
        _set_log_y(ax, (min(float(finite.min()) if finite.size else 1.0, p5) / 20, 2.0))
        ax.set_xlabel(MASS_LABEL)
        ax.set_ylabel("Local $p_0$")
        ax.legend(loc="center left", bbox_to_anchor=(0.0, 0.285), fontsize=15)
        _header(ax, "all datasets")
        return save_figure(fig, path)
