"""One training run: fit, evaluate every epoch, checkpoint atomically, resume exactly.

Run folder (one per batch size x accumulation x LR rule x seed):
- ``config.json``: the resolved run config (``run_lr`` from the LR rule, ``effective_batch``,
  ``per_rank_batch``, ``micro_batch``, ``accumulate``, ``world_size``, the run's ``split_seed``, and
  ``split_sha256``: the hash of its ``split.json``'s splits, :mod:`landscape.train.pipeline`; with a
  ``--pretrained`` file ``pretrained_matched_keys``, ``pretrained_dropped_keys``, ``pretrained_sha256``,
  :mod:`landscape.train.pretrained`);
- ``split.json``: the split the run used (per split the sorted relative image paths, their
  annotation row indices and the indices' hash);
- ``dataset.json``: dataset identity (format, absolute root, score column, split sizes, split
  hashes: :meth:`landscape.data.records.IQADataset.identity`); a resume first verifies the
  loaded dataset against it (:func:`~landscape.data.records.verify_identity`) and refuses a
  changed one before anything is written; ``config.json``'s ``dataset`` holds the absolute root;
- ``log.jsonl``: one line per epoch: ``train_loss`` (patch-weighted mean of the step
  losses), ``lr`` (LR of the epoch's first step) and ``lr_last`` (its last), ``steps``,
  ``train``/``val``/``test``/cross ``{srcc, plcc, krcc, n}`` (test protocol), ``epoch_time_s``
  (training + evaluation + checkpointing), ``train_time_s``, ``samples_per_s`` (training
  patches / train_time_s, data pipeline included), ``peak_memory_bytes`` and ``memory_kind``;
- ``best.pt`` (best validation SRCC; first epoch on ties, NaN worst), ``last.pt``,
  ``epoch_NNN.pt`` (``save_every``): :mod:`landscape.models.checkpoint` files;
- ``train_state.pt``: model + optimizer + scheduler + history + ``best_val``, ``best_epoch``,
  ``bad_epochs`` (early-stopping counter), the resume point, written last each epoch
  (atomically), so a killed run resumes from its last complete epoch;
- ``final.json``: status (``finished`` | ``diverged``) and the metrics of the epoch selected
  on validation (test metrics are those of that epoch only; ``srcc_gap`` = train SRCC -
  test SRCC). Its presence marks the run done.

Divergence: a non-finite loss (checked every step on CPU, every ``NAN_CHECK_EVERY`` steps
on GPU to avoid a sync per step; under DDP the flag is summed over ranks) stops the run
before anything of that epoch is written: ``last.pt``/``best.pt``/``train_state.pt`` keep
the previous epoch, ``final.json`` says ``diverged`` and where.

Determinism: every epoch re-seeds torch from ``(seed, epoch)`` (dropout, drop-path) and
the patch stream is a function of ``(seed, epoch)``; evaluation uses no torch RNG. So
the RNG and sampler state at an epoch boundary is a function of the epoch alone, and a
resumed run equals an uninterrupted one bit for bit on CPU.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from landscape import distributed as dist
from landscape.data.check import check_split_overlap
from landscape.data.loading import absolute_spec
from landscape.data.records import verify_identity
from landscape.device import memory_kind, peak_bytes, reset_peak, resolve_device
from landscape.errors import LandscapeError
from landscape.metrics import iqa_scores
from landscape.models.checkpoint import save_checkpoint, save_torch
from landscape.provenance import provenance
from landscape.store import atomic_path, read_json, write_json
from landscape.train import pipeline
from landscape.train.config import TrainConfig, config_differences
from landscape.train.losses import IQALoss
from landscape.train.lr_rules import scaled_lr
from landscape.train.pretrained import build_run_model, pretrained_record
from landscape.train.schedule import make_scheduler
from landscape.train.state import STATE_FORMAT, restore_train_state
from landscape.train.step import make_optimizer, train_step

NAN_CHECK_EVERY = 20      # steps between non-finite-loss checks on GPU (each check syncs); 1 on CPU
PROGRESS_EVERY_S = 0.5


@dataclass(frozen=True)
class RunSpec:
    """One member of a sweep."""

    batch_size: int     # effective batch per optimizer step (all ranks together)
    seed: int
    lr_rule: str
    accumulate: int = 1
    split_seed: int = 0
    show_split: bool = False    # name ends in _split{split_seed} (sweeps over more than one split seed)

    @property
    def name(self) -> str:
        tail = f"_split{self.split_seed}" if self.show_split else ""
        return f"bs{self.batch_size}_acc{self.accumulate}_{self.lr_rule}_seed{self.seed}{tail}"


@dataclass
class RunResult:
    name: str
    status: str                      # finished | diverged | failed
    message: str = ""
    best_epoch: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


def run_config(cfg: TrainConfig, spec: RunSpec, world_size: int = 1) -> dict[str, Any]:
    """The resolved per-run config written to ``config.json`` (and checked on resume)."""
    if spec.batch_size % (spec.accumulate * world_size):
        raise LandscapeError(f"batch size {spec.batch_size} is not divisible by accumulate x world size "
                             f"= {spec.accumulate * world_size}")
    per_rank = spec.batch_size // world_size
    sweep_keys = {"batch_sizes", "seeds", "lr_scaling", "split_seeds", "device", "workers"}
    base = {k: v for k, v in cfg.to_dict().items() if k not in sweep_keys}
    base["dataset"] = absolute_spec(cfg.dataset)        # the resolved absolute root, never as typed
    return {**base, "run": spec.name, "batch_size": spec.batch_size, "seed": spec.seed, "split_seed": spec.split_seed,
            "lr_rule": spec.lr_rule, "accumulate": spec.accumulate, "world_size": world_size,
            "per_rank_batch": per_rank, "micro_batch": per_rank // spec.accumulate,
            "effective_batch": spec.batch_size,
            "run_lr": scaled_lr(cfg.lr, spec.batch_size, cfg.reference_batch, spec.lr_rule),
            **pretrained_record(cfg)}   # --pretrained checked against the backbone here, before any write


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919) % (2 ** 31)


EVAL_BATCH = 64     # evaluation batch floor
EVAL_GROWTH = 16    # at most this many times the training batch


def eval_batch(train_batch: int) -> int:
    """Patches per evaluation forward pass: the per-rank training batch ``b``, raised towards
    :data:`EVAL_BATCH` but to at most ``16 b`` (``max(b, min(EVAL_BATCH, 16 b))``). A training step
    at batch ``b`` holds every layer's activations for the backward pass, the gradients and the
    optimiser state; an evaluation pass under ``inference_mode`` holds about one layer's activations,
    so ``16 b`` patches fit where ``b`` trained. Evaluation is in eval mode (BatchNorm running
    statistics), so predictions do not depend on it."""
    b = max(1, int(train_batch))
    return max(b, min(EVAL_BATCH, EVAL_GROWTH * b))


def evaluate_sets(model: torch.nn.Module, sets: dict[str, pipeline.EvalSet], cfg: TrainConfig,
                  device: torch.device, batch_size: int) -> dict[str, dict[str, float]]:
    """SRCC/PLCC/KRCC per named evaluation set with the test protocol (mean over patches)."""
    out = {}
    for name, es in sets.items():
        pred, score = pipeline.predict(model, es, cfg, device, batch_size)
        out[name] = iqa_scores(pred, score).as_dict()
    return out


def _write_log(run_dir: Path, history: list[dict]) -> None:
    import json
    with atomic_path(run_dir / "log.jsonl") as tmp:
        tmp.write_text("".join(json.dumps(h, sort_keys=True) + "\n" for h in history))


def _select(history: list[dict]) -> dict:
    """Epoch with the best validation SRCC (first on ties); NaN counts as worst."""
    return max(history, key=_val_key)


def final_metrics(history: list[dict], cross_names: list[str]) -> dict[str, Any]:
    """Metrics of the validation-selected epoch plus throughput summaries over all epochs."""
    best = _select(history)
    m = {"selected_epoch": best["epoch"], "epochs_run": len(history), "selection": "val_srcc"}
    for split in ("train", "val", "test", *cross_names):
        for metric in ("srcc", "plcc", "krcc"):
            m[f"{split}_{metric}"] = best[split][metric]
    m["srcc_gap"] = best["train"]["srcc"] - best["test"]["srcc"]
    for name in cross_names:
        m[f"{name}_drop"] = best["test"]["srcc"] - best[name]["srcc"]
    sps = [h["samples_per_s"] for h in history]
    m["samples_per_s"] = sum(sps) / len(sps)
    m["samples_per_s_std"] = float(torch.tensor(sps).std()) if len(sps) > 1 else 0.0
    m["epoch_time_s"] = sum(h["epoch_time_s"] for h in history) / len(history)
    m["peak_memory_bytes"] = max(h["peak_memory_bytes"] for h in history)
    m["memory_kind"] = history[0]["memory_kind"]
    return m


def check_run_dir(run_dir: Path, rcfg: dict[str, Any]) -> None:
    """Refuse a run folder whose ``config.json`` holds another run config (names the keys)."""
    existing = Path(run_dir) / "config.json"
    if not existing.exists():
        return
    old = {k: v for k, v in read_json(existing).items() if k not in ("provenance", "split_sha256")}
    if isinstance(old.get("dataset"), str) and ":" in old["dataset"]:
        old["dataset"] = absolute_spec(old["dataset"])  # older runs wrote the root as typed (cwd-relative)
    diff = config_differences(old, rcfg)
    if diff:
        raise LandscapeError(f"{run_dir}: holds a run with a different config (differs in: {', '.join(diff)}); "
                             f"use another --out or --force")


def check_batch_fits(data: pipeline.RunData, batch_size: int, world: int = 1) -> None:
    """A (per-rank) batch larger than the patches of one epoch is an error."""
    per_rank, n = batch_size // world, data.min_rank_patches(world)
    if per_rank > n:
        shard = f" on the smallest of {world} ranks" if world > 1 else ""
        raise LandscapeError(f"batch size {batch_size} exceeds the {n} training patches per epoch{shard} "
                             f"({len(data.train)} images x {data.cfg.train_patches} patches)")


def _val_key(record: dict) -> float:
    """Selection key of an epoch: its validation SRCC, NaN counting as worst."""
    v = record["val"]["srcc"]
    return -math.inf if v != v else float(v)


def _divergence_message(epoch: int, step: int, steps: int, best_epoch: int | None) -> str:
    kept = f"last.pt is epoch {epoch - 1}" if epoch else "no checkpoint (diverged in the first epoch)"
    best = f", best.pt epoch {best_epoch}" if best_epoch is not None else ""
    return (f"loss became NaN/inf in epoch {epoch} (found by step {step} of {steps}); run stopped; "
            f"last good state kept: {kept}{best}")


def train_run(cfg: TrainConfig, spec: RunSpec, run_dir: Path, *, resume: bool = True,
              progress: Callable[[dict], None] | None = None,
              data: pipeline.RunData | None = None) -> RunResult:
    """Train one run into ``run_dir`` (resuming from ``train_state.pt`` when present).

    ``progress`` receives ``{"epoch", "step", "steps", "loss", "samples_per_s"}`` during an
    epoch (at most every 0.5 s) and ``{"epoch", "done": True, "loss", "val_srcc",
    "samples_per_s"}`` after each epoch's state is stored; an exception it raises stops the
    run exactly as a kill at that point would (the next call resumes).
    A non-finite loss stops the run with status ``diverged`` (module docstring).
    """
    run_dir = Path(run_dir)
    world = dist.world_size()
    rcfg = run_config(cfg, spec, world)
    main = dist.is_main()
    check_run_dir(run_dir, rcfg)
    if (run_dir / "final.json").exists():
        final = read_json(run_dir / "final.json", require={"status": str})
        return RunResult(spec.name, final["status"], "already finished", final.get("metrics", {}).get("selected_epoch"),
                         final.get("metrics", {}))

    device = resolve_device(cfg.device)
    data = data or pipeline.load_run_data(cfg, spec.split_seed)
    if data.split_seed != spec.split_seed:
        raise LandscapeError(f"{spec.name}: data of split seed {data.split_seed} given for split seed {spec.split_seed}")
    check_split_overlap(data.dataset, cfg.allow_overlap, cfg.dataset)
    check_batch_fits(data, spec.batch_size, world)
    state_path = run_dir / "train_state.pt"
    if resume and state_path.exists() and (run_dir / "dataset.json").exists():
        # before anything is written: a changed dataset is refused and dataset.json kept
        verify_identity(read_json(run_dir / "dataset.json"), data.dataset, str(run_dir))
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / "split.json", data.split_record)
        write_json(run_dir / "config.json", {**rcfg, "split_sha256": data.split_sha256, "provenance": provenance()})
        write_json(run_dir / "dataset.json", data.identity)

    torch.manual_seed(spec.seed)
    model, mcfg = build_run_model(cfg)          # --pretrained loaded strictly (train/pretrained.py)
    model = model.to(device)
    criterion = IQALoss(cfg.ranking_alpha, cfg.ranking_margin, cfg.loss)
    optimizer = make_optimizer(model, rcfg["run_lr"], cfg.weight_decay)
    steps = data.steps_per_epoch(spec.batch_size, world)
    scheduler = make_scheduler(optimizer, total_steps=steps * cfg.epochs,
                               warmup_steps=steps * cfg.warmup_epochs, kind=cfg.scheduler,
                               steps_per_epoch=steps, step_size=cfg.step_size, gamma=cfg.step_gamma)
    history: list[dict] = []
    best_val, best_epoch, bad_epochs, start = -math.inf, None, 0, 0
    if resume and state_path.exists():
        state = restore_train_state(state_path, model, optimizer, scheduler)   # validated (train/state.py)
        history = list(state["history"])
        start = int(state["epoch"]) + 1
        if "best_val" in state:
            best_val, best_epoch, bad_epochs = float(state["best_val"]), state["best_epoch"], int(state["bad_epochs"])
        elif history:                                   # v1 state files: derive from the history
            best = _select(history)
            best_val, best_epoch = _val_key(best), best["epoch"]
            bad_epochs = history[-1]["epoch"] - best_epoch
    train_model = dist.wrap_ddp(model, device)
    mkind = memory_kind(device)
    meta_base = {"run": spec.name, "config": rcfg, "dataset": data.identity, "memory_kind": mkind}
    check_every = 1 if device.type == "cpu" else NAN_CHECK_EVERY
    pin = device.type == "cuda"
    status, message = "finished", ""
    for epoch in range(start, cfg.epochs):
        if cfg.patience and bad_epochs >= cfg.patience:
            message = f"early stop after {cfg.patience} epochs without val SRCC gain"
            break
        torch.manual_seed(_epoch_seed(spec.seed, epoch))
        model.train()
        reset_peak(device)
        lr_first = lr_now = optimizer.param_groups[0]["lr"]
        t0 = last_report = time.perf_counter()
        n_seen, loss_sum = 0, torch.zeros((), device=device)
        nonfinite = torch.zeros((), device=device)
        diverged_at, step = None, 0
        for step, (x, y) in enumerate(data.train_batches(spec, epoch, world, pin_memory=pin), start=1):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            lr_now = optimizer.param_groups[0]["lr"]
            loss = train_step(train_model, criterion, optimizer, x, y, spec.accumulate, cfg.amp, scheduler)
            nonfinite += ~torch.isfinite(loss)
            loss_sum += loss * x.shape[0]
            n_seen += x.shape[0]
            if step % check_every == 0:
                if dist.all_reduce_sum(nonfinite.clone()).item() > 0:
                    diverged_at = step
                    break
                now = time.perf_counter()
                if progress and main and now - last_report >= PROGRESS_EVERY_S:
                    last_report = now
                    progress({"epoch": epoch, "step": step, "steps": steps, "loss": float(loss),
                              "samples_per_s": n_seen * world / (now - t0)})
        if diverged_at is None and dist.all_reduce_sum(nonfinite.clone()).item() > 0:
            diverged_at = step                      # found by the end-of-epoch check
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_time = time.perf_counter() - t0
        if diverged_at is not None:
            status, message = "diverged", _divergence_message(epoch, diverged_at, steps, best_epoch)
            break
        n_total = dist.all_reduce_sum(torch.tensor(float(n_seen), device=device)).item()
        mean_loss = dist.all_reduce_sum(loss_sum).item() / max(1.0, n_total)
        model.eval()
        metrics = evaluate_sets(model, data.eval_sets, cfg, device, eval_batch(spec.batch_size // world))
        record = {"epoch": epoch, "train_loss": mean_loss, "lr": lr_first, "lr_last": lr_now, "steps": steps,
                  "epoch_time_s": time.perf_counter() - t0, "train_time_s": train_time,
                  "samples_per_s": n_total / train_time, "peak_memory_bytes": peak_bytes(device),
                  "memory_kind": mkind, **metrics}
        history.append(record)
        improved = best_epoch is None or _val_key(record) > best_val
        if improved:
            best_val, best_epoch, bad_epochs = _val_key(record), epoch, 0
        else:
            bad_epochs += 1
        if main:
            meta = {**meta_base, "epoch": epoch, "metrics": record}
            if improved:
                save_checkpoint(run_dir / "best.pt", model, mcfg, {**meta, "kind": "best"})
            save_checkpoint(run_dir / "last.pt", model, mcfg, {**meta, "kind": "last"})
            if cfg.save_every and (epoch + 1) % cfg.save_every == 0:
                save_checkpoint(run_dir / f"epoch_{epoch:03d}.pt", model, mcfg, {**meta, "kind": "epoch"})
            _write_log(run_dir, history)
            with atomic_path(state_path) as tmp:   # the resume point: written last
                save_torch({"format": STATE_FORMAT, "model": model.state_dict(),
                            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                            "history": history, "epoch": epoch, "best_val": best_val,
                            "best_epoch": best_epoch, "bad_epochs": bad_epochs}, tmp, state_path)
        dist.barrier()
        if progress and main:
            progress({"epoch": epoch, "done": True, "loss": mean_loss, "val_srcc": record["val"]["srcc"],
                      "samples_per_s": record["samples_per_s"]})
    if not history:
        result = RunResult(spec.name, status if status != "finished" else "failed", message or "no epoch completed")
    else:
        m = final_metrics(history, list(data.cross_names))
        result = RunResult(spec.name, status, message, m["selected_epoch"], m)
    if main:
        write_json(run_dir / "final.json", {"status": result.status, "message": result.message,
                                            "metrics": result.metrics, "provenance": provenance(run=spec.name)})
    return result
