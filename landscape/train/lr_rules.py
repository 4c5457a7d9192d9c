"""Learning-rate scaling rules: the LR of a run from a reference batch size.

``none``: lr(B) = lr_ref; ``linear``: lr(B) = lr_ref * B / B_ref (Goyal et al. 2017);
``sqrt``: lr(B) = lr_ref * sqrt(B / B_ref) (Krizhevsky 2014; Hoffer et al. 2017).
B is the *effective* (global) batch: micro-batch x accumulation x world size.
Example: sqrt scales 5e-6 at B_ref = 32 to 5e-6 * sqrt(48/32) = 6.12e-6 at B = 48.
"""
from __future__ import annotations

import math

from landscape.errors import LandscapeError

RULES = ("none", "linear", "sqrt")


def scaled_lr(lr: float, batch_size: int, reference_batch: int, rule: str) -> float:
    """Learning rate for ``batch_size`` under ``rule`` given ``lr`` at ``reference_batch``."""
    if rule not in RULES:
        raise LandscapeError(f"unknown --lr-scaling '{rule}' (valid: {', '.join(RULES)})")
    if lr <= 0:
        raise LandscapeError(f"--lr must be > 0, got {lr}")
    if batch_size < 1 or reference_batch < 1:
        raise LandscapeError(f"batch sizes must be >= 1 (got {batch_size}, reference {reference_batch})")
    ratio = batch_size / reference_batch
    return lr * {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[rule]


def all_rules(lr: float, batch_size: int, reference_batch: int) -> dict[str, float]:
    """The learning rate each rule gives, for tables."""
    return {rule: scaled_lr(lr, batch_size, reference_batch, rule) for rule in RULES}
