"""Every GPU measurement of issue 19 in one script (<= 8 min on one H100/H200), one JSON out.

    python bench/gpu_check.py --out gpu_check.json            # CUDA: Swin-B, swin_tiny, 224 px
    python bench/gpu_check.py --smoke --out smoke.json        # CPU, seconds (what CI runs)

Sections (each with its own seconds; a section that would pass the deadline is skipped with a note):

- ``epoch``: the toolkit's Swin-B IQA model (``landscape.models``, preset ``base``, 224 px),
  :class:`~landscape.train.losses.IQALoss`, AdamW, :func:`landscape.train.step.train_step` at batch 32
  with bf16 autocast, fed by the real training loader (:class:`landscape.data.patches.TrainPatches`,
  20 random 224-px patches per image with flips, DataLoader workers) on KonIQ-sized JPEGs it writes
  (1024 x 768, quality 90, :func:`data_path.make_jpegs`). Variants: eager, eager channels-last,
  ``torch.compile`` (compilation excluded from the step time, reported apart). Each runs
  ``--warmup`` then ``--steps`` timed steps; the fastest variant's seconds per step are
  **extrapolated** to a KonIQ epoch: ``ceil(7058 x 20 / 32)`` steps x step seconds (not measured on
  a full epoch). Also reported: the loader alone (patches/s with those workers) and the model alone
  (batches already on the device), to show which one bounds the epoch. Target: <= 120 s.
- ``memory``: peak memory (``landscape.device.peak_bytes``: CUDA max allocated; peak RSS on CPU)
  of two eager bf16 training steps at batch 24/32/48/64, an out-of-memory error counted as
  "does not fit"; the largest batch that fits.
- ``hessian``: top-5 Hessian eigenvalues of ``swin_tiny`` (timm, random init, 1 output, 224 px),
  MSE on ``--hessian-samples`` N(0, 1) images, eval mode: landscape ``top_eigenvalues(k=5,
  tol=1e-3)`` against hessian-eigenthings' Lanczos (full reorthogonalisation) run for the same
  number of products, both judged against a landscape run to ``tol=1e-5`` (smoke: 1e-4); skipped with a note
  when hessian-eigenthings is not installed.
- ``surface``: :func:`landscape.surface.compute_surface` cells/s on ``swin_tiny`` (11 x 11 grid,
  eager; compiled as well unless ``--smoke``), beside the bare forward's cells/s.

``--smoke``: CPU, micro model (32 px), 160 x 120 JPEGs with 32-px patches, 2 timed steps, batch
sizes 2/4 (the epoch at batch 4), k = 2, a 3 x 3 grid, no torch.compile; the JSON has the same keys.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import Clock, build_model, machine, random_batches, rel_err, sync  # noqa: E402
from data_path import KONIQ_TRAIN_IMAGES, PATCHES, make_jpegs  # noqa: E402

from landscape.data.patches import TrainPatchConfig, TrainPatches, train_loader  # noqa: E402
from landscape.device import is_oom, memory_kind, peak_bytes, reset_peak  # noqa: E402
from landscape.models import create_model, model_config  # noqa: E402
from landscape.provenance import versions  # noqa: E402
from landscape.train.losses import IQALoss  # noqa: E402
from landscape.train.step import train_step  # noqa: E402

EPOCH_TARGET_S = 120.0
SCHEMA = 1


def settings(smoke: bool) -> dict:
    """What each mode measures (the JSON records it)."""
    if smoke:
        return dict(device="cpu", model="micro", img=(160, 120), patch=model_config("micro").img_size, images=4, batch=4, warmup=1, steps=2,
                    batch_sizes=[2, 4], workers=0, compile=False, h_model="micro", h_samples=2, h_batch=2, k=2, ref_tol=1e-4,
                    grid=3, s_samples=4, amp=False)
    return dict(device="cuda", model="base", img=(1024, 768), patch=224, images=96, batch=32, warmup=3, steps=20,
                batch_sizes=[24, 32, 48, 64], workers=8, compile=True, h_model="swin_tiny", h_samples=128,
                h_batch=64, k=5, ref_tol=1e-5, grid=11, s_samples=128, amp=True)


# ---------------------------------------------------------------- epoch and memory

def _model(s: dict, device, channels_last: bool = False):
    m = create_model(model_config(s["model"])).to(device).train()
    if channels_last:
        m = m.to(memory_format=torch.channels_last)
    return m, IQALoss(), torch.optim.AdamW(m.parameters(), lr=1e-5)


def _timed_steps(step, batches, warmup: int, steps: int, device) -> tuple[float, float]:
    """``(first-call seconds, median seconds per step)`` over ``steps`` after ``warmup``."""
    it = iter(batches)
    with Clock(device) as first:
        step(*next(it))
    for _ in range(warmup - 1):
        step(*next(it))
    times = []
    for _ in range(steps):
        x, y = next(it)
        with Clock(device) as c:
            step(x, y)
        times.append(c.wall)
    return first.wall, float(np.median(times))


def _loader_batches(stream, loader, device, channels_last: bool):
    """Endless device batches from the real loader (epoch after epoch)."""
    epoch = 0
    while True:
        stream.set_epoch(epoch)
        for b in loader:
            x = b.inputs.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, b.targets.to(device, non_blocking=True)
        epoch += 1


def measure_epoch(s: dict, device, folder: Path, deadline: float) -> dict:
    records = make_jpegs(folder, s["images"], 90, *s["img"])
    stream = TrainPatches(records, TrainPatchConfig(patch_size=s["patch"], train_patch_num=PATCHES,
                                                    batch_size=s["batch"], seed=0, hflip=True, cache_mb=0.0))
    loader = train_loader(stream, s["workers"], pin_memory=device.type == "cuda")
    n_steps = s["warmup"] + s["steps"]
    # the loader alone
    gen = _loader_batches(stream, loader, torch.device("cpu"), False)
    next(gen)
    with Clock() as c:
        for _ in range(s["steps"]):
            next(gen)
    loader_pps = s["steps"] * s["batch"] / c.wall
    variants = {}
    names = ["eager", "eager_channels_last"] + (["compiled"] if s["compile"] else [])
    for name in names:
        if time.perf_counter() > deadline:
            variants[name] = dict(skipped="deadline")
            continue
        cl = name == "eager_channels_last"
        model, crit, opt = _model(s, device, cl)
        fwd = torch.compile(model) if name == "compiled" else model

        def step(x, y, fwd=fwd, crit=crit, opt=opt):
            train_step(fwd, crit, opt, x, y, 1, s["amp"])

        first, per_step = _timed_steps(step, _loader_batches(stream, loader, device, cl), s["warmup"], s["steps"],
                                       device)
        variants[name] = dict(first_step_s=first, step_s=per_step, patches_per_s=s["batch"] / per_step,
                              steps=s["steps"], warmup=s["warmup"])
        del model, opt, fwd
    done = {k: v for k, v in variants.items() if "step_s" in v}
    best = min(done, key=lambda k: done[k]["step_s"])
    # the model alone on one resident batch, best variant
    model, crit, opt = _model(s, device, best == "eager_channels_last")
    fwd = torch.compile(model) if best == "compiled" else model
    x, y = next(_loader_batches(stream, loader, device, best == "eager_channels_last"))
    _, model_step = _timed_steps(lambda a, b: train_step(fwd, crit, opt, a, b, 1, s["amp"]),
                                 iter([(x, y)] * n_steps), s["warmup"], s["steps"], device)
    epoch_steps = math.ceil(KONIQ_TRAIN_IMAGES * PATCHES / s["batch"])
    epoch_s = epoch_steps * done[best]["step_s"]
    return dict(model=s["model"], batch_size=s["batch"], patches_per_image=PATCHES, patch_px=s["patch"],
                images_generated=s["images"], image_size=list(s["img"]), workers=s["workers"], bf16=s["amp"],
                variants=variants, best=best, step_s=done[best]["step_s"], patches_per_s=done[best]["patches_per_s"],
                loader_patches_per_s=loader_pps, model_only_patches_per_s=s["batch"] / model_step,
                epoch_steps=epoch_steps, epoch_s_estimate=epoch_s, epoch_min_estimate=epoch_s / 60,
                target_epoch_s=EPOCH_TARGET_S,
                note=f"extrapolated: {epoch_steps} steps x median of {s['steps']} measured steps, not a full epoch")


def measure_memory(s: dict, device, deadline: float) -> dict:
    per = {}
    for b in s["batch_sizes"]:
        if time.perf_counter() > deadline:
            per[str(b)] = dict(skipped="deadline")
            continue
        model, crit, opt = _model(s, device)
        x = torch.randn(b, 3, s["patch"], s["patch"], device=device)
        y = torch.rand(b, device=device)
        reset_peak(device)
        try:
            for _ in range(2):
                train_step(model, crit, opt, x, y, 1, s["amp"])
            sync(device)
            per[str(b)] = dict(fits=True, peak_mib=peak_bytes(device) / 2 ** 20)
        except RuntimeError as e:
            if not is_oom(e):
                raise
            per[str(b)] = dict(fits=False, peak_mib=None)
        del model, opt, x, y
        if device.type == "cuda":
            torch.cuda.empty_cache()
    fits = [int(b) for b, v in per.items() if v.get("fits")]
    return dict(model=s["model"], patch_px=s["patch"], bf16=s["amp"], kind=memory_kind(device), per_batch=per,
                largest_fitting=max(fits) if fits else None)


# ---------------------------------------------------------------- Hessian and surface

def _eval_setup(s: dict, device, samples: int, seed: int):
    """The Hessian/surface model in eval mode, MSE, and ``samples`` random images in batches."""
    torch.manual_seed(0)
    model, size = build_model(s["h_model"])
    model = model.to(device).eval()
    return model, size, torch.nn.MSELoss(), random_batches(samples, s["h_batch"], size, seed, device)


def measure_hessian(s: dict, device, deadline: float) -> dict:
    from landscape.hessian import HessianOperator, top_eigenvalues
    model, size, crit, batches = _eval_setup(s, device, s["h_samples"], 1)
    out = dict(model=s["h_model"], px=size, samples=s["h_samples"], batch=s["h_batch"], k=s["k"], tol=1e-3)
    with Clock(device) as c:
        with HessianOperator(model, crit, batches) as op:
            r = top_eigenvalues(op, s["k"], tol=1e-3)
    ours = dict(eigenvalues=r.eigenvalues.tolist(), products=int(r.n_matvecs), seconds=c.wall,
                converged=bool(np.all(r.converged)))
    with HessianOperator(model, crit, batches) as op:
        ref = top_eigenvalues(op, s["k"], tol=s["ref_tol"], max_iter=400)
    out.update(reference=ref.eigenvalues.tolist(), reference_converged=bool(np.all(ref.converged)),
               landscape=dict(ours, max_rel_err=rel_err(ours["eigenvalues"], ref.eigenvalues)))
    try:
        from hessian_eigenthings import HessianOperator as HEOperator
        from hessian_eigenthings.algorithms.lanczos import lanczos_tridiagonal
        from hessian_eigenthings.loss_fns import supervised_loss
    except ImportError:
        out["hessian_eigenthings"] = dict(skipped="hessian-eigenthings not installed")
        return out
    if time.perf_counter() > deadline:
        out["hessian_eigenthings"] = dict(skipped="deadline")
        return out
    with Clock(device) as c:
        op = HEOperator(model, batches, supervised_loss(crit), method="autograd")
        v0 = torch.randn(op.size, generator=torch.Generator().manual_seed(0), dtype=op.dtype).to(device)
        tri = lanczos_tridiagonal(op, v0, ours["products"], reorthogonalize=True)
        T = torch.diag(tri.alphas.double().cpu()) + torch.diag(tri.betas.double().cpu(), 1) \
            + torch.diag(tri.betas.double().cpu(), -1)
        he = np.sort(np.linalg.eigvalsh(T.numpy()))[::-1][:s["k"]]
    out["hessian_eigenthings"] = dict(eigenvalues=he.tolist(), products=int(tri.iterations), seconds=c.wall,
                                      max_rel_err=rel_err(he, ref.eigenvalues),
                                      note="same number of products as landscape used")
    out["landscape_over_eigenthings_time"] = ours["seconds"] / c.wall
    return out


def measure_surface(s: dict, device, deadline: float) -> dict:
    from landscape.surface import DirectionSpec, compute_surface
    model, size, crit, batches = _eval_setup(s, device, s["s_samples"], 2)
    cells = s["grid"] ** 2
    with torch.inference_mode():
        model(batches[0][0])
        with Clock(device) as c:
            for _ in range(cells):
                for x, _y in batches:
                    model(x)
    out = dict(model=s["h_model"], samples=s["s_samples"], grid=s["grid"], cells=cells, bare_forward_cells_per_s=cells / c.wall)
    for mode in ["off"] + (["on"] if s["compile"] else []):
        key = "eager" if mode == "off" else "compiled"
        if time.perf_counter() > deadline:
            out[f"{key}_skipped"] = "deadline"
            continue
        with tempfile.TemporaryDirectory() as d, Clock(device) as c:
            r = compute_surface(model, crit, {"train": batches}, d, f"-1:1:{s['grid']}", None, DirectionSpec(seed=0),
                                compile=mode)
        out[f"{key}_cells_per_s"] = cells / c.wall
        out[f"{key}_forward"] = dict(r.attrs["forward"])
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="CPU, micro model, seconds (CI)")
    ap.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    ap.add_argument("--budget-s", type=float, default=None, help="deadline for starting sections (default 450 s; "
                    "smoke: 120 s)")
    a = ap.parse_args(argv)
    s = settings(a.smoke)
    device = torch.device(s["device"])
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device (use --smoke on CPU)")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    t0 = time.perf_counter()
    deadline = t0 + (a.budget_s if a.budget_s is not None else (120.0 if a.smoke else 450.0))
    result = dict(schema=SCHEMA, mode="smoke" if a.smoke else "gpu", machine=machine(), versions=versions(),
                  settings=s)
    with tempfile.TemporaryDirectory() as d:
        for name, fn in (("epoch", lambda: measure_epoch(s, device, Path(d), deadline)),
                         ("memory", lambda: measure_memory(s, device, deadline)),
                         ("hessian", lambda: measure_hessian(s, device, deadline)),
                         ("surface", lambda: measure_surface(s, device, deadline))):
            t = time.perf_counter()
            result[name] = fn()
            result[name]["section_s"] = time.perf_counter() - t
            print(f"{name}: {json.dumps(result[name], default=float)}", flush=True)
    result["seconds_total"] = time.perf_counter() - t0
    a.out.write_text(json.dumps(result, indent=2, default=float))
    print(f"wrote {a.out} ({result['seconds_total']:.1f} s)")
    return result


if __name__ == "__main__":
    main()
