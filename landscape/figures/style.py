"""One paper style for every report figure.

- Widths: ``ONE_COLUMN`` = 3.35 in, ``TWO_COLUMN`` = 7.0 in (two-column journal and
  conference templates); ``figsize(columns, aspect)`` gives ``(width, width * aspect)``.
- Fonts: 8 pt labels and titles, 7 pt ticks and legends, DejaVu Sans (ships with
  matplotlib); PDF/PS fonts embedded as TrueType (type 42) so text stays editable.
- Colours: the Okabe-Ito palette (Okabe & Ito 2008), safe for the common colour-vision
  deficiencies; batch sizes get colours in ascending order and a marker each, so
  figures also read in greyscale.
- Figures are built with :class:`matplotlib.figure.Figure` (no pyplot, no GUI, any
  backend); :func:`save_figure`, the only figure saver of the package, writes PDF
  (vector), PNG (300 dpi) and SVG atomically, with the creation date stripped so
  identical data give identical PDF/SVG files.
"""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import matplotlib
from cycler import cycler
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, NullLocator

from landscape.errors import LandscapeError, check_choice, check_choices
from landscape.store import atomic_path

ONE_COLUMN = 3.35  # inches
TWO_COLUMN = 7.0  # inches
FONT_SIZE = 8.0
SMALL_FONT_SIZE = 7.0
PNG_DPI = 300
FORMATS = ("pdf", "png", "svg")

#: Okabe-Ito colours by name.
OKABE_ITO = {
    "black": "#000000",
    "orange": "#E69F00",
    "sky_blue": "#56B4E9",
    "bluish_green": "#009E73",
    "yellow": "#F0E442",
    "blue": "#0072B2",
    "vermillion": "#D55E00",
    "reddish_purple": "#CC79A7",
}
#: Order used for categorical series (yellow last: low contrast on white).
PALETTE = tuple(OKABE_ITO[k] for k in ("blue", "orange", "bluish_green", "vermillion",
                                         "reddish_purple", "sky_blue", "black", "yellow"))
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<")   # 10: with 8 colours no pair repeats for 40 series
#: Colour-blind-safe sequential colormap for surfaces and densities.
SEQUENTIAL_CMAP = "viridis"

PAPER_RC: dict[str, object] = {
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans"],
    "font.size": FONT_SIZE,
    "axes.titlesize": FONT_SIZE,
    "axes.labelsize": FONT_SIZE,
    "xtick.labelsize": SMALL_FONT_SIZE,
    "ytick.labelsize": SMALL_FONT_SIZE,
    "legend.fontsize": SMALL_FONT_SIZE,
    "legend.title_fontsize": SMALL_FONT_SIZE,
    "legend.frameon": False,
    "legend.handlelength": 1.5,
    "axes.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.prop_cycle": cycler(color=list(PALETTE)),
    "lines.linewidth": 1.2,
    "lines.markersize": 4.0,
    "errorbar.capsize": 1.5,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "xtick.major.size": 3.0,
    "ytick.major.size": 3.0,
    "grid.linewidth": 0.4,
    "grid.alpha": 0.4,
    "image.cmap": SEQUENTIAL_CMAP,
    "figure.dpi": 100,
    "figure.constrained_layout.use": True,
    "savefig.dpi": PNG_DPI,
    "savefig.bbox": "tight",
    "savefig.pad_inches": 0.02,
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "svg.fonttype": "path",
    "svg.hashsalt": "landscape",
}


@contextlib.contextmanager
def paper_style() -> Iterator[None]:
    """Apply :data:`PAPER_RC` inside the block (restored after; safe to nest)."""
    with matplotlib.rc_context(PAPER_RC):
        yield


def figsize(columns: int = 1, aspect: float = 0.75) -> tuple[float, float]:
    """``(width, width * aspect)`` in inches for a 1- or 2-column figure."""
    check_choice("columns", columns, (1, 2))
    if not aspect > 0:
        raise LandscapeError(f"aspect={aspect}: must be > 0")
    width = ONE_COLUMN if columns == 1 else TWO_COLUMN
    return (width, width * aspect)


def new_figure(columns: int = 1, aspect: float = 0.75, **subplots_kw) -> tuple[Figure, object]:
    """A pyplot-free :class:`Figure` with ``fig.subplots(**subplots_kw)``; call inside
    :func:`paper_style` so the style applies."""
    fig = Figure(figsize=figsize(columns, aspect))
    axes = fig.subplots(**subplots_kw)
    return fig, axes


def _sorted_unique(sizes: Iterable[float]) -> list:
    try:
        return sorted(set(sizes))
    except TypeError:
        raise LandscapeError(f"batch sizes {list(sizes)}: not comparable numbers") from None


def batch_size_colors(sizes: Iterable[int]) -> dict[int, str]:
    """Colour per distinct batch size, ascending sizes taking :data:`PALETTE` in order;
    beyond 8 sizes, evenly spaced colours of the (colour-blind-safe) viridis map."""
    uniq = _sorted_unique(sizes)
    if len(uniq) <= len(PALETTE):
        return {s: PALETTE[i] for i, s in enumerate(uniq)}
    cmap = matplotlib.colormaps[SEQUENTIAL_CMAP]
    return {s: matplotlib.colors.to_hex(cmap(i / (len(uniq) - 1))) for i, s in enumerate(uniq)}


def batch_size_markers(sizes: Iterable[int]) -> dict[int, str]:
    """Marker per distinct batch size (ascending; cycles after 10)."""
    return {s: MARKERS[i % len(MARKERS)] for i, s in enumerate(_sorted_unique(sizes))}


def log2_batch_axis(ax, sizes: Iterable[float], label: str = "batch size B") -> None:
    """Log2 x axis with a tick at each batch size, labelled as plain integers."""
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted({float(s) for s in sizes if s == s and 0 < s < float("inf")}))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel(label)


def legend_below(ax, handles, ncol: int = 2) -> None:
    """Legend under the axes and their x label (for twin-axis figures, where no corner is free): a figure
    legend placed by the constrained layout below everything, so it never overlaps a label."""
    ax.figure.legend(handles=handles, loc="outside lower center", ncol=ncol, columnspacing=1.0,
                     handletextpad=0.4)


def save_figure(fig: Figure, path_stem: str | Path, formats: Sequence[str] = FORMATS,
                dpi: int = PNG_DPI) -> list[Path]:
    """The one figure saver: ``<stem>.<fmt>`` for each of ``formats`` (default pdf, png at
    ``dpi``, svg), each written to a temp file in the same folder and renamed over the
    target (:func:`landscape.store.atomic_path`), so a reader never sees half a figure.

    Formats are checked before anything is written. The stem's own dots are kept
    (``"phi_eps1e-3"`` -> ``"phi_eps1e-3.pdf"``). The format is passed explicitly because
    the temp file ends in ``.tmp``. Returns the written paths in ``formats`` order.
    """
    stem = Path(path_stem)
    formats = check_choices("format", formats, FORMATS)
    out: list[Path] = []
    for fmt in formats:
        path = stem.with_name(f"{stem.name}.{fmt}")
        metadata = {"pdf": {"CreationDate": None, "Creator": "landscape"},
                    "svg": {"Date": None, "Creator": "landscape"},
                    "png": {"Software": "landscape"}}[fmt]
        with paper_style(), atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi, metadata=metadata)
        out.append(path)
    return out


def shade_interval(axes: Iterable, lo: float, hi: float, lo_x: float, hi_x: float) -> str:
    """Shade ``[lo, hi]`` (grey, behind the data) on each of ``axes``, whose x axis spans
    ``[lo_x, hi_x]``, clipped to that span; returns the legend note that says how it was drawn:
    " (shaded)", " (shaded, clipped at the axis)" when it reaches past an end, or
    " (outside the axis, not shaded)" when no part of it lies on the axis."""
    if hi <= lo_x or lo >= hi_x:
        return " (outside the axis, not shaded)"
    for ax in axes:
        ax.axvspan(max(lo, lo_x), min(hi, hi_x), color="0.88", zorder=0, linewidth=0)
    return " (shaded, clipped at the axis)" if lo < lo_x or hi > hi_x else " (shaded)"
