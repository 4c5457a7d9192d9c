"""1-D linear interpolation between two checkpoints (Goodfellow et al.; Keskar et al.).

``theta(alpha) = (1 - alpha) * theta_A + alpha * theta_B`` for every trainable
parameter, alpha on a grid (default ``"-1:2:31"``); alpha = 0 and 1 are always on
the grid and evaluated as ``theta_A`` and ``theta_B`` exactly (bit for bit).
Buffers (BatchNorm running statistics, ...) present in both state dicts:

- ``buffers="recompute"`` (default; the accepted practice, as
  :func:`torch.optim.swa_utils.update_bn`): at every alpha the running statistics of
  each BatchNorm layer (``track_running_stats``) are recomputed for ``theta(alpha)``
  on the evaluation subset ``bn_set`` (``"train"`` if present, else the first set):
  reset (mean 0, var 1, count 0), one forward pass per batch with only the BatchNorm
  layers in train mode and ``momentum=None`` (cumulative average over batches:
  ``running_mean = mean_b mean(x_b)``, ``running_var = mean_b var_unbiased(x_b)``),
  then the cell is evaluated in eval mode. The ends are then theta_A / theta_B with
  recomputed statistics, not the checkpoints' own. Other floating-point buffers are
  interpolated as below. Without BatchNorm layers this equals ``"interpolate"``;
- ``buffers="interpolate"``: floating-point buffers are interpolated with the same
  formula (so the ends are exactly model A and model B). A ``running_var``
  interpolated linearly goes negative outside [0, 1] when A's and B's differ enough
  (then the loss is NaN): such a grid is refused with a one-line error;
- ``buffers="keep_a"``: model A's buffers everywhere (at alpha = 1 this is *not*
  model B if B's statistics differ).

Integer buffers (e.g. ``num_batches_tracked``) are always A's (in ``"recompute"`` the
BatchNorm ones are recomputed). Buffers missing from both state dicts (non-persistent
ones such as Swin's attention masks) are the model's own. The choice is recorded in
the result attributes (``buffers``, ``bn_set``, ``recomputed_buffers``).

Non-finite losses: the result file carries ``nonfinite`` (count) and
``nonfinite_cells`` (flat indices) (:mod:`landscape.surface.runner`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

import landscape.surface.storage as storage
from landscape.batches import Batch, Criterion
from landscape.errors import CheckpointError, LandscapeError, check_choice
from landscape.params import trainable_parameters
from landscape.provenance import content_key, hash_state, provenance
from landscape.surface.evaluate import Evaluator
from landscape.surface.grid import parse_grid, snap_points
from landscape.surface.plane import GridLike, result_spec
from landscape.surface.runner import CellCallback, run_cells

BUFFER_MODES = ("recompute", "interpolate", "keep_a")
DEFAULT_BUFFERS = "recompute"
_BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


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


def batchnorm_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of the BatchNorm layers that keep running statistics."""
    return [(name, m) for name, m in model.named_modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
            and m.running_mean is not None]


def _stat_names(layers: Sequence[tuple[str, nn.Module]]) -> list[str]:
    return [f"{name}.{s}" if name else s for name, _ in layers for s in _BN_STATS]


def recompute_batchnorm(model: nn.Module, tensors: Mapping[str, torch.Tensor],
                        batches: Sequence[Batch]) -> dict[str, torch.Tensor]:
    """Running statistics of every BatchNorm layer for the parameters ``tensors`` on ``batches``.

    Fresh buffers (mean 0, var 1, count 0) are filled by one forward pass per batch
    (:func:`torch.func.functional_call`, no grad) with only the BatchNorm layers in
    train mode and ``momentum=None`` (cumulative average); modes and momenta are
    restored afterwards. The model's own parameters and buffers are not changed.
    """
    layers = batchnorm_layers(model)
    fresh: dict[str, torch.Tensor] = {}
    for name, m in layers:
        prefix = f"{name}." if name else ""
        fresh[prefix + "running_mean"] = torch.zeros_like(m.running_mean)
        fresh[prefix + "running_var"] = torch.ones_like(m.running_var)
        fresh[prefix + "num_batches_tracked"] = torch.zeros_like(m.num_batches_tracked)
    if not layers:
        return fresh
    saved = [(m, m.training, m.momentum) for _, m in layers]
    try:
        for _, m in layers:
            m.train()
            m.momentum = None
        with torch.no_grad():
            for x, _ in batches:
                functional_call(model, {**tensors, **fresh}, (x,), strict=False)
    finally:
        for m, training, momentum in saved:
            m.train(training)
            m.momentum = momentum
    return fresh


def _check_variances(names: Sequence[str], a_vals: Sequence[torch.Tensor], b_vals: Sequence[torch.Tensor],
                     alphas: np.ndarray) -> None:
    """Refuse a grid on which a linearly interpolated ``running_var`` goes negative (the loss would be NaN)."""
    lo, hi = float(np.min(alphas)), float(np.max(alphas))
    for name, a, b in zip(names, a_vals, b_vals):
        if not name.endswith("running_var"):
            continue
        for alpha in (lo, hi):  # linear in alpha: the minimum is at an end of the range
            low = float(((1.0 - alpha) * a + alpha * b).min())
            if low < 0:
                raise LandscapeError(f"buffers='interpolate': {name} is negative ({low:.3g}) at alpha = {alpha:g}, "
                                     "the loss would be NaN; use buffers='recompute' (BatchNorm statistics "
                                     "recomputed at each alpha) or an alpha range closer to [0, 1]")


def interpolation_params(model: nn.Module, state_a: Mapping[str, torch.Tensor],
                         state_b: Mapping[str, torch.Tensor], buffers: str = DEFAULT_BUFFERS,
                         bn_batches: Sequence[Batch] | None = None, alphas: np.ndarray | None = None):
    """``params_at(alpha, _)``: the tensors of ``theta(alpha)`` (parameters and handled buffers).

    Also returns the names of the interpolated buffers, of those kept from A and of
    the BatchNorm statistics recomputed on ``bn_batches`` (``buffers="recompute"``,
    which needs them). ``alphas``: the grid, checked for negative variances under
    ``buffers="interpolate"``.
    """
    check_choice("buffers", buffers, BUFFER_MODES)
    layers = batchnorm_layers(model) if buffers == "recompute" else []
    recomputed = _stat_names(layers)
    if recomputed and not bn_batches:
        raise LandscapeError("buffers='recompute' needs evaluation batches to recompute BatchNorm statistics on")
    names, a_vals, b_vals = [], [], []
    for name, p in trainable_parameters(model):
        names.append(name)
        a_vals.append(_pick(state_a, name, p, "A"))
        b_vals.append(_pick(state_b, name, p, "B"))
    fixed: dict[str, torch.Tensor] = {}
    mixed_buffers, kept = [], []
    for name, buf in model.named_buffers():
        if name in recomputed:
            continue
        in_a, in_b = name in state_a, name in state_b
        if not in_a and not in_b:
            continue
        if in_a != in_b:
            raise CheckpointError(f"buffer '{name}' is in checkpoint {'A' if in_a else 'B'} only")
        a = _pick(state_a, name, buf, "A")
        if buffers != "keep_a" and buf.is_floating_point():
            names.append(name)
            a_vals.append(a)
            b_vals.append(_pick(state_b, name, buf, "B"))
            mixed_buffers.append(name)
        else:
            fixed[name] = a
            kept.append(name)
    if buffers == "interpolate" and alphas is not None:
        _check_variances(names, a_vals, b_vals, np.asarray(alphas, dtype=np.float64))

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
        tensors = {**fixed, **dict(zip(names, vals))}
        if recomputed:
            tensors.update(recompute_batchnorm(model, tensors, bn_batches or ()))
        return tensors

    return params_at, mixed_buffers, kept, recomputed


def interpolate(model: nn.Module, state_a: Mapping[str, torch.Tensor], state_b: Mapping[str, torch.Tensor],
                criterion: Criterion, eval_sets: Mapping[str, Iterable[Batch]], out_dir: str | Path,
                alphas: GridLike = "-1:2:31", *, buffers: str = DEFAULT_BUFFERS,
                subset_keys: Mapping[str, str] | None = None, hash_a: str | None = None, hash_b: str | None = None,
                path: str | Path | None = None, amp_dtype: torch.dtype | None = None, compile: str = "auto",
                rank: int = 0, world: int = 1, flush_every: int = 16, flush_seconds: float = 30.0,
                max_cells: int | None = None, callback: CellCallback | None = None) -> storage.SurfaceResult:
    """Loss and SRCC/PLCC along ``theta(alpha)`` between checkpoints A and B (model = architecture).

    ``state_a``/``state_b`` are state dicts; ``hash_a``/``hash_b`` default to their
    content hashes. Values are shaped ``(len(alphas),)``; ``x`` holds the alphas.
    The model's own weights are not used and not changed. ``buffers`` (default
    ``"recompute"``): see the module docstring.
    """
    check_choice("buffers", buffers, BUFFER_MODES)
    gx = alpha_grid(alphas)
    evaluator = Evaluator(model, criterion, eval_sets, subset_keys, amp_dtype, compile)
    bn_set = ("train" if "train" in evaluator.sets else next(iter(evaluator.sets))) if (
        buffers == "recompute" and batchnorm_layers(model)) else None
    params_at, mixed, kept, recomputed = interpolation_params(
        model, state_a, state_b, buffers, evaluator.sets[bn_set] if bn_set else None, gx)
    ha = hash_a or hash_state(state_a)
    hb = hash_b or hash_state(state_b)
    extra_spec = {"bn_set": bn_set} if bn_set else {}
    spec = result_spec("interpolate", evaluator, gx, None, checkpoint_a=ha, checkpoint_b=hb, buffers=buffers,
                       **extra_spec)
    key = content_key(spec)
    out = Path(path) if path is not None else Path(out_dir) / f"interpolate-{key}.h5"
    attrs = {"spec": spec, "checkpoint_a": ha, "checkpoint_b": hb, "buffers": buffers, "bn_set": bn_set,
             "interpolated_buffers": mixed, "buffers_from_a": kept, "recomputed_buffers": recomputed,
             "n_images": evaluator.n_images,
             "provenance": provenance(checkpoint_a=ha, checkpoint_b=hb, subsets=evaluator.keys)}
    return run_cells(out, key, "interpolate", gx, None, attrs, evaluator, params_at, rank=rank, world=world,
                     flush_every=flush_every, flush_seconds=flush_seconds, max_cells=max_cells, callback=callback)
