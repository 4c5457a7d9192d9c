"""Per-step learning-rate schedules with linear warmup.

Multiplier m(t) at optimizer step t (T total steps, W warmup steps):
warmup ``(t + 1) / W`` for t < W; then ``cosine``: 0.5 (1 + cos(pi (t - W) / (T - W)));
``step``: gamma ** floor(epoch / step_size); ``none``: 1.
"""
from __future__ import annotations

import math

import torch


def lr_multiplier(step: int, *, total_steps: int, warmup_steps: int, kind: str,
                  steps_per_epoch: int, step_size: int = 10, gamma: float = 0.1) -> float:
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "cosine":
        span = max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup_steps) / span)))
    if kind == "step":
        return gamma ** ((step // max(1, steps_per_epoch)) // max(1, step_size))
    return 1.0


def make_scheduler(optimizer: torch.optim.Optimizer, **kwargs) -> torch.optim.lr_scheduler.LambdaLR:
    """LambdaLR over :func:`lr_multiplier` (its state_dict holds only the step count)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: lr_multiplier(t, **kwargs))
