"""The planner's measurements: the trainer's step on its pipeline, and the gradient noise scale.

:class:`TrainerStepRunner` runs, for a batch size B and accumulation K, ``warmup`` +
``steps`` iterations of the trainer's loop body on a fresh model (seed ``cfg.seeds[0]``):
next batch of the trainer's patch pipeline -> host-to-device copy ->
:func:`landscape.train.step.train_step` -> device sync, timing each step (seconds, data
loading included) and reading the peak memory (:func:`landscape.device.peak_bytes`, reset
before the first step). :func:`full_batches` completes short batches with the next
patches, cycling epochs, so every step sees exactly B patches.

Gradient noise scale ``B_simple = tr(Sigma) / |G|^2`` (:func:`noise_scale_at`, the
two-batch unbiased estimator of :mod:`landscape.sharpness.noise_scale`); the position of B
(:func:`noise_scale_position`): ``below`` if B < B_simple / 2 (more batch still buys speed
per step), ``far above`` if B > 2 B_simple (diminishing returns), else ``near``.
"""
from __future__ import annotations

import math
import time
from typing import Callable, Iterable, Iterator, Protocol

import torch

from landscape.batches import Batch, Criterion
from landscape.device import free_memory, is_oom, peak_bytes, reset_peak
from landscape.errors import LandscapeError, NumericsError
from landscape.models import create_model, model_config
from landscape.models.checkpoint import build_model
from landscape.models.weights import load_pretrained
from landscape.plan.result import StepTiming
from landscape.sharpness.noise_scale import NoiseScaleResult, gradient_noise_scale
from landscape.train.losses import IQALoss
from landscape.train.lr_rules import scaled_lr
from landscape.train.step import make_optimizer, train_step
from landscape.train.trainer import RunSpec

# ------------------------------------------------------------------ batches


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
        self.cfg = cfg
        self.data = data
        self.device = torch.device(device)
        self.seed = int(cfg.seeds[0])
        self.rule = cfg.lr_scaling[0]
        self.model_config = model_config(cfg.model, drop_path_rate=cfg.drop_path, dropout=cfg.dropout)
        self._pool: tuple[torch.Tensor, torch.Tensor] | None = None

    def batches(self, batch_size: int) -> Iterator[Batch]:
        """Full batches of ``batch_size`` normalised patches from the trainer's pipeline."""
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
        torch.manual_seed(self.seed)
        model = plan_model(self.model_config, self.cfg.pretrained).to(self.device).train()
        lr = scaled_lr(self.cfg.lr, batch_size, self.cfg.reference_batch, self.rule)
        optimizer = make_optimizer(model, lr, self.cfg.weight_decay)
        return model, IQALoss(self.cfg.ranking_alpha, self.cfg.ranking_margin, self.cfg.loss), optimizer

    def _run(self, batches: Iterator[Batch], batch_size: int, accumulate: int, steps: int,
             warmup: int) -> StepTiming:
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


def noise_with_retries(model: torch.nn.Module, criterion: Criterion, pool: Iterable[Batch], *, b_small: int,
                       b_big: int, n_repeats: int, seed: int, chunk_size: int | None, retry: bool,
                       device: torch.device, say: Callable[[str], None]) -> NoiseScaleResult:
    """:func:`noise_scale_at` in chunks of ``chunk_size``; on out-of-memory (when ``retry``: exact
    only for per-example-mean losses) the chunk is halved (starting from ``b_big`` if None) down to 1."""
    size = chunk_size
    while True:
        found = None
        try:
            found = noise_scale_at(model, criterion, pool, b_small=b_small, b_big=b_big, n_repeats=n_repeats,
                                   seed=seed, chunk_size=size)
        except Exception as e:  # noqa: BLE001 - retry smaller chunks on OOM only
            if not is_oom(e) or not retry or size == 1:
                raise
        if found is not None:
            return found
        free_memory(device)  # after the exception (and its frames) are gone
        size = max(1, (size or b_big) // 2)
        say(f"  noise scale: out of memory; retrying in chunks of {size}")


def noise_model(cfg, ckpt, patch_size: int) -> torch.nn.Module:
    """The initial model of seed ``cfg.seeds[0]`` (as the trainer builds it) or the checkpoint's."""
    if ckpt is not None:
        size = ckpt.model_config.get("img_size")
        if size != patch_size:
            raise LandscapeError(f"{ckpt.path}: checkpoint input size {size} px differs from the "
                                 f"{patch_size} px patches of model '{cfg.model}'")
        return build_model(ckpt)
    torch.manual_seed(int(cfg.seeds[0]))
    return plan_model(model_config(cfg.model, drop_path_rate=cfg.drop_path, dropout=cfg.dropout), cfg.pretrained)


def plan_model(mcfg, pretrained: str | None):
    """``create_model(mcfg)`` with a local ``pretrained`` file loaded strictly into the backbone
    (:func:`landscape.models.weights.load_pretrained`: every key matched, or refused); ``"hub"``: timm's loading."""
    local = pretrained is not None and str(pretrained) != "hub"
    model = create_model(mcfg, pretrained=None if local else pretrained)
    if local:
        load_pretrained(model.backbone, pretrained)
    return model


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


__all__ = ["StepRunner", "TrainerStepRunner", "full_batches", "noise_scale_at", "noise_with_retries",
           "noise_model", "noise_scale_position", "noise_position"]
