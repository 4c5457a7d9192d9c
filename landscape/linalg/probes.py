"""Shared pieces of the Krylov and randomized estimators: the operator type, seeded probes,
Gram-Schmidt against a basis, blocked products and the Lanczos breakdown floor."""
from __future__ import annotations

from typing import Callable

import torch

MatMat = Callable[[torch.Tensor], torch.Tensor]
def generator(device: torch.device | str, seed: int) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    g = torch.Generator(device=torch.device(device))
    g.manual_seed(int(seed))
    return g


def rademacher(n: int, m: int, *, gen: torch.Generator, device, dtype) -> torch.Tensor:
    """``[n, m]`` matrix of independent +-1 entries (``E[z z^T] = I``)."""
    z = torch.empty((n, m), device=device, dtype=dtype).bernoulli_(0.5, generator=gen)
    return z.mul_(2).sub_(1)


def orthogonalize(w: torch.Tensor, basis: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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


def apply_blocked(matmat: MatMat, V: torch.Tensor, block_size: int | None) -> torch.Tensor:
    """``A @ V``, calling ``matmat`` on at most ``block_size`` columns at a time."""
    m = V.shape[1]
    if block_size is None or m <= block_size:
        return matmat(V)
    return torch.cat([matmat(V[:, i:i + block_size]) for i in range(0, m, block_size)], dim=1)

def breakdown_floor(dtype: torch.dtype, anorm: float, factor: float = 100.0) -> float:
    """Residual level indistinguishable from rounding: ``factor * eps(dtype) * ||A||``."""
    return factor * torch.finfo(dtype).eps * anorm


#: ``beta <= BREAKDOWN * eps * ||A||`` after full reorthogonalisation: the Krylov space is
#: (numerically) invariant; what is left of the new direction is rounding noise.
BREAKDOWN = 1000.0
