"""Parameters as flat vectors, and guards that leave the user's model as it was.

Conventions used by every analyzer:
- ``trainable_parameters(model)`` lists ``(name, tensor)`` with ``requires_grad``, in
  ``named_parameters`` order; flat vectors follow that order.
- ``evaluation_mode(model, train=False)`` sets the mode for the analysis and
  restores every submodule's own flag afterwards; the mode used is returned so
  it can be recorded.
- ``preserved_parameters(model)`` restores the exact parameter values (bitwise)
  on exit, for code that must write into the parameters.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
from torch import nn

from landscape.errors import LandscapeError, NumericsError


def trainable_parameters(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """``(name, parameter)`` pairs with ``requires_grad``; error if there are none."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not named:
        raise LandscapeError("model has no trainable parameters (all requires_grad=False)")
    return named


def flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate tensors into one 1-D vector (same dtype/device as the first)."""
    return torch.cat([t.reshape(-1) for t in tensors])


def unflatten(vector: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Split a flat vector into views shaped like ``like``."""
    total = sum(t.numel() for t in like)
    if vector.numel() != total:
        raise LandscapeError(f"vector has {vector.numel()} entries, parameters have {total}")
    out, offset = [], 0
    for t in like:
        out.append(vector[offset:offset + t.numel()].view_as(t))
        offset += t.numel()
    return out


def check_finite_parameters(model: nn.Module, where: str = "model") -> None:
    """Refuse a model with NaN or infinite weights, naming the first bad tensor."""
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise NumericsError(f"{where}: parameter '{name}' holds NaN or infinite values")


@contextlib.contextmanager
def evaluation_mode(model: nn.Module, train: bool = False) -> Iterator[str]:
    """Put ``model`` in eval (default) or train mode; restore each submodule's flag.

    Yields the mode name (``"eval"`` or ``"train"``) for provenance. In eval mode
    BatchNorm uses its running statistics and dropout is off.
    """
    saved = [(m, m.training) for m in model.modules()]
    model.train(train)
    try:
        yield "train" if train else "eval"
    finally:
        for m, flag in saved:
            m.training = flag


@contextlib.contextmanager
def preserved_parameters(model: nn.Module) -> Iterator[None]:
    """Restore every parameter and buffer bit-for-bit on exit (also on error)."""
    saved = {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
    try:
        yield
    finally:
        with torch.no_grad():
            for k, v in model.state_dict(keep_vars=True).items():
                v.copy_(saved[k])


def named_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer of ``model`` by name, aliases of shared tensors included."""
    return {**dict(model.named_parameters(remove_duplicate=False)),
            **dict(model.named_buffers(remove_duplicate=False))}


class TensorSwap:
    """Run ``model`` with some of its parameters/buffers set to other values, in place, restored.

    ``TensorSwap(model, names)`` resolves ``names`` (parameter or buffer names, aliases of
    tied weights included) to the model's own tensors once. ``with swap.holding(values):``
    copies the current contents of those tensors into a preallocated snapshot, writes
    ``values`` (same order, shapes and dtypes) into them, and on exit (also on error or
    interrupt) copies the snapshot back: the model is bit-for-bit as before. Per use this is
    three copies of the swapped tensors and no allocation, and the forward pass inside is
    the model's own ``model(x)``: cheaper than :func:`torch.func.functional_call`, whose
    per-call re-binding of every module's tensors costs about 3 ms on a 136k-parameter Swin
    (``bench/surface_vs_loss_landscapes.py``). Not for concurrent use of the same model.

    ``TensorSwap.supports(model, tensors)`` says whether every name is the model's and every
    value matches its tensor's shape, dtype and device (otherwise use ``functional_call``).
    """

    def __init__(self, model: nn.Module, names: Sequence[str]):
        own = named_tensors(model)
        missing = [n for n in names if n not in own]
        if missing:
            raise LandscapeError(f"model has no parameter or buffer named '{missing[0]}'")
        self.names = tuple(names)
        self.targets = [own[n] for n in names]
        with torch.inference_mode(False), torch.no_grad():   # a normal tensor, writable outside inference mode
            self.snapshot = [t.detach().clone() for t in self.targets]

    @staticmethod
    def supports(model: nn.Module, tensors: dict[str, torch.Tensor]) -> bool:
        own = named_tensors(model)
        return all(n in own and own[n].shape == t.shape and own[n].dtype == t.dtype and own[n].device == t.device
                   for n, t in tensors.items())

    @contextlib.contextmanager
    def holding(self, values: Sequence[torch.Tensor]) -> Iterator[None]:
        values = list(values)
        if len(values) != len(self.targets):
            raise LandscapeError(f"{len(values)} values for {len(self.targets)} swapped tensors")
        with torch.inference_mode(False), torch.no_grad():
            torch._foreach_copy_(self.snapshot, self.targets)
            try:
                torch._foreach_copy_(self.targets, values)
            except BaseException:
                torch._foreach_copy_(self.targets, self.snapshot)
                raise
        try:
            yield
        finally:
            with torch.inference_mode(False), torch.no_grad():
                torch._foreach_copy_(self.targets, self.snapshot)
