"""Data-parallel Hessian and sharpness on a tiny float64 model; launched by torchrun from tests/test_distributed.py.

``python -m torch.distributed.run --nproc_per_node 2 analyzers.py OUT`` (or ``main(OUT)`` from
another script under torchrun, as ``workflows_run.py`` does to save a launch): every rank
runs the data-parallel analyses on its shard and writes ``OUT/rank<r>.json`` (rank 0 also
writes ``OUT/analysis.h5``). ``build()`` and the settings are imported by the test for the
single-process reference.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

SIZES = (4, 4, 4, 4, 3)          # 5 batches: rank 0 holds 0, 2, 4 (11 examples), rank 1 holds 1, 3 (8)
HESSIAN = dict(top_k=3, tol=1e-9, max_iter=60, trace=True, trace_method="hutch++", trace_matvecs=24,
               density=True, density_runs=2, density_steps=8, weight_decay=0.01, seed=3)


def sharpness_settings():
    from landscape import sharpness as S

    return dict(measures=list(S.MEASURES), eps=[1e-3], keskar_spaces=["full", "random"], subspace_dim=5,
                rho_linf=[2e-2], rho_l2=[0.5], rho_average=[0.1],
                keskar=S.KeskarConfig(maxiter=4), adaptive=S.AdaptiveConfig(m=4, n_iter=5, max_examples=15),
                average=S.AverageConfig(n_samples=3, max_examples=15),
                pacbayes=S.PacBayesConfig(depth=4, n_samples=2, max_examples=15),
                noise=S.NoiseConfig(b_small=2, b_big=8, n_repeats=3, n_boot=50), seed=1)


def build():
    """Tiny tanh MLP (float64, 41 parameters), L1 + ranking loss, 5 fixed batches."""
    from landscape.train.losses import IQALoss

    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 1)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.7)
    batches = []
    for n in SIZES:
        x = torch.randn(n, 6, generator=g, dtype=torch.float64)
        y = torch.rand(n, generator=g, dtype=torch.float64)
        batches.append((x, y))
    return model, IQALoss(0.5), batches


def jsonable(obj):
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return str(obj)
    return obj


def main(out: Path) -> None:
    from landscape import distributed as dist
    from landscape import hessian as H
    from landscape import sharpness as S

    torch.set_num_threads(1)
    assert dist.init_from_env("cpu") and dist.world_size() == 2
    out.mkdir(parents=True, exist_ok=True)
    model, criterion, batches = build()
    shard = dist.shard_batches(batches)
    res = H.parallel_hessian(model, criterion, shard, h5_path=out / "analysis.h5",
                             provenance={"test": "distributed"}, **HESSIAN)
    with H.DataParallelHessian(model, criterion, shard, weight_decay=HESSIAN["weight_decay"]) as op:
        dense = op.dense()
        loss = op.loss
        data_hash = op.data_hash()
    suite = S.analyze_sharpness(model, criterion, shard, h5_path=out / "analysis.h5", **sharpness_settings())
    record = {"rank": dist.rank(), "n_local": shard.n_local, "n_total": shard.n_total,
              "eigenvalues": res.topk.eigenvalues, "residuals": res.topk.residuals,
              "trace": res.trace.trace, "trace_stderr": res.trace.stderr, "trace_samples": res.trace.samples,
              "density_nodes": res.density.nodes, "density_trace": res.density.trace, "loss": res.loss,
              "dense": dense.numpy(), "dense_loss": loss, "data_hash": data_hash, "sharpness": S.summary_rows(suite),
              "suite": suite.as_dict()}
    (out / f"rank{dist.rank()}.json").write_text(json.dumps(jsonable(record)))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
