"""Spectral estimators on a curvature operator: top-k eigenvalues, trace, spectral density.

- :func:`top_eigenvalues`: Lanczos with full reorthogonalisation and thick restarts
  (:func:`landscape.linalg.lanczos`) from the start vector of :func:`start_vector`.
- :func:`hessian_trace`: ``tr H`` by Hutch++ (Meyer et al. 2021) or Hutchinson with a fixed
  budget of products, ``trace +- stderr``.
- :func:`spectral_density`: stochastic Lanczos quadrature (Ubaru et al. 2017) smoothed by a
  Gaussian kernel; ``trace = n * mean_r sum_i w_ri node_ri``.

Each takes a :class:`landscape.hessian.operator.CurvatureOperator` and returns a frozen
result of :mod:`landscape.hessian.results` carrying its cost (``n_matvecs``, ``seconds``).
Each takes an optional ``progress(info)`` called after every product call with the dict of
:func:`progress_info` (``part``, ``products`` done, ``budget``, ``elapsed`` and ``eta``
seconds, and for top-k the current ``eigenvalues`` and their ``errors``).
"""
from __future__ import annotations

import math
import time
from typing import Any, Callable, Literal, get_args

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
Progress = Callable[[dict], None]


def progress_info(part: str, products: int, budget: int, elapsed: float, **extra: Any) -> dict[str, Any]:
    """The dict a ``progress`` callback receives: ``part`` (topk/trace/density), ``products`` done
    so far, ``budget`` (the most products the part may spend: top-k's ``max_iter``, trace's
    ``n_matvecs``, density's ``n_runs * steps``), ``elapsed`` seconds and ``eta`` seconds (the
    budget left at the mean cost per product so far: an upper bound for top-k, which usually
    stops earlier), plus ``extra`` fields."""
    eta = elapsed / products * max(budget - products, 0) if products > 0 else float("nan")
    return dict(part=part, products=int(products), budget=int(budget), elapsed=float(elapsed), eta=float(eta),
                **extra)


def _reporting(op: CurvatureOperator, part: str, budget: int, progress: Progress | None, t0: float, mv0: int):
    """``op.matmat``, followed by a ``progress`` report after each call (``op.matmat`` itself when None)."""
    if progress is None:
        return op.matmat

    def matmat(V: torch.Tensor) -> torch.Tensor:
        out = op.matmat(V)
        progress(progress_info(part, op.n_matvecs - mv0, budget, time.perf_counter() - t0))
        return out
    return matmat


def check_trace_method(method: str) -> str:
    """``method`` if it is a trace estimator of :data:`TRACE_METHODS`, else a one-line error."""
    return check_choice("trace_method", method, TRACE_METHODS)


def _meta(op: CurvatureOperator, seed: int) -> dict[str, Any]:
    return dict(mode=op.mode, n_params=op.n, weight_decay=op.weight_decay, seed=int(seed),
                block=op.block or "")


def start_vector(op: CurvatureOperator, start: str, which: str, seed: int, k: int = 1) -> tuple[torch.Tensor, str]:
    """Lanczos start vector on the model's device and the rule used.

    ``'random'``: seeded Gaussian ``z``. ``'output'``: ``u/|u| + 0.1 z/|z|`` with ``u = J^T 1 / N``
    the mean-output gradient (:meth:`HessianOperator.output_gradient`, about one gradient's
    cost): close to the top eigenvector when the Gauss-Newton part dominates (MSE: the
    "mean" outlier of the spectrum). ``'gradient'``: the same with the full-data loss gradient
    ``g`` (:meth:`HessianOperator.gradient`, which also builds the graphs the first product
    needs). The random part keeps every eigenvector reachable; a zero ``u`` or ``g`` falls back
    to ``z``. ``'auto'``: ``'output'`` for the top eigenvalue alone (``k = 1``, ``which`` LA/LM;
    ``'random'`` if the model's output is not a single tensor), ``'random'`` otherwise. Any start
    gives the same eigenvalues; a good one needs fewer products. Measured on the micro Swin
    (``bench/hessian_vs_peers.py`` data, top-5 at 1e-3, ``stop='eigenvalue'``): the output
    start finds the outlier in 2 products but, its other components being 10x smaller, needs
    60-61 products for the top 5 where a random start needs 50-56 (3 seeds each; bench/RESULTS.md).
    """
    check_choice("start", start, STARTS)
    if start == "auto":
        rule = "output" if which != "SA" and k == 1 else "random"
    else:
        rule = start
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
                    callback=None, progress: Progress | None = None) -> HessianEigen:
    """Top-``k`` eigenpairs of ``op`` by :func:`landscape.linalg.lanczos` (``which``: LA/SA/LM).

    Start vector by :func:`start_vector` (seeded, on the model's device); ``max_iter`` caps
    products; ``stop``: ``'residual'`` (``||Hv - lambda v|| <= tol |lambda|``) or ``'eigenvalue'``
    (estimated eigenvalue error ``<= tol |lambda|``). ``seconds`` includes the start vector.
    ``which`` and ``stop`` are validated by :func:`landscape.linalg.lanczos` (and up front by
    :class:`landscape.hessian.HessianConfig` on the :func:`~landscape.hessian.analyze_hessian` path).
    ``callback``: :func:`landscape.linalg.lanczos`'s per-step callback; ``progress``: a
    :func:`progress_info` dict after each Lanczos step, with ``eigenvalues`` (current wanted
    Ritz values) and ``errors`` (their error bounds); its last ``products`` is the result's ``n_matvecs``.
    """
    t0, mv0 = time.perf_counter(), op.n_matvecs
    if isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k > op.n:
        raise LandscapeError(f"top_k={k} exceeds the number of parameters ({op.n})")
    q0, rule = start_vector(op, start, which, seed, k)
    step = callback
    if progress is not None:
        def step(mv, theta, res, err):
            if callback is not None:
                callback(mv, theta, res, err)
            progress(progress_info("topk", op.n_matvecs - mv0, max_iter, time.perf_counter() - t0,
                                   eigenvalues=[float(v) for v in theta], errors=[float(v) for v in err]))
    r = linalg.lanczos(op.matmat, op.n, k, which=which, tol=tol, stop=stop,
                       max_iter=max_iter, max_basis=max_basis, seed=seed, start=q0, device=op.device,
                       dtype=op.dtype, eigenvectors=eigenvectors, callback=step)
    vecs = r.eigenvectors.cpu().numpy() if r.eigenvectors is not None else None
    return HessianEigen(r.eigenvalues, r.residuals, r.error_estimates, r.converged, which, float(tol),
                        stop, int(max_iter), op.n_matvecs - mv0, r.n_restarts,
                        time.perf_counter() - t0, start=rule, eigenvectors=vecs, **_meta(op, seed))


def hessian_trace(op: CurvatureOperator, *, method: TraceMethod = "hutch++", n_matvecs: int = 60,
                  seed: int = 0, block_size: int | None = None, progress: Progress | None = None) -> HessianTrace:
    """Trace of ``op`` by Hutch++ (default) or Hutchinson with a fixed budget of products.

    ``block_size`` caps the probe columns per :meth:`HessianOperator.matmat` call (memory);
    ``progress``: a :func:`progress_info` dict (budget ``n_matvecs``) after each product call.
    """
    check_trace_method(method)
    fn = linalg.hutchpp if method == "hutch++" else linalg.hutchinson
    t0, mv0 = time.perf_counter(), op.n_matvecs
    r = fn(_reporting(op, "trace", n_matvecs, progress, t0, mv0), op.n, n_matvecs, seed=seed, device=op.device, dtype=op.dtype, block_size=block_size)
    return HessianTrace(r.trace, r.stderr, r.method, op.n_matvecs - mv0, r.exact_part, r.samples,
                        time.perf_counter() - t0, **_meta(op, seed))


def spectral_density(op: CurvatureOperator, *, n_runs: int = 4, steps: int = 60, seed: int = 0,
                     sigma: float | None = None, sigma_rel: float = 0.01,
                     n_grid: int = 1024, progress: Progress | None = None) -> HessianDensity:
    """Spectral density of ``op`` by SLQ (:func:`linalg.slq`) smoothed by :func:`linalg.gaussian_density`.

    Kernel width ``sigma`` (absolute), default ``sigma_rel * (max node - min node)``;
    ``trace_stderr = n * std_r(per-run mean) / sqrt(n_runs)`` (NaN for one run: it cannot be estimated).
    ``progress``: a :func:`progress_info` dict (budget ``n_runs * steps``) after each product call.
    """
    t0, mv0 = time.perf_counter(), op.n_matvecs
    r = linalg.slq(_reporting(op, "density", n_runs * steps, progress, t0, mv0), op.n, n_runs, steps, seed=seed, device=op.device, dtype=op.dtype)
    grid, dens, sig = linalg.gaussian_density(r.nodes, r.weights, sigma=sigma, sigma_rel=sigma_rel,
                                              n_grid=n_grid)
    per_run = np.nansum(r.nodes * r.weights, axis=1)
    mean, se = mean_se(per_run)
    return HessianDensity(r.nodes, r.weights, r.lengths, grid, dens, sig, int(n_runs),
                          int(r.nodes.shape[1]), mean, op.n * mean, op.n * se,
                          op.n_matvecs - mv0, time.perf_counter() - t0, **_meta(op, seed))
