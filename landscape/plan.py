"""Batch-size planner: measured speed, memory, OOM frontier and critical batch size.

For each candidate batch size B the exact training step of the trainer (same data
pipeline, patches, loss, accumulation, AMP) runs ``warmup`` + ``steps`` times and
reports:

- samples/s per measured step (mean, std) and the predicted epoch time
  ``T_epoch = n_train_images * train_patches / (samples/s)`` (seconds) with its spread
  (from the fastest and slowest measured steps);
- peak memory (CUDA max allocated on GPU, process peak RSS on CPU) and whether B fits
  under ``memory_limit``; the memory model ``peak(B) = fixed + per_sample * B`` fitted by
  least squares over the sizes that ran, with its RMS residual;
- on GPU the largest batch that fits, by bisection over B that catches out-of-memory
  and frees memory between tries;
- for sizes that do not fit: the accumulation plan micro-batch x K (smallest K whose
  micro-batch fits and divides B) with its measured speed;
- the LR of each rule (none, linear, sqrt) relative to the reference batch;
- the gradient noise scale B_simple at the initial (or given) weights and where each B
  sits relative to it: B < B_simple/2 "below" (more batch still buys speed per step),
  B > 2 B_simple "far above" (diminishing returns), else "near".
"""
from __future__ import annotations

import gc
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .errors import LandscapeError


def is_oom(error: BaseException) -> bool:
    """True for CUDA/CPU out-of-memory errors (and injected ``MemoryError`` in tests)."""
    if isinstance(error, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def free_memory(device: torch.device | str | None = None) -> None:
    gc.collect()
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.empty_cache()


def epoch_seconds(n_images: int, patches_per_image: int, samples_per_s: float) -> float:
    """Predicted epoch time: ``n_images * patches_per_image / samples_per_s`` seconds."""
    if samples_per_s <= 0:
        raise LandscapeError(f"samples/s must be > 0, got {samples_per_s}")
    return n_images * patches_per_image / samples_per_s


@dataclass(frozen=True)
class MemoryModel:
    """``peak(B) = fixed + per_sample * B`` (bytes); ``residual_rms`` in bytes."""

    fixed: float
    per_sample: float
    residual_rms: float
    n_points: int

    def predict(self, batch_size: float) -> float:
        return self.fixed + self.per_sample * batch_size

    def largest_batch(self, limit: float) -> int:
        """Largest B with predicted peak <= limit (0 if even B = 1 does not fit)."""
        if self.per_sample <= 0:
            return 0 if self.fixed > limit else 2 ** 31 - 1
        return max(0, int(math.floor((limit - self.fixed) / self.per_sample)))


def fit_memory_model(batch_sizes: Sequence[float], peaks: Sequence[float]) -> MemoryModel:
    """Least-squares line through (B, peak); needs two distinct batch sizes."""
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
    """Largest B in [low, high] with ``fits(B)`` true, by doubling then bisection.

    ``fits`` runs a real step; an out-of-memory error counts as "does not fit" and
    memory is freed after every try. Returns ``(B, tries)``; B = 0 if ``low`` fails.
    Assumes monotonicity (if B fits, every smaller B fits).
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
    """Smallest K with ``batch_size % K == 0`` and ``batch_size / K <= max_fitting``: (micro, K)."""
    if max_fitting < 1:
        return None
    for k in range(1, batch_size + 1):
        if batch_size % k == 0 and batch_size // k <= max_fitting:
            return batch_size // k, k
    return None


def noise_scale_position(batch_size: float, b_simple: float) -> str:
    """``below`` (B < B_simple / 2), ``near``, or ``far above`` (B > 2 B_simple)."""
    if not math.isfinite(b_simple) or b_simple <= 0:
        return "unknown"
    if batch_size < b_simple / 2:
        return "below"
    if batch_size > 2 * b_simple:
        return "far above"
    return "near"


@dataclass
class BatchMeasurement:
    batch_size: int
    micro_batch: int
    accumulate: int
    fits: bool
    samples_per_s: float = float("nan")
    samples_per_s_std: float = float("nan")
    step_times_s: list[float] = field(default_factory=list)
    epoch_time_s: float = float("nan")
    epoch_time_range_s: tuple[float, float] = (float("nan"), float("nan"))
    peak_memory_bytes: int = 0
    lr: dict[str, float] = field(default_factory=dict)
    noise_position: str = "unknown"
    error: str = ""

    def as_row(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("step_times_s")
        lo, hi = d.pop("epoch_time_range_s")
        d["epoch_time_min_s"], d["epoch_time_max_s"] = lo, hi
        for rule, value in d.pop("lr").items():
            d[f"lr_{rule}"] = value
        return d


def measure_training_step(step_fn: Callable[[], None], *, steps: int, warmup: int,
                          synchronize: Callable[[], None] = lambda: None) -> list[float]:
    """Wall time of ``steps`` calls of ``step_fn`` after ``warmup`` untimed calls (seconds each)."""
    import time

    if steps < 1:
        raise LandscapeError(f"--steps must be >= 1, got {steps}")
    for _ in range(warmup):
        step_fn()
    synchronize()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step_fn()
        synchronize()
        times.append(time.perf_counter() - t0)
    return times


def summarize_speed(m: BatchMeasurement, n_images: int, patches: int) -> BatchMeasurement:
    """Fill samples/s (mean, std over steps) and the epoch-time prediction with its range."""
    rates = np.array([m.batch_size / t for t in m.step_times_s])
    m.samples_per_s = float(rates.mean())
    m.samples_per_s_std = float(rates.std(ddof=1)) if rates.size > 1 else 0.0
    m.epoch_time_s = epoch_seconds(n_images, patches, m.samples_per_s)
    m.epoch_time_range_s = (epoch_seconds(n_images, patches, float(rates.max())),
                            epoch_seconds(n_images, patches, float(rates.min())))
    return m
