"""Top Hessian eigenvalues by the PyHessian package, on the same model and data (a cross-check).

PyHessian (Yao et al. 2020) runs power iteration with deflation: largest *magnitude*
eigenvalues first, each the Rayleigh quotient ``v^T H v`` of its last iterate.
"""
from __future__ import annotations

import time
import warnings
from typing import Iterable

import numpy as np
import torch
from torch import nn

from landscape import linalg
from landscape.batches import Batch, Criterion, materialize, model_device
from landscape.errors import LandscapeError
from landscape.hessian.operator import HessianOperator
from landscape.hessian.results import HessianEigen
from landscape.params import evaluation_mode, preserved_parameters, trainable_parameters


def pyhessian_top_eigenvalues(model: nn.Module, criterion: Criterion, batches: Iterable[Batch],
                              top_n: int = 1, tol: float = 1e-3, max_iter: int = 100, *,
                              seed: int = 0, residuals: bool = True,
                              eigenvectors: bool = False) -> HessianEigen:
    """Top eigenvalues by the PyHessian package (power iteration, largest *magnitude* first).

    Same model and data (full-dataset mode, eval mode as PyHessian forces); the model's mode
    flags, parameters and ``.grad`` fields are restored afterwards (PyHessian leaves graph-holding
    gradients in ``.grad``). ``seed`` seeds torch's global RNG for PyHessian's start vectors
    (the global RNG state is restored). ``seconds`` times PyHessian alone; with ``residuals``
    the residual norms ``||H v - lambda v||`` of its eigenpairs are then computed by our
    operator (``top_n`` extra products, not counted in ``n_matvecs``).
    """
    try:
        from pyhessian import hessian as PyHessian
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise LandscapeError(f"engine 'pyhessian' needs the pyhessian package ({e})") from None
    named = trainable_parameters(model)
    device = model_device(model)
    data = materialize(batches, device)
    if top_n > sum(p.numel() for _, p in named):
        raise LandscapeError(f"top_n={top_n} exceeds the number of parameters")
    saved_grads = [p.grad for _, p in named]
    dtype = named[0][1].dtype
    old_dtype = torch.get_default_dtype()
    calls = [0]
    rng_devices = [device] if device.type == "cuda" else []
    try:
        with evaluation_mode(model, False), preserved_parameters(model), \
                torch.random.fork_rng(devices=rng_devices), warnings.catch_warnings():
            torch.manual_seed(seed)
            if dtype in (torch.float32, torch.float64):
                torch.set_default_dtype(dtype)
            # PyHessian's backward(create_graph=True) warns about the .grad cycle we break below
            warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
            t0 = time.perf_counter()
            h = PyHessian(model, criterion, dataloader=data, cuda=device.type == "cuda")
            inner = h.dataloader_hv_product

            def counted(v):
                calls[0] += 1
                return inner(v)

            h.dataloader_hv_product = counted
            values, vectors = h.eigenvalues(maxIter=max_iter, tol=tol, top_n=top_n)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - t0
    finally:
        torch.set_default_dtype(old_dtype)
        for (_, p), g in zip(named, saved_grads):
            p.grad = g
    lam = np.asarray(values, dtype=np.float64)
    V = torch.stack([torch.cat([t.detach().reshape(-1) for t in vec]) for vec in vectors], dim=1)
    V = V / V.norm(dim=0, keepdim=True)
    res = np.full(len(lam), np.nan)
    if residuals:
        with HessianOperator(model, criterion, data, max_retained_batches=0) as op:
            HV = op.matmat(V.to(op.dtype))
            # PyHessian's eigenvalue is the Rayleigh quotient of the vector before its last
            # product; measure the residual at the Rayleigh quotient of the returned vector
            rq = (V.to(op.dtype) * HV).sum(0)
            res = (HV - rq * V.to(op.dtype)).norm(dim=0).double().cpu().numpy()
    converged = res <= tol * np.abs(lam)
    errors = linalg.error_estimates(lam, np.arange(len(lam)), res)
    return HessianEigen(lam, res, errors, converged, "LM", float(tol), "residual", int(max_iter),
                        calls[0], 0, seconds, "eval", int(V.shape[0]), 0.0, int(seed), method="pyhessian",
                        eigenvectors=V.cpu().numpy() if eigenvectors else None)
