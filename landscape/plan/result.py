"""What the batch-size planner measured: per-step timings, speed statistics, one row per B, the plan.

Speed of one setting (B effective batch, micro-batch ``B / K`` with K accumulation steps,
``n`` timed steps of ``t_s`` seconds each, data loading included):

- ``samples/s = B / mean(t)``, with the std (ddof=1) of the per-step rates ``B / t_s``;
- epoch training-pass time ``T = N_patches * mean(t) / B`` seconds (evaluation excluded),
  its standard error ``N_patches * std(t) / (B sqrt(n))`` and range
  ``N_patches * (min t, max t) / B``;
- ``data_fraction = sum(data time) / sum(t)``.

Memory in bytes, times in seconds. ``plan.json`` holds :meth:`PlanResult.as_dict` (NaN
and inf stored as null) under ``kind = "landscape-plan"``; :func:`read_plan` reads it back.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from landscape.errors import LandscapeError
from landscape.plan.memory import MemoryModel
from landscape.sharpness.noise_scale import NoiseScaleResult
from landscape.store import read_json

PLAN_KIND = "landscape-plan"


@dataclass(frozen=True)
class StepTiming:
    """Raw measurement of one (B, K): wall seconds per timed step (data included), the data
    part of each, and the peak memory over warm-up + timed steps (bytes)."""

    step_times_s: list[float]
    data_times_s: list[float]
    peak_memory_bytes: int


@dataclass(frozen=True)
class SpeedStats:
    """Speed and memory of one (B, micro x K) setting (formulas in the module docstring)."""

    batch_size: int
    micro_batch: int
    accumulate: int
    samples_per_s: float
    samples_per_s_std: float
    epoch_time_s: float
    epoch_time_se_s: float
    epoch_time_min_s: float
    epoch_time_max_s: float
    data_fraction: float
    peak_memory_bytes: int
    step_times_s: list[float] = field(default_factory=list)
    data_times_s: list[float] = field(default_factory=list)


def speed_stats(timing: StepTiming, batch_size: int, accumulate: int, n_patches: int) -> SpeedStats:
    """``samples/s = B / mean(t)``, epoch ``T = n_patches * mean(t) / B`` with SE and range."""
    t = np.asarray(timing.step_times_s, dtype=np.float64)
    if t.size == 0 or np.any(~(t > 0)):
        raise LandscapeError(f"batch size {batch_size}: step times must be > 0, got {timing.step_times_s}")
    per_sample = n_patches / batch_size
    rates = batch_size / t
    se = float(t.std(ddof=1) / math.sqrt(t.size)) if t.size > 1 else float("nan")
    return SpeedStats(
        batch_size=batch_size, micro_batch=batch_size // accumulate, accumulate=accumulate,
        samples_per_s=float(batch_size / t.mean()),
        samples_per_s_std=float(rates.std(ddof=1)) if t.size > 1 else float("nan"),
        epoch_time_s=float(per_sample * t.mean()), epoch_time_se_s=per_sample * se,
        epoch_time_min_s=float(per_sample * t.min()), epoch_time_max_s=float(per_sample * t.max()),
        data_fraction=float(np.sum(timing.data_times_s) / t.sum()) if timing.data_times_s else float("nan"),
        peak_memory_bytes=int(timing.peak_memory_bytes),
        step_times_s=[float(v) for v in t], data_times_s=[float(v) for v in timing.data_times_s])


@dataclass(frozen=True)
class PlanRow:
    """One candidate B: the direct measurement (at the configured accumulation), the
    accumulation plan when B does not fit, the LR per rule, and B relative to B_simple."""

    batch_size: int
    fits: bool
    note: str
    direct: SpeedStats | None
    accumulated: SpeedStats | None
    lr: dict[str, float]
    b_over_b_simple: float = float("nan")
    noise_position: str = "unknown"
    outlier: bool = False            # its timing stayed far off its neighbours' after one re-measurement

    @property
    def best(self) -> SpeedStats | None:
        """The setting to train with: direct if it fits, else the accumulation plan."""
        return self.direct if self.fits else self.accumulated


@dataclass(frozen=True)
class PlanResult:
    """Everything ``landscape plan`` measured (memory in bytes, times in seconds)."""

    rows: list[PlanRow]
    device: str
    device_name: str
    memory_kind: str
    memory_limit_bytes: int
    memory_limit_source: str
    memory_model: MemoryModel | None
    max_micro_batch: int | None
    max_micro_source: str            # bisection | memory model | measured | none
    max_micro_lower_bound: bool      # the search reached its upper end without failing
    search_tries: list[tuple[int, bool]]
    noise: NoiseScaleResult | None
    noise_settings: dict[str, Any]
    n_train_images: int
    train_patches: int
    steps: int
    warmup: int
    amp: bool
    accumulate: int
    lr: float
    reference_batch: int
    provenance: dict[str, Any] = field(default_factory=dict)

    @property
    def n_train_patches(self) -> int:
        return self.n_train_images * self.train_patches

    def as_dict(self) -> dict[str, Any]:
        """Strict-JSON dict of every field (NaN/inf -> None, tuples -> lists)."""
        return jsonable(asdict(self))


def jsonable(obj: Any) -> Any:
    """NaN/inf -> None and tuples -> lists, so the JSON is strict."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


OUTLIER_FACTOR = 3.0   # a throughput below 1/3 or above 3x its neighbours' prediction is far off


def off_neighbours(sizes: Sequence[int], rates: Sequence[float], factor: float = OUTLIER_FACTOR) -> list[float]:
    """Per point, ``rate / predicted`` when it is outside ``[1/factor, factor]``, else NaN.

    The prediction is the line through the two nearest other points in ``(log B, log samples/s)``
    (interpolated between the neighbours; extrapolated from the two nearest at an end): throughput
    follows a power of B over a few sizes (``B / (a + c B)``), so for evenly spaced log B an
    interior point is compared with the geometric mean of its neighbours' throughputs. A step of
    3x between neighbouring sizes is far outside what the measured sizes do (a contaminated timing,
    e.g. another process on the cores). Robustness: of the points beyond the factor, the one whose
    removal leaves the others most consistent is flagged first, then the rest are judged again
    without it, so one bad timing does not make its neighbours look off (nor an end, whose
    extrapolation it enters); fewer than 3 points are never judged.
    """
    out = [float("nan")] * len(sizes)
    lb, lr = [math.log(b) for b in sizes], [math.log(r) for r in rates]
    limit = math.log(factor)

    def devs(active: list[int]) -> dict[int, float]:
        d, m = {}, len(active)
        for pos, i in enumerate(active):
            a, b = (pos - 1, pos + 1) if 0 < pos < m - 1 else ((1, 2) if pos == 0 else (m - 3, m - 2))
            j, k = active[a], active[b]
            d[i] = lr[i] - (lr[j] + (lr[k] - lr[j]) * (lb[i] - lb[j]) / (lb[k] - lb[j]))
        return d

    def worst_after(active: list[int], i: int) -> float:
        rest = [a for a in active if a != i]
        return max(abs(v) for v in devs(rest).values()) if len(rest) >= 3 else 0.0

    active = list(range(len(sizes)))
    while len(active) >= 3:
        d = devs(active)
        far = [i for i in active if abs(d[i]) > limit]
        if not far:
            break
        pick = min(far, key=lambda i: (round(worst_after(active, i), 9), -abs(d[i])))
        out[pick] = math.exp(d[pick])
        active.remove(pick)
    return out


def timing_from_dict(d: dict) -> StepTiming:
    """Inverse of ``asdict(StepTiming)`` (a stored measurement part)."""
    return StepTiming(list(d["step_times_s"]), list(d["data_times_s"]), int(d["peak_memory_bytes"]))


_NAN_FIELDS = ("b_simple", "b_simple_se", "g2", "g2_se", "trace_sigma", "trace_sigma_se")


def noise_from_dict(d: dict) -> NoiseScaleResult:
    """Inverse of ``jsonable(asdict(NoiseScaleResult))``: the nulls of NaN estimates become NaN again."""
    d = {k: (float("nan") if v is None and k in _NAN_FIELDS else v) for k, v in d.items()}
    d["b_simple_ci"] = [float("nan") if v is None else v for v in d["b_simple_ci"]]
    return NoiseScaleResult(**d)


def read_plan(path: str | Path) -> dict[str, Any]:
    """``plan.json`` of a plan folder (or the file itself) as a dict, for reports."""
    path = Path(path)
    data = read_json(path / "plan.json" if path.is_dir() else path)
    if data.get("kind") != PLAN_KIND:
        raise LandscapeError(f"{path}: not a landscape plan (kind={data.get('kind')!r})")
    return data


__all__ = ["StepTiming", "SpeedStats", "PlanRow", "PlanResult", "speed_stats", "read_plan", "jsonable",
           "timing_from_dict", "noise_from_dict", "off_neighbours", "PLAN_KIND"]
