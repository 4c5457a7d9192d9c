"""Benchmark: where the floor of one Hessian-vector product lies, in gradients over the same data.

Same model (micro Swin by default, eval mode), same random samples in fixed batches, mean MSE.
``L = sum_b (n_b / N) loss_b``; each way below computes ``H v`` for one random unit ``v`` over
all batches, timed against one full-data gradient (``common.full_gradient``) in the same run,
interleaved, best of ``--repeats``:

- ``kept graph`` (landscape's operator): the gradient graphs of every batch are built once
  (``create_graph=True``, not timed per product) and each product is one extra backward through
  them, ``d (g . v) / d theta``. Its cost is the backward of the backward graph, which holds the
  forward's operations and their derivatives: about 2 backward passes of work.
- ``kept graph, M vectors per backward`` (``--block M``, ``torch.autograd.grad(...,
  is_grads_batched=True)``, i.e. vmap over the product's backward): ``H [v_1 .. v_M]`` in one
  call on the kept graphs, timed per vector (wall / M), the lever block Lanczos would need;
  its first column is checked against the one-vector product.
- ``compiled reverse-over-reverse`` (``--compile``): ``torch.compile`` of
  ``torch.func.vjp(torch.func.grad(loss))`` per batch (torch.compile cannot compile a
  ``create_graph`` double backward, so the functional form is the one it takes); the
  compile time is printed apart, the product is timed warm.
- ``fresh double backward`` (what PyHessian does per product): forward + backward with
  ``create_graph`` + the product's backward, every time.
- ``forward-over-reverse`` (Pearlmutter's R-operator, ``torch.func.jvp`` of ``torch.func.grad``):
  one forward-mode pass through forward + backward; the textbook floor is about 2 gradients
  (forward-mode roughly doubles each operation). Reported as unsupported where an operation
  has no forward-mode derivative.
- ``finite difference`` (central): ``(g(theta + h v) - g(theta - h v)) / 2h`` with
  step ``h = --fd-eps`` along the unit ``v``: exactly 2 gradients, with an error
  ``O(h^2 |d^3 L|)`` plus round-off ``O(eps_mach |g| / h)``, printed against the kept-graph product.

- ``--breakdown``: where the floor is. For the gradient and the kept-graph product, the
  matrix-product FLOPs (``torch.utils.flop_counter.FlopCounterMode``: mm, bmm, addmm,
  convolutions) and, from one ``torch.profiler`` run of each, the self CPU time of the
  matrix products against everything else (elementwise maps, reductions, copies, the
  autograd engine's own accumulation). Reverse-over-reverse differentiates the backward
  graph: each forward product ``Y = X W`` has two products in the backward
  (``dX = dY W^T``, ``dW = X^T dY``), each of which costs two in the product's backward,
  and the forward's own two come on top: 6 products against the gradient's 3 (forward and
  backward), so **2.0 gradients is the floor in matrix-product FLOPs**; what the measured
  ratio has above 2.0 comes from the elementwise second derivatives (softmax, LayerNorm,
  GELU, the MSE), which the breakdown shows by operation.

    python bench/hvp_cost.py                       # micro Swin, 256 samples in batches of 64, 2 threads
    python bench/hvp_cost.py --breakdown           # ... and the FLOP / time breakdown

Prints one JSON object: seconds per way (wall and CPU), the ratio to one gradient, the relative
error of each product against the kept-graph one, the machine and torch version.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import Clock, build_model, full_gradient, machine, random_batches  # noqa: E402


def _dot(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))


def _rel(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    num = sum(float(((x - y) ** 2).sum()) for x, y in zip(a, b)) ** 0.5
    return num / max(sum(float((y ** 2).sum()) for y in b) ** 0.5, 1e-300)


def is_matrix_op(name: str) -> bool:
    """Matrix products and convolutions (``aten::mm``, ``bmm``, ``addmm``, ``baddbmm``,
    ``mkldnn_convolution``, ``_convolution``, ``convolution_backward``, ...)."""
    op = name.split("::", 1)[-1]
    return "mm" in op or "conv" in op


def breakdown(fns: dict, gradient_name: str = "gradient", top: int = 8) -> dict:
    """Matrix-product FLOPs and profiled self CPU time by operation class for each of ``fns``.

    FLOPs are ``FlopCounterMode``'s (2 per multiply-add, matrix products and convolutions
    only). Times are one profiled call each (the profiler adds its own overhead, so the
    shares and the ratios to the gradient count, not the absolute milliseconds).
    """
    from torch.profiler import ProfilerActivity, profile
    from torch.utils.flop_counter import FlopCounterMode

    out: dict = {}
    for name, fn in fns.items():
        fn()                                                    # warm
        with FlopCounterMode(display=False) as counter:
            fn()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            with Clock() as c:
                fn()
        matrix_us, other_us, ops = 0.0, 0.0, {}
        for e in prof.key_averages():
            if not e.key.startswith("aten::"):
                continue
            if is_matrix_op(e.key):
                matrix_us += e.self_cpu_time_total
            else:
                other_us += e.self_cpu_time_total
                ops[e.key] = ops.get(e.key, 0.0) + e.self_cpu_time_total
        out[name] = {"matrix_gflop": counter.get_total_flops() / 1e9, "matrix_ms": matrix_us / 1e3,
                     "other_ms": other_us / 1e3, "profiled_wall_ms": c.wall * 1e3,
                     "other_ops_ms": {k: round(v / 1e3, 1) for k, v in
                                      sorted(ops.items(), key=lambda kv: -kv[1])[:top]}}
    g = out[gradient_name]
    for row in out.values():
        row["matrix_gflop_in_gradients"] = round(row["matrix_gflop"] / g["matrix_gflop"], 3)
        row["matrix_ms_in_gradients"] = round(row["matrix_ms"] / g["matrix_ms"], 3)
        row["other_ms_in_gradients"] = round(row["other_ms"] / g["other_ms"], 3)
        row["other_share"] = round(row["other_ms"] / (row["matrix_ms"] + row["other_ms"]), 3)
        for k in ("matrix_gflop", "matrix_ms", "other_ms", "profiled_wall_ms"):
            row[k] = round(row[k], 2)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="micro")
    ap.add_argument("--samples", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--fd-eps", type=float, default=1e-3)
    ap.add_argument("--compile", action="store_true", help="also time the compiled functional product (minutes)")
    ap.add_argument("--block", type=int, default=4, help="vectors per batched backward (default: 4)")
    ap.add_argument("--breakdown", action="store_true", help="also the matrix-product FLOP / time breakdown")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, size = build_model(args.model)
    model.eval()
    batches = random_batches(args.samples, args.batch_size, size, 0, "cpu")
    crit = torch.nn.MSELoss()
    params = [p for p in model.parameters() if p.requires_grad]
    n = sum(x.shape[0] for x, _ in batches)
    g = torch.Generator().manual_seed(1)
    v = [torch.randn(p.shape, generator=g) for p in params]
    norm = float(_dot(v, v)) ** 0.5
    v = [t / norm for t in v]

    kept = []
    with Clock() as build:
        for x, y in batches:
            kept.append(torch.autograd.grad(crit(model(x), y), params, create_graph=True))

    def gradient():
        return full_gradient(model, crit, batches)

    def forward():
        with torch.no_grad():
            for x, _ in batches:
                model(x)

    def kept_graph():
        out = [torch.zeros_like(p) for p in params]
        for (x, _), gb in zip(batches, kept):
            for t, h in zip(out, torch.autograd.grad(_dot(gb, v), params, retain_graph=True)):
                t.add_(h, alpha=x.shape[0] / n)
        return out

    others = [torch.randn(args.block - 1, *p.shape, generator=g) for p in params]
    block = [torch.cat([t[None], o]) for t, o in zip(v, others)]       # column 0 is v

    def kept_graph_block():
        out = [torch.zeros_like(b) for b in block]
        for (x, _), gb in zip(batches, kept):
            hs = torch.autograd.grad(gb, params, grad_outputs=block, retain_graph=True, is_grads_batched=True)
            for t, h in zip(out, hs):
                t.add_(h, alpha=x.shape[0] / n)
        return [t[0] for t in out]

    def fresh():
        out = [torch.zeros_like(p) for p in params]
        for x, y in batches:
            gb = torch.autograd.grad(crit(model(x), y), params, create_graph=True)
            for t, h in zip(out, torch.autograd.grad(_dot(gb, v), params)):
                t.add_(h, alpha=x.shape[0] / n)
        return out

    names = [k for k, _ in model.named_parameters()]
    theta = {k: p.detach() for k, p in model.named_parameters()}
    tangent = dict(zip(names, v))

    def forward_over_reverse():
        from torch.func import functional_call, grad, jvp
        out = {k: torch.zeros_like(t) for k, t in theta.items()}
        for x, y in batches:
            def loss(th, x=x, y=y):
                return crit(functional_call(model, th, (x,)), y)
            _, h = jvp(grad(loss), (theta,), (tangent,))
            out = {k: out[k] + h[k] * (x.shape[0] / n) for k in out}     # h may hold immutable ZeroTensors
        return [out[k] for k in names]

    def finite_difference():
        # perturb through .data and restore from a copy: theta bit-identical afterwards, and the
        # kept graphs (which saved the parameters) stay valid for the next repeat
        eps, saved = args.fd_eps, [p.detach().clone() for p in params]
        for p, s0, t in zip(params, saved, v):
            p.data.copy_(s0 + eps * t)
        plus = gradient()
        for p, s0, t in zip(params, saved, v):
            p.data.copy_(s0 - eps * t)
        minus = gradient()
        for p, s0 in zip(params, saved):
            p.data.copy_(s0)
        return [(a - b) / (2 * eps) for a, b in zip(plus, minus)]

    block_name = f"kept graph, {args.block} vectors per backward (per vector)"
    buffers = dict(model.named_buffers())

    def functional_hvp(th, tan, x, y):
        from torch.func import functional_call, grad, vjp

        def loss(t):
            return crit(functional_call(model, (t, buffers), (x,)), y)
        return vjp(grad(loss), th)[1](tan)[0]

    compiled_hvp = torch.compile(functional_hvp)

    def compiled():
        out = {k: torch.zeros_like(t) for k, t in theta.items()}
        for x, y in batches:
            h = compiled_hvp(theta, tangent, x, y)
            out = {k: out[k] + h[k] * (x.shape[0] / n) for k in out}
        return [out[k] for k in names]

    compile_s = None
    if args.compile:
        with Clock() as first:
            compiled()
        compile_s = round(first.wall, 1)

    ways = {"gradient": gradient, "kept graph": kept_graph, block_name: kept_graph_block,
            **({"compiled reverse-over-reverse": compiled} if args.compile else {}),
            "fresh double backward": fresh,
            "forward-over-reverse": forward_over_reverse, "finite difference": finite_difference}
    best: dict[str, tuple[float, float]] = {}
    results: dict[str, list[torch.Tensor]] = {}
    failed: dict[str, str] = {}
    for _ in range(args.repeats):
        for name, fn in ways.items():
            if name in failed:
                continue
            try:
                with Clock() as c:
                    results[name] = fn()
            except (RuntimeError, NotImplementedError) as e:
                failed[name] = str(e).splitlines()[0][:200]
                continue
            w, cpu = best.get(name, (float("inf"), float("inf")))
            best[name] = (min(w, c.wall), min(cpu, c.cpu))
    ref = results["kept graph"]
    g_wall, g_cpu = best["gradient"]
    report = {"model": args.model, "samples": args.samples, "batch_size": args.batch_size,
              "kept_graph_build_s": round(build.wall, 3), "compile_and_first_product_s": compile_s, "machine": machine(), "ways": {}}
    for name in ways:
        if name in failed:
            report["ways"][name] = {"unsupported": failed[name]}
            continue
        w, cpu = best[name]
        if name == block_name:
            w, cpu = w / args.block, cpu / args.block
        row = {"wall_s": round(w, 4), "cpu_s": round(cpu, 4), "gradients": round(w / g_wall, 3),
               "gradients_cpu": round(cpu / g_cpu, 3)}
        if name != "gradient":
            row["rel_error_vs_kept_graph"] = float(f"{_rel(results[name], ref):.3g}")
        report["ways"][name] = row
    if args.breakdown:
        report["breakdown"] = breakdown({"forward": forward, "gradient": gradient, "kept graph": kept_graph})
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
