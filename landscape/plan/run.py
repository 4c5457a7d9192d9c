"""``run_plan``: measure every candidate batch size, in five named steps.

1. :func:`_measure_candidates`: every B at the configured accumulation K, ascending, on a
   fresh model (same seed). A B after one that ran out of memory is not run; on CPU (where
   the OS kills a process instead of raising) neither is a B whose micro-batch the memory
   model ``peak(b) = fixed + per_sample * b`` (fitted from the sizes so far) predicts over
   the limit.
1b. :func:`_recheck_outliers`: a timing far off its neighbours' (:func:`off_neighbours`) is
   measured once more; one still off is kept, marked ``outlier`` and remarked in the notes.
2. :func:`_largest_micro`: the largest fitting micro-batch by OOM bisection over real
   steps (default on CUDA), else from the memory model, else the largest measured one
   (a lower bound).
3. :func:`_accumulate_unfitting`: each B that does not fit is measured as the
   accumulation plan micro x K (:func:`landscape.plan.memory.accumulation_plan`).
4. :func:`_noise_scale`: B_simple = tr(Sigma) / |G|^2 at the initial (or a checkpoint's)
   weights on a pool of training patches, in chunks no larger than the largest fitting
   micro-batch (halved under AMP on CUDA: the noise gradients run in float32), and each
   B's position relative to it.
5. :func:`_result`: provenance and the :class:`~landscape.plan.result.PlanResult`.

With ``out_dir`` every finished measurement is stored under ``out_dir/parts/`` keyed by its
inputs (:func:`landscape.provenance.content_key`) and reused by a rerun with
``resume=True``; the plan files are written by :func:`landscape.plan.output.write_plan`.
"""
from __future__ import annotations

import dataclasses
import math
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from landscape.device import default_memory_limit, free_memory, is_oom, memory_kind, resolve_device
from landscape.errors import LandscapeError, check_choice, check_positive_int
from landscape.models import model_config
from landscape.models.checkpoint import load_checkpoint
from landscape.plan.memory import MemoryModel, accumulation_plan, fit_memory_model, largest_fitting_batch
from landscape.plan.output import format_bytes, format_duration, write_plan
from landscape.plan.result import (
    PlanResult,
    PlanRow,
    StepTiming,
    jsonable,
    noise_from_dict,
    off_neighbours,
    speed_stats,
    timing_from_dict,
)
from landscape.plan.runner import StepRunner, TrainerStepRunner, noise_model, noise_position, noise_with_retries
from landscape.provenance import content_key, provenance
from landscape.sharpness.noise_scale import NoiseScaleResult
from landscape.store import read_json, write_json
from landscape.train.losses import make_criterion
from landscape.train.lr_rules import all_rules
from landscape.train.pipeline import load_run_data

NOISE_LOSSES = ("l1", "train")
_POOL_BATCH = 256  # patches per batch of the B_simple pool


@dataclass(frozen=True)
class PlanConfig:
    """Settings of :func:`run_plan` (validated on construction).

    ``steps`` timed steps (>= 2: a spread needs two) after ``warmup`` untimed ones per
    setting; ``memory_limit_bytes``: default GPU total memory (CUDA) or RSS + MemAvailable
    (CPU); ``checkpoint``: landscape checkpoint whose weights B_simple is measured at
    (default: the initial weights of seed ``cfg.seeds[0]``); B_simple from ``noise_repeats``
    estimates (0 = skip) with batches ``noise_b_small`` and ``noise_b_big`` drawn from a pool
    of ``noise_pool`` training patches; ``noise_loss``: ``l1`` (per-example mean: the
    estimator is unbiased) or ``train`` (L1 + ranking as trained: approximate, see the
    noise-scale module); ``search``: run the OOM bisection (default on CUDA) up to
    ``search_max`` (default 8 x the largest candidate micro-batch, or the first size that ran
    out of memory); ``resume``: reuse stored measurements in ``out_dir/parts``.
    """

    steps: int = 5
    warmup: int = 2
    memory_limit_bytes: int | None = None
    checkpoint: str | Path | None = None
    noise_b_small: int = 4
    noise_b_big: int = 128
    noise_repeats: int = 20
    noise_pool: int = 1024
    noise_loss: str = "l1"
    search: bool | None = None
    search_max: int | None = None
    resume: bool = True

    def __post_init__(self) -> None:
        check_positive_int("steps", self.steps, minimum=2)
        check_positive_int("warmup", self.warmup, minimum=0)
        check_positive_int("noise_repeats", self.noise_repeats, minimum=0)
        check_choice("noise_loss", self.noise_loss, NOISE_LOSSES)
        if self.memory_limit_bytes is not None:
            check_positive_int("memory_limit_bytes", self.memory_limit_bytes)
        if self.search_max is not None:
            check_positive_int("search_max", self.search_max)


@dataclass(frozen=True)
class _Context:
    """What every step needs: the validated configs, the device, the runner and the parts store."""

    cfg: Any                      # TrainConfig with batch_sizes = the sorted candidates
    plan: PlanConfig
    sizes: list[int]
    device: torch.device
    device_name: str
    data: Any                     # RunData
    runner: StepRunner
    limit: int
    limit_source: str
    parts: _Parts
    say: Callable[[str], None]

    @property
    def accumulate(self) -> int:
        return int(self.cfg.accumulate)

    @property
    def n_patches(self) -> int:
        return len(self.data.train) * int(self.cfg.train_patches)

    def measured(self, batch_size: int, accumulate: int) -> StepTiming:
        """The runner's timing of (B, K), stored and reused as a part."""
        p = self.plan
        return self.parts.get("measure", {"batch_size": batch_size, "accumulate": accumulate},
                              lambda: self.runner.measure(batch_size, accumulate, p.steps, p.warmup),
                              asdict, timing_from_dict)

    def speed(self, batch_size: int, accumulate: int):
        """:func:`speed_stats` of (B, K), or None when it ran out of memory (memory freed)."""
        stats = None
        try:
            stats = speed_stats(self.measured(batch_size, accumulate), batch_size, accumulate, self.n_patches)
        except Exception as e:  # noqa: BLE001 - OOM is a result, anything else propagates
            if not is_oom(e):
                raise
        if stats is None:  # freed here, after the exception (and its frames) are gone
            free_memory(self.device)
        return stats


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
            if stored.get("spec") == jsonable(full):
                return decode(stored["result"])
        value = compute()
        if path is not None:
            write_json(path, {"spec": jsonable(full), "result": jsonable(encode(value))})
        return value


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} CPU, {torch.get_num_threads()} threads"


def _check_sizes(batch_sizes: Sequence[int], accumulate: int) -> list[int]:
    if not batch_sizes:
        raise LandscapeError("no batch sizes to plan")
    sizes = sorted(set(int(b) for b in batch_sizes))
    for b in sizes:
        check_positive_int("batch size", b)
        if b % accumulate:
            raise LandscapeError(f"batch size {b} is not divisible by accumulate={accumulate}")
    return sizes


def _prepare(cfg, batch_sizes, plan: PlanConfig, out_dir, echo, data, runner) -> _Context:
    """Validate the sizes, resolve device, data, runner and memory limit, open the parts store."""
    sizes = _check_sizes(batch_sizes, int(cfg.accumulate))
    cfg = dataclasses.replace(cfg, batch_sizes=sizes).validate()
    if runner is None:
        device = resolve_device(cfg.device)
        data = data if data is not None else load_run_data(cfg)
        runner = TrainerStepRunner(cfg, data, device)
    else:
        device = torch.device(runner.device)
        if data is None:
            data = getattr(runner, "data", None) or load_run_data(cfg)
    if plan.memory_limit_bytes is None:
        limit, limit_source = default_memory_limit(device)
    else:
        limit, limit_source = int(plan.memory_limit_bytes), "given"
    name = _device_name(device)
    identity = {k: v for k, v in cfg.to_dict().items() if k not in ("batch_sizes", "device", "workers")}
    base = {"config": identity, "dataset_sha256": data.identity.get("split_sha256"), "device": name,
            "torch": torch.__version__, "steps": plan.steps, "warmup": plan.warmup}
    parts = _Parts(Path(out_dir) if out_dir is not None else None, base, plan.resume)
    return _Context(cfg, plan, sizes, device, name, data, runner, int(limit), limit_source, parts,
                    echo or (lambda _: None))


def _measure_candidates(ctx: _Context) -> tuple[list[PlanRow], MemoryModel | None, int | None]:
    """Step 1: ``(rows, memory model of the measured sizes, first B that ran out of memory)``."""
    acc, say = ctx.accumulate, ctx.say
    say(f"plan: {len(ctx.sizes)} batch sizes on {ctx.device_name}; limit {format_bytes(ctx.limit)}")
    rows: list[PlanRow] = []
    points: list[tuple[int, int]] = []
    model: MemoryModel | None = None
    oom_at: int | None = None
    for b in ctx.sizes:
        micro = b // acc
        lr = all_rules(ctx.cfg.lr, b, ctx.cfg.reference_batch)
        note = ""
        if oom_at is not None:
            note = f"not run: B={oom_at} already ran out of memory"
        elif ctx.device.type != "cuda" and model is not None and model.predict(micro) > ctx.limit:
            note = f"not run: predicted peak {format_bytes(model.predict(micro))} > limit"
        stats = None
        if not note:
            stats = ctx.speed(b, acc)
            if stats is None:
                note, oom_at = "out of memory", b
        if note:
            rows.append(PlanRow(b, False, note, None, None, lr))
            say(f"  B={b}: {note}")
            continue
        ok = stats.peak_memory_bytes <= ctx.limit
        rows.append(PlanRow(b, ok, "" if ok else "peak over the memory limit", stats, None, lr))
        points.append((micro, stats.peak_memory_bytes))
        if len({p for p, _ in points}) >= 2:
            model = fit_memory_model(*zip(*points))
        say(f"  B={b}: {stats.samples_per_s:.4g} samples/s, epoch {format_duration(stats.epoch_time_s)}, "
            f"peak {format_bytes(stats.peak_memory_bytes)}")
    return rows, model, oom_at


def _recheck_outliers(ctx: _Context, rows: list[PlanRow]) -> list[PlanRow]:
    """Step 1b: re-measure each direct timing far off its neighbours' once (:func:`off_neighbours`);
    the repeat replaces it, and one still off is marked ``outlier`` with a note."""
    measured = [i for i, r in enumerate(rows) if r.direct is not None]
    sizes = [rows[i].batch_size for i in measured]
    ratios = off_neighbours(sizes, [rows[i].direct.samples_per_s for i in measured])
    if not any(math.isfinite(x) for x in ratios):
        return rows
    out = list(rows)
    p = ctx.plan
    for i, ratio in zip(measured, ratios):
        if not math.isfinite(ratio):
            continue
        r = rows[i]
        b, acc = r.batch_size, ctx.accumulate
        first = r.direct.samples_per_s
        timing = ctx.parts.get("measure", {"batch_size": b, "accumulate": acc, "repeat": 1},
                               lambda b=b, acc=acc: ctx.runner.measure(b, acc, p.steps, p.warmup),
                               asdict, timing_from_dict)
        again = speed_stats(timing, b, acc, ctx.n_patches)
        rates = [again.samples_per_s if j == i else rows[j].direct.samples_per_s for j in measured]
        still = off_neighbours(sizes, rates)[measured.index(i)]
        if math.isfinite(still):
            note = (f"timing far off its neighbours' ({again.samples_per_s:.4g} samples/s, {still:.2g}x the "
                    f"neighbours' trend) after a re-measurement (first {first:.4g}): marked outlier, check the machine")
        else:
            note = f"re-measured: the first timing ({first:.4g} samples/s, {ratio:.2g}x the neighbours' trend) was off"
        out[i] = dataclasses.replace(r, direct=again, outlier=math.isfinite(still),
                                     note=(r.note + "; " if r.note else "") + note)
        ctx.say(f"  B={b}: {note}")
    return out


def _largest_micro(ctx: _Context, rows: list[PlanRow], model: MemoryModel | None, oom_at: int | None,
                   fits: Callable[[int], bool] | None) -> tuple[int | None, str, bool, list[tuple[int, bool]]]:
    """Step 2: ``(largest fitting micro-batch, source, is a lower bound, bisection tries)``."""
    acc, plan = ctx.accumulate, ctx.plan
    fitting = [r.batch_size // acc for r in rows if r.fits]
    search = ctx.device.type == "cuda" if plan.search is None else bool(plan.search)
    if search:
        low = max(fitting, default=1)
        high = int(plan.search_max) if plan.search_max else (oom_at // acc if oom_at else 8 * max(ctx.sizes) // acc)
        high = max(low, high)
        predicate = fits or (lambda m: ctx.runner.probe(m) <= ctx.limit)
        max_micro, tries = ctx.parts.get(
            "search", {"low": low, "high": high, "limit": ctx.limit},
            lambda: largest_fitting_batch(predicate, low, high, ctx.device),
            lambda v: {"max": v[0], "tries": v[1]}, lambda d: (int(d["max"]), [tuple(t) for t in d["tries"]]))
        ctx.say(f"  largest fitting micro-batch by bisection: {max_micro} ({len(tries)} tries)")
        return max_micro, "bisection", max_micro == high, tries
    if model is not None and model.per_sample > 0:
        return model.largest_batch(ctx.limit), "memory model", False, []
    if fitting:
        return max(fitting), "measured", True, []
    return None, "none", False, []


def _accumulate_unfitting(ctx: _Context, rows: list[PlanRow], max_micro: int | None) -> list[PlanRow]:
    """Step 3: rows that do not fit, with their accumulation plan measured (others unchanged)."""
    out = []
    for r in rows:
        plan = None if (r.fits or not max_micro) else accumulation_plan(r.batch_size, max_micro)
        if plan is None:
            out.append(r)
            continue
        micro, k = plan
        stats = ctx.speed(r.batch_size, k)
        note = (r.note + "; " if r.note else "") + f"accumulation {micro} x {k}"
        if stats is None:
            note += " ran out of memory"
        elif stats.peak_memory_bytes > ctx.limit:
            note += " (its peak is over the limit too)"
        out.append(dataclasses.replace(r, accumulated=stats, note=note))
        ctx.say(f"  B={r.batch_size}: {note}")
    return out


def _noise_scale(ctx: _Context, max_micro: int | None) -> tuple[NoiseScaleResult | None, dict[str, Any]]:
    """Step 4: ``(B_simple result or None when skipped, its settings)``."""
    p, cfg, device = ctx.plan, ctx.cfg, ctx.device
    seed = int(cfg.seeds[0])
    settings = {"b_small": p.noise_b_small, "b_big": p.noise_b_big, "n_repeats": p.noise_repeats,
                "pool": p.noise_pool, "loss": p.noise_loss, "seed": seed, "weights": "initial",
                "checkpoint_hash": None}
    if not p.noise_repeats:
        return None, settings
    ckpt = None
    if p.checkpoint is not None:
        ckpt = load_checkpoint(p.checkpoint)
        settings.update(weights=f"checkpoint {p.checkpoint}", checkpoint_hash=ckpt.content_hash)
    criterion = make_criterion(p.noise_loss, ranking_alpha=cfg.ranking_alpha, ranking_margin=cfg.ranking_margin,
                               regression=cfg.loss)
    exact = p.noise_loss == "l1"  # chunking (and halving chunks on OOM) is exact for a per-example mean
    chunk = None
    if max_micro and exact:
        chunk = max(1, max_micro // 2) if (cfg.amp and device.type == "cuda") else max_micro

    def compute() -> NoiseScaleResult:
        model = noise_model(cfg, ckpt, ctx.data.patch_size).to(device)
        x, y = ctx.runner.real_patches(p.noise_pool)
        pool = [(x[i:i + _POOL_BATCH], y[i:i + _POOL_BATCH]) for i in range(0, x.shape[0], _POOL_BATCH)]
        try:
            return noise_with_retries(model, criterion, pool, b_small=p.noise_b_small, b_big=p.noise_b_big,
                                      n_repeats=p.noise_repeats, seed=seed, chunk_size=chunk, retry=exact,
                                      device=device, say=ctx.say)
        finally:
            del model, pool
            free_memory(device)

    spec = {k: v for k, v in settings.items() if k != "weights"}
    noise = ctx.parts.get("noise", spec, compute, asdict, noise_from_dict)
    ctx.say(f"  B_simple = {noise.b_simple:.3g} ± {noise.b_simple_se:.2g}")
    return noise, settings


def _with_noise(rows: list[PlanRow], noise: NoiseScaleResult | None) -> list[PlanRow]:
    """Rows with ``B / B_simple`` (when B_simple > 0) and the position of B."""
    if noise is None:
        return rows
    ratio = math.isfinite(noise.b_simple) and noise.b_simple > 0
    return [dataclasses.replace(r, b_over_b_simple=r.batch_size / noise.b_simple if ratio else r.b_over_b_simple,
                                noise_position=noise_position(r.batch_size, noise)) for r in rows]


def _result(ctx: _Context, rows, model, largest, noise, settings) -> PlanResult:
    """Step 5: the plan with provenance (versions, device, dataset, model and train config)."""
    cfg, device = ctx.cfg, ctx.device
    max_micro, source, lower_bound, tries = largest
    mcfg = (ctx.runner.model_config if hasattr(ctx.runner, "model_config")
            else model_config(cfg.model, drop_path_rate=cfg.drop_path, dropout=cfg.dropout))
    mkind = memory_kind(device)
    prov = provenance(device=str(device), device_name=ctx.device_name, memory_kind=mkind,
                      dataset=ctx.data.identity, model_config=mcfg.to_dict(), train_config=cfg.to_dict(),
                      torch_threads=torch.get_num_threads(), spec_key=content_key(ctx.parts.base))
    return PlanResult(rows=rows, device=str(device), device_name=ctx.device_name, memory_kind=mkind,
                      memory_limit_bytes=ctx.limit, memory_limit_source=ctx.limit_source, memory_model=model,
                      max_micro_batch=max_micro, max_micro_source=source, max_micro_lower_bound=lower_bound,
                      search_tries=[(int(b), bool(ok)) for b, ok in tries], noise=noise, noise_settings=settings,
                      n_train_images=len(ctx.data.train), train_patches=int(cfg.train_patches),
                      steps=ctx.plan.steps, warmup=ctx.plan.warmup, amp=bool(cfg.amp and device.type == "cuda"),
                      accumulate=ctx.accumulate, lr=float(cfg.lr), reference_batch=int(cfg.reference_batch),
                      provenance=prov)


def run_plan(train_config, batch_sizes: Sequence[int], config: PlanConfig | None = None, *,
             out_dir: str | Path | None = None, echo: Callable[[str], None] | None = print,
             data=None, runner: StepRunner | None = None, fits: Callable[[int], bool] | None = None,
             **options) -> PlanResult:
    """Measure every candidate batch size of ``train_config`` (a :class:`~landscape.train.config.TrainConfig`).

    ``batch_sizes``: effective batches to test (``train_config.batch_sizes`` is ignored);
    ``config``: a :class:`PlanConfig`, or its fields as keyword ``options`` (which override
    the fields of a given ``config``); ``out_dir``: write the plan files and resumable parts
    there; ``echo``: progress lines (None: silent). Injection for tests: ``data`` (RunData),
    ``runner`` (:class:`~landscape.plan.runner.StepRunner`), ``fits`` (the bisection predicate).
    """
    plan = dataclasses.replace(config or PlanConfig(), **options) if options else (config or PlanConfig())
    ctx = _prepare(train_config, batch_sizes, plan, out_dir, echo, data, runner)
    rows, model, oom_at = _measure_candidates(ctx)
    rows = _recheck_outliers(ctx, rows)
    largest = _largest_micro(ctx, rows, model, oom_at, fits)
    rows = _accumulate_unfitting(ctx, rows, largest[0])
    noise, settings = _noise_scale(ctx, largest[0])
    result = _result(ctx, _with_noise(rows, noise), model, largest, noise, settings)
    if out_dir is not None:
        write_plan(result, out_dir)
    return result


__all__ = ["PlanConfig", "run_plan", "NOISE_LOSSES"]
