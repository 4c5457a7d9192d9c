"""Keskar et al. (ICLR 2017) epsilon-sharpness, metric 2.1.

For a matrix ``A`` (n x p) the box is

    C_eps = { y in R^p : |y_i| <= eps * (|(A^+ w)_i| + 1) }

and

    phi(eps, A) = 100 * (max_{y in C_eps} L(w + A y) - L(w)) / (1 + L(w))

(percent). ``A = I`` (p = n) is the full-space version; ``A`` with i.i.d.
``N(0, 1)`` entries and p = 100 columns (seeded) the random-subspace version.
The max is solved inexactly, as in the paper, by scipy's L-BFGS-B on ``-L``
with the box as bounds and ``maxiter`` 10.

Start points (``start``, ``n_random_starts``): by default (``start="zero"``) the
first L-BFGS-B run starts from the paper's ``y = 0`` (Keskar et al. 2017: L-BFGS-B
from y = 0 inside the box); ``n_random_starts`` (default 0) further runs start from
seeded uniform random points of the box (start ``j`` from ``seed_stream(seed, 2, j)``).
``start="random"`` (the old default) replaces the ``y = 0`` run by one more random
start. ``n_starts = 1 + n_random_starts`` runs in all; the result records
``n_starts`` and the rule ``start`` (``analysis.h5`` keeps every result field and the
config). The reported max is the best loss seen among ``y = 0``, the start points and
every point L-BFGS-B evaluated, over all starts, so extra random starts can only raise
it; it is a lower bound on the true box maximum. At an exact stationary point (zero
gradient) the ``y = 0`` run stops at once and phi = 0; add random starts there.
With ``n_starts > 1`` the per-start values are kept (``phi_per_start``, stored) with
their spread ``phi_std`` (sample std, ddof = 1) and the standard error of their mean
``phi_se = phi_std / sqrt(n_starts)`` (both derived, NaN for one start).

Not invariant to reparametrisation (Dinh et al. 2017): rescaling the layers of
a ReLU network changes phi without changing the function; report it beside the
adaptive measures.

Memory: scipy keeps ``maxcor`` (default 10) pairs of float64 n-vectors in the
full space (about 160 bytes per parameter). The random matrix ``A`` is kept on
the model's device when it fits ``max_cached_bytes``, else regenerated in row
chunks (from the same seed, on the CPU) at every evaluation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from scipy import optimize
from torch import nn

from landscape.batches import Batch, Criterion
from landscape.errors import check_choice, check_positive_int, check_positive_number
from landscape.sharpness.objective import (
    PerturbedLoss,
    guarded,
    n_examples,
    prepare,
    score_targets,
    seed_stream,
    srcc_of,
    uniform,
)
from landscape.uncertainty import mean_se, mean_std

KESKAR_EPS = (1e-3, 5e-4)
KESKAR_SUBSPACE_DIM = 100
START_RULES = ("zero", "random")


@dataclass(frozen=True)
class KeskarConfig:
    """``eps`` box size; ``subspace_dim`` None = full space (A = I), p = random Gaussian n x p matrix.

    ``start``: ``"zero"`` (default, the paper's: the first run from y = 0) or ``"random"``
    (the first run from a random point too); ``n_random_starts`` (default 0): extra runs
    from seeded random points of the box; the reported phi is the max over all runs.
    """

    eps: float = 1e-3
    subspace_dim: int | None = None
    maxiter: int = 10
    start: str = "zero"
    n_random_starts: int = 0
    maxcor: int = 10
    seed: int = 0
    train: bool = False
    max_cached_bytes: int = 2 ** 31


@dataclass(frozen=True)
class KeskarResult:
    """phi in percent; losses are size-weighted means over the data; SRCC fields NaN without scalar outputs.

    ``n_iter``/``n_evals``: L-BFGS-B iterations and loss+gradient evaluations
    summed over starts; ``frac_at_bound``: share of box coordinates of the best
    point within 1e-6 (relative) of a bound. ``n_starts`` (``1 + n_random_starts``) and
    ``start`` (the rule: ``"zero"`` = first run from y = 0, ``"random"``) say how the max was sought.
    """

    eps: float
    space: str
    dim: int
    base_loss: float
    max_loss: float
    phi: float
    phi_per_start: list[float]
    n_iter: int
    n_evals: int
    n_starts: int
    start: str
    maxiter: int
    seed: int
    srcc_base: float
    srcc_at_max: float
    srcc_drop: float
    frac_at_bound: float
    message: str
    mode: str
    n_examples: int
    n_params: int

    @property
    def phi_std(self) -> float:
        """Start-to-start spread: sample standard deviation (ddof = 1) of ``phi_per_start``; NaN for one start."""
        return mean_std(self.phi_per_start)[1]

    @property
    def phi_se(self) -> float:
        """Standard error of the mean of ``phi_per_start``: ``phi_std / sqrt(n_starts)``; NaN for one start.

        The uncertainty of the per-start average, the only standard error the starts give
        (``phi`` itself is the best over all starts). Derived, not stored: ``analysis.h5``
        keeps the samples ``phi_per_start``.
        """
        return keskar_phi_se(self.phi_per_start)


def keskar_phi(base_loss: float, max_loss: float) -> float:
    """``100 * (max_loss - base_loss) / (1 + base_loss)``."""
    return 100.0 * (max_loss - base_loss) / (1.0 + base_loss)


def keskar_phi_se(phi_per_start: Sequence[float]) -> float:
    """Standard error of the mean of the per-start phi values: ``std(ddof=1) / sqrt(n)``
    (:func:`landscape.uncertainty.mean_se`); NaN for fewer than two starts."""
    return mean_se(phi_per_start)[1]


class _Identity:
    def __init__(self, n: int):
        self.p = n

    def matvec(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def rmatvec(self, g: torch.Tensor) -> torch.Tensor:
        return g

    def pinv_apply(self, w: torch.Tensor) -> torch.Tensor:
        return w


class RandomSubspace:
    """``A`` (n x p) with i.i.d. N(0, 1) entries from ``seed``, drawn on the CPU in blocks of rows.

    Block ``i`` (``chunk_elems // p`` rows) is drawn from ``seed_stream(seed, 1, i)``:
    the matrix depends on ``seed``, ``p`` and ``chunk_elems``, not on the device or
    on whether it is cached.

    ``matvec(y) = A y``, ``rmatvec(g) = A^T g``, ``pinv_apply(w) = A^+ w``
    computed as ``(A^T A)^+ A^T w`` (an identity of the pseudo-inverse) in float64.
    """

    def __init__(self, n: int, p: int, seed: int, like: torch.Tensor, max_cached_bytes: int = 2 ** 31,
                 chunk_elems: int = 2 ** 24):
        self.n, self.p, self.seed, self.like = n, p, seed, like
        self.rows = max(1, chunk_elems // p)
        itemsize = torch.empty((), dtype=like.dtype).element_size()
        self.cache: list[torch.Tensor] | None = None
        if n * p * itemsize <= max_cached_bytes:
            self.cache = list(self._generate())

    def _generate(self) -> Iterator[torch.Tensor]:
        # each block of rows has its own seed, so A does not depend on caching
        for i, start in enumerate(range(0, self.n, self.rows)):
            rows = min(self.rows, self.n - start)
            g = torch.Generator(device="cpu").manual_seed(seed_stream(self.seed, 1, i))
            block = torch.randn(rows, self.p, generator=g, dtype=torch.float64)
            yield block.to(device=self.like.device, dtype=self.like.dtype)

    def _blocks(self) -> Iterable[torch.Tensor]:
        return self.cache if self.cache is not None else self._generate()

    def matvec(self, y: torch.Tensor) -> torch.Tensor:
        return torch.cat([b @ y.to(b.dtype) for b in self._blocks()])

    def rmatvec(self, g: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(self.p, dtype=torch.float64, device=self.like.device)
        start = 0
        for b in self._blocks():
            out += (b.T @ g[start:start + b.shape[0]].to(b.dtype)).to(torch.float64)
            start += b.shape[0]
        return out

    def pinv_apply(self, w: torch.Tensor) -> torch.Tensor:
        gram = torch.zeros(self.p, self.p, dtype=torch.float64, device=self.like.device)
        atw = torch.zeros(self.p, dtype=torch.float64, device=self.like.device)
        start = 0
        for b in self._blocks():
            b64 = b.to(torch.float64)
            gram += b64.T @ b64
            atw += b64.T @ w[start:start + b.shape[0]].to(torch.float64)
            start += b.shape[0]
        return torch.linalg.pinv(gram, hermitian=True) @ atw


def keskar_sharpness(model: nn.Module, criterion: Criterion, batches: Iterable[Batch],
                     config: KeskarConfig = KeskarConfig()) -> KeskarResult:
    """phi(eps, A) of ``model`` on ``batches`` (see the module docstring); the model is left as it was."""
    eps = check_positive_number("eps", config.eps)
    maxiter = check_positive_int("maxiter", config.maxiter)
    n_random = check_positive_int("n_random_starts", config.n_random_starts, minimum=0)
    check_choice("start", config.start, START_RULES)
    n_starts = 1 + n_random
    data = prepare(model, batches)
    targets = score_targets(data)
    with guarded(model, config.train) as mode:
        obj = PerturbedLoss(model, criterion)
        w = obj.base
        if config.subspace_dim is None:
            A, space = _Identity(obj.n), "full"
        else:
            p = check_positive_int("subspace_dim", config.subspace_dim)
            A, space = RandomSubspace(obj.n, p, config.seed, w, config.max_cached_bytes), "random"
        bound = (eps * (A.pinv_apply(w).abs().to(torch.float64) + 1.0)).cpu().numpy()
        want = targets is not None
        base = obj.evaluate(data, scores=want, what="loss at the base weights")
        # best over y = 0, every start and every evaluated point; per-start best separately
        st = {"loss": base.loss, "y": np.zeros(A.p), "scores": base.scores, "start_best": -math.inf, "evals": 0}

        def fun(y_np: np.ndarray) -> tuple[float, np.ndarray]:
            y = torch.from_numpy(np.ascontiguousarray(y_np)).to(device=w.device, dtype=w.dtype)
            ev = obj.evaluate(data, A.matvec(y), grad=True, scores=want, what="loss inside the Keskar box")
            st["evals"] += 1
            st["start_best"] = max(st["start_best"], ev.loss)
            if ev.loss > st["loss"]:
                st["loss"], st["y"], st["scores"] = ev.loss, y_np.copy(), ev.scores
            return -ev.loss, -A.rmatvec(ev.grad).to(torch.float64).cpu().numpy()

        per_start, n_iter, messages = [], 0, []
        for s in range(n_starts):
            j = s - 1 if config.start == "zero" else s   # index of the random start
            if j < 0:
                y0 = np.zeros(A.p)
            else:
                y0 = bound * uniform(A.p, config.seed, 2, j, like=torch.zeros((), dtype=torch.float64)).numpy()
            st["start_best"] = base.loss
            res = optimize.minimize(fun, y0, jac=True, method="L-BFGS-B", bounds=optimize.Bounds(-bound, bound),
                                    options={"maxiter": maxiter, "maxcor": config.maxcor})
            per_start.append(keskar_phi(base.loss, st["start_best"]))
            n_iter += int(res.nit)
            messages.append(str(res.message))
        frac = float(np.mean(np.abs(st["y"]) >= bound * (1 - 1e-6)))
    s0, s1 = srcc_of(base.scores, targets), srcc_of(st["scores"], targets)
    return KeskarResult(
        eps=eps, space=space, dim=int(A.p), base_loss=base.loss, max_loss=st["loss"],
        phi=keskar_phi(base.loss, st["loss"]), phi_per_start=per_start, n_iter=n_iter,
        n_evals=st["evals"], n_starts=n_starts, start=config.start, maxiter=maxiter,
        seed=int(config.seed), srcc_base=s0, srcc_at_max=s1, srcc_drop=s0 - s1, frac_at_bound=frac,
        message="; ".join(sorted(set(messages))), mode=mode, n_examples=n_examples(data),
        n_params=obj.n)
