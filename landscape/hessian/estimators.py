"""Spectral estimators on a curvature operator: top-k eigenvalues, trace, spectral density.

- :func:`top_eigenvalues`: Lanczos with full reorthogonalisation and thick restarts
  (:func:`landscape.linalg.lanczos`) from the start vector of :func:`start_vector`.
- :func:`hessian_trace`: ``tr H`` by Hutch++ (Meyer et al. 2021) or Hutchinson with a fixed
  budget of products, ``trace +- stderr``.
- :func:`spectral_density`: stochastic Lanczos quadrature (Ubaru et al. 2017) smoothed by a
  Gaussian kernel; ``trace = n * mean_r sum_i w_ri node_ri``.

Each takes a :class:`landscape.hessian.operator.CurvatureOperator` and returns a frozen
result of :mod:`landscape.hessian.results` carrying its cost (``n_matvecs``, ``seconds``).
"""
from __future__ import annotations

import math
import time
from typing import Any, Literal, get_args

import numpy as np
import torch

from landscape import linalg
from landscape.errors import LandscapeError, check_choice
from landscape.hessian.operator import CurvatureOperator
from landscape.hessian.results import HessianDensity, HessianEigen, HessianTrace
from landscape.uncertainty import mean_se

Which = Literal["LA", "SA", "LM"]
Stop = Literal["residual", "eigenvalue"]
Start = Literal["auto", "output", "gradient", "random"]
TraceMethod = Literal["hutch++", "hutchinson"]

STARTS: tuple[str, ...] = get_args(Start)
TRACE_METHODS: tuple[str, ...] = get_args(TraceMethod)
START_NOISE = 0.1


def check_trace_method(method: str) -> str:
    """``method`` if it is a trace estimator of :data:`TRACE_METHODS`, else a one-line error."""
    return check_choice("trace_method", method, TRACE_METHODS)


def _meta(op: CurvatureOperator, seed: int) -> dict[str, Any]:
    return dict(mode=op.mode, n_params=op.n, weight_decay=op.weight_decay, seed=int(seed),
                block=op.block or "")


def start_vector(op: CurvatureOperator, start: str, which: str, seed: int) -> tuple[torch.Tensor, str]:
    """Lanczos start vector on the model's device and the rule used.

    ``'random'``: seeded Gaussian ``z``. ``'output'``: ``u/|u| + 0.1 z/|z|`` with ``u = J^T 1 / N``
    the mean-output gradient (:meth:`HessianOperator.output_gradient`, about one gradient's
    cost): close to the top eigenvector when the Gauss-Newton part dominates (MSE: the
    "mean" outlier of the spectrum). ``'gradient'``: the same with the full-data loss gradient
    ``g`` (:meth:`HessianOperator.gradient`, which also builds the graphs the first product
    needs). The random part keeps every eigenvector reachable; a zero ``u`` or ``g`` falls back
    to ``z``. ``'auto'``: ``'output'`` for ``which`` LA/LM (``'random'`` if the model's output is
    not a single tensor), ``'random'`` for SA. Any start gives the same eigenvalues; a good one
    needs fewer products.
    """
    check_choice("start", start, STARTS)
    rule = ("random" if which == "SA" else "output") if start == "auto" else start
    z = torch.randn(op.n, generator=linalg.generator(op.device, seed), device=op.device, dtype=op.dtype)
    if rule == "random":
        return z, rule
    try:
        u = op.output_gradient() if rule == "output" else op.gradient()
    except LandscapeError:
        if start != "auto":
            raise
        return z, "random"
    un = float(u.norm())
    if un > 0 and math.isfinite(un):
        return u / un + START_NOISE * z / z.norm(), rule
    return z, "random"


def top_eigenvalues(op: CurvatureOperator, k: int = 5, *, which: Which = "LA", tol: float = 1e-3,
                    stop: Stop = "residual", max_iter: int = 200, max_basis: int | None = None,
                    seed: int = 0, start: Start = "auto", eigenvectors: bool = False,
                    callback=None) -> HessianEigen:
    """Top-``k`` eigenpairs of ``op`` by :func:`landscape.linalg.lanczos` (``which``: LA/SA/LM).

    Start vector by :func:`start_vector` (seeded, on the model's device); ``max_iter`` caps
    products; ``stop``: ``'residual'`` (``||Hv - lambda v|| <= tol |lambda|``) or ``'eigenvalue'``
    (estimated eigenvalue error ``<= tol |lambda|``). ``seconds`` includes the start vector.
    ``which`` and ``stop`` are validated by :func:`landscape.linalg.lanczos` (and up front by
    :class:`landscape.hessian.HessianConfig` on the :func:`~landscape.hessian.analyze_hessian` path).
    """
    t0, mv0 = time.perf_counter(), op.n_matvecs
    if isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k > op.n:
        raise LandscapeError(f"top_k={k} exceeds the number of parameters ({op.n})")
    q0, rule = start_vector(op, start, which, seed)
    r = linalg.lanczos(op.matmat, op.n, k, which=which, tol=tol, stop=stop,
                       max_iter=max_iter, max_basis=max_basis, seed=seed, start=q0, device=op.device,
                       dtype=op.dtype, eigenvectors=eigenvectors, callback=callback)
    vecs = r.eigenvectors.cpu().numpy() if r.eigenvectors is not None else None
    return HessianEigen(r.eigenvalues, r.residuals, r.error_estimates, r.converged, which, float(tol),
                        stop, int(max_iter), op.n_matvecs - mv0, r.n_restarts,
                        time.perf_counter() - t0, start=rule, eigenvectors=vecs, **_meta(op, seed))


def hessian_trace(op: CurvatureOperator, *, method: TraceMethod = "hutch++", n_matvecs: int = 60,
                  seed: int = 0, block_size: int | None = None) -> HessianTrace:
    """Trace of ``op`` by Hutch++ (default) or Hutchinson with a fixed budget of products.

    ``block_size`` caps the probe columns per :meth:`HessianOperator.matmat` call (memory).
    """
    check_trace_method(method)
    fn = linalg.hutchpp if method == "hutch++" else linalg.hutchinson
    t0, mv0 = time.perf_counter(), op.n_matvecs
    r = fn(op.matmat, op.n, n_matvecs, seed=seed, device=op.device, dtype=op.dtype, block_size=block_size)
    return HessianTrace(r.trace, r.stderr, r.method, op.n_matvecs - mv0, r.exact_part, r.samples,
                        time.perf_counter() - t0, **_meta(op, seed))


def spectral_density(op: CurvatureOperator, *, n_runs: int = 4, steps: int = 60, seed: int = 0,
                     sigma: float | None = None, sigma_rel: float = 0.01,
                     n_grid: int = 1024) -> HessianDensity:
    """Spectral density of ``op`` by SLQ (:func:`linalg.slq`) smoothed by :func:`linalg.gaussian_density`.

    Kernel width ``sigma`` (absolute), default ``sigma_rel * (max node - min node)``;
    ``trace_stderr = n * std_r(per-run mean) / sqrt(n_runs)`` (NaN for one run: it cannot be estimated).
    """
    t0, mv0 = time.perf_counter(), op.n_matvecs
    r = linalg.slq(op.matmat, op.n, n_runs, steps, seed=seed, device=op.device, dtype=op.dtype)
    grid, dens, sig = linalg.gaussian_density(r.nodes, r.weights, sigma=sigma, sigma_rel=sigma_rel,
                                              n_grid=n_grid)
    per_run = np.nansum(r.nodes * r.weights, axis=1)
    mean, se = mean_se(per_run)
    return HessianDensity(r.nodes, r.weights, r.lengths, grid, dens, sig, int(n_runs),
                          int(r.nodes.shape[1]), mean, op.n * mean, op.n * se,
                          op.n_matvecs - mv0, time.perf_counter() - t0, **_meta(op, seed))
