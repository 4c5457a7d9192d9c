"""One training run: fit, evaluate every epoch, checkpoint atomically, resume exactly.

Run folder (one per batch size x accumulation x LR rule x seed):
- ``config.json``: the resolved run config (effective batch, micro-batch, LR, world size);
- ``dataset.json``: dataset identity (format, root, score column, split sizes, split hash);
- ``log.jsonl``: one line per epoch (train loss, LR, train/val/test/cross SRCC, PLCC, KRCC,
  epoch time, samples/s, peak memory);
- ``best.pt`` (best validation SRCC), ``last.pt``, ``epoch_NNN.pt`` (``save_every``);
- ``train_state.pt``: model + optimizer + scheduler + history, the resume point, written
  last each epoch (atomically), so a killed run resumes from its last complete epoch;
- ``final.json``: status and metrics of the epoch selected on validation (test metrics
  are those of that epoch only). Its presence marks the run finished.

Determinism: every epoch re-seeds torch from ``(seed, epoch)`` and the patch stream
is a function of ``(seed, epoch)``, so a resumed run equals an uninterrupted one on CPU.
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .. import distributed as dist
from ..checkpoint import load_state_strict, safe_load, save_checkpoint
from ..errors import LandscapeError, NumericsError
from ..losses import IQALoss
from ..metrics import iqa_scores
from ..models import create_model, model_config
from ..provenance import provenance
from ..store import atomic_path, read_json, write_json
from . import pipeline
from .config import TrainConfig
from .lr_rules import scaled_lr
from .memory import memory_kind, peak_bytes, reset_peak
from .schedule import make_scheduler
from .step import train_step


@dataclass(frozen=True)
class RunSpec:
    """One member of a sweep."""

    batch_size: int     # effective batch per optimizer step (all ranks together)
    seed: int
    lr_rule: str
    accumulate: int = 1

    @property
    def name(self) -> str:
        return f"bs{self.batch_size}_acc{self.accumulate}_{self.lr_rule}_seed{self.seed}"


@dataclass
class RunResult:
    name: str
    status: str                      # finished | diverged | failed
    message: str = ""
    best_epoch: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LandscapeError(f"unknown device '{name}'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LandscapeError(f"device '{name}' requested but CUDA is not available")
    return device


def run_config(cfg: TrainConfig, spec: RunSpec, world_size: int = 1) -> dict[str, Any]:
    """The resolved per-run config written to ``config.json`` (and checked on resume)."""
    if spec.batch_size % (spec.accumulate * world_size):
        raise LandscapeError(f"batch size {spec.batch_size} is not divisible by accumulate x world size "
                             f"= {spec.accumulate * world_size}")
    per_rank = spec.batch_size // world_size
    sweep_keys = {"batch_sizes", "seeds", "lr_scaling", "device", "workers"}
    base = {k: v for k, v in cfg.to_dict().items() if k not in sweep_keys}
    return {**base, "run": spec.name, "batch_size": spec.batch_size, "seed": spec.seed,
            "lr_rule": spec.lr_rule, "accumulate": spec.accumulate, "world_size": world_size,
            "per_rank_batch": per_rank, "micro_batch": per_rank // spec.accumulate,
            "effective_batch": spec.batch_size,
            "run_lr": scaled_lr(cfg.lr, spec.batch_size, cfg.reference_batch, spec.lr_rule)}


def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7919) % (2 ** 31)


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
    def key(h):
        v = h["val"]["srcc"]
        return -math.inf if v != v else v
    return max(history, key=key)


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


def train_run(cfg: TrainConfig, spec: RunSpec, run_dir: Path, *, resume: bool = True,
              progress: Callable[[dict], None] | None = None,
              data: pipeline.RunData | None = None) -> RunResult:
    """Train one run into ``run_dir`` (resuming from ``train_state.pt`` when present)."""
    run_dir = Path(run_dir)
    world = dist.world_size()
    rcfg = run_config(cfg, spec, world)
    main = dist.is_main()
    existing = run_dir / "config.json"
    if existing.exists():
        old = read_json(existing)
        if {k: v for k, v in old.items() if k != "provenance"} != rcfg:
            diff = sorted(k for k in set(old) | set(rcfg) if k != "provenance" and old.get(k) != rcfg.get(k))
            raise LandscapeError(f"{run_dir}: holds a run with a different config (differs in: {', '.join(diff)}); "
                                 f"use another --out or --force")
    if (run_dir / "final.json").exists():
        final = read_json(run_dir / "final.json")
        return RunResult(spec.name, final["status"], "already finished", final.get("metrics", {}).get("selected_epoch"),
                         final.get("metrics", {}))

    device = resolve_device(cfg.device)
    data = data or pipeline.load_run_data(cfg)
    if spec.batch_size > data.n_train_patches:
        raise LandscapeError(f"batch size {spec.batch_size} exceeds the {data.n_train_patches} training patches "
                             f"per epoch ({len(data.train)} images x {cfg.train_patches} patches)")
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(existing, {**rcfg, "provenance": provenance()})
        write_json(run_dir / "dataset.json", data.identity)

    torch.manual_seed(spec.seed)
    mcfg = model_config(cfg.model, drop_path_rate=cfg.drop_path, dropout=cfg.dropout)
    model = create_model(mcfg, pretrained=cfg.pretrained).to(device)
    criterion = IQALoss(cfg.ranking_alpha, cfg.ranking_margin)
    optimizer = torch.optim.AdamW(model.parameters(), lr=rcfg["run_lr"], weight_decay=cfg.weight_decay)
    steps_per_epoch = math.ceil(data.n_train_patches / spec.batch_size)
    scheduler = make_scheduler(optimizer, total_steps=steps_per_epoch * cfg.epochs,
                               warmup_steps=steps_per_epoch * cfg.warmup_epochs, kind=cfg.scheduler,
                               steps_per_epoch=steps_per_epoch, step_size=cfg.step_size, gamma=cfg.step_gamma)
    history: list[dict] = []
    start = 0
    state_path = run_dir / "train_state.pt"
    if resume and state_path.exists():
        state = safe_load(state_path, "training state")
        load_state_strict(model, state["model"], str(state_path))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history = list(state["history"])
        start = int(state["epoch"]) + 1
    train_model = dist.wrap_ddp(model, device)
    mkind = memory_kind(device)
    meta_base = {"run": spec.name, "config": rcfg, "dataset": data.identity, "memory_kind": mkind}
    best_val = max((h["val"]["srcc"] for h in history if h["val"]["srcc"] == h["val"]["srcc"]), default=-math.inf)
    bad_epochs = 0
    for h in history:
        bad_epochs = 0 if h["val"]["srcc"] >= best_val and h is _select(history) else bad_epochs + 1
    status, message = "finished", ""
    for epoch in range(start, cfg.epochs):
        if cfg.patience and bad_epochs >= cfg.patience:
            message = f"early stop after {cfg.patience} epochs without val SRCC gain"
            break
        torch.manual_seed(_epoch_seed(spec.seed, epoch))
        model.train()
        reset_peak(device)
        t0 = time.perf_counter()
        n_seen, loss_sum, diverged = 0, torch.zeros((), device=device), False
        for step, (x, y) in enumerate(data.train_batches(spec, epoch, world)):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = train_step(train_model, criterion, optimizer, x, y, spec.accumulate, cfg.amp, scheduler)
            if not torch.isfinite(loss):
                diverged = True
                break
            loss_sum += loss * x.shape[0]
            n_seen += x.shape[0]
            if progress and main and step % 5 == 0:
                progress({"epoch": epoch, "step": step, "steps": steps_per_epoch,
                          "loss": float(loss), "samples_per_s": n_seen * world / (time.perf_counter() - t0)})
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        train_time = time.perf_counter() - t0
        if diverged:
            status = "diverged"
            message = (f"loss became NaN/inf at epoch {epoch} step {step}; stopped, last good checkpoint "
                       f"kept ({'epoch %d' % (epoch - 1) if epoch else 'none'})")
            break
        n_total = dist.all_reduce_sum(torch.tensor(float(n_seen), device=device)).item()
        mean_loss = dist.all_reduce_sum(loss_sum).item() / max(1.0, n_total)
        model.eval()
        metrics = evaluate_sets(model, data.eval_sets, cfg, device, max(1, spec.batch_size // world))
        record = {"epoch": epoch, "train_loss": mean_loss, "lr": optimizer.param_groups[0]["lr"],
                  "epoch_time_s": time.perf_counter() - t0, "train_time_s": train_time,
                  "samples_per_s": n_total / train_time, "peak_memory_bytes": peak_bytes(device),
                  "memory_kind": mkind, **metrics}
        history.append(record)
        improved = record["val"]["srcc"] > best_val
        if improved:
            best_val = record["val"]["srcc"]
            bad_epochs = 0
        else:
            bad_epochs += 1
        if main:
            meta = {**meta_base, "epoch": epoch, "metrics": record}
            if improved:
                save_checkpoint(run_dir / "best.pt", model, mcfg.to_dict(), {**meta, "kind": "best"})
            save_checkpoint(run_dir / "last.pt", model, mcfg.to_dict(), {**meta, "kind": "last"})
            if cfg.save_every and (epoch + 1) % cfg.save_every == 0:
                save_checkpoint(run_dir / f"epoch_{epoch:03d}.pt", model, mcfg.to_dict(), {**meta, "kind": "epoch"})
            _write_log(run_dir, history)
            with atomic_path(state_path) as tmp:
                torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                            "scheduler": scheduler.state_dict(), "history": history, "epoch": epoch}, tmp)
        if progress and main:
            progress({"epoch": epoch, "done": True, "loss": mean_loss, "val_srcc": record["val"]["srcc"],
                      "samples_per_s": record["samples_per_s"]})
        dist.barrier()
    if not history:
        result = RunResult(spec.name, status if status != "finished" else "failed", message or "no epoch completed")
    else:
        m = final_metrics(history, list(data.cross_names))
        result = RunResult(spec.name, status, message, m["selected_epoch"], m)
    if main:
        write_json(run_dir / "final.json", {"status": result.status, "message": result.message,
                                            "metrics": result.metrics, "provenance": provenance(run=spec.name)})
    return result
