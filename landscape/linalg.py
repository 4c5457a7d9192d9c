"""Krylov and randomized spectral estimators for a symmetric linear operator ``A`` (n x n).

Every routine sees ``A`` only through ``matmat(V) -> A @ V`` with ``V`` of shape
``[n, m]``: several probe vectors per call, so an operator can share work (one
forward pass, say) across them. Vectors stay in the caller's dtype and device;
the small projected matrices are handled in float64 NumPy (``eigh``). Random
probes come from a seeded ``torch.Generator`` created on ``device``.

- :func:`lanczos`: extremal eigenpairs (Lanczos, full reorthogonalisation, thick restart),
  each with its residual norm ``||A y - theta y||`` and a convergence flag.
- :func:`hutchinson`, :func:`hutchpp`: trace at a fixed matvec budget, with a standard error.
- :func:`slq`, :func:`gaussian_density`: spectral density by stochastic Lanczos quadrature.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from .errors import LandscapeError, NumericsError

MatMat = Callable[[torch.Tensor], torch.Tensor]
WHICH = ("LA", "SA", "LM")


def generator(device: torch.device | str, seed: int) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    g = torch.Generator(device=torch.device(device))
    g.manual_seed(int(seed))
    return g


def rademacher(n: int, m: int, *, gen: torch.Generator, device, dtype) -> torch.Tensor:
    """``[n, m]`` matrix of independent +-1 entries (``E[z z^T] = I``)."""
    z = torch.empty((n, m), device=device, dtype=dtype).bernoulli_(0.5, generator=gen)
    return z.mul_(2).sub_(1)


def _orthogonalize(w: torch.Tensor, basis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``w`` minus its projection on the rows of ``basis`` (classical Gram-Schmidt, two passes).

    Returns ``(w_perp, h)`` with ``w = basis^T h + w_perp``.
    """
    if basis.shape[0] == 0:
        return w, w.new_zeros(0)
    h = basis @ w
    w = torch.addmv(w, basis.T, h, alpha=-1)
    h2 = basis @ w
    w = torch.addmv(w, basis.T, h2, alpha=-1)
    return w, h + h2


def _apply(matmat: MatMat, V: torch.Tensor, block_size: int | None) -> torch.Tensor:
    """``A @ V``, calling ``matmat`` on at most ``block_size`` columns at a time."""
    m = V.shape[1]
    if block_size is None or m <= block_size:
        return matmat(V)
    return torch.cat([matmat(V[:, i:i + block_size]) for i in range(0, m, block_size)], dim=1)


def _order(theta: np.ndarray, which: str) -> np.ndarray:
    """Indices of ``theta`` from most to least wanted: LA descending, SA ascending, LM by |theta|."""
    if which == "LA":
        return np.argsort(-theta, kind="stable")
    if which == "SA":
        return np.argsort(theta, kind="stable")
    return np.argsort(-np.abs(theta), kind="stable")


def _breakdown_floor(dtype: torch.dtype, anorm: float, factor: float = 100.0) -> float:
    """Residual level indistinguishable from rounding: ``factor * eps(dtype) * ||A||``."""
    return factor * torch.finfo(dtype).eps * anorm


#: ``beta <= BREAKDOWN * eps * ||A||`` after full reorthogonalisation: the Krylov space is
#: (numerically) invariant; what is left of the new direction is rounding noise.
BREAKDOWN = 1000.0


STOP_RULES = ("residual", "eigenvalue")


def error_estimates(theta: np.ndarray, idx: np.ndarray, res: np.ndarray) -> np.ndarray:
    """Eigenvalue error estimates ``min(r_i, r_i^2 / gap_i)`` for Ritz values ``theta[idx]``.

    ``r_i`` (the residual norm) is a guaranteed bound (Weyl); ``r_i^2 / gap_i`` is the
    Kato-Temple order of the error with ``gap_i`` the distance from ``theta[idx[i]]`` to the
    nearest other Ritz value: an estimate, not a bound (the gap to the true spectrum can be
    smaller while neighbouring Ritz values are still moving).
    """
    out = np.array(res, dtype=np.float64, copy=True)
    for pos, i in enumerate(idx):
        others = np.delete(theta, i)
        if len(others):
            gap = float(np.min(np.abs(others - theta[i])))
            if gap > 0:
                out[pos] = min(out[pos], out[pos] ** 2 / gap)
    return out


def _accuracy(theta: np.ndarray, idx: np.ndarray, res: np.ndarray, stop: str) -> np.ndarray:
    """What the convergence test compares with ``tol * |theta|``: residual or error estimate."""
    return res if stop == "residual" else error_estimates(theta, idx, res)


def _fresh_run_converged(T2: np.ndarray, beta: float, which: str, tol: float, floor: float,
                         stop: str) -> bool:
    """Has the extreme Ritz value (wanted end) of the run in ``T2`` converged?"""
    if T2.shape[0] == 0:
        return False
    th, S2 = np.linalg.eigh(T2)
    ends = np.array({"LA": [len(th) - 1], "SA": [0], "LM": [0, len(th) - 1]}[which])
    acc = _accuracy(th, ends, beta * np.abs(S2[-1, ends]), stop)
    return bool(np.all(acc <= np.maximum(tol * np.abs(th[ends]), floor)))


@dataclass
class LanczosResult:
    """Ritz pairs of ``A``: ``eigenvalues[i]`` (float64), ordered by ``which`` (most wanted first).

    ``residuals[i] = ||A y_i - eigenvalues[i] y_i||_2`` for the unit Ritz vector ``y_i``; by
    Weyl's bound some eigenvalue of ``A`` lies within that distance. ``error_estimates``:
    :func:`error_estimates` (``min(r, r^2/gap)``). ``converged[i]``: the quantity
    named by ``stop`` (``residual``, default, or ``eigenvalue``: the error estimate) ``<= tol * max(|eigenvalues[i]|, 100 eps ||A||)``
    (the floor only matters for eigenvalues at rounding level).
    ``eigenvectors``: ``[n, k]`` (caller's dtype) or None.
    """

    eigenvalues: np.ndarray
    residuals: np.ndarray
    error_estimates: np.ndarray
    converged: np.ndarray
    eigenvectors: torch.Tensor | None
    n_matvecs: int
    n_restarts: int
    basis_size: int
    stop: str = "residual"


def lanczos(matmat: MatMat, n: int, k: int, *, which: str = "LA", tol: float = 1e-3,
            stop: str = "residual", max_iter: int = 200, max_basis: int | None = None,
            seed: int = 0, start: torch.Tensor | None = None, device: torch.device | str = "cpu",
            dtype: torch.dtype = torch.float32, eigenvectors: bool = False,
            callback: Callable[[int, np.ndarray, np.ndarray, np.ndarray], None] | None = None
            ) -> LanczosResult:
    """``k`` extremal eigenpairs of symmetric ``A`` by Lanczos with full reorthogonalisation.

    Each step applies ``A`` to the newest basis vector, orthogonalises the product against the
    whole basis (two Gram-Schmidt passes) and stores the coefficients in the projected matrix
    ``T = Q^T A Q`` (tridiagonal; arrowhead after a restart), whose ``eigh`` in float64 gives
    the Ritz values. ``which``: ``'LA'`` largest algebraic (default), ``'SA'`` smallest
    algebraic, ``'LM'`` largest magnitude.

    Stops when all ``k`` wanted Ritz pairs have converged, after ``max_iter`` products, or when
    the basis spans an invariant subspace of size ``n``. ``stop='residual'`` (default):
    ``||A y - theta y|| <= tol * |theta|`` (estimated during the run as ``beta * |s_last|``), which
    guarantees ``|theta - lambda| <= tol * |theta|`` for some eigenvalue; ``'eigenvalue'``: the
    error estimate ``min(r, r^2/gap) <= tol * |theta|`` (eigenvalues to relative accuracy ``tol``
    in far fewer steps; :func:`error_estimates`).

    A Krylov space holds one direction per eigenspace, so when ``beta`` drops to rounding level
    (``<= 1000 eps ||A||``: an invariant subspace) the run goes on from a random vector orthogonal to the basis and
    stops only when that new run's extreme Ritz value has converged as well: an eigenvalue of
    multiplicity 2 is then reported twice (higher multiplicities need one breakdown per copy).
    When the basis reaches ``max_basis`` vectors (default ``max(40, 3k)``, capped at ``n``) it
    restarts thick: it keeps the ``max(k, max_basis // 2)`` most wanted Ritz vectors and
    continues the Krylov recurrence from the last residual (Krylov-Schur). The products ``A q``
    are kept, so the final residual norms are exact, at no extra product.
    Memory: ``2 * max_basis * n`` numbers.
    ``callback(n_matvecs, wanted_ritz_values, residual_estimates, error_estimates)`` is called
    after each step (progress reports; the estimates use ``beta * |s_last|``).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise LandscapeError(f"top_k={k!r}: need a positive integer")
    if k > n:
        raise LandscapeError(f"top_k={k} exceeds the number of parameters ({n})")
    if which not in WHICH:
        raise LandscapeError(f"which={which!r}: choose one of {', '.join(WHICH)}")
    if stop not in STOP_RULES:
        raise LandscapeError(f"stop={stop!r}: choose one of {', '.join(STOP_RULES)}")
    if not tol > 0:
        raise LandscapeError(f"tol={tol!r}: need a positive tolerance")
    if max_iter < k:
        raise LandscapeError(f"max_iter={max_iter} is smaller than top_k={k}")
    m_max = max(40, 3 * k) if max_basis is None else int(max_basis)
    m_max = min(n, max(m_max, k + 2))
    gen = generator(device, seed)
    Q = torch.empty(m_max, n, device=device, dtype=dtype)
    W = torch.empty(m_max, n, device=device, dtype=dtype)
    T = np.zeros((m_max, m_max))
    if start is None:
        q = torch.randn(n, generator=gen, device=device, dtype=dtype)
    else:
        if start.shape != (n,):
            raise LandscapeError(f"start vector has shape {tuple(start.shape)}, expected ({n},)")
        q = start.to(device=device, dtype=dtype).clone()
    norm = float(q.norm())
    if not norm > 0 or not math.isfinite(norm):
        raise LandscapeError("start vector is zero or not finite")
    q = q / norm
    j = matvecs = restarts = fresh = 0       # fresh: first index of the run after a breakdown
    anorm = 0.0
    while True:
        Q[j] = q
        w = matmat(q[:, None])[:, 0]
        matvecs += 1
        W[j] = w
        r, h = _orthogonalize(w, Q[:j + 1])
        beta_t = r.norm()
        h64 = h.double().cpu().numpy()          # one host sync per step, not per batch
        beta = float(beta_t)
        if not (np.isfinite(h64).all() and math.isfinite(beta)):
            raise NumericsError(f"Lanczos step {matvecs}: the operator returned NaN or infinite values")
        T[:j + 1, j] = h64
        T[j, :j + 1] = h64
        j += 1
        theta, S = np.linalg.eigh(T[:j, :j])
        anorm = max(anorm, float(np.abs(theta).max()))
        floor = _breakdown_floor(dtype, anorm)
        want = _order(theta, which)[:k]
        est = beta * np.abs(S[j - 1, want])
        ok = _accuracy(theta, want, est, stop) <= np.maximum(tol * np.abs(theta[want]), floor)
        invariant = beta <= _breakdown_floor(dtype, anorm, BREAKDOWN)
        if callback is not None:
            callback(matvecs, theta[want], est, error_estimates(theta, want, est))
        fresh_ok = fresh == 0 or _fresh_run_converged(T[fresh:j, fresh:j], beta, which, tol, floor, stop)
        if (len(want) == k and ok.all() and fresh_ok and not invariant) or j == n or matvecs >= max_iter:
            break
        if invariant:
            # the basis spans an invariant subspace, which holds one vector per eigenspace: go on
            # from a random direction orthogonal to it (finds further copies of a multiple
            # eigenvalue), and stop only once that run's extreme Ritz value has converged too
            r = torch.randn(n, generator=gen, device=device, dtype=dtype)
            r, _ = _orthogonalize(r, Q[:j])
            beta = float(r.norm())
            if not beta > 0:
                break
            fresh = j
        q = r / beta
        if j == m_max:
            p = min(max(k, m_max // 2), m_max - 1)
            keep = _order(theta, which)[:p]
            Sp = torch.from_numpy(np.ascontiguousarray(S[:, keep])).to(device=device, dtype=dtype)
            Q[:p] = Sp.T @ Q[:j]
            W[:p] = Sp.T @ W[:j]
            T[:] = 0.0
            T[np.arange(p), np.arange(p)] = theta[keep]
            j = p
            fresh = 0
            restarts += 1
    Sk = torch.from_numpy(np.ascontiguousarray(S[:, want])).to(device=device, dtype=dtype)
    Y = Sk.T @ Q[:j]                                  # [k, n] Ritz vectors
    AY = Sk.T @ W[:j]
    lam = torch.from_numpy(theta[want]).to(device=device, dtype=dtype)
    ynorm = Y.norm(dim=1)
    res = (AY - lam[:, None] * Y).norm(dim=1) / ynorm
    residuals = res.double().cpu().numpy()
    errors = error_estimates(theta, want, residuals)
    acc = residuals if stop == "residual" else errors
    converged = acc <= np.maximum(tol * np.abs(theta[want]), _breakdown_floor(dtype, anorm))
    vecs = (Y / ynorm[:, None]).T.contiguous() if eigenvectors else None
    return LanczosResult(theta[want].copy(), residuals, errors, converged, vecs, matvecs, restarts, j,
                         stop)


@dataclass
class TraceEstimate:
    """Trace estimate ``trace +- stderr`` from ``n_matvecs`` products.

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


def _mean_se(samples: np.ndarray) -> tuple[float, float]:
    m = len(samples)
    mean = float(samples.mean())
    se = float(samples.std(ddof=1) / math.sqrt(m)) if m > 1 else float("inf")
    return mean, se


def hutchinson(matmat: MatMat, n: int, n_matvecs: int, *, seed: int = 0, device="cpu",
               dtype=torch.float32, block_size: int | None = None) -> TraceEstimate:
    """``tr(A) ~ (1/m) sum_i z_i^T A z_i`` with ``m = n_matvecs`` Rademacher probes.

    Standard error: sample standard deviation of the ``m`` quadratic forms over ``sqrt(m)``.
    """
    if n_matvecs < 2:
        raise LandscapeError(f"trace budget n_matvecs={n_matvecs}: Hutchinson needs at least 2")
    Z = rademacher(n, n_matvecs, gen=generator(device, seed), device=device, dtype=dtype)
    samples = _quadratic_forms(Z, _apply(matmat, Z, block_size))
    if not np.isfinite(samples).all():
        raise NumericsError("trace: the operator returned NaN or infinite values")
    mean, se = _mean_se(samples)
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
    Qm, _ = torch.linalg.qr(_apply(matmat, S, block_size), mode="reduced")
    AQ = _apply(matmat, Qm, block_size)
    exact = float(_quadratic_forms(Qm, AQ).sum())
    Gp = G - Qm @ (Qm.T @ G)
    samples = _quadratic_forms(Gp, _apply(matmat, Gp, block_size))
    if not (np.isfinite(samples).all() and math.isfinite(exact)):
        raise NumericsError("trace: the operator returned NaN or infinite values")
    mean, se = _mean_se(samples)
    return TraceEstimate(exact + mean, se, "hutch++", s + Qm.shape[1] + g, exact, samples)


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
            rest, h = _orthogonalize(AV[:, c], Q[r, :j + 1])
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
            if j + 1 < steps and b[c] <= _breakdown_floor(dtype, anorm[r], BREAKDOWN):
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
