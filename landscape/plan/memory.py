"""Planner arithmetic: the memory model, the OOM frontier, accumulation plans, epoch time.

- Memory model: ``peak(b) = fixed + per_sample * b`` (bytes, b = micro-batch), fitted by
  least squares through measured ``(b, peak)`` points, with its RMS residual; the largest
  micro-batch under a limit L is ``floor((L - fixed) / per_sample)``.
- Largest fitting micro-batch on a real device: doubling from ``low`` until a step runs
  out of memory, then bisection between the last fitting and the first failing size
  (about ``2 log2(high / low)`` tries; assumes that if B fits, every smaller B fits).
- Accumulation plan for an effective batch B that does not fit: the smallest K dividing B
  with ``B / K <=`` the largest fitting micro-batch, run as micro-batch ``B / K`` x K.
- Epoch time: ``n_images * patches_per_image / samples_per_s`` seconds.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from landscape.device import free_memory, is_oom
from landscape.errors import LandscapeError


def epoch_seconds(n_images: int, patches_per_image: int, samples_per_s: float) -> float:
    """Predicted epoch time: ``n_images * patches_per_image / samples_per_s`` seconds."""
    if not samples_per_s > 0:
        raise LandscapeError(f"samples/s must be > 0, got {samples_per_s}")
    return n_images * patches_per_image / samples_per_s


@dataclass(frozen=True)
class MemoryModel:
    """``peak(b) = fixed + per_sample * b`` (bytes, b = micro-batch); ``residual_rms`` in bytes."""

    fixed: float
    per_sample: float
    residual_rms: float
    n_points: int

    def predict(self, batch_size: float) -> float:
        """Predicted peak bytes at micro-batch ``batch_size``."""
        return self.fixed + self.per_sample * batch_size

    def largest_batch(self, limit: float) -> int:
        """Largest b with predicted peak <= limit (0 if even b = 1 does not fit)."""
        if self.per_sample <= 0:
            return 0 if self.fixed + self.per_sample > limit else 2 ** 31 - 1
        # a relative 1e-9 guards against floor(69.99999999) from rounding in the least-squares fit
        return max(0, int(math.floor((limit - self.fixed) / self.per_sample * (1 + 1e-9))))


def fit_memory_model(batch_sizes: Sequence[float], peaks: Sequence[float]) -> MemoryModel:
    """Least-squares line through (b, peak); needs two distinct batch sizes."""
    b = np.asarray(batch_sizes, dtype=np.float64)
    p = np.asarray(peaks, dtype=np.float64)
    if b.size < 2 or np.unique(b).size < 2:
        raise LandscapeError("the memory model needs peaks at two or more distinct batch sizes")
    A = np.stack([np.ones_like(b), b], axis=1)
    coef, *_ = np.linalg.lstsq(A, p, rcond=None)
    resid = p - A @ coef
    return MemoryModel(float(coef[0]), float(coef[1]), float(np.sqrt(np.mean(resid ** 2))), int(b.size))


def largest_fitting_batch(fits: Callable[[int], bool], low: int, high: int,
                          device: torch.device | str | None = None) -> tuple[int, list[tuple[int, bool]]]:
    """Largest B in [low, high] with ``fits(B)`` true, by doubling from ``low`` then bisection.

    ``fits`` runs a real step; an out-of-memory error (:func:`landscape.device.is_oom`)
    counts as "does not fit", any other error propagates; memory is freed after every try.
    Returns ``(B, tries)`` with tries ``[(B, fits), ...]`` in order; B = 0 if ``low`` fails,
    B = ``high`` if it fits (a lower bound). Assumes monotonicity (if B fits, smaller B fit).
    """
    if low < 1 or high < low:
        raise LandscapeError(f"invalid batch range [{low}, {high}]")
    tries: list[tuple[int, bool]] = []

    def attempt(b: int) -> bool:
        try:
            ok = bool(fits(b))
        except Exception as e:  # noqa: BLE001 - only OOM is tolerated, the rest re-raised
            if not is_oom(e):
                raise
            ok = False
        finally:
            free_memory(device)
        tries.append((b, ok))
        return ok

    if not attempt(low):
        return 0, tries
    good, bad = low, None
    probe = low
    while bad is None and probe < high:
        probe = min(high, probe * 2)
        if attempt(probe):
            good = probe
        else:
            bad = probe
    if bad is None:
        return good, tries
    while bad - good > 1:
        mid = (good + bad) // 2
        if attempt(mid):
            good = mid
        else:
            bad = mid
    return good, tries


def accumulation_plan(batch_size: int, max_fitting: int) -> tuple[int, int] | None:
    """``(micro, K)`` with the smallest K such that K divides B and ``B / K <= max_fitting``."""
    if max_fitting < 1:
        return None
    for k in range(1, batch_size + 1):
        if batch_size % k == 0 and batch_size // k <= max_fitting:
            return batch_size // k, k
    return None


__all__ = ["MemoryModel", "fit_memory_model", "largest_fitting_batch", "accumulation_plan", "epoch_seconds"]
