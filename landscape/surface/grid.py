"""Grid coordinates and the assignment of grid cells to workers.

A grid spec ``"start:stop:num"`` means ``numpy.linspace(start, stop, num)`` (both
ends included). Coordinates within ``1e-9`` steps of ``0`` are snapped to exactly
``0.0``, so the centre of an odd symmetric grid (``"-1:1:51"``) is the unperturbed
model bit for bit. ``snap_points`` additionally forces given points (alpha = 0 and
1 for interpolation) onto the grid, inserting them if they are missing.

Cells of a 2-D grid of ``len(y)`` rows and ``len(x)`` columns are numbered
row-major: ``cell = iy * len(x) + ix`` (``values.reshape(-1)[cell]`` is the value
at ``(x[ix], y[iy])``). A 1-D slice is the case ``len(y) == 1``.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from landscape.errors import LandscapeError

_SNAP = 1e-9  # in units of the grid step
MAX_GRID_POINTS = 1001   # points per axis (a 1001 x 1001 plane is about 1e6 cells)


def parse_grid(spec: str | Sequence[float] | np.ndarray) -> np.ndarray:
    """Coordinates from ``"start:stop:num"`` (linspace, ends included) or a list of floats.

    Values within ``1e-9`` steps of zero become exactly ``0.0``. The result is a
    strictly increasing float64 array.
    """
    if isinstance(spec, str):
        parts = spec.split(":")
        if len(parts) != 3:
            raise LandscapeError(f"grid '{spec}': expected 'start:stop:num', e.g. '-1:1:51'")
        try:
            start, stop, num = float(parts[0]), float(parts[1]), int(parts[2])
        except ValueError:
            raise LandscapeError(f"grid '{spec}': start and stop must be numbers and num an integer") from None
        if num < 1 or num > MAX_GRID_POINTS:
            raise LandscapeError(f"grid '{spec}': num must be between 1 and {MAX_GRID_POINTS} points per axis")
        if num == 1 and start != stop:
            raise LandscapeError(f"grid '{spec}': a single point needs start == stop")
        if num > 1 and not stop > start:
            raise LandscapeError(f"grid '{spec}': stop must be greater than start")
        if not (np.isfinite(start) and np.isfinite(stop)):
            raise LandscapeError(f"grid '{spec}': start and stop must be finite")
        values = np.linspace(start, stop, num, dtype=np.float64)
    else:
        values = np.asarray(list(spec), dtype=np.float64).reshape(-1)
        if values.size == 0:
            raise LandscapeError("grid: no coordinates given")
        if not np.all(np.isfinite(values)):
            raise LandscapeError(f"grid {values.tolist()}: coordinates must be finite")
        if values.size > 1 and not np.all(np.diff(values) > 0):
            raise LandscapeError(f"grid {values.tolist()}: coordinates must be strictly increasing")
    return snap_points(values, [0.0], insert=False)


def snap_points(values: np.ndarray, points: Iterable[float], insert: bool = True) -> np.ndarray:
    """Snap coordinates within ``1e-9`` steps of each point onto it exactly; insert missing ones.

    With ``insert=True`` a point that is not (nearly) on the grid is added and the
    grid re-sorted, so e.g. alpha = 0 and 1 are always evaluated exactly.
    """
    out = np.array(values, dtype=np.float64).reshape(-1)
    step = float(np.min(np.diff(out))) if out.size > 1 else 1.0
    for p in points:
        close = np.abs(out - p) <= _SNAP * step
        if close.any():
            out[close] = p
        elif insert:
            out = np.sort(np.append(out, p))
    return out


def origin_cell(x: np.ndarray, y: np.ndarray | None) -> int | None:
    """Flat index of the cell at ``(0, 0)`` (or ``x = 0`` for 1-D), or None if not on the grid."""
    ix = np.flatnonzero(x == 0.0)
    if ix.size == 0:
        return None
    if y is None:
        return int(ix[0])
    iy = np.flatnonzero(y == 0.0)
    if iy.size == 0:
        return None
    return int(iy[0]) * len(x) + int(ix[0])


def cell_coordinates(cell: int, x: np.ndarray, y: np.ndarray | None) -> tuple[float, float]:
    """``(x[ix], y[iy])`` of a flat cell index (``y = 0`` for a 1-D slice)."""
    if y is None:
        return float(x[cell]), 0.0
    iy, ix = divmod(int(cell), len(x))
    return float(x[ix]), float(y[iy])


def cells_for_rank(n_cells: int, rank: int = 0, world: int = 1) -> np.ndarray:
    """Cells computed by worker ``rank`` of ``world``: ``{i : i % world == rank}``.

    Round-robin, so every worker gets cells from the whole grid (balanced when cost
    varies across it), the workers' sets are disjoint and together cover the grid.
    """
    if world < 1 or not 0 <= rank < world:
        raise LandscapeError(f"rank {rank} of world size {world}: need 0 <= rank < world")
    if n_cells < 0:
        raise LandscapeError(f"n_cells {n_cells}: must be >= 0")
    return np.arange(rank, n_cells, world, dtype=np.int64)
