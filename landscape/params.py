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
