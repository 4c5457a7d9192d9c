"""Lanczos for extremal eigenpairs of a symmetric operator ``A`` (n x n), with residuals and convergence flags.

Every routine sees ``A`` only through ``matmat(V) -> A @ V`` with ``V`` of shape
``[n, m]``: several probe vectors per call, so an operator can share work (one
forward pass, say) across them. Vectors stay in the caller's dtype and device;
the small projected matrices are handled in float64 NumPy (``eigh``). Random
probes come from a seeded ``torch.Generator`` created on ``device``.

- :func:`lanczos`: extremal eigenpairs (Lanczos, full reorthogonalisation, thick restart),
  each with its residual norm ``||A y - theta y||`` and a convergence flag.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from landscape.errors import LandscapeError, NumericsError, check_choice
from landscape.linalg.probes import (
    BREAKDOWN,
    MatMat,
    breakdown_floor,
    generator,
    orthogonalize,
)

WHICH = ("LA", "SA", "LM")


def _order(theta: np.ndarray, which: str) -> np.ndarray:
    """Indices of ``theta`` from most to least wanted: LA descending, SA ascending, LM by |theta|."""
    if which == "LA":
        return np.argsort(-theta, kind="stable")
    if which == "SA":
        return np.argsort(theta, kind="stable")
    return np.argsort(-np.abs(theta), kind="stable")

STOP_RULES = ("residual", "eigenvalue")
#: ``stop='eigenvalue'`` stops only when the test has held on this many consecutive steps.
CONSECUTIVE = 2


def error_estimates(theta: np.ndarray, idx: np.ndarray, res: np.ndarray,
                    all_res: np.ndarray | None = None) -> np.ndarray:
    """Eigenvalue error bounds for the wanted Ritz values ``theta[idx]`` (residuals ``res``).

    Three bounds on ``|lambda_i - theta_i|``, the smallest is returned:

    - ``r_i``, the residual norm ``||A y_i - theta_i y_i||``: guaranteed (Weyl/Kahan: some
      eigenvalue lies within ``r_i``), used alone for values in a cluster;
    - the single-value quadratic bound ``r_i^2 / gap_i`` (Kato-Temple), valid when no other
      eigenvalue of ``A`` lies within ``gap_i`` of ``theta_i``;
    - the block quadratic bound ``||R||^2 / delta`` with ``||R||^2 = sum_wanted r_j^2`` (the
      Lanczos block residual ``beta q e_m^T S_wanted`` has rank one) and ``delta`` the distance
      from the wanted Ritz values to the unwanted spectrum (Mathias 1998; Li and Li 2005):
      tight for a cluster inside the wanted set.

    The gaps are estimated *conservatively* from the Ritz data: an unwanted Ritz value
    ``theta_j`` (residual ``all_res[j]``) may stand for an eigenvalue anywhere within
    ``all_res[j]`` of it (Ritz values converge from the inside of the spectrum, so an
    unconverged one understates how close its eigenvalue is), so
    ``gap_i = min_j (|theta_i - theta_j| - r_j)`` over every other Ritz value and
    ``delta = min_{i wanted, j unwanted} (|theta_i - theta_j| - r_j)``. A gap ``<= 0`` drops
    that quadratic bound. ``all_res`` (residuals of every entry of ``theta``) defaults to
    ``res`` on the wanted entries and 0 elsewhere. The quadratic bounds remain estimates: an
    eigenvalue the Krylov space has not seen yet can sit inside a gap, which is why
    :func:`lanczos` also requires the test on :data:`CONSECUTIVE` steps.
    """
    theta = np.asarray(theta, dtype=np.float64)
    idx = np.asarray(idx, dtype=np.int64)
    out = np.array(res, dtype=np.float64, copy=True)
    rall = np.zeros(len(theta)) if all_res is None else np.array(all_res, dtype=np.float64, copy=True)
    rall[idx] = out
    unwanted = np.setdiff1d(np.arange(len(theta)), idx)
    delta = np.inf
    if len(unwanted):
        delta = float(np.min(np.abs(theta[idx][:, None] - theta[unwanted][None, :]) - rall[unwanted][None, :]))
    block = float(np.sum(out ** 2)) / delta if delta > 0 else np.inf
    for pos, i in enumerate(idx):
        others = np.delete(np.arange(len(theta)), i)
        gap = float(np.min(np.abs(theta[others] - theta[i]) - rall[others])) if len(others) else np.inf
        single = out[pos] ** 2 / gap if gap > 0 else np.inf
        out[pos] = min(out[pos], single, block)
    return out


def _accuracy(theta: np.ndarray, idx: np.ndarray, res: np.ndarray, stop: str,
              all_res: np.ndarray | None = None) -> np.ndarray:
    """What the convergence test compares with ``tol * |theta|``: residual or error bound."""
    return res if stop == "residual" else error_estimates(theta, idx, res, all_res)


def _fresh_run_converged(T2: np.ndarray, beta: float, which: str, tol: float, floor: float,
                         stop: str) -> bool:
    """Has the extreme Ritz value (wanted end) of the run in ``T2`` converged?"""
    if T2.shape[0] == 0:
        return False
    th, S2 = np.linalg.eigh(T2)
    ends = np.array({"LA": [len(th) - 1], "SA": [0], "LM": [0, len(th) - 1]}[which])
    acc = _accuracy(th, ends, beta * np.abs(S2[-1, ends]), stop, beta * np.abs(S2[-1]))
    return bool(np.all(acc <= np.maximum(tol * np.abs(th[ends]), floor)))


@dataclass
class LanczosResult:
    """Ritz pairs of ``A``: ``eigenvalues[i]`` (float64), ordered by ``which`` (most wanted first).

    ``residuals[i] = ||A y_i - eigenvalues[i] y_i||_2`` for the unit Ritz vector ``y_i``; by
    Weyl's bound some eigenvalue of ``A`` lies within that distance. ``error_estimates``:
    :func:`error_estimates` (``min(r, r^2/gap, ||R||^2/delta)``, conservative gaps). ``converged[i]``:
    the quantity named by ``stop`` (``residual``, default, or ``eigenvalue``: the error bound)
    ``<= tol * max(|eigenvalues[i]|, 100 eps ||A||)``
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
    error bound of :func:`error_estimates` (``min(r, r^2/gap, ||R||^2/delta)`` with gaps shrunk by
    the neighbours' residuals) ``<= tol * |theta|`` on :data:`CONSECUTIVE` (2) consecutive steps:
    eigenvalues to relative accuracy ``tol`` in fewer steps than the residual rule (which needs
    ``r <= tol |theta|``, about twice the digits, since the error is of order ``r^2``).

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
    check_choice("which", which, WHICH)
    check_choice("stop", stop, STOP_RULES)
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
    j = matvecs = restarts = fresh = streak = 0       # fresh: first index of the run after a breakdown
    anorm = 0.0
    while True:
        Q[j] = q
        w = matmat(q[:, None])[:, 0]
        matvecs += 1
        W[j] = w
        r, h = orthogonalize(w, Q[:j + 1])
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
        floor = breakdown_floor(dtype, anorm)
        want = _order(theta, which)[:k]
        est_all = beta * np.abs(S[j - 1])
        est = est_all[want]
        errs = error_estimates(theta, want, est, est_all)
        ok = (est if stop == "residual" else errs) <= np.maximum(tol * np.abs(theta[want]), floor)
        invariant = beta <= breakdown_floor(dtype, anorm, BREAKDOWN)
        if callback is not None:
            callback(matvecs, theta[want], est, errs)
        fresh_ok = fresh == 0 or _fresh_run_converged(T[fresh:j, fresh:j], beta, which, tol, floor, stop)
        passed = len(want) == k and bool(ok.all()) and fresh_ok and not invariant
        streak = streak + 1 if passed else 0
        if streak >= (1 if stop == "residual" else CONSECUTIVE) or j == n or matvecs >= max_iter:
            break
        if invariant:
            # the basis spans an invariant subspace, which holds one vector per eigenspace: go on
            # from a random direction orthogonal to it (finds further copies of a multiple
            # eigenvalue), and stop only once that run's extreme Ritz value has converged too
            r = torch.randn(n, generator=gen, device=device, dtype=dtype)
            r, _ = orthogonalize(r, Q[:j])
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
    all_res = beta * np.abs(S[j - 1])                 # unwanted residuals: the step's estimates
    all_res[want] = residuals
    errors = error_estimates(theta, want, residuals, all_res)
    acc = residuals if stop == "residual" else errors
    converged = acc <= np.maximum(tol * np.abs(theta[want]), breakdown_floor(dtype, anorm))
    vecs = (Y / ynorm[:, None]).T.contiguous() if eigenvectors else None
    return LanczosResult(theta[want].copy(), residuals, errors, converged, vecs, matvecs, restarts, j,
                         stop)
