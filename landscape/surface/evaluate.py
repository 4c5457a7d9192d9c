"""Loss, SRCC and PLCC of a model at given parameter values, on named evaluation sets.

For each set ``s`` (e.g. ``{"train": batches, "test": batches}``) and parameters
``theta`` the evaluator returns

- ``s_loss = sum_b (n_b / N) * criterion(f(x_b; theta), y_b)`` (size-weighted mean),
- ``s_srcc``, ``s_plcc``: Spearman / Pearson correlation between the model's
  per-image outputs (shape ``[B]`` or ``[B, 1]``) and the per-image targets.

The model is called with :func:`torch.func.functional_call`, so its own
parameters are never written. Batches are materialised once on the model's
device; inside a call everything stays on the device and there is exactly one
host transfer (all losses and outputs together), no per-batch ``.item()``.
Runs under ``torch.inference_mode``; the caller sets eval mode
(:func:`landscape.params.evaluation_mode`).
"""
from __future__ import annotations

import contextlib
from typing import Iterable, Mapping

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from ..batches import Batch, Criterion, batch_weights, materialize, model_device
from ..errors import LandscapeError
from ..metrics import plcc, srcc
from .hashing import hash_batches

METRICS = ("loss", "srcc", "plcc")


def callable_name(fn) -> str:
    """Stable name of a criterion for keys: ``repr`` of a module, ``module.qualname`` of a function."""
    if isinstance(fn, nn.Module):
        return repr(fn)
    mod = getattr(fn, "__module__", None) or type(fn).__module__
    qual = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{mod}.{qual}"


class Evaluator:
    """Evaluates ``criterion`` and SRCC/PLCC of ``model`` at given parameters on named sets.

    ``subset_keys`` names each set's content for result keys (e.g.
    :func:`landscape.provenance.hash_indices` of the subset); when missing, the
    content itself is hashed. ``amp_dtype`` (e.g. ``torch.bfloat16``) runs the
    forward pass under autocast; losses are accumulated in float32 or wider.
    """

    def __init__(self, model: nn.Module, criterion: Criterion, eval_sets: Mapping[str, Iterable[Batch]],
                 subset_keys: Mapping[str, str] | None = None, amp_dtype: torch.dtype | None = None):
        if not eval_sets:
            raise LandscapeError("no evaluation sets given (expected e.g. {'train': batches, 'test': batches})")
        self.model = model
        self.criterion = criterion
        self.device = model_device(model)
        self.amp_dtype = amp_dtype
        self.sets: dict[str, list[Batch]] = {}
        self.weights: dict[str, list[float]] = {}
        self.targets: dict[str, np.ndarray] = {}
        self.keys: dict[str, str] = {}
        for name, batches in eval_sets.items():
            if not name or "_" in name or "/" in name:
                raise LandscapeError(f"evaluation set name '{name}': must be non-empty without '_' or '/'")
            mat = materialize(batches, self.device)
            for i, (x, y) in enumerate(mat):
                if y.numel() != x.shape[0]:
                    raise LandscapeError(f"set '{name}' batch {i}: {y.numel()} targets for {x.shape[0]} images; "
                                         "expected one score per image")
            self.sets[name] = mat
            self.weights[name] = batch_weights(mat)
            self.targets[name] = torch.cat([y.reshape(-1) for _, y in mat]).double().cpu().numpy()
            key = (subset_keys or {}).get(name)
            self.keys[name] = key if key is not None else hash_batches(mat)
        self.n_images = {name: int(t.size) for name, t in self.targets.items()}

    @property
    def metric_names(self) -> list[str]:
        """``<set>_<metric>`` for every set and metric, e.g. ``train_loss``, ``test_srcc``."""
        return [f"{s}_{m}" for s in self.sets for m in METRICS]

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def __call__(self, tensors: Mapping[str, torch.Tensor] | None = None) -> dict[str, float]:
        """Metrics with the named parameters/buffers replaced by ``tensors`` (None: the model as is)."""
        losses, outputs = [], []
        with torch.inference_mode():
            for name, batches in self.sets.items():
                total = None
                for (x, y), w in zip(batches, self.weights[name]):
                    with self._autocast():
                        out = self.model(x) if tensors is None else functional_call(self.model, tensors, (x,),
                                                                                    strict=False)
                    if out.numel() != x.shape[0]:
                        raise LandscapeError(f"model output shape {tuple(out.shape)} for {x.shape[0]} images: "
                                             "expected one score per image ([B] or [B, 1])")
                    if self.amp_dtype is not None:
                        out = out.float()
                    term = self.criterion(out, y) * w
                    total = term if total is None else total + term
                    outputs.append(out.reshape(-1))
                losses.append(total.reshape(1))
            host = torch.cat([t.double() for t in losses + outputs]).cpu().numpy()
        result: dict[str, float] = {}
        offset = len(losses)
        for k, name in enumerate(self.sets):
            n = self.n_images[name]
            pred = host[offset:offset + n]
            offset += n
            result[f"{name}_loss"] = float(host[k])
            ok = bool(np.isfinite(pred).all())  # far from the minimum outputs can overflow
            result[f"{name}_srcc"] = srcc(pred, self.targets[name]) if ok else float("nan")
            result[f"{name}_plcc"] = plcc(pred, self.targets[name]) if ok else float("nan")
        return result
