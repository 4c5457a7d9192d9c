"""Benchmark: our Hessian eigenvalues (Lanczos) against PyHessian (power iteration), by hand.

Same model, same data, same mean-reduced MSE loss, eval mode, full-dataset Hessian:

- cost of one Hessian-vector product relative to one gradient over the same data
  (every graph rebuilt, as PyHessian does, and on kept graphs, as we do);
- top-1 and top-5 eigenvalues to 1e-3 relative accuracy. Ours: Lanczos with
  ``stop='eigenvalue'``, ``tol=1e-3`` (estimated eigenvalue error <= 1e-3 |lambda|); PyHessian:
  ``eigenvalues(top_n, tol=1e-3, maxIter=100)`` (its stop: relative change < 1e-3).
  Every timing starts from a fresh operator (graph building included).
- accuracy of both against a reference: our Lanczos continued to an error estimate of 1e-4
  (no restart). Our top-5 figure is the prefix of that same seeded run up to the step where
  the 1e-3 test first holds (Lanczos is deterministic, so this is exactly what a separate run
  with ``tol=1e-3`` and the same basis size does); ``--separate-top5`` runs it on its own.
- wall seconds and, on CPU, process CPU seconds (all threads): on a machine shared with
  other jobs the CPU seconds are the steadier measure of the work done.

    python bench/hessian_vs_pyhessian.py                       # micro Swin, 1024 samples, CPU, 2 threads
    python bench/hessian_vs_pyhessian.py --samples 256
    python bench/hessian_vs_pyhessian.py --device cuda --model swin_tiny --batch-size 64

Targets (issue 4): time ours / PyHessian <= 0.5 for top-1 and <= 0.2 for top-5.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import Clock, build_model, full_gradient, random_batches, rel_err  # noqa: E402

from landscape.hessian import HessianOperator, pyhessian_top_eigenvalues, top_eigenvalues  # noqa: E402


def product_costs(model, crit, batches, device, repeats=3):
    """Best (wall, CPU) seconds of a full-data gradient, of an HVP rebuilding every graph and
    of an HVP on kept graphs, measured interleaved (``repeats`` rounds) so that a changing
    machine load hits all three alike. Also returns how many batch graphs were kept."""
    def gradient():
        full_gradient(model, crit, batches)

    inf = (float("inf"), float("inf"))
    best = {"gradient": inf, "fresh": inf, "kept": inf}
    with HessianOperator(model, crit, batches, max_retained_batches=0) as fresh, \
            HessianOperator(model, crit, batches) as kept:
        v = torch.randn(fresh.n, device=device, dtype=fresh.dtype)
        gradient(), fresh.matvec(v), kept.matvec(v)                     # warm-up, builds kept graphs
        for _ in range(repeats):
            for name, fn in (("gradient", gradient), ("fresh", lambda: fresh.matvec(v)),
                             ("kept", lambda: kept.matvec(v))):
                with Clock(device) as c:
                    fn()
                best[name] = min(best[name], (c.wall, c.cpu))
        n_kept = kept.n_retained
    return best["gradient"], best["fresh"], best["kept"], n_kept


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="micro", choices=["micro", "swin_tiny"])
    ap.add_argument("--samples", type=int, default=1024)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--tol", type=float, default=1e-3, help="relative eigenvalue accuracy asked of both")
    ap.add_argument("--ref-tol", type=float, default=1e-4)
    ap.add_argument("--ref-max-iter", type=int, default=200)
    ap.add_argument("--pyhessian-max-iter", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--separate-top5", action="store_true", help="time our top-5 in a run of its own")
    ap.add_argument("--skip-pyhessian-top5", action="store_true")
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    torch.manual_seed(a.seed)
    model, size = build_model(a.model)
    model = model.to(device).eval()
    crit = torch.nn.MSELoss()
    batches = random_batches(a.samples, a.batch_size, size, a.seed + 1, device)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model {a.model} ({n_params} params), {a.samples} random samples in {len(batches)} batches of "
          f"{a.batch_size}, MSE, device {device}, threads {torch.get_num_threads()}, torch {torch.__version__}",
          flush=True)

    (g_w, g_c), (f_w, f_c), (k_w, k_c), n_kept = product_costs(model, crit, batches, device)
    print(f"gradient {g_w:.2f} s wall / {g_c:.2f} s CPU; HVP rebuilding graphs {f_w:.2f} / {f_c:.2f} s = "
          f"{f_w / g_w:.2f}x / {f_c / g_c:.2f}x gradient; HVP on kept graphs {k_w:.2f} / {k_c:.2f} s = "
          f"{k_w / g_w:.2f}x / {k_c / g_c:.2f}x gradient ({n_kept}/{len(batches)} batch graphs kept)", flush=True)

    # ours, top-1: a run of its own
    with Clock(device) as c1:
        with HessianOperator(model, crit, batches) as op:
            o1 = top_eigenvalues(op, 1, tol=a.tol, stop="eigenvalue", max_iter=a.ref_max_iter)
    print(f"ours top-1: {o1.eigenvalues[0]:.6f} in {c1.wall:.1f} s wall / {c1.cpu:.1f} s CPU, "
          f"{o1.n_matvecs} HVPs", flush=True)

    # reference run (top-5, error estimate <= ref_tol); our top-5 = its prefix at tol
    mark: dict = {}
    clock = Clock(device)

    def watch(mv, theta, est, err):
        if "top5" not in mark and len(theta) == 5 and np.all(err <= a.tol * np.abs(theta)):
            mark["top5"] = (*clock.now(), mv, theta.copy(), True)

    with clock:
        with HessianOperator(model, crit, batches) as op:
            ref = top_eigenvalues(op, 5, tol=a.ref_tol, stop="eigenvalue", max_iter=a.ref_max_iter,
                                  max_basis=a.ref_max_iter, callback=None if a.separate_top5 else watch)
    if not ref.converged.all():
        print("warning: the reference did not reach --ref-tol; raise --ref-max-iter")
    print(f"reference: {np.array2string(ref.eigenvalues, precision=6)} error estimates/|lambda| "
          f"{np.array2string(ref.error_estimates / np.abs(ref.eigenvalues), precision=1)}, residual/|lambda| "
          f"{np.array2string(ref.residuals / np.abs(ref.eigenvalues), precision=1)}, {ref.n_matvecs} HVPs, "
          f"{clock.wall:.1f} s", flush=True)
    if a.separate_top5 or "top5" not in mark:
        with Clock(device) as c5:
            with HessianOperator(model, crit, batches) as op:
                o5 = top_eigenvalues(op, 5, tol=a.tol, stop="eigenvalue", max_iter=a.ref_max_iter,
                                     max_basis=a.ref_max_iter)
        top5 = (c5.wall, c5.cpu, o5.n_matvecs, o5.eigenvalues, bool(o5.converged.all()))
    else:
        top5 = mark["top5"]
    print(f"ours top-5: {np.array2string(top5[3], precision=6)} in {top5[0]:.1f} s wall / {top5[1]:.1f} s CPU, "
          f"{top5[2]} HVPs", flush=True)
    refvals = ref.eigenvalues

    rows = [dict(k=1, ours_s=c1.wall, ours_cpu=c1.cpu, ours_hvp=o1.n_matvecs, ours_conv=bool(o1.converged.all()),
                 ours_err=rel_err(o1.eigenvalues, refvals, nearest=True), ours_vals=o1.eigenvalues.tolist()),
            dict(k=5, ours_s=top5[0], ours_cpu=top5[1], ours_hvp=top5[2], ours_conv=top5[4],
                 ours_err=rel_err(top5[3], refvals, nearest=True), ours_vals=np.asarray(top5[3]).tolist())]
    for row in rows:
        if row["k"] == 5 and a.skip_pyhessian_top5:
            row.update(py_s=float("nan"), py_cpu=float("nan"), py_hvp=0, py_err=float("nan"), py_vals=[])
        else:
            with Clock(device) as cp:
                p = pyhessian_top_eigenvalues(model, crit, batches, top_n=row["k"], tol=a.tol,
                                              max_iter=a.pyhessian_max_iter, residuals=False)
            row.update(py_s=p.seconds, py_cpu=cp.cpu, py_hvp=p.n_matvecs, py_err=rel_err(p.eigenvalues, refvals, nearest=True),
                       py_vals=p.eigenvalues.tolist())
            print(f"PyHessian top-{row['k']}: {np.array2string(p.eigenvalues, precision=6)} in "
                  f"{p.seconds:.1f} s wall / {cp.cpu:.1f} s CPU, {p.n_matvecs} HVPs", flush=True)
        row["ratio"] = row["ours_s"] / row["py_s"]
        row["ratio_cpu"] = row["ours_cpu"] / row["py_cpu"]

    print()
    print("| top-k | ours s (CPU s) | ours HVPs | ours converged | ours max rel err | PyHessian s (CPU s) "
          "| PyHessian HVPs | PyHessian max rel err | ours/PyHessian wall (CPU) | target |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r, target in zip(rows, (0.5, 0.2)):
        print(f"| {r['k']} | {r['ours_s']:.1f} ({r['ours_cpu']:.1f}) | {r['ours_hvp']} | {r['ours_conv']} "
              f"| {r['ours_err']:.1e} "
              f"| {r['py_s']:.1f} ({r['py_cpu']:.1f}) | {r['py_hvp']} | {r['py_err']:.1e} "
              f"| {r['ratio']:.3f} ({r['ratio_cpu']:.3f}) | <= {target} |")
    if a.json:
        a.json.write_text(json.dumps(dict(args={k: str(v) for k, v in vars(a).items()}, n_params=n_params,
                                          gradient_s=[g_w, g_c], hvp_fresh_s=[f_w, f_c], hvp_kept_s=[k_w, k_c],
                                          reference=refvals.tolist(),
                                          reference_error_estimates=ref.error_estimates.tolist(),
                                          rows=rows), indent=2))


if __name__ == "__main__":
    main()
