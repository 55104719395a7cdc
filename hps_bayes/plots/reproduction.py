"""The reproduction figure: ε² limits of several settings over a published curve, with a ratio panel.

The ratios are computed upstream (:func:`hps_bayes.analysis.reproduce.ratio_to_published`);
this module only draws them.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from hps_bayes.errors import InputError
from hps_bayes.plots.style import MASS_LABEL, _header, _log_limits, _set_log_y, hep_figure, save_figure

__all__ = ["plot_reproduction"]

_COLORS = ("#e42536", "#5790fc", "#f89c20", "#964a8b", "#9c9ca1", "#7a21dd", "#2a9d8f")


def plot_reproduction(frames: Mapping[str, pd.DataFrame], ratios: Mapping[str, tuple[pd.DataFrame, pd.DataFrame]],
                      published: pd.DataFrame, path: str | Path, *, published_label: str,
                      band: float = 0.10, title: str = "") -> Path:
    """Observed (solid) and expected median (dashed) ε² limits over the published curve, ratios below.

    Parameters
    ----------
    frames : legend label → results frame (``mass``, ``status``, ``eps2_up``, ``eps2_up_expected_median``).
    ratios : the same labels → (observed ratio, expected ratio) frames with ``mass`` and ``ratio``.
    published : the published curve (``mass_GeV``, ``epsilon2``), drawn in black.
    path : where to write the figure (PNG or PDF from the suffix).
    published_label : its legend entry.
    band : half-width of the grey band around ratio 1 (0.10: ±10 %).
    title : right-hand header text.

    Returns
    -------
    Path
    """
    if not frames or set(frames) != set(ratios):
        raise InputError(f"plot_reproduction needs the same labels in frames {sorted(frames)} and "
                         f"ratios {sorted(ratios)}, at least one")
    with hep_figure((12.0, 11.0), {"left": 0.13, "right": 0.97, "bottom": 0.09, "top": 0.94}) as fig:
        top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2.2, 1.0], "hspace": 0.05})
        pub_mev = published.mass_GeV.to_numpy() * 1e3
        top.plot(pub_mev, published.epsilon2, color="black", lw=2.5, label=published_label)
        values = [published.epsilon2.to_numpy()]
        for color, (label, frame) in zip(_COLORS, frames.items(), strict=False):
            ok = frame[frame.status == "ok"]
            mev = ok.mass.to_numpy() * 1e3
            top.plot(mev, ok.eps2_up, color=color, lw=1.8, label=f"{label}: observed")
            top.plot(mev, ok.eps2_up_expected_median, color=color, lw=1.5, ls="--", label=f"{label}: expected")
            values += [ok.eps2_up.to_numpy(), ok.eps2_up_expected_median.to_numpy()]
            obs, exp = ratios[label]
            bottom.plot(obs.mass * 1e3, obs.ratio, color=color, lw=1.5)
            bottom.plot(exp.mass * 1e3, exp.ratio, color=color, lw=1.5, ls="--")
        _set_log_y(top, _log_limits(values, headroom=0.4, fallback=(1e-6, 1e-3)))
        top.set_ylabel(r"$\epsilon^{2}$ upper limit (95% CL)")
        top.legend(loc="upper left", fontsize=12, ncols=2)
        _header(top, title)
        bottom.axhspan(1 - band, 1 + band, color="0.85", lw=0)
        bottom.axhline(1.0, color="black", lw=1)
        ratio_values = np.concatenate([r.ratio.to_numpy() for pair in ratios.values() for r in pair] or [np.ones(1)])
        finite = ratio_values[np.isfinite(ratio_values) & (ratio_values > 0)]
        hi = float(np.clip(np.percentile(finite, 98) * 1.1, 1.3, 5.0)) if finite.size else 2.0
        bottom.set_ylim(0.0, hi)
        bottom.set_ylabel("ours / published")
        bottom.set_xlabel(MASS_LABEL)
        return save_figure(fig, path)
