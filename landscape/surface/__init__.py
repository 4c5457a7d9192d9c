"""Loss-landscape slices: 2-D planes, 1-D lines, interpolations and trajectory planes in HDF5.

Modules, one job each: ``grid`` (coordinates, cell ownership), ``directions``
(random normalised directions), ``evaluate`` (loss + SRCC/PLCC at given
parameters), ``storage`` (HDF5 layout, directions file, shard merge), ``runner``
(resumable cell loop), ``plane`` (random planes and lines), ``interpolate``
(between two checkpoints), ``trajectory`` (PCA plane of a training run).
Plots live in :mod:`landscape.figures.surface`.
"""
from landscape.surface.directions import (
    Directions,
    DirectionSpec,
    normalize,
    orthogonalize,
    random_directions,
    slice_norms,
)
from landscape.surface.evaluate import Evaluator
from landscape.surface.grid import cells_for_rank, parse_grid
from landscape.surface.interpolate import alpha_grid, interpolate
from landscape.surface.plane import compute_slice, compute_surface
from landscape.surface.storage import SurfaceResult, load_directions, load_surface, merge_shards, shard_path
from landscape.surface.trajectory import TrajectoryPlane, path_grid, pca_plane, trajectory_surface

__all__ = [
    "Directions", "DirectionSpec", "Evaluator", "SurfaceResult", "TrajectoryPlane", "alpha_grid", "cells_for_rank",
    "compute_slice", "compute_surface", "interpolate", "load_directions", "load_surface", "merge_shards", "normalize",
    "orthogonalize", "parse_grid", "path_grid", "pca_plane", "random_directions", "shard_path", "slice_norms",
    "trajectory_surface",
]
