"""Figures of landscape slices: contours, filled contours, heatmaps, 3-D surfaces, 1-D curves.

Every figure is in the one paper style (:mod:`landscape.figures.style`): readable titles (the
run folder and the metric, never the file's hash), the metric's name with its meaning on colour
bars and axes (``training loss``), direction axes δ and η as in the report's contours, contour
labels on every other level, never clipped at the axes edge, and legends off the data.

Draws only: the caller (:mod:`landscape.analyze.jobs`, tests) passes the loaded result, a
:class:`landscape.surface.storage.SurfaceResult` or anything with its attributes (``kind``,
``key``, ``path``, ``x``, ``y`` (None for 1-D), ``values`` {metric: array}, ``sets``,
``extra``, optionally ``nonfinite``: computed cells with a NaN/inf loss, drawn as red
x marks); nothing here reads HDF5. Figures use the paper style and the atomic saver of
:mod:`landscape.figures.style` (pyplot-free ``Figure``, Okabe-Ito colours, viridis). Grid
orientation follows the storage convention ``values[iy, ix]`` at ``(x[ix], y[iy])``:
``meshgrid(x, y)`` (xy indexing) has the same shape ``(len(y), len(x))``.

Contour levels (:func:`contour_levels`): ``n`` "nice" linear levels between the
finite minimum and maximum, or with ``log=True`` levels at
``min + span * 10**linspace(-3, 0, n)``, dense near the minimum (valid for any sign
of the values). The 3-D surface is added with ``fig.add_subplot(projection="3d")``
(``Axes3D(fig)`` no longer attaches itself to the figure since matplotlib 3.6,
which is why the reference code's 3-D plots come out blank).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
from matplotlib.ticker import MaxNLocator

from landscape.errors import LandscapeError, check_choice, check_choices
from landscape.figures import style as figstyle

KINDS_2D = ("contour", "filled", "heatmap", "3d")
#: Line style per evaluation set in :func:`plot_curves` (other sets dotted).
SET_STYLES = {"train": "-", "test": "--"}


def contour_levels(values: np.ndarray, n: int = 20, log: bool = False) -> np.ndarray:
    """Increasing contour levels over the finite values (see module docstring)."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        raise LandscapeError("no finite values to draw")
    lo, hi = float(finite.min()), float(finite.max())
    if hi <= lo:
        return np.array([lo])
    if log:
        return lo + (hi - lo) * np.logspace(-3, 0, n)
    levels = MaxNLocator(nbins=n).tick_values(lo, hi)
    levels = levels[(levels >= lo) & (levels <= hi)]
    return levels if levels.size >= 2 else np.linspace(lo, hi, n)


#: Readable names of the stored metrics (titles, colour bars, axis labels).
METRIC_LABELS = {"train_loss": "training loss", "test_loss": "test loss", "val_loss": "validation loss",
                 "train_srcc": "train SRCC", "test_srcc": "test SRCC", "val_srcc": "validation SRCC"}


def metric_label(metric: str) -> str:
    """``train_loss`` -> ``training loss`` (:data:`METRIC_LABELS`; other names as they are)."""
    return METRIC_LABELS.get(metric, metric.replace("_", " "))


def _label(result: Any, axis: str) -> str:
    if result.kind == "interpolate":
        ends = (getattr(result, "attrs", None) or {}).get("endpoint_labels")
        names = f"\nA: {ends[0]}, B: {ends[1]}" if ends is not None and len(ends) == 2 else ""
        return r"α   ($\theta = (1 - \alpha)\,\theta_A + \alpha\,\theta_B$)" + names
    if result.kind == "trajectory":
        return f"PC{1 if axis == 'x' else 2} (parameter-space distance)"
    return "δ (direction 1)" if axis == "x" else "η (direction 2)"


def _title(result: Any, what: str) -> str:
    """``<run folder>: <what>``: the run the slice belongs to, never the file's hash."""
    path = getattr(result, "path", None)
    run = Path(path).parent.name if path is not None else ""
    return f"{run}: {what}" if run else what


def _label_contours(ax, cs, levels: np.ndarray) -> None:
    """Label every other level, small, and never clipped at the axes edge."""
    if len(levels) < 2:
        return
    texts = ax.clabel(cs, levels=cs.levels[::2], inline=True, fontsize=figstyle.SMALL_FONT_SIZE - 1, fmt="%.3g")
    for t in texts:
        t.set_clip_on(False)


def _nonfinite(result: Any) -> np.ndarray:
    """Mask of computed cells with a NaN or infinite loss (``SurfaceResult.nonfinite``), marked with a red x."""
    mask = getattr(result, "nonfinite", None)
    if mask is None:  # a result-like object without the mask: nothing to mark
        return np.zeros(np.shape(next(iter(result.values.values()))), dtype=bool)
    return np.asarray(mask, dtype=bool)


def _draw_path(ax, result: Any) -> None:
    path = result.extra.get("path_coordinates")
    if path is None:
        return
    evr = result.extra.get("explained_variance_ratio")
    label = "training path" if evr is None else f"training path (PCA {100 * evr[0]:.1f}% + {100 * evr[1]:.1f}%)"
    line = np.vstack([path, [[0.0, 0.0]]])  # the path ends at the final model, the plane's origin
    color = figstyle.OKABE_ITO["vermillion"]
    ax.plot(line[:, 0], line[:, 1], "-", color=color, linewidth=1.0)
    ax.plot(path[:, 0], path[:, 1], "o", color=color, markersize=2.5, label=label)
    ax.plot([0.0], [0.0], "*", color=figstyle.OKABE_ITO["black"], markersize=7, label="final model")
    ax.legend(loc="upper right")


def plot_surface(result: Any, metric: str = "train_loss", out_dir: str | Path | None = None,
                 stem: str | None = None, kinds: Sequence[str] = KINDS_2D, levels: int = 20,
                 log_levels: bool = False, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Draw a 2-D slice's ``metric`` as contour lines, filled contours, heatmap and 3-D surface.

    Files are ``<out_dir>/<stem>-<metric>-<kind>.<fmt>`` (defaults: the result
    file's folder and name). A trajectory's path is drawn over the 2-D views.
    Returns the written paths.
    """
    if result.y is None:
        raise LandscapeError(f"{result.path}: a 1-D slice; use plot_curves")
    check_choice("metric", metric, tuple(result.values))
    check_choices("kind", kinds, KINDS_2D)
    z = np.where(np.isfinite(result.values[metric]), result.values[metric], np.nan)
    lev = contour_levels(z, levels, log_levels)
    xx, yy = np.meshgrid(result.x, result.y)  # shape (len(y), len(x)), like z
    out_dir = Path(out_dir) if out_dir is not None else result.path.parent
    stem = stem or result.path.stem
    cmap = figstyle.SEQUENTIAL_CMAP
    written: list[Path] = []
    for kind in kinds:
        with figstyle.paper_style():
            fig, ax = figstyle.new_figure(1, 0.85, subplot_kw={"projection": "3d"} if kind == "3d" else None)
            if kind == "3d":
                surf = ax.plot_surface(xx, yy, np.ma.masked_invalid(z), cmap=cmap, linewidth=0,
                                       antialiased=True, rstride=1, cstride=1)
                ax.set_zlabel(metric_label(metric))
                fig.colorbar(surf, ax=ax, shrink=0.6, pad=0.15)
            else:
                if kind == "contour":
                    cs = ax.contour(xx, yy, z, levels=lev, cmap=cmap, linewidths=0.8)
                    _label_contours(ax, cs, lev)
                elif kind == "filled":
                    cs = ax.contourf(xx, yy, z, levels=lev if len(lev) > 1 else 10, cmap=cmap, extend="both")
                    fig.colorbar(cs, ax=ax, label=metric_label(metric))
                else:
                    mesh = ax.pcolormesh(result.x, result.y, z, shading="nearest", cmap=cmap)
                    fig.colorbar(mesh, ax=ax, label=metric_label(metric))
                _draw_path(ax, result)
                bad = _nonfinite(result)
                if bad.any():
                    ax.plot(xx[bad], yy[bad], "x", color="red", markersize=5, label="non-finite loss")
            ax.set_xlabel(_label(result, "x"))
            ax.set_ylabel(_label(result, "y"))
            ax.set_title(_title(result, metric_label(metric)))
            written += figstyle.save_figure(fig, out_dir / f"{stem}-{metric}-{kind}", formats)
    return written


def plot_curves(result: Any, out_dir: str | Path | None = None, stem: str | None = None,
                loss: str = "loss", score: str = "srcc", log_loss: bool = False,
                formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """1-D slice: ``<set>_loss`` on the left axis, ``<set>_srcc`` on a twin right axis, every set.

    Train is drawn solid, test dashed (other sets dotted); loss in blue, score in orange.
    Returns the written paths.
    """
    if result.y is not None:
        raise LandscapeError(f"{result.path}: a 2-D slice; use plot_surface")
    c_loss, c_score = figstyle.OKABE_ITO["blue"], figstyle.OKABE_ITO["orange"]
    with figstyle.paper_style():
        fig, ax = figstyle.new_figure(1, 0.75)
        twin = ax.twinx()
        twin.spines["right"].set_visible(True)
        lines = []
        for s in result.sets:
            ls = SET_STYLES.get(s, ":")
            if f"{s}_{loss}" in result.values:
                lines += ax.plot(result.x, result.values[f"{s}_{loss}"], ls, color=c_loss,
                                 label=metric_label(f"{s}_{loss}"))
            if f"{s}_{score}" in result.values:
                lines += twin.plot(result.x, result.values[f"{s}_{score}"], ls, color=c_score,
                                   label=metric_label(f"{s}_{score}"))
        if result.kind == "interpolate":
            for a in (0.0, 1.0):
                ax.axvline(a, color="0.5", linewidth=0.6)
        bad = _nonfinite(result)
        if bad.any():  # red x at the bottom of the axes where a loss is NaN or inf
            lines += ax.plot(result.x[bad], np.zeros(int(bad.sum())), "x", color="red", markersize=6, clip_on=False,
                             transform=ax.get_xaxis_transform(), label=f"non-finite loss ({int(bad.sum())})")
        if log_loss:
            ax.set_yscale("log")
        ax.set_xlabel(_label(result, "x"))
        ax.set_ylabel(loss, color=c_loss)
        twin.set_ylabel(score.upper(), color=c_score)
        figstyle.legend_below(ax, lines)
        if result.kind != "interpolate":
            ax.set_title(_title(result, "1-D slice"))
        out_dir = Path(out_dir) if out_dir is not None else result.path.parent
        return figstyle.save_figure(fig, out_dir / f"{stem or result.path.stem}-curves", formats)
