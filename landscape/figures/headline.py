"""The report's headline figure: what changes with batch size, in two columns side by side.

Left, one panel per metric stacked on a shared batch-size axis (log2) with its own y range (so a
drop of 0.04 in test SRCC is not flattened by the gap's scale): test SRCC and the SRCC gap
(train - test), seed mean ± seed std (sample std, ddof = 1; no bar for one seed), every seed as a
small dot. Right: each sharpness
measure's seed-averaged value divided by its value at the smallest batch size (so every curve
starts at 1; a horizontal line marks 1), the y axis logarithmic (ticks at 1, 2, 5 per decade) when
the positive ratios span more than a factor 4; there a ratio <= 0 (e.g. a negative Hessian trace) is
left out of its curve and named in its legend entry. The right panel's legend sits to its right, off the data.
Draws only: the caller computes the numbers (:func:`landscape.report.answer.headline_data`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator

from landscape.errors import LandscapeError
from landscape.figures import style as figstyle
from landscape.uncertainty import finite_values, mean_std


def _batch_axis(ax, sizes: Sequence[float]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(sizes))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel("batch size B")


def headline(metrics: Mapping[str, Mapping[int, Sequence[float]]], normalised: Mapping[str, Mapping[int, float]],
             out_stem: str | Path) -> list[Path]:
    """``metrics``: label -> {batch size: per-seed values} (one left panel each, the label its y axis); ``normalised``: measure label ->
    {batch size: mean / mean at the smallest batch} (right panel; may be empty). Returns the written paths."""
    if not metrics or not any(metrics.values()):
        raise LandscapeError("headline: no test SRCC or gap values to plot")
    colors = [figstyle.OKABE_ITO[k] for k in ("blue", "vermillion", "bluish_green", "orange")]
    ncols = 2 if normalised else 1
    with figstyle.paper_style():
        fig = Figure(figsize=figstyle.figsize(ncols, 0.42 if ncols == 2 else 0.8))
        grid = fig.add_gridspec(nrows=len(metrics), ncols=ncols, width_ratios=[1.0, 1.15][:ncols], hspace=0.12)
        sizes: set[float] = {float(b) for by_b in list(metrics.values()) + list(normalised.values()) for b in by_b}
        first = None
        for i, (name, by_b) in enumerate(metrics.items()):
            ax = fig.add_subplot(grid[i, 0], sharex=first)
            first = first or ax
            bs = sorted(by_b)
            stats = [mean_std(by_b[b]) for b in bs]
            color = colors[i % len(colors)]
            for b in bs:
                vals = finite_values(by_b[b])
                ax.plot(np.full(vals.size, float(b)), vals, linestyle="none", marker=".", markersize=3,
                        color=color, alpha=0.45)
            ax.errorbar(bs, [s[0] for s in stats], yerr=[s[1] if np.isfinite(s[1]) else 0.0 for s in stats],
                        color=color, marker="os^D"[i % 4], markersize=3.5, capsize=2)
            lo, hi = ax.get_ylim()
            if lo < 0.0 < hi:
                ax.axhline(0.0, color="0.6", linewidth=0.5, zorder=0)
            ax.set_ylabel(name)
            _batch_axis(ax, sizes)
            if i < len(metrics) - 1:
                ax.set_xlabel("")
                ax.tick_params(labelbottom=False)
        first.set_title("mean ± std over seeds, seeds as dots", loc="left", fontsize="small")
        if normalised:
            ax = fig.add_subplot(grid[:, 1])
            positive = [y for by_b in normalised.values() for y in by_b.values() if np.isfinite(y) and y > 0]
            log = bool(positive) and max(positive) / min(positive) > 4
            for i, (name, by_b) in enumerate(normalised.items()):
                bs = sorted(by_b)
                ys = np.array([by_b[b] for b in bs], dtype=float)
                label = name
                if log and (ys <= 0).any():   # a ratio <= 0 (e.g. a negative trace) has no place on a log axis
                    label += f" (≤ 0 at B = {', '.join(f'{b:g}' for b, y in zip(bs, ys) if y <= 0)}: not drawn)"
                    ys = np.where(ys > 0, ys, np.nan)
                ax.plot(bs, ys, color=figstyle.PALETTE[i % len(figstyle.PALETTE)],
                        marker=figstyle.MARKERS[i % len(figstyle.MARKERS)], markersize=3.5, label=label,
                        linestyle="-" if i < len(figstyle.PALETTE) else "--")
            ax.axhline(1.0, color="0.6", linewidth=0.6, linestyle=":", zorder=0)
            if log:
                ax.set_yscale("log")
                ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
                ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.yaxis.set_minor_formatter(NullFormatter())
            ax.set_ylabel("measure / its value at the smallest B")
            ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
            _batch_axis(ax, sizes)
        return figstyle.save_figure(fig, out_stem)
