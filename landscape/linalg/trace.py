"""Trace of a symmetric operator at a fixed matvec budget, with a standard error.

- :func:`hutchinson`: ``tr(A) ~ (1/m) sum_i z_i^T A z_i`` (Hutchinson 1989), Rademacher probes.
- :func:`hutchpp`: Hutch++ (Meyer et al. 2021): exact trace on a sketched range + Hutchinson on the rest.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from landscape.errors import LandscapeError, NumericsError
from landscape.linalg.probes import (
    MatMat,
    apply_blocked,
    generator,
    rademacher,
)
from landscape.uncertainty import mean_se


@dataclass
class TraceEstimate:
    """Trace estimate ``trace +- stderr`` from ``n_matvecs`` products.

    ``stderr``: standard error of the mean of ``samples`` (:func:`landscape.uncertainty.mean_se`,
    std with ddof = 1 over sqrt of their number; both estimators draw at least 2 samples).

    ``exact_part``: Hutch++'s deterministic ``tr(Q^T A Q)`` (0 for Hutchinson);
    ``samples``: the quadratic forms ``z^T A' z`` of the stochastic part, whose mean is added.
    """

    trace: float
    stderr: float
    method: str
    n_matvecs: int
    exact_part: float
    samples: np.ndarray


def _quadratic_forms(Z: torch.Tensor, AZ: torch.Tensor) -> np.ndarray:
    """``z_i^T A z_i`` for each column, accumulated in float64."""
    return (Z.double() * AZ.double()).sum(dim=0).cpu().numpy()


def hutchinson(matmat: MatMat, n: int, n_matvecs: int, *, seed: int = 0, device="cpu",
               dtype=torch.float32, block_size: int | None = None) -> TraceEstimate:
    """``tr(A) ~ (1/m) sum_i z_i^T A z_i`` with ``m = n_matvecs`` Rademacher probes.

    Standard error: sample standard deviation of the ``m`` quadratic forms over ``sqrt(m)``.
    """
    if n_matvecs < 2:
        raise LandscapeError(f"trace budget n_matvecs={n_matvecs}: Hutchinson needs at least 2")
    Z = rademacher(n, n_matvecs, gen=generator(device, seed), device=device, dtype=dtype)
    samples = _quadratic_forms(Z, apply_blocked(matmat, Z, block_size))
    if not np.isfinite(samples).all():
        raise NumericsError("trace: the operator returned NaN or infinite values")
    mean, se = mean_se(samples)
    return TraceEstimate(mean, se, "hutchinson", n_matvecs, 0.0, samples)


def hutchpp(matmat: MatMat, n: int, n_matvecs: int, *, seed: int = 0, device="cpu",
            dtype=torch.float32, block_size: int | None = None) -> TraceEstimate:
    """Hutch++ (Meyer, Musco, Musco, Woodruff 2021) with a budget of ``n_matvecs`` products.

    ``s = n_matvecs // 3`` sketch probes S give ``Q = orth(A S)``; then
    ``tr(A) ~ tr(Q^T A Q) + (1/g) sum_i z_i^T (I-QQ^T) A (I-QQ^T) z_i`` with the remaining
    ``g = n_matvecs - 2s`` Rademacher probes. The first term is exact given Q; the reported
    standard error is that of the Hutchinson part on the deflated residual (sample std of the
    ``g`` quadratic forms over ``sqrt(g)``), i.e. conditional on the sketch.
    """
    if n_matvecs < 4:
        raise LandscapeError(f"trace budget n_matvecs={n_matvecs}: Hutch++ needs at least 4")
    s = n_matvecs // 3
    g = n_matvecs - 2 * s
    gen = generator(device, seed)
    S = rademacher(n, s, gen=gen, device=device, dtype=dtype)
    G = rademacher(n, g, gen=gen, device=device, dtype=dtype)
    Qm, _ = torch.linalg.qr(apply_blocked(matmat, S, block_size), mode="reduced")
    AQ = apply_blocked(matmat, Qm, block_size)
    exact = float(_quadratic_forms(Qm, AQ).sum())
    Gp = G - Qm @ (Qm.T @ G)
    samples = _quadratic_forms(Gp, apply_blocked(matmat, Gp, block_size))
    if not (np.isfinite(samples).all() and math.isfinite(exact)):
        raise NumericsError("trace: the operator returned NaN or infinite values")
    mean, se = mean_se(samples)
    return TraceEstimate(exact + mean, se, "hutch++", s + Qm.shape[1] + g, exact, samples)
