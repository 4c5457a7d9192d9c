"""Gradient noise scale B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018).

``G`` is the mean gradient over a pool of N examples and ``Sigma`` the
per-example gradient covariance of the pool, ``tr(Sigma) = (1/N) sum_i |g_i - G|^2``.
B_simple approximates the critical batch size: below it, doubling the batch
nearly halves the steps; above it, more batch buys little.

Two-batch-size estimate: per repetition r, batches of ``b_small`` and
``b_big`` examples are drawn from the pool *with replacement* (seeded), so that
``E|G_B|^2 = |G|^2 + tr(Sigma) / B`` holds exactly, and

    |G|^2_est = (B_big |G_big|^2 - B_small |G_small|^2) / (B_big - B_small),
    S_est     = (|G_small|^2 - |G_big|^2) / (1/B_small - 1/B_big)

are unbiased. ``b_simple = mean_r S_est / mean_r |G|^2_est`` (ratio of means,
which replaces the EMA of a training run); its spread is a percentile bootstrap
over repetitions (``b_simple_se`` = bootstrap std, ``b_simple_ci`` at level
``ci``, its ends clipped at 0 since B_simple >= 0: :func:`ratio_bootstrap`). ``g2_se``/``trace_sigma_se`` are the standard errors of the two means.

Assumes the batch loss is the mean of per-example losses (``criterion`` with
mean reduction). For losses with pairwise terms (a ranking loss) the batch
gradient is not such a mean and the estimate is an approximation.
``chunk_size`` splits large batches for memory (exact for mean-decomposable
losses only).

``exact_noise_scale`` computes the same quantities from every per-example
gradient (N backward passes; for small problems and tests).

Data parallel (sharded batches, :mod:`landscape.distributed`): the pool is the global
example list and the repeats are split over ranks (each repeat's batches are drawn from
its own seed), so the result is the single-process one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import numpy as np
import torch
from torch import nn

from landscape.batches import Batch, Criterion, model_device
from landscape.distributed import map_units
from landscape.errors import LandscapeError, check_positive_int
from landscape.sharpness.objective import (
    PerturbedLoss,
    guarded,
    is_sharded,
    pooled,
    prepare,
    seed_stream,
)
from landscape.uncertainty import mean_se


@dataclass(frozen=True)
class NoiseScaleResult:
    """B_simple with bootstrap SE and CI; the means and SEs of the two unbiased estimators; per-repeat |G_B|^2."""

    b_simple: float
    b_simple_se: float
    b_simple_ci: list[float]
    ci: float
    g2: float
    g2_se: float
    trace_sigma: float
    trace_sigma_se: float
    b_small: int
    b_big: int
    n_repeats: int
    n_pool: int
    g2_small: list[float]
    g2_big: list[float]
    n_boot: int
    seed: int
    mode: str
    n_params: int


@dataclass(frozen=True)
class ExactNoiseScale:
    """``b_simple = trace_sigma / g2`` from all ``n`` per-example gradients (population covariance, 1/N)."""

    b_simple: float
    trace_sigma: float
    g2: float
    n: int
    mode: str


def _batch_gradient(obj: PerturbedLoss, x: torch.Tensor, y: torch.Tensor, chunk: int | None) -> torch.Tensor:
    n = int(x.shape[0])
    size = n if chunk is None else chunk
    parts = [(x[i:i + size], y[i:i + size]) for i in range(0, n, size)]
    return obj.evaluate(parts, grad=True, what=f"loss of a batch of {n}").grad


def noise_estimators(g2_small: np.ndarray, g2_big: np.ndarray, b_small: int, b_big: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-repeat unbiased ``(|G|^2_est, S_est)`` from squared gradient norms at two batch sizes."""
    g2 = (b_big * g2_big - b_small * g2_small) / (b_big - b_small)
    s = (g2_small - g2_big) / (1.0 / b_small - 1.0 / b_big)
    return g2, s


def ratio_bootstrap(s_est: np.ndarray, g2_est: np.ndarray, *, n_boot: int, ci: float,
                    seed: int) -> tuple[np.ndarray, tuple[float, float]]:
    """Percentile bootstrap over repetitions of ``mean(s_est) / mean(g2_est)``: the finite
    resampled ratios and the interval at level ``ci``, its ends clipped at 0. B_simple =
    tr(Sigma) / |G|^2 cannot be negative, but the unbiased per-repeat differences can be, so an
    unresolved noise scale would otherwise get an interval reaching below zero; clipped, its lower
    end reads 0 ("not resolved from zero"). The point estimate is left as measured."""
    rng = np.random.default_rng(seed_stream(seed, 9))
    n = len(s_est)
    idx = rng.integers(0, n, size=(n_boot, n))
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = s_est[idx].mean(axis=1) / g2_est[idx].mean(axis=1)
    boot = boot[np.isfinite(boot)]
    if not boot.size:
        return boot, (float("nan"), float("nan"))
    lo, hi = np.quantile(boot, [(1 - ci) / 2, (1 + ci) / 2])
    return boot, (max(float(lo), 0.0), max(float(hi), 0.0))


def gradient_noise_scale(model: nn.Module, criterion: Criterion, batches: Iterable[Batch], b_small: int, b_big: int,
                         n_repeats: int = 20, seed: int = 0, *, train: bool = False, chunk_size: int | None = None,
                         n_boot: int = 2000, ci: float = 0.95) -> NoiseScaleResult:
    """B_simple of ``model`` on the pool ``batches`` from ``n_repeats`` seeded pairs of batches (module docstring)."""
    b_small = check_positive_int("b_small", b_small)
    b_big = check_positive_int("b_big", b_big)
    if b_big <= b_small:
        raise LandscapeError(f"b_big={b_big} must be larger than b_small={b_small}")
    n_repeats = check_positive_int("n_repeats", n_repeats, minimum=2)
    n_boot = check_positive_int("n_boot", n_boot)
    if chunk_size is not None:
        check_positive_int("chunk_size", chunk_size)
    if not 0 < ci < 1:
        raise LandscapeError(f"ci={ci!r} must lie in (0, 1)")
    data = prepare(model, batches)
    x, y = pooled(data)
    x, y = x.to(model_device(model)), y.to(model_device(model))
    n_pool = int(x.shape[0])
    if n_pool < 2:
        raise LandscapeError(f"the noise scale needs a pool of at least 2 examples, got {n_pool}")
    with guarded(model, train) as mode:
        obj = PerturbedLoss(model, criterion)

        def repeat(r: int) -> tuple[float, float]:
            g2 = []
            for size, which in ((b_small, 0), (b_big, 1)):
                idx = np.random.default_rng(seed_stream(seed, 8, r, which)).integers(0, n_pool, size=size)
                index = torch.as_tensor(idx, device=x.device)
                g = _batch_gradient(obj, x.index_select(0, index), y.index_select(0, index), chunk_size)
                g2.append(float(g.to(torch.float64).pow(2).sum()))
            return g2[0], g2[1]

        # data parallel: the repeats are split over ranks, results gathered in repeat order
        rows = map_units(n_repeats, repeat) if is_sharded(data) else [repeat(r) for r in range(n_repeats)]
    g2_small, g2_big = np.asarray([r[0] for r in rows]), np.asarray([r[1] for r in rows])
    g2_est, s_est = noise_estimators(g2_small, g2_big, b_small, b_big)
    g2, g2_se = mean_se(g2_est)
    tr, tr_se = mean_se(s_est)
    boot, (lo, hi) = ratio_bootstrap(s_est, g2_est, n_boot=n_boot, ci=ci, seed=seed)
    return NoiseScaleResult(
        b_simple=float(tr / g2) if g2 != 0 else float("nan"),
        b_simple_se=float(boot.std(ddof=1)) if boot.size > 1 else float("nan"), b_simple_ci=[float(lo), float(hi)],
        ci=float(ci), g2=g2, g2_se=g2_se, trace_sigma=tr, trace_sigma_se=tr_se, b_small=b_small, b_big=b_big,
        n_repeats=n_repeats, n_pool=n_pool, g2_small=g2_small.tolist(), g2_big=g2_big.tolist(), n_boot=n_boot,
        seed=int(seed), mode=mode, n_params=obj.n)


def exact_noise_scale(model: nn.Module, criterion: Criterion, batches: Iterable[Batch], *,
                      train: bool = False) -> ExactNoiseScale:
    """tr(Sigma), |G|^2 and their ratio from every per-example gradient (Welford update, float64)."""
    x, y = pooled(prepare(model, batches))
    n = int(x.shape[0])
    if n < 2:
        raise LandscapeError(f"the noise scale needs at least 2 examples, got {n}")
    with guarded(model, train) as mode:
        obj = PerturbedLoss(model, criterion)
        mean = torch.zeros(obj.n, dtype=torch.float64, device=obj.base.device)
        m2 = 0.0
        for i in range(n):
            g = obj.evaluate([(x[i:i + 1], y[i:i + 1])], grad=True, what=f"loss of example {i}").grad.to(torch.float64)
            d = g - mean
            mean += d / (i + 1)
            m2 += float(d @ (g - mean))
    g2 = float(mean @ mean)
    tr = m2 / n
    return ExactNoiseScale(b_simple=tr / g2 if g2 > 0 else float("nan"), trace_sigma=tr, g2=g2, n=n, mode=mode)
