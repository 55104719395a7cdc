"""Figures of the spurious-signal study."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hps_bayes.errors import InputError
from hps_bayes.plots.style import MASS_LABEL, _header, hep_figure, save_figure


# --------------------------------------------------------------------------------------------
# spurious-signal study (task=spurious)
# --------------------------------------------------------------------------------------------
def plot_spurious(frame: pd.DataFrame, path: str | Path, *, dataset_label: str, band: float = 0.2) -> Path:
    """Mean Â/σ_A of background-only toys vs mass per truth shape, with the ±``band`` criterion.

    Upper panel: the toys' mean Â/σ_A with its error (width/√N) as points and the
    noise-free fit (expected counts) as a line, per shape; lower panel: the width of
    Â/σ_A with the 0.9–1.1 band.  Columns as written by ``hps_bayes.studies``.
    """
    ok = frame[frame.status == "ok"]
    if ok.empty:
        raise InputError(f"no successful cells to plot for {dataset_label}")
    with hep_figure((12.0, 10.0), {"left": 0.12, "right": 0.97, "bottom": 0.09, "top": 0.94}) as fig:
        top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1], "hspace": 0.05})
        for ax, lo, hi in ((top, -band, band), (bottom, 0.9, 1.1)):
            ax.axhspan(lo, hi, color="#d0d0d0", alpha=0.6, lw=0)
        for i, (shape, group) in enumerate(ok.groupby("shape")):
            color = f"C{i}"
            mass = group.mass.to_numpy() * 1e3
            err = group.width_z.to_numpy() / np.sqrt(group.n_toys.to_numpy())
            top.errorbar(mass, group.mean_z, yerr=err, fmt="o", ms=4, color=color, label=f"{shape}: toys")
            top.plot(mass, group.asimov_z, "-", color=color, lw=1.5, label=f"{shape}: noise-free")
            bottom.plot(mass, group.width_z, "o-", ms=3, lw=1, color=color)
        top.set_ylabel(r"$\hat{A}/\sigma_A$")
        bottom.set_ylabel(r"width of $\hat{A}/\sigma_A$")
        bottom.set_xlabel(MASS_LABEL)
        top.legend(fontsize=12, ncol=3, loc="upper left")
        lim = max(0.5, float(np.nanmax(np.abs(np.r_[ok.mean_z, ok.asimov_z]))) * 1.3)
        top.set_ylim(-lim, lim * 1.4)
        _header(top, dataset_label, "spurious signal")
        return save_figure(fig, path)


def plot_spurious_nuisance(frame: pd.DataFrame, path: str | Path, *, dataset_label: str,
                           band: float = 0.2) -> Path:
    """The spurious-signal nuisance used, S(m)/σ_A, beside the bias it has to cover, per truth shape.

    Upper panel: the toys' mean Â/σ_A (points, error width/√N) per shape with ±S/σ_A as a band
    around zero (S(m) in events, σ_A the toys' median, nuisance included; the largest over shapes);
    lower panel: S(m)/σ_A (line) and per shape the bias the nuisance leaves uncovered (points; covered
    cells left out), against the ``band`` criterion.  Columns as written by ``hps_bayes.studies``, with
    ``spurious_z`` and ``uncovered_z`` added by :func:`hps_bayes.studies.spurious.with_nuisance_columns`.
    """
    missing = sorted({"spurious_z", "uncovered_z"} - set(frame.columns))
    if missing:
        raise InputError(f"the spurious-signal cells lack the column(s) {missing}: pass "
                         "hps_bayes.studies.spurious.with_nuisance_columns(frame)")
    ok = frame[frame.status == "ok"]
    if ok.empty:
        raise InputError(f"no successful cells to plot for {dataset_label}")
    with hep_figure((12.0, 10.0), {"left": 0.12, "right": 0.97, "bottom": 0.09, "top": 0.94}) as fig:
        top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [1, 1], "hspace": 0.05})
        per_mass = ok.groupby("mass").spurious_z.max().sort_index()
        m_all = per_mass.index.to_numpy() * 1e3
        top.fill_between(m_all, -per_mass.to_numpy(), per_mass.to_numpy(), color="#d0d0d0", alpha=0.7, lw=0,
                         step="mid", label=r"$\pm S(m)/\sigma_A$ (largest over shapes)")
        for y in (-band, band):
            top.axhline(y, color="k", ls=":", lw=1)
        bottom.axhline(band, color="k", ls=":", lw=1, label=f"criterion {band:g}")
        bottom.plot(m_all, per_mass.to_numpy(), "-", color="k", lw=1.8, label=r"$S(m)/\sigma_A$")
        for i, (shape, group) in enumerate(ok.groupby("shape")):
            color = f"C{i}"
            mass = group.mass.to_numpy() * 1e3
            err = group.width_z.to_numpy() / np.sqrt(group.n_toys.to_numpy())
            top.errorbar(mass, group.mean_z, yerr=err, fmt="o", ms=3, color=color,
                         label=rf"{shape}: mean $\hat{{A}}/\sigma_A$")
            uncovered = group.uncovered_z.to_numpy()
            shown = uncovered > 0  # covered cells (0) are left out
            bottom.plot(mass[shown], uncovered[shown], "o", ms=4, color=color, mfc="none",
                        label=f"{shape}: uncovered bias")
        top.set_ylabel(r"$\hat{A}/\sigma_A$")
        bottom.set_ylabel(r"$S(m)/\sigma_A$, uncovered bias")
        bottom.set_xlabel(MASS_LABEL)
        top.legend(fontsize=11, ncol=2, loc="upper left")
        bottom.legend(fontsize=10, ncol=3, loc="upper left")
        lim = max(0.5, float(np.nanmax(np.abs(np.r_[ok.mean_z, per_mass.to_numpy()]))) * 1.3)
        top.set_ylim(-lim, lim * 1.5)
        high = float(np.nanmax(np.r_[ok.spurious_z.to_numpy(), band]))
        bottom.set_ylim(0.0, high * 1.6)
        _header(top, dataset_label, "spurious-signal nuisance")
        return save_figure(fig, path)
