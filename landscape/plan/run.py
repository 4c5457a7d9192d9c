"""Batch-size planner: measured speed, memory, OOM frontier and critical batch size.

For each candidate batch size B a fresh model (same seed) runs ``warmup`` + ``steps``
iterations of the trainer's own loop body (next batch of the trainer's patch pipeline
-> host-to-device copy -> :func:`landscape.train.step.train_step` with the configured
accumulation, loss and AMP setting -> device sync) and the planner reports:

- speed: per measured step ``t_s`` (seconds, data loading included, as in the trainer's
  epoch), ``samples/s = B / mean(t)`` with the std of the per-step rates ``B / t_s``;
  the training-pass time of one epoch ``T = N_patches * mean(t) / B`` (seconds,
  ``N_patches = n_train_images * train_patches``; evaluation excluded), its standard
  error ``N_patches * std(t) / (B sqrt(n))`` and range (fastest, slowest step);
- memory: peak memory (CUDA max allocated on GPU; process peak RSS on CPU, reset between
  sizes, so it includes the process baseline) and whether it is under the memory limit;
  the memory model ``peak(b) = fixed + per_sample * b`` (b = micro-batch) fitted by
  least squares with its RMS residual;
- the largest fitting micro-batch: on CUDA by doubling + bisection over real steps that
  catches out-of-memory and frees memory after every try; on CPU (where the OS kills a
  process instead of raising) predicted by the memory model, and candidates predicted
  over the limit are not run;
- for sizes that do not fit: the accumulation plan micro x K (smallest K dividing B
  with ``B / K`` <= the largest fitting micro-batch), measured the same way;
- the LR each rule gives at B (none, linear, sqrt) from ``lr`` at ``reference_batch``;
- the gradient noise scale B_simple = tr(Sigma) / |G|^2 at the initial (or a given
  checkpoint's) weights on a pool of training patches, with its bootstrap SE and CI,
  and each B's position: B < B_simple / 2 "below" (more batch still buys speed per
  step), B > 2 B_simple "far above" (diminishing returns), else "near".

Outputs (``out_dir``): ``plan.json`` (everything, with provenance), ``plan.csv`` (one row
per B), ``plan.txt`` (the terminal table), ``plan.{pdf,png,svg}`` (figure), and
``parts/*.json``: every finished measurement keyed by its inputs
(:func:`landscape.provenance.content_key`), reused by a rerun with ``resume=True``.
"""
from __future__ import annotations

import csv
import ctypes
import dataclasses
import gc
import io
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

import numpy as np
import torch

from landscape.batches import Batch, Criterion
from landscape.errors import LandscapeError, NumericsError
from landscape.provenance import content_key, provenance
from landscape.sharpness.noise_scale import NoiseScaleResult, gradient_noise_scale
from landscape.store import atomic_path, read_json, write_json

# ------------------------------------------------------------------ memory helpers


def is_oom(error: BaseException) -> bool:
    """True for CUDA/CPU out-of-memory errors (``torch.OutOfMemoryError``, ``MemoryError``,
    a RuntimeError saying "out of memory" or the CPU allocator's "can't allocate memory")."""
    if isinstance(error, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def trim_host_memory() -> None:
    """Return freed heap memory to the OS (glibc ``malloc_trim``), so peak RSS measures this step."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def free_memory(device: torch.device | str | None = None) -> None:
    """Collect garbage, empty the CUDA cache (on CUDA) and trim the host heap."""
    gc.collect()
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.empty_cache()
    trim_host_memory()


def _rss_bytes() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def default_memory_limit(device: torch.device | str) -> tuple[int, str]:
    """``(bytes, source)``: the GPU's total memory on CUDA; on CPU the memory available to this
    process now, ``current RSS + MemAvailable`` (``/proc/meminfo``; ``sysconf`` elsewhere)."""
    device = torch.device(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return int(props.total_memory), f"total memory of {props.name}"
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    if available is None:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    return _rss_bytes() + int(available), "process RSS + MemAvailable"


# ------------------------------------------------------------------ arithmetic


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

    ``fits`` runs a real step; an out-of-memory error (:func:`is_oom`) counts as "does not
    fit", any other error propagates; memory is freed after every try. Returns
    ``(B, tries)`` with tries ``[(B, fits), ...]`` in order; B = 0 if ``low`` fails, B =
    ``high`` if it fits (a lower bound). Assumes monotonicity (if B fits, smaller B fit).
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


def noise_scale_position(batch_size: float, b_simple: float) -> str:
    """``below`` (B < B_simple / 2), ``near``, or ``far above`` (B > 2 B_simple); ``unknown`` if no B_simple."""
    if not math.isfinite(b_simple) or b_simple <= 0:
        return "unknown"
    if batch_size < b_simple / 2:
        return "below"
    if batch_size > 2 * b_simple:
        return "far above"
    return "near"


def noise_position(batch_size: float, noise: NoiseScaleResult) -> str:
    """:func:`noise_scale_position` at the point estimate; when that is <= 0 because the noise
    estimate ``tr(Sigma)`` came out <= 0 while ``|G|^2 > 0`` (noise too small to resolve),
    ``far above`` if B exceeds twice the upper CI bound, else ``unknown``."""
    position = noise_scale_position(batch_size, noise.b_simple)
    if position != "unknown":
        return position
    hi = noise.b_simple_ci[1]
    if (noise.g2 > 0 and noise.trace_sigma <= 0 and hi is not None and math.isfinite(hi) and hi > 0
            and batch_size > 2 * hi):
        return "far above"
    return "unknown"


# ------------------------------------------------------------------ speed


@dataclass
class StepTiming:
    """Raw measurement of one (B, K): wall seconds per timed step (data included), the data
    part of each, and the peak memory over warm-up + timed steps (bytes)."""

    step_times_s: list[float]
    data_times_s: list[float]
    peak_memory_bytes: int


@dataclass
class SpeedStats:
    """Speed and memory of one (B, micro x K) setting (see the module docstring for formulas)."""

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


def full_batches(batches_of_epoch: Callable[[int], Iterable[Batch]], batch_size: int,
                 start_epoch: int = 0) -> Iterator[Batch]:
    """Endless batches of exactly ``batch_size`` from epochs ``start_epoch``, ``start_epoch + 1``, ...

    Batches of the right size pass through unchanged; a short batch (an epoch's last, or a
    whole epoch smaller than B) is completed with the next patches, cycling epochs.
    """
    if batch_size < 1:
        raise LandscapeError(f"batch size must be >= 1, got {batch_size}")
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    held = 0
    epoch = start_epoch
    while True:
        empty = True
        for x, y in batches_of_epoch(epoch):
            n = int(x.shape[0])
            if n == 0:
                continue
            empty = False
            if held == 0 and n == batch_size:
                yield x, y
                continue
            xs.append(x)
            ys.append(y)
            held += n
            while held >= batch_size:
                X, Y = torch.cat(xs), torch.cat(ys)
                yield X[:batch_size], Y[:batch_size]
                held -= batch_size
                xs, ys = ([X[batch_size:]], [Y[batch_size:]]) if held else ([], [])
        if empty:
            raise LandscapeError(f"the training pipeline yielded no patches in epoch {epoch}")
        epoch += 1


# ------------------------------------------------------------------ the trainer's step


class StepRunner(Protocol):
    """What the planner needs from a training step (replaceable by a fake in tests)."""

    device: torch.device

    def measure(self, batch_size: int, accumulate: int, steps: int, warmup: int) -> StepTiming: ...

    def probe(self, micro_batch: int) -> int: ...

    def real_patches(self, n: int) -> Batch: ...


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TrainerStepRunner:
    """The trainer's step on its data pipeline: a fresh model per call (seed ``cfg.seeds[0]``),
    AdamW at the run's LR (rule ``cfg.lr_scaling[0]``), :class:`IQALoss`, ``cfg.amp``."""

    def __init__(self, cfg, data, device: torch.device):
        from landscape.models import model_config

        self.cfg = cfg
        self.data = data
        self.device = torch.device(device)
        self.seed = int(cfg.seeds[0])
        self.rule = cfg.lr_scaling[0]
        self.model_config = model_config(cfg.model, drop_path_rate=cfg.drop_path, dropout=cfg.dropout)
        self._pool: tuple[torch.Tensor, torch.Tensor] | None = None

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """Full batches of ``batch_size`` normalised patches from the trainer's pipeline."""
        from landscape.train.run import RunSpec

        spec = RunSpec(batch_size, self.seed, self.rule, 1)
        return full_batches(lambda e: self.data.train_batches(spec, e), batch_size)

    def real_patches(self, n: int) -> Batch:
        """The first ``n`` training patches of the pipeline (cached; grown on demand)."""
        if self._pool is None or self._pool[0].shape[0] < n:
            it = self.batches(n)
            try:
                self._pool = next(it)
            finally:
                it.close()
        x, y = self._pool
        return x[:n], y[:n]

    def _fresh(self, batch_size: int):
        from landscape.train.losses import IQALoss
        from landscape.models import create_model
        from landscape.train.lr_rules import scaled_lr

        torch.manual_seed(self.seed)
        model = create_model(self.model_config, pretrained=self.cfg.pretrained).to(self.device).train()
        lr = scaled_lr(self.cfg.lr, batch_size, self.cfg.reference_batch, self.rule)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=self.cfg.weight_decay)
        return model, IQALoss(self.cfg.ranking_alpha, self.cfg.ranking_margin), optimizer

    def _run(self, batches: Iterator[Batch], batch_size: int, accumulate: int, steps: int,
             warmup: int) -> StepTiming:
        from landscape.train.memory import peak_bytes, reset_peak
        from landscape.train.step import train_step

        if batch_size % accumulate:
            raise LandscapeError(f"batch size {batch_size} is not divisible by accumulate={accumulate}")
        free_memory(self.device)
        reset_peak(self.device)
        model, criterion, optimizer = self._fresh(batch_size)
        step_t, data_t = [], []
        try:
            for i in range(warmup + steps):
                t0 = time.perf_counter()
                x, y = next(batches)
                t1 = time.perf_counter()
                x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
                loss = train_step(model, criterion, optimizer, x, y, accumulate, self.cfg.amp)
                finite = bool(torch.isfinite(loss))
                _synchronize(self.device)
                t2 = time.perf_counter()
                if not finite:
                    raise NumericsError(f"batch size {batch_size}: loss became NaN/inf at planner step {i}")
                del x, y, loss
                if i >= warmup:
                    step_t.append(t2 - t0)
                    data_t.append(t1 - t0)
            peak = peak_bytes(self.device)
        finally:
            del model, optimizer
            free_memory(self.device)
        return StepTiming(step_t, data_t, int(peak))

    def measure(self, batch_size: int, accumulate: int, steps: int, warmup: int) -> StepTiming:
        it = self.batches(batch_size)
        try:
            return self._run(it, batch_size, accumulate, steps, warmup)
        finally:
            it.close()

    def probe(self, micro_batch: int) -> int:
        """Peak bytes of two steps at ``micro_batch`` (the 2nd holds optimizer state) on real
        patches repeated to size (memory depends on the shape only); raises on OOM."""
        x, y = self.real_patches(min(micro_batch, 256))
        index = torch.arange(micro_batch) % x.shape[0]

        def repeated():
            while True:
                yield x[index], y[index]

        return self._run(repeated(), micro_batch, 1, 1, 1).peak_memory_bytes


# ------------------------------------------------------------------ noise scale


def noise_scale_at(model: torch.nn.Module, criterion: Criterion, pool: Iterable[Batch], *, b_small: int,
                   b_big: int, n_repeats: int, seed: int = 0, chunk_size: int | None = None) -> NoiseScaleResult:
    """B_simple of ``model`` at its current weights over the example pool (eval mode; weights,
    buffers and train/eval flags restored): the two-batch unbiased estimator of
    :func:`landscape.sharpness.noise_scale.gradient_noise_scale`, batches drawn from the pool
    with replacement. ``chunk_size`` splits big batches (exact for per-example-mean losses)."""
    if chunk_size is not None and chunk_size >= b_big:
        chunk_size = None
    return gradient_noise_scale(model, criterion, pool, b_small, b_big, n_repeats, seed, chunk_size=chunk_size)


# ------------------------------------------------------------------ results


@dataclass
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

    @property
    def best(self) -> SpeedStats | None:
        """The setting to train with: direct if it fits, else the accumulation plan."""
        return self.direct if self.fits else self.accumulated


@dataclass
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
        return _jsonable(asdict(self))

    def csv_rows(self) -> list[dict[str, Any]]:
        return [_csv_row(r) for r in self.rows]

    def table(self) -> str:
        return format_table(self)


def _jsonable(obj: Any) -> Any:
    """NaN/inf -> None and tuples -> lists, so the JSON is strict."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


_STAT_FIELDS = ("micro_batch", "accumulate", "samples_per_s", "samples_per_s_std", "epoch_time_s", "epoch_time_se_s",
                "epoch_time_min_s", "epoch_time_max_s", "data_fraction", "peak_memory_bytes")


def _csv_row(row: PlanRow) -> dict[str, Any]:
    out: dict[str, Any] = {"batch_size": row.batch_size, "fits": row.fits, "note": row.note}
    for prefix, stats in (("", row.direct), ("acc_", row.accumulated)):
        for name in _STAT_FIELDS:
            out[prefix + name] = "" if stats is None else getattr(stats, name)
    for rule, value in row.lr.items():
        out[f"lr_{rule}"] = value
    out["b_over_b_simple"] = row.b_over_b_simple
    out["noise_position"] = row.noise_position
    return out


def _bytes(n: float | None) -> str:
    if n is None or not math.isfinite(n):
        return "-"
    if abs(n) >= 2 ** 30:
        return f"{n / 2 ** 30:.2f} GiB"
    return f"{n / 2 ** 20:.0f} MiB"


def _duration(s: float, se: float = float("nan")) -> str:
    if not math.isfinite(s):
        return "-"
    unit, scale = ("h", 3600.0) if s >= 5400 else ("min", 60.0) if s >= 90 else ("s", 1.0)
    text = f"{s / scale:.3g}"
    if math.isfinite(se):
        text += f" ± {se / scale:.2g}"
    return f"{text} {unit}"


def format_table(result: PlanResult) -> str:
    """The terminal table: one line per B and a header with limit, memory model and B_simple."""
    lines = [f"device: {result.device_name} ({result.device}); {result.n_train_images} training images x "
             f"{result.train_patches} patches = {result.n_train_patches} patches/epoch; "
             f"{result.warmup} warm-up + {result.steps} timed steps; amp={'on' if result.amp else 'off'}"]
    lines.append(f"memory limit: {_bytes(result.memory_limit_bytes)} ({result.memory_limit_source}); "
                 f"peak = {result.memory_kind}")
    mm = result.memory_model
    if mm is not None:
        lines.append(f"memory model: peak(b) = {_bytes(mm.fixed)} + {mm.per_sample / 2 ** 20:.3g} MiB x b "
                     f"(RMS residual {_bytes(mm.residual_rms)}, {mm.n_points} sizes)")
    if result.max_micro_batch is not None:
        bound = " (lower bound: search cap reached)" if result.max_micro_lower_bound else ""
        lines.append(f"largest fitting micro-batch: {result.max_micro_batch} ({result.max_micro_source}){bound}")
    if result.noise is not None:
        n = result.noise
        lo, hi = n.b_simple_ci
        lines.append(f"B_simple = {n.b_simple:.3g} ± {n.b_simple_se:.2g} ({int(round(100 * n.ci))}% CI "
                     f"[{lo:.3g}, {hi:.3g}]; B={n.b_small},{n.b_big} x{n.n_repeats}, pool {n.n_pool}, "
                     f"{result.noise_settings.get('loss', '?')} loss, {result.noise_settings.get('weights', '?')})")
        if not (math.isfinite(n.b_simple) and n.b_simple > 0):
            lines.append("  B_simple not resolved: the estimate is <= 0 or undefined; positions use the CI "
                         "upper bound where the gradient signal was measured (|G|^2 > 0)")
    rules = list(result.rows[0].lr) if result.rows else []
    head = ["B", "micro x K", "fits", "samples/s", "epoch time", "data", "peak memory",
            *[f"lr {r}" for r in rules], "B/B_simple"]
    body = []
    for r in result.rows:
        s = r.best
        body.append([
            str(r.batch_size), "-" if s is None else f"{s.micro_batch} x {s.accumulate}",
            "yes" if r.fits else ("no" + ("" if s is None else ", acc")),
            "-" if s is None else f"{s.samples_per_s:.4g} ± {s.samples_per_s_std:.2g}",
            "-" if s is None else _duration(s.epoch_time_s, s.epoch_time_se_s),
            "-" if s is None or not math.isfinite(s.data_fraction) else f"{100 * s.data_fraction:.0f}%",
            _bytes(s.peak_memory_bytes if s else (r.direct.peak_memory_bytes if r.direct else None)),
            *[f"{r.lr[k]:.3g}" for k in rules],
            "-" if not math.isfinite(r.b_over_b_simple) else f"{r.b_over_b_simple:.2g} ({r.noise_position})"])
    widths = [max(len(h), *(len(row[i]) for row in body)) if body else len(h) for i, h in enumerate(head)]
    fmt = lambda cells: "  ".join(c.rjust(w) for c, w in zip(cells, widths))  # noqa: E731
    lines += ["", fmt(head), fmt(["-" * w for w in widths]), *map(fmt, body)]
    notes = [f"B={r.batch_size}: {r.note}" for r in result.rows if r.note]
    if notes:
        lines += ["", *notes]
    lines.append("samples/s: mean ± std over timed steps; epoch time: training pass only "
                 "(evaluation excluded), ± standard error; data: share of step time spent loading.")
    return "\n".join(lines)


def write_plan(result: PlanResult, out_dir: str | Path) -> dict[str, Path]:
    """Atomically write ``plan.json``, ``plan.csv``, ``plan.txt`` and ``plan.{pdf,png,svg}``."""
    from landscape.figures.plan import plan_figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "plan.json", "csv": out / "plan.csv", "txt": out / "plan.txt"}
    write_json(paths["json"], {"kind": "landscape-plan", **result.as_dict()})
    rows = result.csv_rows()
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with atomic_path(paths["csv"]) as tmp:
        tmp.write_text(buf.getvalue())
    with atomic_path(paths["txt"]) as tmp:
        tmp.write_text(result.table() + "\n")
    for p in plan_figure(result, out / "plan"):
        paths[p.suffix.lstrip(".")] = p
    return paths


def read_plan(path: str | Path) -> dict[str, Any]:
    """``plan.json`` of a plan folder (or the file itself) as a dict, for reports."""
    path = Path(path)
    data = read_json(path / "plan.json" if path.is_dir() else path)
    if data.get("kind") != "landscape-plan":
        raise LandscapeError(f"{path}: not a landscape plan (kind={data.get('kind')!r})")
    return data


# ------------------------------------------------------------------ resumable parts


class _Parts:
    """``out_dir/parts/<name>_<key>.json`` holding ``{"spec", "result"}``; reused when ``resume``."""

    def __init__(self, out_dir: Path | None, base: dict[str, Any], resume: bool):
        self.dir = None if out_dir is None else Path(out_dir) / "parts"
        self.base = base
        self.resume = resume

    def get(self, name: str, spec: dict[str, Any], compute: Callable[[], Any],
            encode: Callable[[Any], Any], decode: Callable[[Any], Any]) -> Any:
        full = {**self.base, **spec, "part": name}
        path = None if self.dir is None else self.dir / f"{name}_{content_key(full)}.json"
        if path is not None and self.resume and path.exists():
            stored = read_json(path)
            if stored.get("spec") == _jsonable(full):
                return decode(stored["result"])
        value = compute()
        if path is not None:
            write_json(path, {"spec": _jsonable(full), "result": _jsonable(encode(value))})
        return value


def _timing_from(d: dict) -> StepTiming:
    return StepTiming(list(d["step_times_s"]), list(d["data_times_s"]), int(d["peak_memory_bytes"]))


def _noise_from(d: dict) -> NoiseScaleResult:
    d = {k: (float("nan") if v is None and k in ("b_simple", "b_simple_se", "g2", "g2_se", "trace_sigma",
                                                  "trace_sigma_se") else v) for k, v in d.items()}
    d["b_simple_ci"] = [float("nan") if v is None else v for v in d["b_simple_ci"]]
    return NoiseScaleResult(**d)


# ------------------------------------------------------------------ run_plan


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def _check_sizes(batch_sizes: Sequence[int], accumulate: int) -> list[int]:
    if not batch_sizes:
        raise LandscapeError("no batch sizes to plan")
    sizes = sorted(set(int(b) for b in batch_sizes))
    for b in sizes:
        if b < 1:
            raise LandscapeError(f"batch size must be >= 1, got {b}")
        if b % accumulate:
            raise LandscapeError(f"batch size {b} is not divisible by accumulate={accumulate}")
    return sizes


def run_plan(cfg, batch_sizes: Sequence[int], *, steps: int = 5, warmup: int = 2,
             memory_limit_bytes: int | None = None, checkpoint: str | Path | None = None,
             noise_b_small: int = 4, noise_b_big: int = 128, noise_repeats: int = 20, noise_pool: int = 1024,
             noise_loss: str = "l1", search: bool | None = None, search_max: int | None = None,
             out_dir: str | Path | None = None, resume: bool = True, echo: Callable[[str], None] | None = print,
             data=None, runner: StepRunner | None = None,
             fits: Callable[[int], bool] | None = None) -> PlanResult:
    """Measure every candidate batch size of ``cfg`` (a :class:`~landscape.train.config.TrainConfig`).

    ``batch_sizes``: effective batches to test (``cfg.batch_sizes`` is ignored);
    ``memory_limit_bytes``: default GPU total memory (CUDA) or RSS + MemAvailable (CPU);
    ``checkpoint``: landscape checkpoint whose weights B_simple is measured at (default:
    the initial weights of seed ``cfg.seeds[0]``); ``noise_repeats=0`` skips B_simple;
    ``noise_loss``: ``l1`` (per-example mean: the estimator is unbiased) or ``train``
    (L1 + ranking as trained: approximate, see the noise-scale module); ``search``: run the
    OOM bisection (default on CUDA) up to ``search_max`` (default 8 x the largest
    candidate micro-batch); ``out_dir``: write outputs and resumable parts there.
    Injection for tests: ``data`` (RunData), ``runner`` (:class:`StepRunner`), ``fits``
    (the bisection predicate).
    """
    from landscape.train.losses import make_criterion
    from landscape.train.lr_rules import all_rules
    from landscape.train.memory import memory_kind
    from landscape.train.pipeline import load_run_data
    from landscape.train.run import resolve_device

    say = echo or (lambda _: None)
    steps, warmup = int(steps), int(warmup)
    if steps < 2:
        raise LandscapeError(f"--steps must be >= 2 (a spread needs two timed steps), got {steps}")
    if warmup < 0:
        raise LandscapeError(f"--warmup must be >= 0, got {warmup}")
    if noise_loss not in ("l1", "train"):
        raise LandscapeError(f"unknown noise loss '{noise_loss}' (valid: l1, train)")
    acc = int(cfg.accumulate)
    sizes = _check_sizes(batch_sizes, acc)
    cfg = dataclasses.replace(cfg, batch_sizes=sizes).validate()
    if runner is None:
        device = resolve_device(cfg.device)
        data = data if data is not None else load_run_data(cfg)
        runner = TrainerStepRunner(cfg, data, device)
    else:
        device = torch.device(runner.device)
        if data is None:
            data = getattr(runner, "data", None) or load_run_data(cfg)
    if memory_limit_bytes is None:
        limit, limit_source = default_memory_limit(device)
    else:
        if memory_limit_bytes <= 0:
            raise LandscapeError(f"memory limit must be > 0 bytes, got {memory_limit_bytes}")
        limit, limit_source = int(memory_limit_bytes), "given"
    search = device.type == "cuda" if search is None else bool(search)
    n_images, patches = len(data.train), int(cfg.train_patches)
    n_patches = n_images * patches
    dev_name = _device_name(device)
    mkind = memory_kind(device)
    identity = {k: v for k, v in cfg.to_dict().items() if k not in ("batch_sizes", "device", "workers")}
    base = {"config": identity, "dataset_sha256": data.identity.get("split_sha256"), "device": dev_name,
            "torch": torch.__version__, "steps": steps, "warmup": warmup}
    parts = _Parts(Path(out_dir) if out_dir is not None else None, base, resume)

    def measured(b: int, k: int) -> StepTiming:
        return parts.get("measure", {"batch_size": b, "accumulate": k},
                         lambda: runner.measure(b, k, steps, warmup), asdict, _timing_from)

    # 1. every candidate at the configured accumulation, ascending
    say(f"plan: {len(sizes)} batch sizes on {dev_name}; limit {_bytes(limit)}")
    rows: list[PlanRow] = []
    points: list[tuple[int, int]] = []
    model_now: MemoryModel | None = None
    oom_at: int | None = None
    for b in sizes:
        micro = b // acc
        lr = all_rules(cfg.lr, b, cfg.reference_batch)
        note = ""
        if oom_at is not None:
            note = f"not run: B={oom_at} already ran out of memory"
        elif device.type != "cuda" and model_now is not None and model_now.predict(micro) > limit:
            note = f"not run: predicted peak {_bytes(model_now.predict(micro))} > limit"
        if note:
            rows.append(PlanRow(b, False, note, None, None, lr))
            say(f"  B={b}: {note}")
            continue
        stats = None
        try:
            stats = speed_stats(measured(b, acc), b, acc, n_patches)
        except Exception as e:  # noqa: BLE001 - OOM is a result, anything else propagates
            if not is_oom(e):
                raise
        if stats is None:  # out of memory; freed here, after the exception (and its frames) are gone
            free_memory(device)
            oom_at = b
            rows.append(PlanRow(b, False, "out of memory", None, None, lr))
            say(f"  B={b}: out of memory")
            continue
        ok = stats.peak_memory_bytes <= limit
        rows.append(PlanRow(b, ok, "" if ok else "peak over the memory limit", stats, None, lr))
        points.append((micro, stats.peak_memory_bytes))
        if len({p for p, _ in points}) >= 2:
            model_now = fit_memory_model(*zip(*points))
        say(f"  B={b}: {stats.samples_per_s:.4g} samples/s, epoch {_duration(stats.epoch_time_s)}, "
            f"peak {_bytes(stats.peak_memory_bytes)}")
    memory_model = model_now

    # 2. largest fitting micro-batch
    fitting = [r.batch_size // acc for r in rows if r.fits]
    tries: list[tuple[int, bool]] = []
    lower_bound = False
    if search:
        low = max(fitting, default=1)
        high = int(search_max) if search_max else (oom_at // acc if oom_at else 8 * max(sizes) // acc)
        high = max(low, high)
        predicate = fits or (lambda m: runner.probe(m) <= limit)

        def bisect() -> tuple[int, list]:
            return largest_fitting_batch(predicate, low, high, device)

        max_micro, tries = parts.get("search", {"low": low, "high": high, "limit": limit}, bisect,
                                     lambda v: {"max": v[0], "tries": v[1]},
                                     lambda d: (int(d["max"]), [tuple(t) for t in d["tries"]]))
        source = "bisection"
        lower_bound = max_micro == high
        say(f"  largest fitting micro-batch by bisection: {max_micro} ({len(tries)} tries)")
    elif memory_model is not None and memory_model.per_sample > 0:
        max_micro, source = memory_model.largest_batch(limit), "memory model"
    elif fitting:
        max_micro, source, lower_bound = max(fitting), "measured", True
    else:
        max_micro, source = None, "none"

    # 3. accumulation plans for sizes that do not fit
    for r in rows:
        if r.fits or not max_micro:
            continue
        plan = accumulation_plan(r.batch_size, max_micro)
        if plan is None:
            continue
        micro, k = plan
        prefix = (r.note + "; ") if r.note else ""
        try:
            r.accumulated = speed_stats(measured(r.batch_size, k), r.batch_size, k, n_patches)
        except Exception as e:  # noqa: BLE001 - OOM is a result, anything else propagates
            if not is_oom(e):
                raise
        if r.accumulated is None:
            free_memory(device)
            r.note = prefix + f"accumulation {micro} x {k} ran out of memory"
        else:
            r.note = prefix + f"accumulation {micro} x {k}"
            if r.accumulated.peak_memory_bytes > limit:
                r.note += " (its peak is over the limit too)"
        say(f"  B={r.batch_size}: {r.note}")

    # 4. gradient noise scale
    noise = None
    settings = {"b_small": noise_b_small, "b_big": noise_b_big, "n_repeats": noise_repeats, "pool": noise_pool,
                "loss": noise_loss, "seed": int(cfg.seeds[0]), "weights": "initial", "checkpoint_hash": None}
    if noise_repeats:
        ckpt = None
        if checkpoint is not None:
            from landscape.models.checkpoint import load_checkpoint

            ckpt = load_checkpoint(checkpoint)
            settings.update(weights=f"checkpoint {checkpoint}", checkpoint_hash=ckpt.content_hash)
        criterion = make_criterion("l1" if noise_loss == "l1" else "train", ranking_alpha=cfg.ranking_alpha,
                                   ranking_margin=cfg.ranking_margin)
        # chunks no larger than the largest fitting micro-batch (halved under AMP: the noise
        # gradients run in float32); on out-of-memory the chunk is halved again (l1 only: exact)
        chunk = None
        if max_micro and noise_loss == "l1":
            chunk = max(1, max_micro // 2) if (cfg.amp and device.type == "cuda") else max_micro

        def compute_noise() -> NoiseScaleResult:
            size = chunk
            model = _noise_model(cfg, ckpt, data.patch_size).to(device)
            x, y = runner.real_patches(noise_pool)
            pool = [(x[i:i + 256], y[i:i + 256]) for i in range(0, x.shape[0], 256)]
            try:
                while True:
                    found = None
                    try:
                        found = noise_scale_at(model, criterion, pool, b_small=noise_b_small, b_big=noise_b_big,
                                               n_repeats=noise_repeats, seed=int(cfg.seeds[0]), chunk_size=size)
                    except Exception as e:  # noqa: BLE001 - retry smaller chunks on OOM only
                        if not is_oom(e) or noise_loss != "l1" or size == 1:
                            raise
                    if found is not None:
                        return found
                    free_memory(device)
                    size = max(1, (size or noise_b_big) // 2)
                    say(f"  noise scale: out of memory; retrying in chunks of {size}")
            finally:
                del model, pool
                free_memory(device)

        spec = {k: v for k, v in settings.items() if k != "weights"}
        noise = parts.get("noise", spec, compute_noise, asdict, _noise_from)
        say(f"  B_simple = {noise.b_simple:.3g} ± {noise.b_simple_se:.2g}")
        for r in rows:
            if math.isfinite(noise.b_simple) and noise.b_simple > 0:
                r.b_over_b_simple = r.batch_size / noise.b_simple
            r.noise_position = noise_position(r.batch_size, noise)

    from landscape.models import model_config

    mcfg = (runner.model_config if hasattr(runner, "model_config")
            else model_config(cfg.model, drop_path_rate=cfg.drop_path, dropout=cfg.dropout))
    prov = provenance(device=str(device), device_name=dev_name, memory_kind=mkind, dataset=data.identity,
                      model_config=mcfg.to_dict(), train_config=cfg.to_dict(), torch_threads=torch.get_num_threads(),
                      spec_key=content_key(base))
    result = PlanResult(rows=rows, device=str(device), device_name=dev_name, memory_kind=mkind,
                        memory_limit_bytes=int(limit), memory_limit_source=limit_source, memory_model=memory_model,
                        max_micro_batch=max_micro, max_micro_source=source, max_micro_lower_bound=lower_bound,
                        search_tries=[(int(b), bool(ok)) for b, ok in tries], noise=noise, noise_settings=settings,
                        n_train_images=n_images, train_patches=patches, steps=steps, warmup=warmup,
                        amp=bool(cfg.amp and device.type == "cuda"), accumulate=acc, lr=float(cfg.lr),
                        reference_batch=int(cfg.reference_batch), provenance=prov)
    if out_dir is not None:
        write_plan(result, out_dir)
    return result


def _noise_model(cfg, ckpt, patch_size: int) -> torch.nn.Module:
    """The initial model of seed ``cfg.seeds[0]`` (as the trainer builds it) or the checkpoint's."""
    from landscape.models.checkpoint import build_model
    from landscape.models import create_model, model_config

    if ckpt is not None:
        size = ckpt.model_config.get("img_size")
        if size != patch_size:
            raise LandscapeError(f"{ckpt.path}: checkpoint input size {size} px differs from the "
                                 f"{patch_size} px patches of model '{cfg.model}'")
        return build_model(ckpt)
    torch.manual_seed(int(cfg.seeds[0]))
    return create_model(model_config(cfg.model, drop_path_rate=cfg.drop_path, dropout=cfg.dropout),
                        pretrained=cfg.pretrained)


__all__ = ["PlanResult", "PlanRow", "SpeedStats", "StepTiming", "MemoryModel", "StepRunner", "TrainerStepRunner",
           "run_plan", "write_plan", "read_plan", "format_table", "speed_stats", "full_batches", "noise_scale_at",
           "largest_fitting_batch", "accumulation_plan", "fit_memory_model", "epoch_seconds", "is_oom",
           "free_memory", "default_memory_limit", "noise_scale_position", "noise_position"]

