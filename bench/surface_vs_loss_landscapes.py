"""Cells per second of a 2-D loss plane: ours (eager and compiled) vs loss-landscapes vs bare forward.

Run by hand (not a test):

    .venv/bin/python bench/surface_vs_loss_landscapes.py                          # 11x11 and 51x51, micro, 32 samples
    .venv/bin/python bench/surface_vs_loss_landscapes.py --grids 51 --samples 256 --repeats 1
    .venv/bin/python bench/surface_vs_loss_landscapes.py --device cuda --model swin_tiny --batch-size 64

Same model, same data, same batching and same grid (``grid x grid`` cells) for:

- ``limit``: a bare loop of forward passes over the data, once per cell, under
  ``torch.inference_mode`` (no parameter updates, no loss, no metrics), eager;
- ``ours-eager`` / ``ours-compiled``: :func:`landscape.surface.compute_surface` with
  ``compile='off'`` / ``compile='on'`` (filter-normalised directions, functional
  evaluation, loss + SRCC + PLCC, HDF5 flushes), timed end to end including drawing the
  directions and writing the file; the compiled run includes the compilation and its check
  against eager (the first compile of the process is cold unless torch's on-disk cache holds
  the graph; later ones in the same process reuse it);
- ``loss-landscapes``: ``random_plane(..., normalization='layer')`` (its filter mode raises
  ZeroDivisionError on timm Swin), which evaluates only the loss.

Rounds (``--repeats``) alternate the four methods, in an order rotated by one each round (this
machine's speed drifts by 20-50% within minutes, so a fixed order would favour one slot), and
the median time of each is reported,
with the min-max range, so that load from other processes on a shared machine shows up as
spread rather than as a bias against one method. Ratios are cells/s of ours over cells/s of
the other method in the same run. Targets (issue 19): ours / loss-landscapes >= 1.2 on 11x11
and >= 1.5 on 51x51.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import build_model, machine, sync  # noqa: E402

from landscape.provenance import versions  # noqa: E402
from landscape.surface import DirectionSpec, compute_surface  # noqa: E402

TARGET_LL = {11: 1.2, 51: 1.5}


def time_limit(model, batches, n_cells, device) -> float:
    """Seconds of ``n_cells`` bare eager forward loops over ``batches``."""
    model.eval()
    sync(device)
    t0 = time.perf_counter()
    with torch.inference_mode():
        for _ in range(n_cells):
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
    return dt, dict(r.attrs["forward"])


def time_loss_landscapes(model, criterion, batches, grid, device) -> float:
    """Seconds of loss-landscapes' ``random_plane`` on the same batches (size-weighted mean loss)."""
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


def run_grid(model, criterion, batches, grid, device, repeats, methods) -> dict:
    """Times of every method in ``methods`` over ``repeats`` alternating rounds on one grid."""
    n_cells = grid * grid
    times: dict[str, list[float]] = {m: [] for m in methods}
    forward: dict[str, dict] = {}
    for r in range(repeats):
        for m in methods[r % len(methods):] + methods[:r % len(methods)]:   # rotated: no fixed slot
            if m == "limit":
                t = time_limit(model, batches, n_cells, device)
            elif m == "loss-landscapes":
                t = time_loss_landscapes(model, criterion, batches, grid, device)
            else:
                t, forward[m] = time_ours(model, criterion, batches, grid, device, seed=r,
                                          compile="on" if m == "ours-compiled" else "off")
            times[m].append(t)
            print(f"grid {grid} round {r}: {m} {t:.2f} s", flush=True)
        print(f"grid {grid} round {r}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    cps = {m: n_cells / statistics.median(v) for m, v in times.items()}
    out = dict(grid=grid, cells=n_cells, seconds=times, cells_per_s=cps, forward=forward, ratios={})
    for ours in ("ours-eager", "ours-compiled"):
        if ours not in cps:
            continue
        for other in ("limit", "loss-landscapes"):
            if other in cps:
                out["ratios"][f"{ours} / {other}"] = cps[ours] / cps[other]
    if "loss-landscapes" in cps and "limit" in cps:
        out["ratios"]["loss-landscapes / limit"] = cps["loss-landscapes"] / cps["limit"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="micro", choices=["micro", "swin_tiny"])
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=None, help="default: all samples in one batch")
    ap.add_argument("--grids", "--grid", default="11,51", help="comma-separated points per axis (grid x grid cells)")
    ap.add_argument("--repeats", type=int, default=1, help="alternating rounds; medians reported")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--skip-ll", action="store_true", help="skip loss-landscapes (e.g. not installed)")
    ap.add_argument("--modes", default="eager,compiled", help="ours: comma-separated eager, compiled")
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
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
    n_params = sum(p.numel() for p in model.parameters())
    methods = ["limit"] + [f"ours-{m.strip()}" for m in args.modes.split(",")]
    if not args.skip_ll:
        methods.append("loss-landscapes")
    print(f"model {args.model} ({n_params} parameters, {img} px), {args.samples} samples in batches of {bs}, "
          f"device {device}, threads {torch.get_num_threads()}, machine {machine()}")
    print(f"versions: {versions()}")
    time_limit(model, batches[:1], 1, device)  # warm-up
    results = []
    t_all = time.perf_counter()
    for grid in (int(g) for g in args.grids.split(",")):
        res = run_grid(model, criterion, batches, grid, device, args.repeats, methods)
        results.append(res)
        for m, c in res["cells_per_s"].items():
            v = res["seconds"][m]
            print(f"  {grid}x{grid} {m:16s} {c:9.3f} cells/s  (median {statistics.median(v):.2f} s, "
                  f"range {min(v):.2f}-{max(v):.2f} s)")
        for name, r in res["ratios"].items():
            tgt = f"  (target >= {TARGET_LL[grid]})" if name.endswith("loss-landscapes") and grid in TARGET_LL \
                and name.startswith("ours") else ""
            print(f"  {grid}x{grid} {name:32s} = {r:.3f}{tgt}")
        for m, f in res["forward"].items():
            print(f"  {grid}x{grid} {m} forward: {f}")
    print(f"total {time.perf_counter() - t_all:.1f} s")
    if args.json:
        args.json.write_text(json.dumps(dict(args=vars(args) | {"json": str(args.json)}, n_params=n_params,
                                             machine=machine(), versions=versions(), grids=results),
                                        indent=2, default=str))


if __name__ == "__main__":
    main()
