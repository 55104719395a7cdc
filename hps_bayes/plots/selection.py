"""Figure of the background selection (``task=select``): σ_tot/σ_A⁰ per candidate and the choice per mass."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps

from hps_bayes.errors import InputError
from hps_bayes.plots.style import MASS_LABEL, _header, _mark_failures, hep_figure, save_figure


def plot_selection(cells: pd.DataFrame, content: Mapping[str, Any], path: str | Path, *,
                   dataset_label: str) -> Path:
    """Upper panel: σ_tot/σ_A⁰ = √(σ_stat² + S²)/σ_A⁰ of every candidate where it serves (dashed where it
    fails the adequacy criteria), the chosen model per mass as large markers; lower panel: Â/σ_tot of the
    chosen model on the data, with the ±1 and ±2 bands; masses no candidate serves are marked."""
    if cells.empty or not content.get("rows"):
        raise InputError(f"no selection cells to plot for {dataset_label}")
    rows = pd.DataFrame(content["rows"])
    with hep_figure((12.0, 10.0), {"left": 0.11, "right": 0.97, "bottom": 0.09, "top": 0.94}) as fig:
        top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1], "hspace": 0.05})
        palette = colormaps["tab20"].colors  # type: ignore[attr-defined]
        colors = {name: palette[i % len(palette)] for i, name in enumerate(sorted(cells.model.unique()))}
        grid = np.unique(cells.mass.to_numpy())
        for name, group in cells[cells.available.astype(bool)].groupby("model"):
            # on the whole grid, so that a line breaks where the candidate has no fit (a gap, the range ends)
            group = group.set_index("mass").reindex(grid)
            ok = group.passes.fillna(False).to_numpy(dtype=bool)
            top.plot(grid * 1e3, np.where(ok, group.ratio, np.nan), "-", lw=1.2, color=colors[name], label=name)
            top.plot(grid * 1e3, np.where(~ok, group.ratio, np.nan), ":", lw=1.0, color=colors[name])
        served = rows[rows.model != ""]
        for name, group in served.groupby("model"):
            top.plot(group.mass * 1e3, group.ratio, "o", ms=8, mfc="none", mew=2, color=colors[name])
            bottom.plot(group.mass * 1e3, group.z * group.sigma_stat / group.sigma_tot, "o", ms=6, color=colors[name])
        _mark_failures(bottom, rows[rows.model == ""].mass.to_numpy() * 1e3, label="no candidate")
        for level, shade in ((2, "#ffe680"), (1, "#9fdf9f")):
            bottom.axhspan(-level, level, color=shade, lw=0)
        top.set_yscale("log")
        top.set_ylim(1.0, max(10.0, float(np.nanmax(served.ratio)) * 1.5) if len(served) else 10.0)
        top.set_ylabel(r"$\sigma_{tot}/\sigma_A^0$, $\sigma_{tot}^2=\sigma_{stat}^2+S^2$")
        bottom.set_ylabel(r"$\hat{A}/\sigma_{tot}$ (chosen)")
        bottom.set_xlabel(MASS_LABEL)
        bottom.set_ylim(-4, 4)
        top.legend(fontsize=10, ncol=4, loc="upper right")
        _header(top, dataset_label, "background selection")
        return save_figure(fig, path)
