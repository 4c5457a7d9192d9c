"""Benchmark: the trainer's samples/s against a bare training loop, by hand (issue 3).

Trainer: ``landscape.train.trainer.train_run`` on a real dataset folder, its per-epoch
``samples_per_s`` (training patches / training-loop wall time: patch sampling, decoding,
normalisation, host->device copies and the optimizer steps; evaluation excluded and
reported separately). Bare loop: the same model, loss, optimizer, batch size,
accumulation and AMP, ``train_step`` over batches already on the device (taken from the
same pipeline), synchronised timing. Ratio = trainer / bare; target >= 0.85.
The bare loop is timed in blocks before and after the trainer (the machine may be
shared); its figure is the mean +- standard deviation over blocks.

    python bench/train_throughput.py                       # micro, embedded synthetic set, CPU
    python bench/train_throughput.py --device cuda --model base --img-size 224 --patches 20 \\
        --batch-size 32 --bf16 --workers 8 --koniq --n-images 1000

``--koniq``: writes KonIQ-10k-layout synthetic 1024x768 JPEGs (``1024x768/``,
``koniq10k_distributions_sets.csv``; ``--n-images`` training images, default 7058 as in
KonIQ, plus validation and test images in KonIQ's 7058:1000:2015 proportion) and
predicts a full KonIQ epoch: ``7058 x patches / trainer samples/s`` for training, plus the
measured evaluation time scaled to 1000 + 2015 + ``train_eval_images`` images, printed
beside the 25 min/epoch users report for Swin-Base, batch 32, 20 patches.
The first epoch is used for the prediction (every image decoded, as on full KonIQ where
the decoded-image cache holds only a fraction of the set).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from landscape.data import ensure_synthetic  # noqa: E402
from landscape.device import resolve_device  # noqa: E402
from landscape.models import create_model, model_config  # noqa: E402
from landscape.provenance import provenance  # noqa: E402
from landscape.train import pipeline  # noqa: E402
from landscape.train.config import resolve_config  # noqa: E402
from landscape.train.losses import IQALoss  # noqa: E402
from landscape.train.step import train_step  # noqa: E402
from landscape.train.trainer import RunSpec, run_config, train_run  # noqa: E402

KONIQ_TRAIN, KONIQ_VAL, KONIQ_TEST = 7058, 1000, 2015
USER_MINUTES = 25.0   # reported for Swin-B, batch 32, 20 patches, KonIQ (about 94 patches/s)


# ---------------------------------------------------------------- KonIQ-sized synthetic JPEGs

def _koniq_image(args: tuple[str, int]) -> None:
    """A 1024x768 JPEG (quality 90) with smooth structure and fine texture, seeded by index."""
    from PIL import Image
    path, i = args
    rng = np.random.default_rng([7, i])
    low = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize((1024, 768), Image.BICUBIC)
    img = np.asarray(low, dtype=np.int16) + rng.normal(0, 6 + 10 * rng.random(), (768, 1024, 3)).astype(np.int16)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(path, quality=90)


def make_koniq(root: Path, n_train: int, jobs: int) -> Path:
    """KonIQ-layout folder with ``n_train`` training images and proportional val/test sets."""
    n_val = max(2, round(n_train * KONIQ_VAL / KONIQ_TRAIN))
    n_test = max(2, round(n_train * KONIQ_TEST / KONIQ_TRAIN))
    csv = root / "koniq10k_distributions_sets.csv"
    sets = ["training"] * n_train + ["validation"] * n_val + ["test"] * n_test
    if csv.is_file() and len(csv.read_text().splitlines()) == len(sets) + 1:
        return root
    images = root / "1024x768"
    images.mkdir(parents=True, exist_ok=True)
    work = [(str(images / f"{i:05d}.jpg"), i) for i in range(len(sets))]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(_koniq_image, work, chunksize=16))
    rng = np.random.default_rng(0)
    lines = ["image_name,c1,c2,c3,c4,c5,c_total,MOS,SD,set"]
    for i, split in enumerate(sets):
        lines.append(f"{i:05d}.jpg,0,0,0,0,0,0,{rng.uniform(5, 95):.4f},10.0,{split}")
    csv.write_text("\n".join(lines) + "\n")
    print(f"wrote {len(sets)} JPEGs 1024x768 ({n_train}/{n_val}/{n_test}) in {time.perf_counter() - t0:.0f} s "
          f"under {root}")
    return root


# ---------------------------------------------------------------- bare loop

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_blocks(cfg, spec: RunSpec, batches, device, steps: int, blocks: int,
                warmup: int = 3) -> tuple[list[float], list[float]]:
    """Wall and main-thread-CPU samples/s of ``blocks`` timed blocks of ``steps`` train steps
    on in-memory batches."""
    torch.manual_seed(spec.seed)
    rc = run_config(cfg, spec)
    model = create_model(model_config(cfg.model, drop_path_rate=cfg.drop_path, dropout=cfg.dropout)).to(device)
    model.train()
    crit = IQALoss(cfg.ranking_alpha, cfg.ranking_margin)
    opt = torch.optim.AdamW(model.parameters(), lr=rc["run_lr"], weight_decay=cfg.weight_decay)
    k = 0
    for _ in range(warmup):
        x, y = batches[k % len(batches)]
        train_step(model, crit, opt, x, y, spec.accumulate, cfg.amp)
        k += 1
    rates, cpu_rates = [], []
    for _ in range(blocks):
        n = 0
        sync(device)
        t0, c0 = time.perf_counter(), time.thread_time()
        for _ in range(steps):
            x, y = batches[k % len(batches)]
            train_step(model, crit, opt, x, y, spec.accumulate, cfg.amp)
            n += x.shape[0]
            k += 1
        sync(device)
        rates.append(n / (time.perf_counter() - t0))
        cpu_rates.append(n / (time.thread_time() - c0))
    return rates, cpu_rates


class TimedBatches:
    """Wraps ``RunData.train_batches`` of one run: wall and main-thread CPU seconds from the
    first request of a batch to the exhaustion of the epoch's stream, i.e. the training loop
    (the trainer asks for the next batch after its last step). With ``--threads 1`` and
    ``--workers 0`` all training work runs on the main thread, so CPU samples/s does not
    depend on how busy the rest of the machine is."""

    def __init__(self, data):
        self.inner = data.train_batches
        self.epochs: list[dict] = []

    def __call__(self, *args, **kwargs):
        n, w0, c0 = 0, time.perf_counter(), time.thread_time()
        for x, y in self.inner(*args, **kwargs):
            n += x.shape[0]
            yield x, y
        self.epochs.append({"n": n, "wall_s": time.perf_counter() - w0, "cpu_s": time.thread_time() - c0})


def mean_sd(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


# ---------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="micro")
    ap.add_argument("--img-size", type=int, default=None, help="must equal the preset's input size")
    ap.add_argument("--patches", type=int, default=4, help="train (and test) patches per image")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--accumulate", type=int, default=1)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=2, help="trainer epochs (embedded set)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--bare-blocks", type=int, default=4, help="timed blocks of the bare loop (half before, half after)")
    ap.add_argument("--bare-steps", type=int, default=20, help="steps per bare block")
    ap.add_argument("--train-eval-images", type=int, default=256)
    ap.add_argument("--koniq", action="store_true", help="KonIQ-sized 1024x768 JPEGs; predict the epoch time")
    ap.add_argument("--n-images", type=int, default=KONIQ_TRAIN, help="training images of --koniq")
    ap.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "landscape_bench")
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = ap.parse_args()

    if a.threads:
        torch.set_num_threads(a.threads)
    preset_size = model_config(a.model).img_size
    if a.img_size is not None and a.img_size != preset_size:
        raise SystemExit(f"--img-size {a.img_size}: the trainer uses the preset's input size ({preset_size} px "
                         f"for {a.model})")
    device = resolve_device(a.device)
    if a.koniq:
        root = make_koniq(a.data_dir / f"koniq_{a.n_images}", a.n_images, os.cpu_count() or 1)
        spec_ds, epochs = f"koniq10k:{root}", 1
    else:
        root = ensure_synthetic(a.data_dir / "synthetic")     # the embedded default set (1008 images, 96 px)
        spec_ds, epochs = f"synthetic:{root}", a.epochs
    cfg = resolve_config({}, {
        "dataset": spec_ds, "model": a.model, "batch_sizes": [a.batch_size], "accumulate": a.accumulate,
        "epochs": epochs, "patience": 0, "train_patches": a.patches, "test_patches": a.patches,
        "train_eval_images": a.train_eval_images, "device": str(device), "workers": a.workers, "amp": a.bf16,
        "lr": 1e-5, "reference_batch": a.batch_size})
    spec = RunSpec(a.batch_size, 0, "sqrt", a.accumulate)
    data = pipeline.load_run_data(cfg)
    n_eval = {k: len(v.records) for k, v in data.eval_sets.items()}
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else f'{torch.get_num_threads()} threads'}), "
          f"model {a.model} {preset_size}px, batch {a.batch_size} (accumulate {a.accumulate}), {a.patches} patches, "
          f"bf16 {a.bf16 and device.type == 'cuda'}, workers {a.workers}; dataset {spec_ds}: "
          f"{len(data.train)} train images, eval {n_eval}; load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores")

    # batches for the bare loop: the pipeline's own first batches, moved to the device once
    n_bare = min(data.steps_per_epoch(a.batch_size), a.bare_steps)
    batches = []
    for x, y in data.train_batches(spec, 0):
        if x.shape[0] != a.batch_size:
            break
        batches.append((x.to(device), y.to(device)))
        if len(batches) >= n_bare:
            break
    before, before_cpu = bare_blocks(cfg, spec, batches, device, a.bare_steps, math.ceil(a.bare_blocks / 2))

    timed = TimedBatches(data)
    data.train_batches = timed            # instance attribute: this run's stream, timed
    with tempfile.TemporaryDirectory() as tmp:
        res = train_run(cfg, spec, Path(tmp) / "run", data=data)
        log = [json.loads(line) for line in (Path(tmp) / "run" / "log.jsonl").read_text().splitlines()]
    del data.train_batches
    if res.status != "finished":
        raise SystemExit(f"trainer run {res.status}: {res.message}")
    after, after_cpu = bare_blocks(cfg, spec, batches, device, a.bare_steps, a.bare_blocks // 2)

    bare_m, bare_s = mean_sd(before + after)
    cpu_m, cpu_s = mean_sd(before_cpu + after_cpu)
    trainer = [h["samples_per_s"] for h in log]
    trainer_cpu = [e["n"] / e["cpu_s"] for e in timed.epochs]
    steady = trainer[-1]
    ratio = steady / bare_m
    ratio_err = ratio * (bare_s / bare_m)
    ratio_cpu = trainer_cpu[-1] / cpu_m
    ratio_cpu_err = ratio_cpu * (cpu_s / cpu_m)
    print(f"bare loop        {bare_m:9.1f} +- {bare_s:.1f} samples/s wall, {cpu_m:.1f} +- {cpu_s:.1f} per CPU-s "
          f"(wall blocks before: {', '.join(f'{r:.1f}' for r in before)}; after: {', '.join(f'{r:.1f}' for r in after)})")
    for h, e in zip(log, timed.epochs):
        ev = h["epoch_time_s"] - h["train_time_s"]
        print(f"trainer epoch {h['epoch']}  {h['samples_per_s']:9.1f} samples/s wall, {e['n'] / e['cpu_s']:.1f} per "
              f"CPU-s  (train {h['train_time_s']:.1f} s, eval + checkpoints {ev:.1f} s = "
              f"{ev / h['train_time_s']:.0%} of training, peak {h['peak_memory_bytes'] / 2**20:.0f} MiB "
              f"{h['memory_kind']})")
    print(f"ratio trainer (epoch {log[-1]['epoch']}) / bare = {ratio:.3f} +- {ratio_err:.3f} wall-clock, "
          f"{ratio_cpu:.3f} +- {ratio_cpu_err:.3f} CPU-time  (target >= 0.85)")
    if device.type == "cpu" and (a.workers or torch.get_num_threads() > 1):
        print("note: the CPU-time figures count only the main thread; use --threads 1 --workers 0 for them")

    figures = {"bare_samples_per_s": bare_m, "bare_samples_per_s_sd": bare_s, "bare_blocks": before + after,
               "bare_cpu_samples_per_s": cpu_m, "bare_cpu_samples_per_s_sd": cpu_s,
               "trainer_samples_per_s": trainer, "trainer_cpu_samples_per_s": trainer_cpu,
               "ratio": ratio, "ratio_sd": ratio_err, "ratio_cpu": ratio_cpu, "ratio_cpu_sd": ratio_cpu_err,
               "epochs": log, "args": {k: str(v) for k, v in vars(a).items()}}
    if a.koniq:
        first = log[0]
        train_s = KONIQ_TRAIN * a.patches / first["samples_per_s"]
        eval_imgs = n_eval["val"] + n_eval["test"] + n_eval["train"]
        full_eval = KONIQ_VAL + KONIQ_TEST + min(a.train_eval_images, KONIQ_TRAIN)
        eval_s = (first["epoch_time_s"] - first["train_time_s"]) * full_eval / eval_imgs
        print(f"KonIQ epoch ({KONIQ_TRAIN} images x {a.patches} patches = {KONIQ_TRAIN * a.patches} patches): "
              f"predicted {train_s / 60:.1f} min training + {eval_s / 60:.1f} min evaluation "
              f"({full_eval} images x {a.patches} crops) = {(train_s + eval_s) / 60:.1f} min; "
              f"users report {USER_MINUTES:.0f} min/epoch ({KONIQ_TRAIN * 20 / (USER_MINUTES * 60):.0f} patches/s) "
              f"for Swin-B, batch 32, 20 patches")
        figures.update(koniq_train_min=train_s / 60, koniq_eval_min=eval_s / 60, user_min=USER_MINUTES)
    if a.json:
        a.json.write_text(json.dumps({**figures, "provenance": provenance(bench="train_throughput")}, indent=2,
                                     default=str))


if __name__ == "__main__":
    main()
