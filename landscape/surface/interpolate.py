"""1-D linear interpolation between two checkpoints (Goodfellow et al.; Keskar et al.).

``theta(alpha) = (1 - alpha) * theta_A + alpha * theta_B`` for every trainable
parameter, alpha on a grid (default ``"-1:2:31"``); alpha = 0 and 1 are always on
the grid and evaluated as ``theta_A`` and ``theta_B`` exactly (bit for bit).
Buffers (BatchNorm running statistics, ...) present in both state dicts:

- ``buffers="interpolate"`` (default): floating-point buffers are interpolated
  with the same formula (so the ends are exactly model A and model B);
- ``buffers="keep_a"``: model A's buffers everywhere (at alpha = 1 this is *not*
  model B if B's statistics differ).

Integer buffers (e.g. ``num_batches_tracked``) are always A's. Buffers missing
from both state dicts (non-persistent ones such as Swin's attention masks) are
the model's own. The choice is recorded in the result attributes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import torch
from torch import nn

from landscape.batches import Batch, Criterion
from landscape.errors import CheckpointError, LandscapeError
from landscape.params import trainable_parameters
from landscape.provenance import content_key, provenance
from landscape.surface.hashing import state_hash
from landscape.surface import storage
from landscape.surface.evaluate import Evaluator
from landscape.surface.grid import parse_grid, snap_points
from landscape.surface.plane import GridLike, result_spec
from landscape.surface.runner import CellCallback, run_cells

BUFFER_MODES = ("interpolate", "keep_a")


def alpha_grid(spec: GridLike = "-1:2:31") -> np.ndarray:
    """Alpha coordinates from a grid spec with 0 and 1 forced onto the grid exactly."""
    return snap_points(parse_grid(spec), [0.0, 1.0], insert=True)


def _pick(state: Mapping[str, torch.Tensor], name: str, like: torch.Tensor, which: str) -> torch.Tensor:
    if name not in state:
        raise CheckpointError(f"checkpoint {which} has no entry '{name}'")
    t = state[name]
    if tuple(t.shape) != tuple(like.shape):
        raise CheckpointError(f"checkpoint {which}: '{name}' has shape {tuple(t.shape)}, model {tuple(like.shape)}")
    return t.detach().to(device=like.device, dtype=like.dtype)


def interpolation_params(model: nn.Module, state_a: Mapping[str, torch.Tensor],
                         state_b: Mapping[str, torch.Tensor], buffers: str = "interpolate"):
    """``params_at(alpha, _)``: the tensors of ``theta(alpha)`` (parameters and handled buffers).

    Also returns the names of the interpolated buffers and of those kept from A.
    """
    if buffers not in BUFFER_MODES:
        raise LandscapeError(f"buffers '{buffers}': expected one of {', '.join(BUFFER_MODES)}")
    names, a_vals, b_vals = [], [], []
    for name, p in trainable_parameters(model):
        names.append(name)
        a_vals.append(_pick(state_a, name, p, "A"))
        b_vals.append(_pick(state_b, name, p, "B"))
    fixed: dict[str, torch.Tensor] = {}
    mixed_buffers, kept = [], []
    for name, buf in model.named_buffers():
        in_a, in_b = name in state_a, name in state_b
        if not in_a and not in_b:
            continue
        if in_a != in_b:
            raise CheckpointError(f"buffer '{name}' is in checkpoint {'A' if in_a else 'B'} only")
        a = _pick(state_a, name, buf, "A")
        if buffers == "interpolate" and buf.is_floating_point():
            names.append(name)
            a_vals.append(a)
            b_vals.append(_pick(state_b, name, buf, "B"))
            mixed_buffers.append(name)
        else:
            fixed[name] = a
            kept.append(name)

    buf: list[torch.Tensor] = []  # reused from cell to cell (no allocation per cell)

    def params_at(alpha: float, _b: float = 0.0) -> dict[str, torch.Tensor]:
        if alpha == 0.0:
            vals = a_vals
        elif alpha == 1.0:
            vals = b_vals
        else:
            with torch.no_grad():
                if not buf:
                    buf.extend(torch.empty_like(t) for t in a_vals)
                torch._foreach_copy_(buf, a_vals)
                torch._foreach_mul_(buf, 1.0 - alpha)
                torch._foreach_add_(buf, b_vals, alpha=alpha)
            vals = buf
        return {**fixed, **dict(zip(names, vals))}

    return params_at, mixed_buffers, kept


def interpolate(model: nn.Module, state_a: Mapping[str, torch.Tensor], state_b: Mapping[str, torch.Tensor],
                criterion: Criterion, eval_sets: Mapping[str, Iterable[Batch]], out_dir: str | Path,
                alphas: GridLike = "-1:2:31", *, buffers: str = "interpolate",
                subset_keys: Mapping[str, str] | None = None, hash_a: str | None = None, hash_b: str | None = None,
                path: str | Path | None = None, amp_dtype: torch.dtype | None = None, compile: str = "auto",
                rank: int = 0, world: int = 1, flush_every: int = 16, flush_seconds: float = 30.0,
                max_cells: int | None = None, callback: CellCallback | None = None) -> storage.SurfaceResult:
    """Loss and SRCC/PLCC along ``theta(alpha)`` between checkpoints A and B (model = architecture).

    ``state_a``/``state_b`` are state dicts; ``hash_a``/``hash_b`` default to their
    content hashes. Values are shaped ``(len(alphas),)``; ``x`` holds the alphas.
    The model's own weights are not used and not changed.
    """
    gx = alpha_grid(alphas)
    params_at, mixed, kept = interpolation_params(model, state_a, state_b, buffers)
    evaluator = Evaluator(model, criterion, eval_sets, subset_keys, amp_dtype, compile)
    ha = hash_a or state_hash(state_a)
    hb = hash_b or state_hash(state_b)
    spec = result_spec("interpolate", evaluator, gx, None, checkpoint_a=ha, checkpoint_b=hb, buffers=buffers)
    key = content_key(spec)
    out = Path(path) if path is not None else Path(out_dir) / f"interpolate-{key}.h5"
    attrs = {"spec": spec, "checkpoint_a": ha, "checkpoint_b": hb, "buffers": buffers,
             "interpolated_buffers": mixed, "buffers_from_a": kept, "n_images": evaluator.n_images,
             "provenance": provenance(checkpoint_a=ha, checkpoint_b=hb, subsets=evaluator.keys)}
    return run_cells(out, key, "interpolate", gx, None, attrs, evaluator, params_at, rank=rank, world=world,
                     flush_every=flush_every, flush_seconds=flush_seconds, max_cells=max_cells, callback=callback)
