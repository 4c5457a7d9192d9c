"""Krylov and randomized spectral estimators for a symmetric linear operator ``A`` (n x n).

Every routine sees ``A`` only through ``matmat(V) -> A @ V`` with ``V`` of shape
``[n, m]``: several probe vectors per call, so an operator can share work (one
forward pass, say) across them. Vectors stay in the caller's dtype and device;
the small projected matrices are handled in float64 NumPy (``eigh``). Random
probes come from a seeded ``torch.Generator`` created on ``device``.

- :mod:`.lanczos`: extremal eigenpairs (Lanczos, full reorthogonalisation, thick restart),
  each with its residual norm ``||A y - theta y||`` and a convergence flag.
- :mod:`.trace`: Hutchinson and Hutch++ trace at a fixed matvec budget, with a standard error.
- :mod:`.density`: spectral density by stochastic Lanczos quadrature.
- :mod:`.probes`: the operator type, seeded probes, orthogonalisation shared by the three.
"""
from landscape.linalg.density import SLQResult, gaussian_density, slq
from landscape.linalg.lanczos import STOP_RULES, WHICH, LanczosResult, error_estimates, lanczos
from landscape.linalg.probes import MatMat, generator, rademacher
from landscape.linalg.trace import TraceEstimate, hutchinson, hutchpp

__all__ = ["MatMat", "WHICH", "STOP_RULES", "LanczosResult", "SLQResult", "TraceEstimate", "error_estimates",
           "gaussian_density", "generator", "hutchinson", "hutchpp", "lanczos", "rademacher", "slq"]
