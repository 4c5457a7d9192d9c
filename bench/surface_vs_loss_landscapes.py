"""Points per second of a 2-D loss plane: ours vs loss-landscapes vs bare forward passes.

Run by hand (not a test):

    .venv/bin/python bench/surface_vs_loss_landscapes.py --grid 51 --samples 256     # the CLI's default grid
    .venv/bin/python bench/surface_vs_loss_landscapes.py --grid 11 --compile off      # eager against eager
    .venv/bin/python bench/surface_vs_loss_landscapes.py --device cuda --model swin_tiny --batch-size 64

Same model, same data, same batching and same grid (``grid x grid`` points) for:

- ``limit``: a bare loop of forward passes over the data, once per grid point,
  under ``torch.inference_mode`` (no parameter updates, no loss, no metrics);
- ``ours``: :func:`landscape.surface.compute_surface` (filter-normalised
  directions, functional evaluation, loss + SRCC + PLCC, HDF5 flushes), timed
  end to end including drawing the directions, writing the files and, when its
  ``compile`` rule (default ``auto``: when the cells left would take over 5 min
  eagerly) compiles the forward pass, the compilation and its check against eager;
- ``loss-landscapes``: ``random_plane(..., normalization='layer')`` (its filter
  mode raises ZeroDivisionError on timm Swin), which evaluates only the loss.

Rounds alternate the three methods (``--repeats``) and the median time of each is
reported, with the min-max range, so that load from other processes on a shared
machine shows up as spread rather than as a bias against one method.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from landscape.provenance import versions  # noqa: E402
from landscape.surface import DirectionSpec, compute_surface  # noqa: E402


def build_model(name: str) -> tuple[nn.Module, int]:
    """The ``micro`` Swin (64 px, 136k parameters) or Swin-Tiny (224 px), one output."""
    from timm.models.swin_transformer import SwinTransformer
    if name == "micro":
        return SwinTransformer(img_size=64, patch_size=4, window_size=4, embed_dim=32, depths=(2, 2),
                               num_heads=(2, 4), num_classes=1), 64
    if name == "swin_tiny":
        import timm
        return timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=1), 224
    raise SystemExit(f"unknown model '{name}' (micro, swin_tiny)")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_limit(model, batches, n_points, device) -> float:
    model.eval()
    sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for _ in range(n_points):
            for x, _y in batches:
                model(x)
    sync(device)
    return time.perf_counter() - t0


def time_ours(model, criterion, batches, grid, device, seed, compile) -> tuple[float, dict]:
    """Seconds of one full plane by ``compute_surface`` and how its forward ran (eager/compiled)."""
    with tempfile.TemporaryDirectory() as d:
        sync(device)
        t0 = time.perf_counter()
        r = compute_surface(model, criterion, {"train": batches}, d, f"-1:1:{grid}", None,
                            DirectionSpec(seed=seed), compile=compile)
        sync(device)
        dt = time.perf_counter() - t0
    assert r.complete and r.computed_now == grid * grid
    return dt, r.attrs["forward"]


def time_loss_landscapes(model, criterion, batches, grid, device) -> float:
    from loss_landscapes import random_plane
    from loss_landscapes.metrics import Metric

    class BatchedLoss(Metric):
        """Size-weighted mean loss over the same batches (its own ``Loss`` takes one tensor)."""

        def __call__(self, wrapper) -> float:
            n = sum(x.shape[0] for x, _ in batches)
            return sum(criterion(wrapper.forward(x), y).item() * x.shape[0] / n for x, y in batches)

    sync(device)
    t0 = time.perf_counter()
    random_plane(model, BatchedLoss(), distance=1, steps=grid, normalization="layer", deepcopy_model=True)
    sync(device)
    return time.perf_counter() - t0


def paired_overhead(model, criterion, batches, n_pairs, device) -> list[float]:
    """Per-point time ratios ours/limit from ``n_pairs`` alternating single points.

    One point of ours = filling the perturbed weights + one :class:`Evaluator`
    call (loss, SRCC, PLCC, one host transfer); one point of the limit = bare
    forward passes over the same batches. Alternating point by point makes the
    ratio insensitive to slow drifts in machine load.
    """
    from landscape.surface.directions import random_directions
    from landscape.surface.evaluate import Evaluator
    from landscape.surface.plane import planar_params

    evaluator = Evaluator(model, criterion, {"train": batches})
    params_at = planar_params(model, random_directions(model))
    model.eval()
    ratios = []
    for i in range(n_pairs):
        sync(device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            for x, _y in batches:
                model(x)
        sync(device)
        t1 = time.perf_counter()
        evaluator(params_at(0.1 + 0.01 * i, -0.05))
        t2 = time.perf_counter()
        ratios.append((t2 - t1) / (t1 - t0))
    return ratios


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="micro", choices=["micro", "swin_tiny"])
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=None, help="default: all samples in one batch")
    ap.add_argument("--grid", type=int, default=11, help="points per axis (grid x grid in all)")
    ap.add_argument("--repeats", type=int, default=1, help="alternating rounds; medians reported")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-ll", action="store_true", help="skip loss-landscapes (e.g. not installed)")
    ap.add_argument("--paired", type=int, default=0, help="also time N alternating single points ours/limit")
    ap.add_argument("--compile", default="auto", choices=["auto", "on", "off"],
                    help="ours: torch.compile of the forward pass (compute_surface's compile=; timed end to end, "
                         "compilation included)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model, img = build_model(args.model)
    model = model.to(device)
    bs = args.batch_size or args.samples
    xs = torch.randn(args.samples, 3, img, img, device=device)
    ys = torch.rand(args.samples, 1, device=device) * 4 + 1
    batches = [(xs[i:i + bs], ys[i:i + bs]) for i in range(0, args.samples, bs)]
    criterion = nn.MSELoss()
    n_points = args.grid * args.grid
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model {args.model} ({n_params} parameters, {img} px), {args.samples} samples in batches of {bs}, "
          f"grid {args.grid}x{args.grid} = {n_points} points, device {device}, threads {torch.get_num_threads()}")
    print(f"versions: {versions()}")
    time_limit(model, batches[:1], 1, device)  # warm-up
    times: dict[str, list[float]] = {"limit": [], "ours": [], "loss-landscapes": []}
    for r in range(args.repeats):
        times["limit"].append(time_limit(model, batches, n_points, device))
        t, forward = time_ours(model, criterion, batches, args.grid, device, seed=r, compile=args.compile)
        times["ours"].append(t)
        print(f"round {r}: ours' forward: {forward}", flush=True)
        if not args.skip_ll:
            times["loss-landscapes"].append(time_loss_landscapes(model, criterion, batches, args.grid, device))
        print(f"round {r}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items() if v), flush=True)
    pps = {}
    for k, v in times.items():
        if not v:
            continue
        med = statistics.median(v)
        pps[k] = n_points / med
        print(f"{k:16s} {pps[k]:8.3f} points/s  (median {med:.2f} s over {len(v)} rounds, "
              f"range {min(v):.2f}-{max(v):.2f} s)")
    ratio = [(n_points / o) / (n_points / lim) for o, lim in zip(times["ours"], times["limit"])]
    print(f"ours / limit           = {pps['ours'] / pps['limit']:.3f}  (target >= 0.9; per round "
          f"{', '.join(f'{r:.3f}' for r in ratio)})")
    if "loss-landscapes" in pps:
        ratio = [ll / o for o, ll in zip(times["ours"], times["loss-landscapes"])]
        print(f"ours / loss-landscapes = {pps['ours'] / pps['loss-landscapes']:.3f}  (target >= 1.2; per round "
              f"{', '.join(f'{r:.3f}' for r in ratio)})")
    if args.paired:
        r = paired_overhead(model, criterion, batches, args.paired, device)
        q = statistics.quantiles(r, n=4) if len(r) > 1 else [r[0]] * 3
        print(f"paired single points: time ours/limit median {q[1]:.3f} (quartiles {q[0]:.3f}-{q[2]:.3f}, "
              f"{len(r)} pairs) -> points/s ours/limit ~ {1 / q[1]:.3f}")


if __name__ == "__main__":
    main()
