"""Benchmark: the training loader's patches/s on KonIQ-sized JPEGs against a bare loop (issue 19, 4).

    python bench/data_path.py                      # 12 images, 3 alternating rounds, 1 thread
    python bench/data_path.py --images 32 --rounds 5 --json /tmp/data_path.json

Images: ``--images`` synthetic 1024 x 768 RGB JPEGs written by Pillow at quality 90
(:func:`make_jpegs`): a smooth colour gradient, a few bicubically upsampled blobs, hard-edged
rectangles and Gaussian grain, so that the entropy-coded size (about 150-300 kB) and the decode
cost are those of a photograph, not of a flat image.

Loader (what the trainer runs per worker process): :class:`landscape.data.patches.TrainPatches`
with the trainer's settings for KonIQ (patch 224, ``train_patch_num`` 20, batch 32, random
horizontal flips, native size: KonIQ has no ``resize_short``), iterated in-process for one epoch
(exactly the work one DataLoader worker does on its shard), with the decoded-image cache off: on
full KonIQ (7,058 x 2.36 MB decoded = 16.6 GB) the trainer's 2 GiB cache holds an eighth of the
set, so an epoch decodes nearly every image.

Bare loop, same run, same files: ``PIL.Image.open(p).convert('RGB')`` -> numpy, 20 random
224-px crops with random flips by slicing, stacked, normalised to float32 ``(20, 3, 224, 224)``
with the ImageNet mean/std. The two alternate (``--rounds``), medians are reported; the ratio
``loader / bare`` (patches/s over patches/s) is the figure (target >= 0.8).

Decodes per epoch: ``landscape.data.patches.decode_image`` is wrapped by a counter for one
epoch; the loader passes when it decodes each image exactly once for all its patches.

Wall and process CPU seconds are both recorded (one thread: on a loaded machine the CPU
seconds are the steadier measure of the work). Workers: a KonIQ epoch in 2 minutes needs
7,058 x 20 / 120 = 1,176 patches/s; the script prints ``ceil(1176 / loader patches per CPU
second)``, which assumes one free core per worker (the workers share no state).
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import machine  # noqa: E402

from landscape.data import patches as patches_mod  # noqa: E402
from landscape.data.images import normalize_patches  # noqa: E402
from landscape.data.records import ImageRecord  # noqa: E402

KONIQ_TRAIN_IMAGES = 7058
PATCHES = 20
PATCH = 224
EPOCH_SECONDS = 120.0
TARGET_PPS = KONIQ_TRAIN_IMAGES * PATCHES / EPOCH_SECONDS   # 1,176.3 patches/s
TARGET_RATIO = 0.8


def koniq_like_image(seed: int, width: int = 1024, height: int = 768) -> np.ndarray:
    """uint8 ``(height, width, 3)``: gradient + upsampled blobs + hard-edged rectangles + grain."""
    from PIL import Image
    rng = np.random.default_rng([19, seed])
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    c0, c1 = rng.uniform(30, 220, 3), rng.uniform(30, 220, 3)
    t = (xx / width * np.cos(rng.uniform(0, np.pi)) + yy / height * np.sin(rng.uniform(0, np.pi)))[..., None]
    img = c0 + (c1 - c0) * (t - t.min()) / (np.ptp(t) + 1e-6)
    low = rng.normal(0, 35, (max(2, height // 64), max(2, width // 64), 3)).astype(np.float32)
    blobs = np.stack([np.asarray(Image.fromarray(low[..., c]).resize((width, height), Image.BICUBIC))
                      for c in range(3)], -1)
    img = img + blobs
    for _ in range(int(rng.integers(6, 14))):
        h, w = int(rng.integers(height // 20, height // 3)), int(rng.integers(width // 20, width // 3))
        y, x = int(rng.integers(0, height - h)), int(rng.integers(0, width - w))
        img[y:y + h, x:x + w] = 0.4 * img[y:y + h, x:x + w] + 0.6 * rng.uniform(0, 255, 3)
    img = img + rng.normal(0, rng.uniform(3, 9), img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def make_jpegs(folder: Path, n: int, quality: int = 90, width: int = 1024, height: int = 768) -> list[ImageRecord]:
    """Write ``n`` KonIQ-sized JPEGs into ``folder``; records with scores in [1, 5]."""
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        p = folder / f"{i:05d}.jpg"
        if not p.is_file():
            Image.fromarray(koniq_like_image(i, width, height)).save(p, quality=quality)
        records.append(ImageRecord(path=str(p), score=1.0 + 4.0 * (i % 7) / 6, split="train", group=str(i)))
    return records


def loader_stream(records, batch_size: int = 32, patches: int = PATCHES, patch: int = PATCH, seed: int = 0):
    """The trainer's training stream for KonIQ (native size, flips, cache off)."""
    return patches_mod.TrainPatches(records, patches_mod.TrainPatchConfig(
        patch_size=patch, train_patch_num=patches, batch_size=batch_size, seed=seed, hflip=True, cache_mb=0.0))


def time_loader(stream, epoch: int) -> tuple[float, float, int]:
    """Wall seconds, process CPU seconds and patches of one in-process epoch of ``stream``."""
    stream.set_epoch(epoch)
    t0, c0 = time.perf_counter(), time.process_time()
    n = sum(b.inputs.shape[0] for b in stream)
    return time.perf_counter() - t0, time.process_time() - c0, n


def time_bare(paths, seed: int, patches: int = PATCHES, patch: int = PATCH) -> tuple[float, float, int]:
    """Wall seconds, process CPU seconds and patches of the bare decode + crops + flips +
    normalisation loop."""
    from PIL import Image
    rng = np.random.default_rng(seed)
    t0, c0 = time.perf_counter(), time.process_time()
    n = 0
    for p in paths:
        with Image.open(p) as im:
            img = np.asarray(im.convert("RGB"))
        h, w = img.shape[:2]
        tops, lefts = rng.integers(0, h - patch + 1, patches), rng.integers(0, w - patch + 1, patches)
        flips = rng.random(patches) < 0.5
        crops = np.stack([img[t:t + patch, x:x + patch][:, ::-1] if f else img[t:t + patch, x:x + patch]
                          for t, x, f in zip(tops, lefts, flips)])
        normalize_patches(crops)
        n += patches
    return time.perf_counter() - t0, time.process_time() - c0, n


def count_decodes(stream, epoch: int) -> tuple[int, int]:
    """``(decodes, images)`` of one epoch, counting calls of the loader's ``decode_image``."""
    real = patches_mod.decode_image
    calls = [0]

    def counting(*a, **k):
        calls[0] += 1
        return real(*a, **k)

    patches_mod.decode_image = counting
    try:
        stream.set_epoch(epoch)
        for _ in stream:
            pass
    finally:
        patches_mod.decode_image = real
    return calls[0], len(stream.records)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quality", type=int, default=90)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (a worker process uses one)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        records = make_jpegs(Path(d), a.images, a.quality)
        sizes = [Path(r.path).stat().st_size for r in records]
        print(f"{a.images} JPEGs 1024x768 quality {a.quality}, {np.mean(sizes) / 1e3:.0f} kB mean "
              f"({min(sizes) / 1e3:.0f}-{max(sizes) / 1e3:.0f}), written in {time.perf_counter() - t0:.1f} s; "
              f"machine {machine()}", flush=True)
        stream = loader_stream(records)
        paths = [r.path for r in records]
        time_loader(stream, 0), time_bare(paths, 0)           # warm-up (page cache, imports)
        loader_t, bare_t, loader_c, bare_c = [], [], [], []
        for r in range(a.rounds):
            t, c, n_l = time_loader(stream, r + 1)
            loader_t.append(t), loader_c.append(c)
            t, c, n_b = time_bare(paths, r + 1)
            bare_t.append(t), bare_c.append(c)
            print(f"round {r}: loader {n_l / loader_t[-1]:.1f} patches/s ({n_l / loader_c[-1]:.1f} per CPU s), "
                  f"bare {n_b / bare_t[-1]:.1f} ({n_b / bare_c[-1]:.1f}), ratio {bare_t[-1] / loader_t[-1]:.3f} "
                  f"(CPU {bare_c[-1] / loader_c[-1]:.3f})", flush=True)
        decodes, images = count_decodes(stream, a.rounds + 1)
    pps_l = n_l / statistics.median(loader_t)
    pps_b = n_b / statistics.median(bare_t)
    cps_l, cps_b = n_l / statistics.median(loader_c), n_b / statistics.median(bare_c)
    ratio, ratio_cpu = pps_l / pps_b, cps_l / cps_b
    workers = math.ceil(TARGET_PPS / cps_l)
    print(f"loader {pps_l:.1f} patches/s per process, bare loop {pps_b:.1f} patches/s: ratio {ratio:.3f} "
          f"(target >= {TARGET_RATIO}; per round "
          f"{', '.join(f'{b / t:.3f}' for t, b in zip(loader_t, bare_t))})")
    print(f"per CPU second (steadier on a loaded machine): loader {cps_l:.1f}, bare {cps_b:.1f} patches: "
          f"ratio {ratio_cpu:.3f}")
    print(f"decodes per epoch: {decodes} for {images} images ({'once per image' if decodes == images else 'NOT once'}"
          f", {PATCHES} patches each)")
    print(f"a KonIQ epoch in {EPOCH_SECONDS:.0f} s needs {TARGET_PPS:.0f} patches/s: {workers} worker processes "
          f"at {cps_l:.1f} patches per CPU second each (one free core each)")
    if a.json:
        a.json.write_text(json.dumps(dict(
            images=a.images, quality=a.quality, jpeg_kb_mean=float(np.mean(sizes)) / 1e3, machine=machine(),
            loader_s=loader_t, bare_s=bare_t, loader_cpu_s=loader_c, bare_cpu_s=bare_c, loader_patches_per_s=pps_l,
            bare_patches_per_s=pps_b, ratio=ratio, loader_patches_per_cpu_s=cps_l, bare_patches_per_cpu_s=cps_b,
            ratio_cpu=ratio_cpu,
            decodes_per_epoch=decodes, target_patches_per_s=TARGET_PPS, workers_needed=workers), indent=2))


if __name__ == "__main__":
    main()
