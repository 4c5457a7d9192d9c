"""Loss, SRCC and PLCC of a model at given parameter values, on named evaluation sets.

For each set ``s`` (e.g. ``{"train": batches, "test": batches}``) and parameters
``theta`` the evaluator returns

- ``s_loss = sum_b (n_b / N) * criterion(f(x_b; theta), y_b)`` (size-weighted mean),
- ``s_srcc``, ``s_plcc``: Spearman / Pearson correlation between the model's
  per-image outputs (shape ``[B]`` or ``[B, 1]``) and the per-image targets.

Eagerly, the perturbed values are written into the model's own parameters for the
forward pass and restored bit-for-bit right after it (:class:`landscape.params.TensorSwap`:
three copies per cell, cheaper than re-binding every module's tensors with
:func:`torch.func.functional_call`, which cost about a quarter of a 16-sample cell on the micro
Swin); the compiled forward takes the values as inputs of
``functional_call(model, tensors, x)`` and never writes the model. Batches are materialised once on the model's
device; inside a call everything stays on the device and there is exactly one
host transfer (all losses and outputs together), no per-batch ``.item()``.
Runs under ``torch.inference_mode``; the caller sets eval mode
(:func:`landscape.params.evaluation_mode`).

``compile``: the perturbed forward pass ``functional_call(model, tensors, x)`` can run through
:func:`torch.compile` (same graph for every cell: tensors change, shapes do not), which
fuses the elementwise work around the matrix products and, on CPU, drives the kernels from
generated C++ (``cpp_wrapper``): about 1.6x on the micro Swin on 2 CPU cores, after up to a
minute of compilation (seconds when torch's compile cache already holds the graph).
``'off'``: eager. ``'on'``: compile at the first perturbed call. ``'auto'`` (default): time
the first eager cell and compile when the cells still to do would take longer than :data:`AUTO_COMPILE_SECONDS` eagerly. The first compiled cell is also
evaluated eagerly and compared (``rtol`` :data:`COMPILE_RTOL` on the outputs); a mismatch or a
compiler error falls back to eager with a warning. What was used is in :attr:`Evaluator.forward_info`.
"""
from __future__ import annotations

import contextlib
import time
import warnings
from typing import Any, Iterable, Mapping

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from landscape.batches import Batch, Criterion, batch_weights, materialize, model_device
from landscape.errors import LandscapeError, check_choice
from landscape.metrics import plcc, srcc
from landscape.params import TensorSwap
from landscape.provenance import hash_batches

METRICS = ("loss", "srcc", "plcc")
COMPILE_MODES = ("auto", "on", "off")
AUTO_COMPILE_SECONDS = 300.0
COMPILE_RTOL = 1e-3


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
                 subset_keys: Mapping[str, str] | None = None, amp_dtype: torch.dtype | None = None,
                 compile: str = "auto"):
        if not eval_sets:
            raise LandscapeError("no evaluation sets given (expected e.g. {'train': batches, 'test': batches})")
        check_choice("compile", compile, COMPILE_MODES)
        self.compile = compile
        self._compiled: Any = None          # the compiled forward once active
        self._check_next = False            # compare the next compiled call with eager
        self._cells_left = 0
        self.forward_info: dict[str, Any] = {"compile": compile, "eager_calls": 0, "compiled_calls": 0,
                                             "compile_seconds": None, "fallback": None}
        self._swap: TensorSwap | None = None  # eager: values written into the model, restored
        self._swap_names: tuple[str, ...] | None = None
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

    def expect_cells(self, n: int) -> None:
        """Tell the evaluator how many perturbed calls follow (for ``compile='auto'``/``'on'``)."""
        self._cells_left = int(n)
        if self.compile == "on" and n > 0:
            self._start_compiling()

    def _functional(self, tensors: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, tensors, (x,), strict=False)

    def _start_compiling(self) -> None:
        if self._compiled is None and self.forward_info["fallback"] is None:
            # on CPU a C++ wrapper around the generated kernels saves ~10 ms of Python per call
            options = {"cpp_wrapper": True} if self.device.type == "cpu" else None
            self._compiled = torch.compile(self._functional, options=options)
            self._check_next = True

    def _fall_back(self, why: str) -> None:
        warnings.warn(f"torch.compile of the forward pass disabled, running eagerly: {why}", RuntimeWarning,
                      stacklevel=3)
        self._compiled, self._check_next = None, False
        self.forward_info["fallback"] = why

    def _swap_for(self, tensors: Mapping[str, torch.Tensor]) -> TensorSwap | None:
        """The in-place swap for these names, or None where only ``functional_call`` fits."""
        names = tuple(tensors)
        if self._swap_names != names:
            self._swap_names = names
            self._swap = TensorSwap(self.model, names) if TensorSwap.supports(self.model, tensors) else None
        return self._swap

    def _forward_all(self, tensors: Mapping[str, torch.Tensor] | None, compiled: bool) -> list[torch.Tensor]:
        if tensors is not None and not compiled:
            swap = self._swap_for(tensors)
            if swap is not None:
                with swap.holding(tensors.values()):
                    return self._forward_all(None, compiled=False)
        fn = self._compiled if compiled else self._functional
        outs = []
        for batches in self.sets.values():
            for x, _ in batches:
                with self._autocast():
                    outs.append(self.model(x) if tensors is None else fn(tensors, x))
        return outs

    def _outputs(self, tensors: Mapping[str, torch.Tensor] | None) -> list[torch.Tensor]:
        """Model outputs for every batch of every set, eager or compiled (see module docstring)."""
        if tensors is not None and self._compiled is not None:
            t0 = time.perf_counter()
            try:
                outs = self._forward_all(tensors, compiled=True)
            except Exception as e:  # noqa: BLE001 - any compiler failure: run eagerly instead
                self._fall_back(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            else:
                if self._check_next:
                    self._check_next = False
                    self.forward_info["compile_seconds"] = time.perf_counter() - t0
                    eager = self._forward_all(tensors, compiled=False)
                    bad = [i for i, (a, b) in enumerate(zip(outs, eager))
                           if a.shape != b.shape or not torch.allclose(
                               a.float(), b.float(), rtol=COMPILE_RTOL, equal_nan=True,
                               atol=COMPILE_RTOL * float(b.float().nan_to_num(0.0, 0.0, 0.0).abs().max()))]
                    if bad:
                        self._fall_back(f"compiled outputs differ from eager ones (batch {bad[0]})")
                        self.forward_info["eager_calls"] += 1
                        return eager
                self.forward_info["compiled_calls"] += 1
                return outs
        t0 = time.perf_counter()
        outs = self._forward_all(tensors, compiled=False)
        if tensors is not None:
            self.forward_info["eager_calls"] += 1
            self._cells_left -= 1
            if (self.compile == "auto" and self._compiled is None and self.forward_info["fallback"] is None
                    and self._cells_left * (time.perf_counter() - t0) > AUTO_COMPILE_SECONDS):
                self._start_compiling()
        return outs

    def __call__(self, tensors: Mapping[str, torch.Tensor] | None = None) -> dict[str, float]:
        """Metrics with the named parameters/buffers replaced by ``tensors`` (None: the model as is)."""
        losses, outputs = [], []
        with torch.inference_mode():
            model_outputs = iter(self._outputs(tensors))
            for name, batches in self.sets.items():
                total = None
                for (x, y), w in zip(batches, self.weights[name]):
                    out = next(model_outputs)
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
