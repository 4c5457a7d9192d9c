"""Figures of landscape slices: contours, filled contours, heatmaps, 3-D surfaces, 1-D curves.

Uses matplotlib's object API (``Figure`` rendered by Agg for PNG, the PDF backend
for PDF), never ``pyplot``, so no global state or display is touched. Grid
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
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from landscape.errors import LandscapeError
from landscape.surface.storage import SurfaceResult

KINDS_2D = ("contour", "filled", "heatmap", "3d")


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


def _save(fig: Figure, base: Path, formats: Sequence[str]) -> list[Path]:
    out = []
    base.parent.mkdir(parents=True, exist_ok=True)
    for fmt in formats:
        if fmt not in ("png", "pdf", "svg"):
            raise LandscapeError(f"figure format '{fmt}': expected png, pdf or svg")
        path = base.with_name(f"{base.name}.{fmt}")
        fig.savefig(path, dpi=150, bbox_inches="tight")
        out.append(path)
    return out


def _label(result: SurfaceResult, axis: str) -> str:
    if result.kind == "interpolate":
        return "alpha  (theta = (1 - alpha) theta_A + alpha theta_B)"
    if result.kind == "trajectory":
        return f"PC{1 if axis == 'x' else 2} (parameter-space distance)"
    return f"{'a' if axis == 'x' else 'b'}  (w + a d1 + b d2)"


def _draw_path(ax, result: SurfaceResult) -> None:
    path = result.extra.get("path_coordinates")
    if path is None:
        return
    evr = result.extra.get("explained_variance_ratio")
    label = "training path" if evr is None else f"training path (PCA {100 * evr[0]:.1f}% + {100 * evr[1]:.1f}%)"
    line = np.vstack([path, [[0.0, 0.0]]])  # the path ends at the final model, the plane's origin
    ax.plot(line[:, 0], line[:, 1], "-", color="tab:red", linewidth=1.2)
    ax.plot(path[:, 0], path[:, 1], "o", color="tab:red", markersize=3, label=label)
    ax.plot([0.0], [0.0], "*", color="black", markersize=9, label="final model")
    ax.legend(loc="upper right", fontsize=7)


def plot_surface(result: SurfaceResult, metric: str = "train_loss", out_dir: str | Path | None = None,
                 stem: str | None = None, kinds: Sequence[str] = KINDS_2D, levels: int = 20,
                 log_levels: bool = False, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Draw a 2-D slice's ``metric`` as contour lines, filled contours, heatmap and 3-D surface.

    Files are ``<out_dir>/<stem>-<metric>-<kind>.<fmt>`` (defaults: the result
    file's folder and name). A trajectory's path is drawn over the 2-D views.
    Returns the written paths.
    """
    if result.y is None:
        raise LandscapeError(f"{result.path}: a 1-D slice; use plot_curves")
    if metric not in result.values:
        raise LandscapeError(f"{result.path}: no metric '{metric}' (have {', '.join(result.values)})")
    bad = [k for k in kinds if k not in KINDS_2D]
    if bad:
        raise LandscapeError(f"plot kinds {bad}: expected some of {', '.join(KINDS_2D)}")
    z = np.where(np.isfinite(result.values[metric]), result.values[metric], np.nan)
    lev = contour_levels(z, levels, log_levels)
    xx, yy = np.meshgrid(result.x, result.y)  # shape (len(y), len(x)), like z
    out_dir = Path(out_dir) if out_dir is not None else result.path.parent
    stem = stem or result.path.stem
    written: list[Path] = []
    for kind in kinds:
        fig = Figure(figsize=(5.5, 4.5))
        if kind == "3d":
            ax = fig.add_subplot(projection="3d")
            surf = ax.plot_surface(xx, yy, np.ma.masked_invalid(z), cmap="viridis", linewidth=0,
                                   antialiased=True, rstride=1, cstride=1)
            ax.set_zlabel(metric)
            fig.colorbar(surf, ax=ax, shrink=0.6, pad=0.15)
        else:
            ax = fig.add_subplot()
            if kind == "contour":
                cs = ax.contour(xx, yy, z, levels=lev, cmap="viridis", linewidths=0.9)
                if len(lev) > 1:
                    ax.clabel(cs, inline=True, fontsize=6, fmt="%.3g")
            elif kind == "filled":
                cs = ax.contourf(xx, yy, z, levels=lev if len(lev) > 1 else 10, cmap="viridis", extend="both")
                fig.colorbar(cs, ax=ax, label=metric)
            else:
                mesh = ax.pcolormesh(result.x, result.y, z, shading="nearest", cmap="viridis")
                fig.colorbar(mesh, ax=ax, label=metric)
            _draw_path(ax, result)
        ax.set_xlabel(_label(result, "x"))
        ax.set_ylabel(_label(result, "y"))
        ax.set_title(f"{result.kind} {result.key}: {metric}", fontsize=9)
        written += _save(fig, out_dir / f"{stem}-{metric}-{kind}", formats)
    return written


def plot_curves(result: SurfaceResult, out_dir: str | Path | None = None, stem: str | None = None,
                loss: str = "loss", score: str = "srcc", log_loss: bool = False,
                formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """1-D slice: ``<set>_loss`` on the left axis, ``<set>_srcc`` on a twin right axis, every set.

    Train is drawn solid, test dashed (other sets dotted). Returns the written paths.
    """
    if result.y is not None:
        raise LandscapeError(f"{result.path}: a 2-D slice; use plot_surface")
    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.add_subplot()
    twin = ax.twinx()
    styles = {"train": "-", "test": "--"}
    lines = []
    for s in result.sets:
        ls = styles.get(s, ":")
        if f"{s}_{loss}" in result.values:
            lines += ax.plot(result.x, result.values[f"{s}_{loss}"], ls, color="tab:blue", label=f"{s} {loss}")
        if f"{s}_{score}" in result.values:
            lines += twin.plot(result.x, result.values[f"{s}_{score}"], ls, color="tab:orange",
                               label=f"{s} {score.upper()}")
    if result.kind == "interpolate":
        for a in (0.0, 1.0):
            ax.axvline(a, color="grey", linewidth=0.6)
    if log_loss:
        ax.set_yscale("log")
    ax.set_xlabel(_label(result, "x"))
    ax.set_ylabel(loss, color="tab:blue")
    twin.set_ylabel(score.upper(), color="tab:orange")
    ax.legend(lines, [ln.get_label() for ln in lines], fontsize=7, loc="best")
    ax.set_title(f"{result.kind} {result.key}", fontsize=9)
    out_dir = Path(out_dir) if out_dir is not None else result.path.parent
    return _save(fig, out_dir / f"{stem or result.path.stem}-curves", formats)
