"""Figures of an active-learning run (mplhep HEP style): the surrogate and the points it chose.

Plots never compute statistics: the surrogate's mean and σ on a grid, the
truth grid and the history were computed upstream (``hps_bayes.active``,
``task=active``); only display arithmetic happens here (GeV → MeV).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from hps_bayes.plots.style import hep_figure, save_figure

DPI = 110
_FAIL_COLOR = "#d00000"


def _figure(figsize: tuple[float, float]) -> Any:
    return hep_figure(figsize, dpi=DPI)



def _short_log_axis(axis: Any, low: float, high: float) -> None:
    """A log axis spanning under two decades: labels at 1, 2, 3, 5 × 10^k in plain numbers, none on the
    minor ticks (matplotlib's default labels every minor tick there, and they overlap)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    if not (low > 0 and high > low) or np.log10(high / low) >= 2.0:
        return
    decades = range(int(np.floor(np.log10(low))), int(np.ceil(np.log10(high))) + 1)
    ticks = [m * 10.0**k for k in decades for m in (1, 2, 3, 5) if low <= m * 10.0**k <= high]
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _points(ax: Axes, x: np.ndarray, y: np.ndarray, iteration: np.ndarray, failed: np.ndarray, fig: Figure) -> None:
    """Evaluated points coloured by iteration; failed ones as red crosses."""
    ok = ~failed
    if ok.any():
        sc = ax.scatter(x[ok], y[ok], c=iteration[ok], cmap="plasma", s=30, edgecolors="k", linewidths=0.6, zorder=4)
        fig.colorbar(sc, ax=ax, pad=0.01).set_label("iteration", fontsize=16)
    if failed.any():
        ax.scatter(x[failed], y[failed], marker="x", color=_FAIL_COLOR, s=60, zorder=5,
                   label=f"failed ({int(failed.sum())})")


def plot_surrogate_2d(path: str | Path, *, x: np.ndarray, y: np.ndarray, mean: np.ndarray, std: np.ndarray,
                      threshold: float, points: np.ndarray, iteration: np.ndarray, failed: np.ndarray,
                      truth: np.ndarray | None = None, xlabel: str, ylabel: str, log_x: bool = True,
                      log_y: bool = True, title: str = "") -> Path:
    """Two panels: the surrogate mean with its contour at ``threshold`` (solid), the truth's (dashed) and
    the chosen points; the surrogate σ.  ``mean``, ``std``, ``truth`` have shape (len(x), len(y))."""
    with _figure((20.0, 8.5)) as fig:
        fig.subplots_adjust(left=0.07, right=0.97, bottom=0.12, top=0.92, wspace=0.25)
        ax_mean, ax_std = fig.subplots(1, 2)
        for ax, values, label in ((ax_mean, mean, "surrogate mean"), (ax_std, std, "surrogate σ")):
            mesh = ax.pcolormesh(x, y, values.T, shading="auto", cmap="viridis")
            fig.colorbar(mesh, ax=ax, pad=0.01).set_label(label, fontsize=16)
            ax.contour(x, y, mean.T, levels=[threshold], colors="white", linewidths=2.5)
            if truth is not None:
                ax.contour(x, y, truth.T, levels=[threshold], colors="red", linestyles="--", linewidths=2)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(ylabel)
            ax.set_xscale("log" if log_x else "linear")
            ax.set_yscale("log" if log_y else "linear")
            if log_x:
                _short_log_axis(ax.xaxis, float(np.min(x)), float(np.max(x)))
            if log_y:
                _short_log_axis(ax.yaxis, float(np.min(y)), float(np.max(y)))
        _points(ax_mean, points[:, 0], points[:, 1], iteration, failed, fig)
        ax_std.scatter(points[~failed, 0], points[~failed, 1], s=8, color="white", zorder=4)
        note = "white: estimated contour" + (", red dashed: truth" if truth is not None else "")
        ax_mean.set_title(f"{title}  ({note})" if title else note, fontsize=15)
        ax_std.set_title(f"{len(points)} evaluations", fontsize=15)
        return save_figure(fig, path)


def plot_surrogate_1d(path: str | Path, *, x: np.ndarray, mean: np.ndarray, std: np.ndarray, points: np.ndarray,
                      values: np.ndarray, iteration: np.ndarray, truth: np.ndarray | None = None, xlabel: str,
                      ylabel: str, best: float | None = None, title: str = "") -> Path:
    """The surrogate mean ± 1σ, 2σ along one axis, the evaluated points by iteration, the truth if known."""
    with _figure((12.0, 8.0)) as fig:
        fig.subplots_adjust(left=0.12, right=0.95, bottom=0.12, top=0.92)
        ax = fig.subplots()
        ax.fill_between(x, mean - 2 * std, mean + 2 * std, color="#ffd800", label="±2σ")
        ax.fill_between(x, mean - std, mean + std, color="#00c000", label="±1σ")
        ax.plot(x, mean, color="k", lw=2, label="surrogate mean")
        if truth is not None:
            ax.plot(x, truth, color="red", ls="--", lw=1.5, label="full scan")
        failed = ~np.isfinite(values)
        _points(ax, points[:, 0], np.where(failed, np.nanmin(mean), values), iteration, failed, fig)
        if best is not None:
            ax.axvline(best, color="grey", ls=":", lw=2, label="best point")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=14, loc="upper right")
        if title:
            ax.set_title(title, fontsize=15)
        return save_figure(fig, path)


def plot_active_convergence(path: str | Path, *, n_evaluations: np.ndarray, estimated: np.ndarray,
                            truth: np.ndarray | None = None, target: float | None = None,
                            ylabel: str = "misclassified fraction") -> Path:
    """The surrogate's estimate (and the truth's value when known) against the number of evaluations."""
    with _figure((11.0, 8.0)) as fig:
        fig.subplots_adjust(left=0.14, right=0.96, bottom=0.12, top=0.95)
        ax = fig.subplots()
        ax.plot(n_evaluations, estimated, marker="o", label="surrogate estimate")
        if truth is not None:
            ax.plot(n_evaluations, truth, marker="s", ls="--", label="against the truth grid")
        if target is not None:
            ax.axhline(target, color="grey", ls=":", label="stopping target")
        ax.set_yscale("log")
        ax.set_xlabel("evaluations")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=14)
        return save_figure(fig, path)


def plot_snapshot(snap: dict, stem: str | Path) -> list[Path]:
    """The figures of one snapshot (``hps_bayes.active.runner.snapshot``): ``<stem>_surrogate.png``
    (1D or 2D) and, when a convergence table is present, ``<stem>_convergence.png``."""
    stem = Path(stem)
    written: list[Path] = []
    points, values = np.asarray(snap["points"]), np.asarray(snap["values"], dtype=float)
    failed = ~np.isfinite(values)
    labels = snap["labels"]
    if "mean" in snap and snap["dim"] == 2:
        x, y = snap["grid"]
        written.append(plot_surrogate_2d(
            stem.with_name(f"{stem.name}_surrogate.png"), x=x, y=y, mean=snap["mean"], std=snap["std"],
            threshold=snap["threshold"], points=points, iteration=snap["iteration"], failed=failed,
            truth=snap["truth"], xlabel=labels[0], ylabel=labels[1], log_x=snap["log_axes"][0],
            log_y=snap["log_axes"][1], title=snap["title"]))
    elif "mean" in snap and snap["dim"] == 1:
        written.append(plot_surrogate_1d(
            stem.with_name(f"{stem.name}_surrogate.png"), x=snap["grid"][0], mean=snap["mean"], std=snap["std"],
            points=points, values=values, iteration=snap["iteration"], truth=snap["truth"], xlabel=labels[0],
            ylabel=snap.get("value_label", "objective"), best=snap.get("best"), title=snap["title"]))
    conv = snap.get("convergence")
    if conv is not None and len(conv) and "estimated_misclassified" in conv:
        truth = conv["true_misclassified"].to_numpy() if "true_misclassified" in conv else None
        written.append(plot_active_convergence(
            stem.with_name(f"{stem.name}_convergence.png"), n_evaluations=conv["n_evaluations"].to_numpy(),
            estimated=conv["estimated_misclassified"].to_numpy(), truth=truth, target=snap.get("target")))
    return written
