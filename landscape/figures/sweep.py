"""Report figures from plain data (numbers, lists, arrays, dicts), never from files.

Every function draws one figure in the paper style of :mod:`landscape.figures.style`,
writes ``<out_stem>.pdf``, ``.png`` (300 dpi) and ``.svg`` atomically, and returns the
written paths. Batch sizes are coloured with :func:`figstyle.batch_size_colors` and
batch-size axes are log2. Standard deviations are over seeds (ddof=1); a NaN std
(one seed) draws no error bar. Bad input raises :class:`LandscapeError`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from landscape.errors import LandscapeError
from landscape.figures import style as figstyle
from landscape.figures.training import throughput_memory, training_curves
from landscape.uncertainty import as_vector, finite_values, mean_std

GAP_LABEL = "SRCC gap (train − test)"
__all__ = ["GAP_LABEL", "contours_side_by_side", "interpolation_1d", "measure_vs_gap", "metric_vs_batch_size",
           "spectral_densities", "throughput_memory", "training_curves"]


def _opt_vec(values: Any, name: str, n: int) -> np.ndarray | None:
    return None if values is None else as_vector(values, name, n)


def _nonempty(values: Sequence | Mapping, name: str) -> None:
    if len(values) == 0:
        raise LandscapeError(f"{name}: nothing to plot")


def _plain_log_axis(axis) -> None:
    """Label a log axis with plain numbers (``0.5``, ``2``, ``300``), minor ticks labelled
    only when the axis spans less than a decade."""
    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    axis.set_major_formatter(fmt)
    lo, hi = axis.get_view_interval()
    if lo > 0 and hi / lo < 10:
        axis.set_minor_formatter(fmt)
    else:
        axis.set_minor_formatter(NullFormatter())


def _mean_std(values: Sequence[float]) -> tuple[float, float, np.ndarray]:
    """Seed mean, seed std (:func:`landscape.uncertainty.mean_std`, ddof = 1) and the finite values."""
    arr = finite_values(values)
    return (*mean_std(arr), arr)


def _show_right_spine(ax) -> None:
    ax.spines["right"].set_visible(True)


# ---------------------------------------------------------------------------- figures


def measure_vs_gap(batch_sizes: Sequence[int], measure: Sequence[float], gap: Sequence[float],
                   out_stem: str | Path, *, measure_std: Sequence[float] | None = None,
                   gap_std: Sequence[float] | None = None, measure_label: str = "sharpness",
                   gap_label: str = GAP_LABEL, correlation: Any = None,
                   groups: Sequence[str] | None = None, log_measure: bool = False) -> list[Path]:
    """Measure (x) against the gap (y), one point per configuration.

    Points are coloured by batch size, with seed-std error bars on both axes; an
    optional ``groups`` label per point (e.g. the LR rule) picks the marker. The legend sits
    outside the axes, to the right; Kendall tau-b with its bootstrap CI is the title above the
    axes when ``correlation`` is given (a :class:`landscape.report.stats.CorrelationResult`
    computed by the caller; only its ``tau_text()`` is read), and absent when it is None. ``log_measure``: log x axis, used
    only when the plotted x range spans at least a decade (else too few ticks are labelled).
    """
    bs = as_vector(batch_sizes, "batch_sizes")
    n = bs.size
    _nonempty(bs, "batch_sizes")
    m, g = as_vector(measure, "measure", n), as_vector(gap, "gap", n)
    ms, gs = _opt_vec(measure_std, "measure_std", n), _opt_vec(gap_std, "gap_std", n)
    if groups is not None and len(groups) != n:
        raise LandscapeError(f"groups: has {len(groups)} labels, expected {n}")
    colors = figstyle.batch_size_colors(bs.tolist())
    if groups is not None:
        uniq = list(dict.fromkeys(groups))
        gmark = {k: figstyle.MARKERS[i % len(figstyle.MARKERS)] for i, k in enumerate(uniq)}
        markers = [gmark[k] for k in groups]
    else:
        bmark = figstyle.batch_size_markers(bs.tolist())
        markers = [bmark[b] for b in bs.tolist()]
    with figstyle.paper_style():
        fig, ax = figstyle.new_figure(1, 0.8)
        for i in range(n):
            ax.errorbar(m[i], g[i], xerr=None if ms is None else ms[i],
                        yerr=None if gs is None else gs[i], fmt=markers[i],
                        color=colors[bs[i]], ecolor=colors[bs[i]], elinewidth=0.7,
                        markeredgecolor="white", markeredgewidth=0.4, markersize=5)
        handles = [Line2D([], [], linestyle="none", marker=(bmark[b] if groups is None else "o"),
                          color=c, label=f"B = {b:g}") for b, c in colors.items()]
        if groups is not None:
            handles += [Line2D([], [], linestyle="none", marker=mk, color="0.4", label=str(k))
                        for k, mk in gmark.items()]
        if correlation is not None:    # above the axes: never on the points or their error bars
            ax.set_title("Kendall " + correlation.tau_text().replace("τ_b", r"$\tau_b$"), loc="left")
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0,
                  handletextpad=0.3)
        pos = m[np.isfinite(m) & (m > 0)]     # decided on the points, not their error bars
        if log_measure and pos.size and pos.max() >= 10 * pos.min():    # within a decade: too few log ticks
            ax.set_xscale("log")
            ax.set_xlim(pos.min() / 1.5, pos.max() * 1.5)     # the axis starts at the data
            _plain_log_axis(ax.xaxis)
        ax.set_xlabel(measure_label)
        ax.set_ylabel(gap_label)
        return figstyle.save_figure(fig, out_stem)


def metric_vs_batch_size(panels: Mapping[str, Mapping], out_stem: str | Path) -> list[Path]:
    """One panel per metric against batch size: mean +- std over seeds, seeds as dots.

    ``panels``: y label -> {batch size: per-seed values}, or y label -> {series label ->
    {batch size: per-seed values}} for several series (e.g. LR rules) in one panel.
    """
    _nonempty(panels, "panels")
    k = len(panels)
    with figstyle.paper_style():
        fig, axes = figstyle.new_figure(1 if k == 1 else 2, 0.75 if k == 1 else 0.9 / k,
                                        nrows=1, ncols=k, squeeze=False)
        all_sizes: set[float] = set()
        for ax, (ylabel, data) in zip(axes[0], panels.items()):
            _nonempty(data, f"panel {ylabel!r}")
            first = next(iter(data.values()))
            series = data if isinstance(first, Mapping) else {None: data}
            for si, (label, by_bs) in enumerate(series.items()):
                color = figstyle.PALETTE[si % len(figstyle.PALETTE)]
                sizes = sorted(by_bs)
                stats = [_mean_std(by_bs[b]) for b in sizes]
                mean = np.array([s[0] for s in stats])
                std = np.array([s[1] for s in stats])
                for b, (_, _, vals) in zip(sizes, stats):
                    ax.plot(np.full(vals.size, b, dtype=float), vals, linestyle="none",
                            marker=".", markersize=3, color=color, alpha=0.45)
                ax.errorbar(sizes, mean, yerr=std, color=color, marker="o", markersize=3.5,
                            label=label)
                all_sizes.update(float(b) for b in sizes)
            ax.set_ylabel(ylabel)
            if len(series) > 1:
                ax.legend(loc="best")
        for ax in axes[0]:
            figstyle.log2_batch_axis(ax, sorted(all_sizes))
        return figstyle.save_figure(fig, out_stem)


def spectral_densities(curves: Mapping[int, tuple[Sequence[float], Sequence[float]]],
                       out_stem: str | Path, *, xlabel: str = "Hessian eigenvalue λ",
                       ylabel: str = "spectral density", logy: bool = True,
                       floor_ratio: float = 1e-12) -> list[Path]:
    """One density curve per batch size from ``{batch size: (grid, density)}``.

    With ``logy`` the non-positive density values are left out (log scale) and the
    y axis stops ``floor_ratio`` times below the highest density and 5% of that range (in
    decades) above it.
    """
    _nonempty(curves, "curves")
    colors = figstyle.batch_size_colors(curves)
    with figstyle.paper_style():
        fig, ax = figstyle.new_figure(1, 0.75)
        peak = 0.0
        for b in sorted(curves):
            try:
                grid, dens = curves[b]
            except (TypeError, ValueError):
                raise LandscapeError(f"curves[{b}]: expected a (grid, density) pair") from None
            x = as_vector(grid, f"grid for batch size {b}")
            y = as_vector(dens, f"density for batch size {b}", x.size)
            if logy:
                y = np.where(y > 0, y, np.nan)
            ax.plot(x, y, color=colors[b], label=f"B = {b:g}", linewidth=1.0)
            peak = max(peak, float(np.nanmax(y)) if np.isfinite(y).any() else 0.0)
        if logy:
            ax.set_yscale("log")
            if peak > 0:  # keep at most floor_ratio decades below the highest peak
                bottom = max(ax.get_ylim()[0], peak * floor_ratio)
                # top from the kept range, not the autoscale: its 5% log margin over values down to
                # 1e-300 would put the top 15 decades above the peak
                ax.set_ylim(bottom, peak * (peak / bottom) ** 0.05)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.legend(loc="best")
        return figstyle.save_figure(fig, out_stem)


def interpolation_1d(alpha: Sequence[float], out_stem: str | Path, *,
                     train_loss: Sequence[float], test_loss: Sequence[float] | None = None,
                     train_srcc: Sequence[float] | None = None,
                     test_srcc: Sequence[float] | None = None,
                     endpoint_labels: tuple[str, str] = ("start", "end"),
                     loss_label: str = "loss") -> list[Path]:
    """Loss (left axis, solid) and SRCC (right axis, dashed) along
    ``w(alpha) = (1 - alpha) w_start + alpha w_end``, train and test; dotted lines mark
    alpha = 0 and 1, tagged A and B, and the axis label names them with ``endpoint_labels`` (long
    run names never overprint each other)."""
    a = as_vector(alpha, "alpha")
    _nonempty(a, "alpha")
    curves = {"train_loss": as_vector(train_loss, "train_loss", a.size),
              "test_loss": _opt_vec(test_loss, "test_loss", a.size),
              "train_srcc": _opt_vec(train_srcc, "train_srcc", a.size),
              "test_srcc": _opt_vec(test_srcc, "test_srcc", a.size)}
    c_train, c_test = figstyle.OKABE_ITO["blue"], figstyle.OKABE_ITO["vermillion"]
    with figstyle.paper_style():
        fig, ax = figstyle.new_figure(1, 0.75)
        lines = [ax.plot(a, curves["train_loss"], color=c_train, label=f"train {loss_label}")[0]]
        if curves["test_loss"] is not None:
            lines += ax.plot(a, curves["test_loss"], color=c_test, label=f"test {loss_label}")
        ax.set_ylabel(loss_label)
        if curves["train_srcc"] is not None or curves["test_srcc"] is not None:
            ax2 = ax.twinx()
            _show_right_spine(ax2)
            if curves["train_srcc"] is not None:
                lines += ax2.plot(a, curves["train_srcc"], color=c_train, linestyle="--",
                                  label="train SRCC")
            if curves["test_srcc"] is not None:
                lines += ax2.plot(a, curves["test_srcc"], color=c_test, linestyle="--",
                                  label="test SRCC")
            ax2.set_ylabel("SRCC")
        for pos, tag in zip((0.0, 1.0), "AB"):     # short tags on the plot, the names on the axis label
            if a.min() <= pos <= a.max():
                ax.axvline(pos, color="0.5", linestyle=":", linewidth=0.7)
                ax.annotate(tag, (pos, 1.0), xycoords=("data", "axes fraction"),
                            xytext=(0, 2), textcoords="offset points", ha="center",
                            va="bottom", fontsize=figstyle.SMALL_FONT_SIZE)
        ax.set_xlabel(f"α   (A: α = 0, {endpoint_labels[0]};\nB: α = 1, {endpoint_labels[1]})")
        figstyle.legend_below(ax, lines)
        return figstyle.save_figure(fig, out_stem)


def contours_side_by_side(surfaces: Mapping[str, Any], out_stem: str | Path, *,
                          x: Sequence[float] | None = None, y: Sequence[float] | None = None,
                          levels: int = 15, log_scale: bool = False, cbar_label: str = "loss",
                          xlabel: str = "δ", ylabel: str = "η",
                          mark_center: bool = True) -> list[Path]:
    """Filled contours of several 2-D arrays (rows = y, columns = x) on one shared colour
    scale (``levels`` levels between the global finite min and max, geometric when
    ``log_scale``) with a single colour bar; NaN cells are left blank."""
    _nonempty(surfaces, "surfaces")
    arrays = {}
    for title, z in surfaces.items():
        arr = np.asarray(z, dtype=np.float64)
        if arr.ndim != 2 or min(arr.shape) < 2:
            raise LandscapeError(f"surface {title!r}: expected a 2-D array of at least 2x2, "
                                 f"got shape {arr.shape}")
        arrays[title] = arr
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) > 1:
        raise LandscapeError(f"surfaces differ in shape: {sorted(shapes)}")
    ny, nx = shapes.pop()
    xs = np.arange(nx, dtype=float) if x is None else as_vector(x, "x", nx)
    ys = np.arange(ny, dtype=float) if y is None else as_vector(y, "y", ny)
    finite = np.concatenate([a[np.isfinite(a)] for a in arrays.values()])
    if log_scale:
        finite = finite[finite > 0]
    if finite.size == 0:
        raise LandscapeError("surfaces: no finite" + (" positive" if log_scale else "") + " values")
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        hi = lo + (abs(lo) * 1e-6 or 1e-6)
    if log_scale:
        lv = np.geomspace(lo, hi, levels)
        norm = LogNorm(lo, hi)
    else:
        lv = np.linspace(lo, hi, levels)
        norm = None
    k = len(arrays)
    with figstyle.paper_style():
        aspect = 0.8 if k == 1 else min(0.85 / k, 3.0 / figstyle.TWO_COLUMN)
        fig, axes = figstyle.new_figure(1 if k == 1 else 2, aspect,
                                        nrows=1, ncols=k, squeeze=False, sharex=True, sharey=True)
        cs = None
        for ax, (title, arr) in zip(axes[0], arrays.items()):
            z = np.ma.masked_invalid(arr)
            if log_scale:
                z = np.ma.masked_less_equal(z, 0)
            cs = ax.contourf(xs, ys, np.clip(z, lo, hi), levels=lv, norm=norm,
                             cmap=figstyle.SEQUENTIAL_CMAP)
            ax.contour(xs, ys, np.clip(z, lo, hi), levels=lv, norm=norm, colors="white",
                       linewidths=0.25, alpha=0.6)
            if mark_center and xs.min() <= 0 <= xs.max() and ys.min() <= 0 <= ys.max():
                ax.plot([0], [0], marker="+", color="white", markersize=5, markeredgewidth=0.8)
            ax.set_title(str(title))
            ax.set_xlabel(xlabel)
        axes[0][0].set_ylabel(ylabel)
        ticks = LogLocator() if log_scale else MaxNLocator(nbins=6)
        cbar = fig.colorbar(cs, ax=list(axes[0]), shrink=0.9, pad=0.02, ticks=ticks)
        cbar.set_label(cbar_label)
        return figstyle.save_figure(fig, out_stem)
