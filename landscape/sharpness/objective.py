"""Loss, gradient and per-image scores of a model at perturbed weights ``w + delta``.

``w`` is the flat vector of trainable parameters (order of
:func:`landscape.params.trainable_parameters`). For a list of batches

    L(w + delta) = sum_b (n_b / N) * criterion(f(x_b; w + delta), y_b)

(size-weighted mean) is evaluated with :func:`torch.func.functional_call`, so
the model's own parameters are never written; the gradient with respect to
``delta`` is accumulated batch by batch (memory of one batch). Scores for SRCC
are the outputs when they hold one value per example (shape ``[B]`` or
``[B, 1]``), otherwise ``None`` and the SRCC fields of a result are NaN.

Data parallel (under ``torchrun``): when ``batches`` is a
:class:`landscape.distributed.ShardedBatches` (this rank's batches of a global list) the
weights are the global ``n_b / N``, each rank evaluates its own batches and one all-reduce
sums the loss and gradient (per-example outputs are gathered in the global order), so
every rank gets the full-data values; ``n_examples``, ``take_examples``,
``score_targets``, ``rebatch``, ``pooled`` and ``hash_batches`` act on the global list.

Also here: the guard every measure runs under (finite weights, eval mode by
default, parameters and buffers restored bit for bit), seeded noise that does
not depend on the device, re-batching into chunks of ``m`` examples, and the
hashes that key stored results.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from landscape.batches import Batch, Criterion, batch_weights, finite_or_raise, materialize, model_device
from landscape.distributed import ShardedBatches, all_reduce_sum
from landscape.errors import LandscapeError, NumericsError, check_positive_int
from landscape.metrics import srcc
from landscape.params import (
    check_finite_parameters,
    evaluation_mode,
    flatten,
    preserved_parameters,
    trainable_parameters,
    unflatten,
)
from landscape.provenance import hash_batches as provenance_hash_batches


@contextlib.contextmanager
def guarded(model: nn.Module, train: bool = False) -> Iterator[str]:
    """Refuse NaN/inf weights; set eval (default) or train mode; restore mode, parameters and buffers.

    Yields the mode name for provenance. Buffers are restored too, so BatchNorm
    running statistics updated by train-mode forwards do not leak out.
    """
    check_finite_parameters(model, "sharpness")
    with evaluation_mode(model, train) as mode, preserved_parameters(model):
        yield mode


def seed_stream(seed: int, *stream: int) -> int:
    """A 63-bit seed derived from ``(seed, *stream)`` (numpy ``SeedSequence``), independent per stream."""
    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, *[int(s) for s in stream]]).generate_state(2, np.uint64)[0] >> 1)


def gaussian(n: int, seed: int, *stream: int, like: torch.Tensor) -> torch.Tensor:
    """``N(0, 1)^n`` drawn on the CPU in float64 from ``seed_stream(seed, *stream)``, cast like ``like``.

    Drawing on the CPU makes the noise identical on every device.
    """
    g = torch.Generator(device="cpu").manual_seed(seed_stream(seed, *stream))
    return torch.randn(n, generator=g, dtype=torch.float64).to(device=like.device, dtype=like.dtype)


def uniform(n: int, seed: int, *stream: int, like: torch.Tensor) -> torch.Tensor:
    """``U(-1, 1)^n`` drawn like :func:`gaussian`."""
    g = torch.Generator(device="cpu").manual_seed(seed_stream(seed, *stream))
    u = 2.0 * torch.rand(n, generator=g, dtype=torch.float64) - 1.0
    return u.to(device=like.device, dtype=like.dtype)


def n_examples(batches: Sequence[Batch]) -> int:
    """Examples in ``batches`` (all ranks together for sharded batches)."""
    if isinstance(batches, ShardedBatches):
        return batches.n_total
    return sum(int(x.shape[0]) for x, _ in batches)


def is_sharded(batches: Sequence[Batch]) -> bool:
    """Whether ``batches`` is one rank's part of a data-parallel evaluation."""
    return isinstance(batches, ShardedBatches)


def _global(batches: Sequence[Batch]) -> Sequence[Batch]:
    return batches.gathered() if isinstance(batches, ShardedBatches) else batches


def _pool(batches: Sequence[Batch]) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        return torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches])
    except (TypeError, RuntimeError) as e:
        raise LandscapeError(f"cannot re-batch: inputs/targets are not tensors of matching shapes ({e})") from None


def take_examples(batches: Sequence[Batch], limit: int | None) -> list[Batch]:
    """The first ``limit`` examples (all if ``None``), in order, keeping the batch boundaries."""
    if limit is None:
        return batches if isinstance(batches, ShardedBatches) else list(batches)
    limit = check_positive_int("max_examples", limit)
    if isinstance(batches, ShardedBatches):
        return batches.take(limit)
    out, left = [], limit
    for x, y in batches:
        if left <= 0:
            break
        k = min(left, int(x.shape[0]))
        out.append((x[:k], y[:k]) if k < x.shape[0] else (x, y))
        left -= k
    return out


def rebatch(batches: Sequence[Batch], size: int, drop_last: bool = True) -> list[Batch]:
    """Concatenate the examples and split them into chunks of ``size`` (the last partial one dropped by default)."""
    size = check_positive_int("batch size", size)
    x, y = _pool(_global(batches))
    n = int(x.shape[0])
    if n < size:
        raise LandscapeError(f"need at least {size} examples for batches of {size}, got {n}")
    stop = n - n % size if drop_last else n
    return [(x[i:i + size], y[i:i + size]) for i in range(0, stop, size)]


def pooled(batches: Sequence[Batch]) -> tuple[torch.Tensor, torch.Tensor]:
    """All inputs and all targets concatenated along the first dimension."""
    return _pool(_global(batches))


def hash_batches(batches: Sequence[Batch]) -> str:
    """SHA-256 of the inputs and targets of every batch (order, shapes, dtypes, bytes)."""
    return provenance_hash_batches(_global(batches))


def criterion_name(fn: Criterion) -> str:
    """Stable name of a criterion for result keys (``repr`` of a module, qualified name of a function)."""
    if isinstance(fn, nn.Module):
        return repr(fn)
    mod = getattr(fn, "__module__", None) or type(fn).__module__
    qual = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{mod}.{qual}"


def _scores(t: torch.Tensor) -> torch.Tensor | None:
    """One value per example as a 1-D tensor, or ``None`` when the tensor holds more."""
    if t.ndim == 0:
        return None
    flat = t.reshape(t.shape[0], -1)
    return flat[:, 0] if flat.shape[1] == 1 else None


def score_targets(batches: Sequence[Batch]) -> np.ndarray | None:
    """Targets as one float64 score per example, or ``None`` if they are not scalar per example."""
    if isinstance(batches, ShardedBatches):
        local = [_scores(y) if torch.is_tensor(y) else None for _, y in batches]
        out = batches.assemble(None if any(s is None for s in local) else local)
        return None if out is None else out.numpy()
    parts = []
    for _, y in batches:
        s = _scores(y) if torch.is_tensor(y) else None
        if s is None:
            return None
        parts.append(s.detach().to("cpu", torch.float64))
    return torch.cat(parts).numpy()


def srcc_of(pred: np.ndarray | None, target: np.ndarray | None) -> float:
    """SRCC of predictions vs targets; NaN when either is missing or fewer than 2 examples."""
    if pred is None or target is None or pred.size < 2:
        return float("nan")
    return srcc(pred, target)


@dataclass
class Evaluation:
    """``loss`` L(w + delta); ``grad`` dL/d delta (flat, when asked); ``scores`` one output per example or None."""

    loss: float
    grad: torch.Tensor | None = None
    scores: np.ndarray | None = None


class PerturbedLoss:
    """Evaluate ``criterion`` at ``w + delta`` for flat perturbations of the trainable parameters.

    The caller holds :func:`guarded` around its use (mode, restore). ``base`` is
    a detached copy of ``w``; ``delta`` has its shape, dtype and device.
    """

    def __init__(self, model: nn.Module, criterion: Criterion):
        named = trainable_parameters(model)
        self.model = model
        self.criterion = criterion
        self.names = [n for n, _ in named]
        self.like = [p for _, p in named]
        self.base = flatten([p.detach() for p in self.like]).clone()

    @property
    def n(self) -> int:
        return int(self.base.numel())

    def _call(self, vector: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, dict(zip(self.names, unflatten(vector, self.like))), (x,))

    def evaluate(self, batches: Sequence[Batch], delta: torch.Tensor | None = None, *, grad: bool = False,
                 scores: bool = False, what: str = "loss") -> Evaluation:
        """L(w + delta) on ``batches`` (size-weighted mean), optionally its gradient and the per-example outputs.

        Raises :class:`NumericsError` naming ``what`` if the loss or gradient is not finite.
        """
        sharded = isinstance(batches, ShardedBatches)
        weights = batches.weights() if sharded else batch_weights(batches)
        vec = self.base if delta is None else self.base + delta.to(self.base.dtype)
        total = torch.zeros((), dtype=torch.float64, device=self.base.device)
        g = torch.zeros_like(self.base) if grad else None
        outs: list[torch.Tensor] | None = [] if scores else None
        for (x, y), wb in zip(batches, weights):
            if grad:
                with torch.enable_grad():
                    v = vec.detach().requires_grad_(True)
                    out = self._call(v, x)
                    lb = self.criterion(out, y)
                    (gb,) = torch.autograd.grad(lb * wb, v)
                g += gb
            else:
                with torch.no_grad():
                    out = self._call(vec, x)
                    lb = self.criterion(out, y)
            total += lb.detach().to(torch.float64) * wb
            if outs is not None:
                s = _scores(out.detach())
                if s is None:
                    outs = None
                else:
                    outs.append(s.to(torch.float64))
        if sharded:   # one all-reduce of [loss, gradient] in float64; outputs gathered in global order
            buf = total.reshape(1) if g is None else torch.cat([total.reshape(1), g.to(torch.float64)])
            all_reduce_sum(buf)
            total = buf[0]
            g = None if g is None else buf[1:].to(self.base.dtype)
            if scores:
                gathered = batches.assemble(outs)
                outs = None if gathered is None else [gathered]
        loss = finite_or_raise(total, what)
        if g is not None and not bool(torch.isfinite(g).all()):
            raise NumericsError(f"gradient of the {what} holds NaN or infinite values")
        sc = torch.cat(outs).cpu().numpy() if outs else None
        for tick in _EVALUATION_LISTENERS:
            tick()
        return Evaluation(loss, g, sc)


_EVALUATION_LISTENERS: list = []


@contextlib.contextmanager
def counting_evaluations(listener) -> Iterator[None]:
    """Call ``listener(n)`` after each :meth:`PerturbedLoss.evaluate` inside the block, ``n`` the
    evaluations (loss, or loss and gradient, over all batches) counted so far in it (progress of a
    measure; the measures themselves need no progress argument)."""
    count = [0]

    def tick() -> None:
        count[0] += 1
        listener(count[0])
    _EVALUATION_LISTENERS.append(tick)
    try:
        yield
    finally:
        _EVALUATION_LISTENERS.remove(tick)


def prepare(model: nn.Module, batches: Iterable[Batch]) -> list[Batch]:
    """Materialise ``batches`` on the model's device (error if empty; a rank's shard may be empty)."""
    if isinstance(batches, ShardedBatches):
        return batches.to(model_device(model))
    return materialize(batches, model_device(model))
