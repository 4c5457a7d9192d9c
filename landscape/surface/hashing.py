"""Content hashes that key landscape results: checkpoints and evaluation data.

``state_hash`` is :func:`landscape.provenance.hash_state` with 0-d tensors viewed
as 1-element vectors first (``hash_state`` cannot byte-view a 0-d non-byte tensor
such as BatchNorm's ``num_batches_tracked``).
"""
from __future__ import annotations

from typing import Iterable, Mapping

import torch

from landscape.batches import Batch
from landscape import provenance
from landscape.provenance import hash_state


def state_hash(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict (keys, dtypes, shapes, bytes); 0-d tensors count as shape (1,)."""
    return hash_state({k: (v.reshape(1) if v.dim() == 0 else v) for k, v in state.items()})


def hash_batches(batches: Iterable[Batch]) -> str:
    """SHA-256 of the batches' inputs and targets (order, shapes, dtypes and bytes)."""
    return provenance.hash_batches((x.reshape(1) if x.dim() == 0 else x, y.reshape(1) if y.dim() == 0 else y)
                                   for x, y in batches)
