"""Evaluation data as a fixed list of ``(inputs, targets)`` batches.

Every analyzer takes ``batches``: any iterable of ``(inputs, targets)`` tensor
pairs. ``materialize`` turns it into a list once (fixed order, so repeated passes
see the same data) on the model's device. The full-data loss of a mean-reduced
criterion is the size-weighted mean ``L = sum_b (n_b / N) * criterion(f(x_b), y_b)``.
"""
from __future__ import annotations

from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from landscape.errors import LandscapeError, NumericsError

Batch = tuple[torch.Tensor, torch.Tensor]
Criterion = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def materialize(batches: Iterable[Batch], device: torch.device | str | None = None) -> list[Batch]:
    """List of batches moved to ``device``; error if empty or malformed."""
    out: list[Batch] = []
    for i, item in enumerate(batches):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise LandscapeError(f"batch {i} is not an (inputs, targets) pair")
        x, y = item
        if device is not None:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        out.append((x, y))
    if not out:
        raise LandscapeError("no data: the batch iterable is empty")
    return out


def batch_weights(batches: Sequence[Batch]) -> list[float]:
    """``n_b / N`` for each batch (``n_b`` = first dimension of the inputs)."""
    sizes = [int(x.shape[0]) for x, _ in batches]
    total = sum(sizes)
    if total == 0:
        raise LandscapeError("no data: all batches are empty")
    return [s / total for s in sizes]


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter (CPU for a parameterless module)."""
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def dataset_loss(model: nn.Module, criterion: Criterion, batches: Sequence[Batch]) -> torch.Tensor:
    """Size-weighted mean loss over ``batches`` as a 0-d tensor (no host sync per batch).

    Runs with whatever grad mode is active, so it can be differentiated.
    """
    total = None
    for (x, y), w in zip(batches, batch_weights(batches)):
        term = criterion(model(x), y) * w
        total = term if total is None else total + term
    return total


def finite_or_raise(value: torch.Tensor | float, what: str) -> float:
    """Return ``float(value)``; raise :class:`NumericsError` naming ``what`` if not finite."""
    v = float(value)
    if v != v or v in (float("inf"), float("-inf")):
        raise NumericsError(f"{what} is {v}: the loss is not finite")
    return v
