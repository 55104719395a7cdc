"""HEP style (mplhep): figures, headers, axes helpers shared by every plot.

Opaque PNG figures are written by :func:`_png_rgb` rather than Pillow: Pillow filters every row of
an RGB image adaptively, which takes three quarters of its encoding time (≈ 20 of 27 ms for a window
figure at zlib level 1) and, on these flat-coloured figures, gives larger files than no filter
(114 against 103 kB); the container is four chunks and zlib does the compression.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Literal

import matplotlib.style
import mplhep
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatterSciNotation

from hps_bayes.plots.label import current_label

DPI = 110
MASS_LABEL = r"$m(e^{+}e^{-})$ [MeV]"
PUBLISHED_2015_LABEL = "HPS 2015 published (arXiv:1807.11530)"
_FAIL_COLOR = "#d00000"
_SIGNAL_COLOR = "#f89c20"
_LIMIT_FIGSIZE = (12.0, 9.0)
_LIMIT_MARGINS = {"left": 0.13, "right": 0.97, "bottom": 0.12, "top": 0.93}
_WINDOW_MARGINS = {"left": 0.16, "right": 0.96, "bottom": 0.11, "top": 0.94}


# --------------------------------------------------------------------------------------------
# figure plumbing
# --------------------------------------------------------------------------------------------
@contextmanager
def hep_figure(figsize: tuple[float, float], margins: dict[str, float] | None = None, *,
               dpi: int = DPI, layout: Literal["constrained", "compressed", "tight"] | None = None
               ) -> Iterator[Figure]:
    """A pyplot-free ``Figure`` drawn inside mplhep's ROOT style (rcParams restored on exit)."""
    with hep_style():
        fig = Figure(figsize=figsize, dpi=dpi, layout=layout)
        if margins:
            fig.subplots_adjust(**margins)
        yield fig


def hep_style() -> AbstractContextManager[None]:
    """mplhep's ROOT style as a context: artists are made and figures are saved inside it."""
    return matplotlib.style.context(mplhep.style.ROOT)


def save_figure(fig: Figure, path: str | Path, *, clear: bool = True, png_compress_level: int | None = None
                ) -> Path:
    """Save ``fig`` at its dpi (inside the style context); ``clear``: then clear it so its artists are freed.

    ``png_compress_level``: the zlib level (0-9) of a PNG file; None keeps matplotlib's (6).  With a
    level, an opaque figure is written as RGB (:func:`_save_png_rgb`): the same pixels, a third
    less to encode.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    level = png_compress_level if path.suffix.lower() == ".png" else None
    try:
        if not (level is not None and _save_png_rgb(fig, path, level)):
            extra: dict[str, Any] = {} if level is None else {"pil_kwargs": {"compress_level": level}}
            fig.savefig(path, dpi=fig.dpi, **extra)
    finally:
        if clear:
            fig.clear()
    return path


def _save_png_rgb(fig: Figure, path: Path, compress_level: int) -> bool:
    """Draw ``fig`` with its Agg canvas and write it as an RGB PNG (:func:`_png_rgb`) with the pixels,
    dpi and metadata of ``savefig``'s RGBA one; False, writing nothing, where a pixel is not opaque or
    the canvas is not Agg's."""
    from matplotlib import __version__ as mpl_version
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    if not isinstance(fig.canvas, FigureCanvasAgg) or fig.canvas.get_default_filetype() != "png":
        return False
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    if not (rgba[..., 3] == 255).all():
        return False
    software = f"Matplotlib version{mpl_version}, https://matplotlib.org/"
    path.write_bytes(_png_rgb(rgba[..., :3], fig.dpi, {"Software": software}, compress_level))
    return True


def _png_rgb(rgb: np.ndarray, dpi: float, text: dict[str, str], compress_level: int) -> bytes:
    """The PNG file of an 8-bit RGB image ``rgb`` (h × w × 3): rows unfiltered (filter type 0), deflated
    by zlib at ``compress_level``, the dpi as pHYs (as Pillow writes it), ``text`` as tEXt chunks."""
    h, w, _ = rgb.shape
    rows = np.zeros((h, 3 * w + 1), dtype=np.uint8)  # each row: its filter type (0), then its pixels
    np.reshape(rows[:, 1:], (h, w, 3), copy=False)[...] = rgb  # a view of the rows (copy=False raises otherwise)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    per_metre = int(dpi / 0.0254 + 0.5)
    return b"".join([b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)),
                     chunk(b"pHYs", struct.pack(">IIB", per_metre, per_metre, 1)),
                     *(chunk(b"tEXt", f"{k}\0{v}".encode("latin-1")) for k, v in text.items()),
                     chunk(b"IDAT", zlib.compress(rows.tobytes(), compress_level)), chunk(b"IEND", b"")])


def _header(ax: Axes, right: str, left: str = "", *, fontsize: float = 22) -> None:
    """Experiment label above the axes: on the left the experiment (bold), the kind of spectrum and the
    status of the run's :func:`~hps_bayes.plots.label.current_label` (``plots.status``), then ``left``
    (what the figure shows); ``right`` on the right."""
    exp, after = current_label().text()
    llabel = " · ".join(t for t in (after, left) if t)
    mplhep.label.exp_label(exp=exp, llabel=llabel, rlabel=right, ax=ax, fontsize=fontsize)


def _mark_failures(ax: Axes, mass_mev: np.ndarray, *, label: str) -> None:
    """Red ticks along the bottom of ``ax`` at the masses of points left out of the curves."""
    if mass_mev.size == 0:
        return
    ax.plot(mass_mev, np.full(mass_mev.size, 0.035), ls="none", marker="|", ms=22, mew=2.5,
            color=_FAIL_COLOR, transform=ax.get_xaxis_transform(), label=f"{label} ({mass_mev.size})",
            zorder=5)


def _log_limits(values: list[np.ndarray], *, headroom: float, fallback: tuple[float, float]
                ) -> tuple[float, float]:
    """Log-axis limits around the positive finite ``values``, with a fraction ``headroom`` kept free on top."""
    flat = np.concatenate([np.ravel(v) for v in values]) if values else np.array([])
    flat = flat[np.isfinite(flat) & (flat > 0)]
    if flat.size == 0:
        return fallback
    lo, hi = float(flat.min()), float(flat.max())
    decades = max(math.log10(hi / lo), 0.5)
    bottom = lo / 10 ** (0.12 * decades)
    log_top = math.log10(hi) + decades * headroom / (1 - headroom) + 0.05
    if abs(log_top - round(log_top)) < 0.06:  # keep a decade label off the top edge (next to the header)
        log_top = round(log_top) - 0.06
    return bottom, 10**log_top


def _set_log_y(ax: Axes, limits: tuple[float, float]) -> None:
    """Log y with ``limits``; intermediate (2, 5 × 10^k) labels too when the range spans ≲ 2 decades."""
    ax.set_yscale("log")
    ax.set_ylim(*limits)
    ax.yaxis.set_minor_formatter(LogFormatterSciNotation(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def _set_linear_y(ax: Axes, arrays: list[np.ndarray], *, headroom: float) -> None:
    """Linear y from just below the lowest value, the top ``headroom`` kept free; ×10^k offset for big counts."""
    flat = np.concatenate([a[np.isfinite(a)] for a in arrays])
    lo, hi = float(flat.min()), float(flat.max())
    pad = 0.05 * max(hi - lo, abs(hi) * 1e-3, 1.0)
    bottom = max(0.0, lo - pad) if lo >= 0 else lo - pad
    ax.set_ylim(bottom, bottom + (hi + pad - bottom) / (1 - headroom))
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4), useMathText=True)
