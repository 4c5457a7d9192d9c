"""Loss-landscape slices: 2-D planes, 1-D lines, interpolations and trajectory planes in HDF5.

Modules, one job each: ``grid`` (coordinates, cell ownership), ``directions``
(random normalised directions), ``evaluate`` (loss + SRCC/PLCC at given
parameters), ``storage`` (HDF5 layout, directions file, shard merge), ``runner``
(resumable cell loop), ``plane`` (random planes and lines), ``interpolate``
(between two checkpoints), ``trajectory`` (PCA plane of a training run).
Plots live in :mod:`landscape.surface_plots`.
"""
from .directions import Directions, DirectionSpec, normalize, orthogonalize, random_directions, slice_norms
from .evaluate import Evaluator
from .grid import cells_for_rank, parse_grid
from .interpolate import alpha_grid, interpolate
from .plane import compute_slice, compute_surface
from .storage import SurfaceResult, load_directions, load_surface, merge_shards, shard_path
from .trajectory import TrajectoryPlane, path_grid, pca_plane, trajectory_surface

__all__ = [
    "Directions", "DirectionSpec", "Evaluator", "SurfaceResult", "TrajectoryPlane", "alpha_grid", "cells_for_rank",
    "compute_slice", "compute_surface", "interpolate", "load_directions", "load_surface", "merge_shards", "normalize",
    "orthogonalize", "parse_grid", "path_grid", "pca_plane", "random_directions", "shard_path", "slice_norms",
    "trajectory_surface",
]
