"""Training trajectory on its PCA plane (Li et al. 2018, section 7).

Rows ``v_e = theta_e - theta_final`` (trainable parameters, flattened) for the
per-epoch checkpoints form ``M`` (epochs x P). Its top-2 right singular vectors
``u1, u2`` (unit norm in parameter space) span the plane through the final model;
the path's coordinates are ``(<v_e, u1>, <v_e, u2>)`` and the explained variance
ratio of component k is ``s_k^2 / sum_j s_j^2``. The SVD is taken through the
small Gram matrix ``G = M M^T`` (float64, accumulated tensor by tensor, so ``M``
is never materialised): ``G = U S^2 U^T``, ``u_k = M^T U_k / s_k``.

``center=False`` (default) uses ``M`` as is, i.e. the best plane *through the
final model*, which is the plane that is drawn; ``center=True`` subtracts the
mean row first, like the reference code's ``sklearn`` PCA (best affine plane
through the path's mean; the drawn plane still passes through the final model).
``residual`` is each checkpoint's distance off the plane relative to
``||v_e||`` (0 = on the plane): the path can lie far off it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

import landscape.surface.storage as storage
from landscape.batches import Batch, Criterion
from landscape.errors import LandscapeError
from landscape.params import trainable_parameters
from landscape.provenance import content_key, hash_state
from landscape.surface.directions import Directions
from landscape.surface.grid import parse_grid
from landscape.surface.plane import GridLike, checkpoint_hash_of, evaluate_plane
from landscape.surface.runner import CellCallback


@dataclass
class TrajectoryPlane:
    """PCA plane of a trajectory: directions ``u1, u2``, path coordinates and fit quality."""

    directions: Directions
    coords: np.ndarray               # (n_checkpoints, 2): (<v_e, u1>, <v_e, u2>)
    explained_variance_ratio: np.ndarray  # (2,)
    singular_values: np.ndarray      # all of them, descending
    residual: np.ndarray             # (n_checkpoints,) ||v_e - proj|| / ||v_e|| (NaN where v_e = 0)
    center: bool


def pca_plane(model: nn.Module, states: Sequence[Mapping[str, torch.Tensor]], center: bool = False,
              checkpoint_hash: str | None = None) -> TrajectoryPlane:
    """PCA plane of ``states`` (per-epoch state dicts) relative to the model's current (final) weights."""
    named = trainable_parameters(model)
    if len(states) < 2:
        raise LandscapeError(f"trajectory: need at least 2 checkpoints besides the final model, got {len(states)}")
    names = tuple(n for n, _ in named)
    final = [p.detach() for _, p in named]
    for e, st in enumerate(states):
        for n, p in named:
            if n not in st:
                raise LandscapeError(f"trajectory checkpoint {e} has no parameter '{n}'")
            if tuple(st[n].shape) != tuple(p.shape):
                raise LandscapeError(f"trajectory checkpoint {e}: '{n}' has shape {tuple(st[n].shape)}, "
                                     f"model {tuple(p.shape)}")

    def rows(j: int) -> torch.Tensor:
        n, w = names[j], final[j]
        d = torch.stack([st[n].detach().to(device=w.device, dtype=torch.float64).reshape(-1) for st in states])
        return d - w.double().reshape(1, -1)

    n_ckpt = len(states)
    gram = torch.zeros(n_ckpt, n_ckpt, dtype=torch.float64, device=final[0].device)
    means = []
    for j in range(len(names)):
        d = rows(j)
        if center:
            m = d.mean(dim=0, keepdim=True)
            means.append(m)
            d = d - m
        gram += d @ d.T
    evals, evecs = torch.linalg.eigh(gram)
    order = torch.argsort(evals, descending=True)
    evals, evecs = evals[order].clamp_min(0), evecs[:, order]
    sv = evals.sqrt()
    if sv.numel() < 2 or sv[1] <= 1e-12 * max(float(sv[0]), 1e-300):
        raise LandscapeError("trajectory: the checkpoints span fewer than 2 dimensions; no PCA plane")
    u = [[], []]
    for j in range(len(names)):
        d = rows(j)
        if center:
            d = d - means[j]
        for k in range(2):
            u[k].append((d.T @ evecs[:, k] / sv[k]).reshape(final[j].shape).to(final[j].dtype))
    # path coordinates and off-plane residuals from the uncentred rows
    coords = torch.zeros(n_ckpt, 2, dtype=torch.float64, device=final[0].device)
    sq = torch.zeros(n_ckpt, dtype=torch.float64, device=final[0].device)
    for j in range(len(names)):
        d = rows(j)
        sq += (d * d).sum(dim=1)
        for k in range(2):
            coords[:, k] += d @ u[k][j].double().reshape(-1)
    evr = (evals[:2] / evals.sum()).cpu().numpy()
    proj_sq = (coords ** 2).sum(dim=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        residual = np.sqrt(np.clip((sq - proj_sq).cpu().numpy(), 0, None)) / np.sqrt(sq.cpu().numpy())
    ckpt = checkpoint_hash or hash_state(dict(zip(names, final)))
    spec = {"kind": "pca", "center": center, "final": ckpt, "checkpoints": [hash_state(s) for s in states]}
    dirs = Directions(names, u, content_key(spec), spec, float(sum(
        (a.double() * b.double()).sum() for a, b in zip(u[0], u[1]))))
    return TrajectoryPlane(dirs, coords.cpu().numpy(), evr, sv.cpu().numpy(), residual, center)


def path_grid(coords: np.ndarray, num: int = 21, margin: float = 0.25) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric odd grids covering the path: half-width ``(1 + margin) * max |coord|`` per axis.

    The centre cell is the final model exactly.
    """
    num = num + 1 - num % 2
    grids = []
    for k in range(2):
        half = (1.0 + margin) * float(np.max(np.abs(coords[:, k])))
        half = half if half > 0 else 1.0
        grids.append(parse_grid(np.linspace(-half, half, num)))
    return grids[0], grids[1]


def trajectory_surface(model: nn.Module, states: Sequence[Mapping[str, torch.Tensor]], criterion: Criterion,
                       eval_sets: Mapping[str, Iterable[Batch]], out_dir: str | Path,
                       x: GridLike | None = None, y: GridLike | None = None, *, num: int = 21,
                       margin: float = 0.25, center: bool = False, subset_keys: Mapping[str, str] | None = None,
                       checkpoint_hash: str | None = None, path: str | Path | None = None,
                       amp_dtype: torch.dtype | None = None, compile: str = "auto", rank: int = 0, world: int = 1,
                       flush_every: int = 16, flush_seconds: float = 30.0, max_cells: int | None = None,
                       callback: CellCallback | None = None) -> tuple[storage.SurfaceResult, TrajectoryPlane]:
    """Surface on the trajectory's PCA plane around the final model (the model's current weights).

    Grids default to :func:`path_grid`. The file also holds ``path_coordinates``
    (n, 2), ``explained_variance_ratio`` (2,) and ``path_residual`` (n,).
    """
    plane = pca_plane(model, states, center, checkpoint_hash)
    if x is None or y is None:
        gx, gy = path_grid(plane.coords, num, margin)
        gx = gx if x is None else parse_grid(x)
        gy = gy if y is None else parse_grid(y)
    else:
        gx, gy = parse_grid(x), parse_grid(y)
    extra = {"path_coordinates": plane.coords, "explained_variance_ratio": plane.explained_variance_ratio,
             "path_residual": plane.residual}
    result = evaluate_plane("trajectory", model, criterion, eval_sets, out_dir, gx, gy, plane.directions,
                             subset_keys=subset_keys, checkpoint_hash=checkpoint_hash or checkpoint_hash_of(model),
                             path=path, amp_dtype=amp_dtype, compile=compile, extra=extra, extra_spec={"center": center},
                             rank=rank, world=world, flush_every=flush_every, flush_seconds=flush_seconds,
                             max_cells=max_cells, callback=callback)
    return result, plane
