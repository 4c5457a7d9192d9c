"""Shared pieces of the benchmarks: the micro Swin and its random data, a wall/CPU clock, the
machine description, the full-data gradient and the relative error against a reference spectrum.

The scripts beside this file import it as ``from common import ...`` (they put ``bench/`` on
``sys.path``)."""
from __future__ import annotations

import os
import platform
import time

import numpy as np
import torch


def build_model(name: str) -> tuple[torch.nn.Module, int]:
    """``(model, input size)``. ``micro``: timm Swin at 64 px, patch 4, window 4, embed 32,
    depths (2, 2), heads (2, 4), 1 output (136k parameters); ``swin_tiny``/``swin_base``: timm
    ``swin_{tiny,base}_patch4_window7_224`` (random init), 1 output, 224 px."""
    import timm
    from timm.models.swin_transformer import SwinTransformer

    if name == "micro":
        return SwinTransformer(img_size=64, patch_size=4, window_size=4, embed_dim=32, depths=(2, 2),
                               num_heads=(2, 4), num_classes=1), 64
    return timm.create_model(f"{name}_patch4_window7_224", pretrained=False, num_classes=1), 224


def random_batches(samples: int, batch_size: int, size: int, seed: int, device) -> list:
    """``samples`` N(0, 1) images ``3 x size x size`` with N(0, 1) targets, in fixed batches."""
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(samples, 3, size, size, generator=g)
    Y = torch.randn(samples, 1, generator=g)
    return [(X[i:i + batch_size].to(device), Y[i:i + batch_size].to(device))
            for i in range(0, samples, batch_size)]


def full_gradient(model: torch.nn.Module, crit, batches) -> list[torch.Tensor]:
    """The full-data gradient ``sum_b (n_b / N) d crit(f(x_b), y_b) / d theta`` over the trainable
    parameters, one backward per batch (the reference cost an HVP is compared with)."""
    params = [p for p in model.parameters() if p.requires_grad]
    n = sum(x.shape[0] for x, _ in batches)
    total = [torch.zeros_like(p) for p in params]
    for x, y in batches:
        g = torch.autograd.grad(crit(model(x), y), params)
        for t, gi in zip(total, g):
            t.add_(gi, alpha=x.shape[0] / n)
    return total


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class Clock:
    """Wall and process-CPU seconds of a block (the device synchronised at both ends)."""

    def __init__(self, device="cpu"):
        self.device = device

    def __enter__(self):
        sync(self.device)
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        sync(self.device)
        self.wall, self.cpu = time.perf_counter() - self.w0, time.process_time() - self.c0

    def now(self) -> tuple[float, float]:
        """Wall and CPU seconds since the block started (the device synchronised first)."""
        sync(self.device)
        return time.perf_counter() - self.w0, time.process_time() - self.c0


def machine() -> dict:
    """Processor, cores, load average (1, 5, 15 min), torch version and threads."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return dict(cpu=cpu, cores=os.cpu_count(), loadavg=[round(x, 2) for x in os.getloadavg()],
                torch=torch.__version__, threads=torch.get_num_threads(), gpu=gpu)


def rel_err(values, ref, nearest: bool = False) -> float:
    """Largest relative error of ``values[i]`` against ``ref[i]`` (both most wanted first); with
    ``nearest``, each value against the reference eigenvalue nearest to it instead."""
    v, r = np.asarray(values, dtype=float), np.asarray(ref, dtype=float)
    if nearest:
        match = r[np.argmin(np.abs(r[None, :] - v[:, None]), axis=1)]
        return float(np.max(np.abs(v - match) / np.abs(match)))
    r = r[:len(values)]
    return float(np.max(np.abs(v - r) / np.abs(r)))
