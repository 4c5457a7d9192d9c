"""Random-direction slices around a model: 2-D planes and 1-D lines.

``compute_surface`` evaluates ``w + a * d1 + b * d2`` for ``a`` in the x grid and
``b`` in the y grid (``compute_slice``: ``w + a * d1``), where ``w`` are the
trainable parameters and ``d1, d2`` directions (default: seeded Gaussian,
filter-normalised, dim <= 1 zeroed). Buffers (e.g. BatchNorm running statistics)
are not perturbed. Results go to ``out_dir/<kind>-<key>.h5`` where ``key`` is the
content key of everything that determines the values (checkpoint hash,
directions, grids, evaluation subsets, criterion, precision), so changed inputs
never reuse stale cells; the directions go to ``out_dir/directions-<key>.h5``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

import landscape.surface.storage as storage
from landscape.batches import Batch, Criterion
from landscape.errors import LandscapeError
from landscape.params import check_finite_parameters, trainable_parameters
from landscape.provenance import content_key, hash_state, provenance
from landscape.surface.directions import Directions, DirectionSpec, directions_key, random_directions
from landscape.surface.evaluate import Evaluator, callable_name
from landscape.surface.grid import parse_grid
from landscape.surface.runner import CellCallback, run_cells

GridLike = str | Sequence[float] | np.ndarray


def checkpoint_hash_of(model: nn.Module) -> str:
    """Hash of the model's full state dict (parameters and persistent buffers)."""
    return hash_state(model.state_dict())


def result_spec(kind: str, evaluator: Evaluator, x: np.ndarray, y: np.ndarray | None,
                **fields: Any) -> dict[str, Any]:
    """Everything that determines a slice's values, for :func:`content_key`."""
    return {
        "kind": kind,
        "x": [float(v) for v in x],
        "y": None if y is None else [float(v) for v in y],
        "sets": dict(evaluator.keys),
        "criterion": callable_name(evaluator.criterion),
        "amp_dtype": None if evaluator.amp_dtype is None else str(evaluator.amp_dtype),
        "mode": "eval",
        **fields,
    }


def directions_for(model: nn.Module, spec: DirectionSpec, out_dir: Path, checkpoint_hash: str) -> Directions:
    """Random directions, loaded from ``out_dir/directions-<key>.h5`` if present, else drawn and saved."""
    named = trainable_parameters(model)
    weights = [p.detach() for _, p in named]
    key = directions_key(spec, checkpoint_hash, [n for n, _ in named], weights)
    path = Path(out_dir) / f"directions-{key}.h5"
    if path.exists():
        return storage.load_directions(path, weights, key=key)
    fresh = random_directions(model, spec, checkpoint_hash)
    storage.save_directions(path, fresh, provenance(checkpoint=checkpoint_hash))
    return fresh


def ensure_directions_file(directions: Directions, out_dir: Path, **prov: Any) -> Path:
    """Path of the directions' file in ``out_dir``, writing it once if missing."""
    path = Path(out_dir) / f"directions-{directions.key}.h5"
    if not path.exists():
        storage.save_directions(path, directions, provenance(**prov))
    return path


def planar_params(model: nn.Module, directions: Directions):
    """``params_at(a, b) = {name: w + a * d1 + b * d2}`` (the weights themselves at ``a = b = 0``).

    The perturbed weights are written into one preallocated set of tensors, reused
    from cell to cell (no allocation per cell; the caller consumes each result
    before asking for the next).
    """
    named = trainable_parameters(model)
    names = [n for n, _ in named]
    if tuple(names) != tuple(directions.names):
        raise LandscapeError("directions were made for other parameter names than the model's trainable ones")
    base = [p.detach() for _, p in named]
    d1 = directions.vectors[0]
    d2 = directions.vectors[1] if len(directions.vectors) > 1 else None
    buf: list[torch.Tensor] = []

    def params_at(a: float, b: float) -> dict[str, torch.Tensor]:
        if a == 0.0 and b == 0.0:
            return dict(zip(names, base))
        if b != 0.0 and d2 is None:
            raise LandscapeError("a 1-D slice has no second direction")
        with torch.no_grad():
            if not buf:
                buf.extend(torch.empty_like(w) for w in base)
            torch._foreach_copy_(buf, base)
            if a != 0.0:
                torch._foreach_add_(buf, d1, alpha=a)
            if b != 0.0:
                torch._foreach_add_(buf, d2, alpha=b)
        return dict(zip(names, buf))

    return params_at


def evaluate_plane(kind: str, model: nn.Module, criterion: Criterion, eval_sets: Mapping[str, Iterable[Batch]],
                   out_dir: str | Path, x: np.ndarray, y: np.ndarray | None, directions: DirectionSpec | Directions,
                   *, subset_keys, checkpoint_hash, path, amp_dtype, compile="auto", extra=None, extra_spec=None,
                   **run_kw) -> storage.SurfaceResult:
    """Shared body of planes, lines and trajectory planes: key the inputs, then run the cells.

    ``directions`` is a spec (random directions, drawn or loaded from
    ``out_dir``) or ready :class:`Directions` (e.g. PCA ones); ``y=None`` is 1-D.
    """
    out_dir = Path(out_dir)
    check_finite_parameters(model)          # before anything (directions) is written
    evaluator = Evaluator(model, criterion, eval_sets, subset_keys, amp_dtype, compile)
    ckpt = checkpoint_hash or checkpoint_hash_of(model)
    if isinstance(directions, DirectionSpec):
        if y is None and directions.count != 1:
            directions = dataclasses.replace(directions, count=1)
        dirs = directions_for(model, directions, out_dir, ckpt)
    else:
        dirs = directions
        ensure_directions_file(dirs, out_dir, checkpoint=ckpt)
    needed = 1 if y is None else 2
    if len(dirs.vectors) < needed:
        raise LandscapeError(f"a {needed}-D slice needs {needed} directions, got {len(dirs.vectors)}")
    spec = result_spec(kind, evaluator, x, y, checkpoint=ckpt, directions=dirs.key, **(extra_spec or {}))
    key = content_key(spec)
    path = Path(path) if path is not None else out_dir / f"{kind}-{key}.h5"
    attrs = {"spec": spec, "checkpoint": ckpt, "directions_file": f"directions-{dirs.key}.h5",
             "directions_digest": dirs.digest(), "directions_spec": dirs.spec, "directions_cosine": dirs.cosine,
             "n_images": evaluator.n_images, "provenance": provenance(checkpoint=ckpt, subsets=evaluator.keys)}
    return run_cells(path, key, kind, x, y, attrs, evaluator, planar_params(model, dirs), extra=extra,
                     must_match=("directions_digest",), **run_kw)


def compute_surface(model: nn.Module, criterion: Criterion, eval_sets: Mapping[str, Iterable[Batch]],
                    out_dir: str | Path, x: GridLike = "-1:1:51", y: GridLike | None = None,
                    directions: DirectionSpec | Directions = DirectionSpec(), *,
                    subset_keys: Mapping[str, str] | None = None, checkpoint_hash: str | None = None,
                    path: str | Path | None = None, amp_dtype: torch.dtype | None = None, compile: str = "auto",
                    rank: int = 0, world: int = 1, flush_every: int = 16, flush_seconds: float = 30.0,
                    max_cells: int | None = None, callback: CellCallback | None = None) -> storage.SurfaceResult:
    """2-D slice ``L(w + a d1 + b d2)`` (and SRCC/PLCC) on ``x`` by ``y`` (``y`` defaults to ``x``).

    Grids are ``"start:stop:num"`` strings or coordinate lists. Returns the
    result file's contents: ``values['train_loss'][iy, ix]`` at ``(x[ix], y[iy])``.
    Resumes a partial file with the same key; ``rank``/``world`` compute one shard.
    ``compile``: ``'auto'``/``'on'``/``'off'``, torch.compile of the forward pass
    (:mod:`landscape.surface.evaluate`; not part of the key: same values to float rounding).
    """
    gx = parse_grid(x)
    gy = gx if y is None else parse_grid(y)
    return evaluate_plane("surface", model, criterion, eval_sets, out_dir, gx, gy, directions,
                           subset_keys=subset_keys, checkpoint_hash=checkpoint_hash, path=path, amp_dtype=amp_dtype,
                           compile=compile,
                           rank=rank, world=world, flush_every=flush_every, flush_seconds=flush_seconds,
                           max_cells=max_cells, callback=callback)


def compute_slice(model: nn.Module, criterion: Criterion, eval_sets: Mapping[str, Iterable[Batch]],
                  out_dir: str | Path, x: GridLike = "-1:1:51",
                  directions: DirectionSpec | Directions = DirectionSpec(count=1), *,
                  subset_keys: Mapping[str, str] | None = None, checkpoint_hash: str | None = None,
                  path: str | Path | None = None, amp_dtype: torch.dtype | None = None, compile: str = "auto",
                  rank: int = 0, world: int = 1, flush_every: int = 16, flush_seconds: float = 30.0,
                  max_cells: int | None = None, callback: CellCallback | None = None) -> storage.SurfaceResult:
    """1-D slice ``L(w + a d1)`` (and SRCC/PLCC) on the ``x`` grid; values shaped ``(len(x),)``."""
    return evaluate_plane("slice", model, criterion, eval_sets, out_dir, parse_grid(x), None, directions,
                           subset_keys=subset_keys, checkpoint_hash=checkpoint_hash, path=path, amp_dtype=amp_dtype,
                           compile=compile,
                           rank=rank, world=world, flush_every=flush_every, flush_seconds=flush_seconds,
                           max_cells=max_cells, callback=callback)
