"""Spectral density by stochastic Lanczos quadrature (Ghorbani et al. 2019; Lin et al. 2016).

- :func:`slq`: Gauss quadrature nodes and weights of several Lanczos runs from random unit probes.
- :func:`gaussian_density`: the density smoothed by Gaussians of width ``sigma``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from landscape.errors import LandscapeError, NumericsError
from landscape.linalg.probes import (
    BREAKDOWN,
    MatMat,
    breakdown_floor,
    generator,
    orthogonalize,
    rademacher,
)


@dataclass
class SLQResult:
    """Gauss quadrature rules of the spectral measure, one per run.

    ``nodes[r, i]``/``weights[r, i]`` for ``i < lengths[r]`` (NaN/0 padding after a run's
    Krylov space was exhausted); weights of a run sum to 1 and
    ``sum_i weights[r, i] * f(nodes[r, i]) ~ v_r^T f(A) v_r`` for the unit start ``v_r``.
    """

    nodes: np.ndarray
    weights: np.ndarray
    lengths: np.ndarray
    n_matvecs: int


def slq(matmat: MatMat, n: int, n_runs: int, steps: int, *, seed: int = 0, device="cpu",
        dtype=torch.float32) -> SLQResult:
    """Stochastic Lanczos quadrature: ``n_runs`` Lanczos runs of ``steps`` steps, in lockstep.

    Each run starts from a normalised Rademacher vector ``z / sqrt(n)``; all runs share one
    ``matmat`` call per step. Full reorthogonalisation within each run; the tridiagonal
    ``T_r`` (alphas, betas) is diagonalised by ``eigh`` in float64: nodes = eigenvalues,
    weights = squared first components of the eigenvectors. A run whose ``beta`` falls to
    rounding level (``1000 eps ||A||``) stops early: its quadrature is then exact.
    Memory: ``n_runs * steps * n`` numbers.
    """
    if n_runs < 1 or steps < 1:
        raise LandscapeError(f"density: n_runs={n_runs}, steps={steps}: both must be >= 1")
    steps = min(steps, n)
    gen = generator(device, seed)
    q = rademacher(n, n_runs, gen=gen, device=device, dtype=dtype).T.contiguous() / math.sqrt(n)
    Q = torch.empty(n_runs, steps, n, device=device, dtype=dtype)
    alpha = np.zeros((n_runs, steps))
    beta = np.zeros((n_runs, steps))
    lengths = np.full(n_runs, steps)
    active = list(range(n_runs))
    anorm = np.zeros(n_runs)
    matvecs = 0
    for j in range(steps):
        for r in active:
            Q[r, j] = q[r]
        AV = matmat(q[active].T)                     # [n, len(active)]
        matvecs += len(active)
        coeffs, norms, rests = [], [], []
        for c, r in enumerate(active):
            rest, h = orthogonalize(AV[:, c], Q[r, :j + 1])
            coeffs.append(h[j])
            norms.append(rest.norm())
            rests.append(rest)
        a = torch.stack(coeffs).double().cpu().numpy()   # one host sync per step
        b = torch.stack(norms).double().cpu().numpy()
        if not (np.isfinite(a).all() and np.isfinite(b).all()):
            raise NumericsError(f"density: the operator returned NaN or infinite values at step {j + 1}")
        still = []
        for c, r in enumerate(active):
            alpha[r, j], beta[r, j] = a[c], b[c]
            anorm[r] = max(anorm[r], abs(a[c]) + b[c] + (beta[r, j - 1] if j else 0.0))
            if j + 1 < steps and b[c] <= breakdown_floor(dtype, anorm[r], BREAKDOWN):
                lengths[r] = j + 1
            elif j + 1 < steps:
                q[r] = rests[c] / b[c]
                still.append(r)
        active = still
        if not active:
            break
    nodes = np.full((n_runs, steps), np.nan)
    weights = np.zeros((n_runs, steps))
    for r in range(n_runs):
        L = int(lengths[r])
        Tr = np.diag(alpha[r, :L]) + np.diag(beta[r, :L - 1], 1) + np.diag(beta[r, :L - 1], -1)
        theta, S = np.linalg.eigh(Tr)
        nodes[r, :L] = theta
        weights[r, :L] = S[0] ** 2
    return SLQResult(nodes, weights, lengths, matvecs)


def gaussian_density(nodes: np.ndarray, weights: np.ndarray, *, sigma: float | None = None,
                     sigma_rel: float = 0.01, n_grid: int = 1024,
                     grid: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Smoothed spectral density ``phi(t) = mean_r sum_i w_ri N(t; theta_ri, sigma^2)``.

    ``sigma`` defaults to ``sigma_rel * (max node - min node)`` (1% of the spectral span;
    ``sigma_rel * max(|node|)`` or 1e-12 when all nodes coincide). The default grid runs from
    ``min - 5 sigma`` to ``max + 5 sigma`` with ``n_grid`` points, so ``trapz(phi, grid) = 1``
    to within 1e-6. NaN nodes (padding) carry weight 0 and are ignored.
    Returns ``(grid, density, sigma)``.
    """
    mask = np.isfinite(nodes) & (weights > 0)
    t, w = nodes[mask], weights[mask]
    n_runs = nodes.shape[0]
    lo, hi = float(t.min()), float(t.max())
    if sigma is None:
        span = hi - lo
        sigma = sigma_rel * (span if span > 0 else max(abs(lo), abs(hi))) or 1e-12
    if not sigma > 0:
        raise LandscapeError(f"density kernel width sigma={sigma!r}: need a positive value")
    if grid is None:
        grid = np.linspace(lo - 5 * sigma, hi + 5 * sigma, n_grid)
    grid = np.asarray(grid, dtype=np.float64)
    dens = np.zeros_like(grid)
    norm = 1.0 / (sigma * math.sqrt(2 * math.pi) * n_runs)
    for start in range(0, len(t), 256):
        tt, ww = t[start:start + 256], w[start:start + 256]
        dens += (ww[:, None] * np.exp(-0.5 * ((grid[None, :] - tt[:, None]) / sigma) ** 2)).sum(0)
    return grid, dens * norm, float(sigma)
