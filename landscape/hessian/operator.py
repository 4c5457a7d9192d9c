"""``H @ V`` for the Hessian of the full-data loss, by double backward; the operator contract.

The loss is the size-weighted mean over a fixed list of batches,
``L(theta) = sum_b w_b * criterion(f(x_b; theta), y_b)`` with ``w_b = n_b / N`` (mean-reduced
criterion), evaluated in eval mode by default (train mode on request; the mode used is
recorded and every submodule's flag restored). ``H = d^2 L / d theta^2`` over the trainable
parameters (or a diagonal block of them), plus ``weight_decay * I`` when asked (the Hessian
of ``L + wd/2 ||theta||^2``).

- :class:`CurvatureOperator`: what the estimators and :func:`landscape.hessian.analyze_hessian`
  use of an operator.
- :class:`HessianOperator`: the single-process operator. Every full-data quantity (``H V``,
  the gradient, the mean-output gradient) is a weighted sum of per-batch terms
  (:func:`weighted_batch_sum`) finished by one hook, :meth:`HessianOperator._reduce`, which a
  data-parallel subclass (:class:`landscape.hessian.parallel.DataParallelHessian`) overrides
  with an all-reduce.
"""
from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
from torch import nn

from landscape.batches import Batch, Criterion, batch_weights, finite_or_raise, materialize, model_device
from landscape.errors import LandscapeError
from landscape.params import check_finite_parameters, evaluation_mode, trainable_parameters
from landscape.provenance import hash_batches

#: ``(sum_b w_b loss_b, sum_b w_b value_b)``: the weighted local sums a product reduces.
LocalSums = tuple[torch.Tensor, torch.Tensor]


@runtime_checkable
class CurvatureOperator(Protocol):
    """A symmetric ``n x n`` curvature operator over (a block of) a model's trainable parameters.

    Exactly the members used by :func:`~landscape.hessian.top_eigenvalues`,
    :func:`~landscape.hessian.hessian_trace`, :func:`~landscape.hessian.spectral_density`,
    :func:`~landscape.hessian.block_operators` and :func:`~landscape.hessian.analyze_hessian`.
    """

    n: int
    dtype: torch.dtype
    device: torch.device
    weight_decay: float
    block: str | None
    param_names: list[str]
    n_matvecs: int

    @property
    def model(self) -> nn.Module: ...

    @property
    def mode(self) -> str: ...

    @property
    def loss(self) -> float | None: ...

    @property
    def n_samples(self) -> int: ...

    @property
    def engine_provenance(self) -> dict[str, Any]: ...

    def matmat(self, V: torch.Tensor) -> torch.Tensor: ...

    def gradient(self) -> torch.Tensor: ...

    def output_gradient(self) -> torch.Tensor: ...

    def data_hash(self) -> str: ...

    def restrict(self, params: Sequence[str], block: str | None = None) -> CurvatureOperator: ...

    def release(self) -> None: ...

    def __enter__(self) -> CurvatureOperator: ...

    def __exit__(self, *exc: Any) -> None: ...


def weighted_batch_sum(terms: Iterable[tuple[float, torch.Tensor, torch.Tensor]]) -> LocalSums:
    """``(sum_b w_b loss_b, sum_b w_b HV_b)`` over per-batch terms ``(w_b, loss_b, HV_b)``.

    The one place where per-batch contributions are summed (``w_b = n_b / N``; a data-parallel
    operator uses the global ``N`` and all-reduces both sums). No host synchronisation.
    """
    loss = total = None
    for w, loss_b, hv_b in terms:
        if total is None:
            loss, total = loss_b * w, hv_b.mul(w)
        else:
            loss = loss + loss_b * w
            total.add_(hv_b, alpha=w)
    return loss, total


def _flat(tensors: Sequence[torch.Tensor | None], params: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-parameter tensors (None: zeros of that parameter's shape), detached, in one flat vector."""
    return torch.cat([(t.detach() if t is not None else torch.zeros_like(p)).reshape(-1)
                      for t, p in zip(tensors, params)])


def _available_bytes(device: torch.device) -> int:
    """Free memory on ``device``: CUDA ``mem_get_info``, else ``MemAvailable`` of /proc/meminfo."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class _Graphs:
    """Model, data, batch weights and the per-batch gradient graphs shared by an operator and its blocks.

    ``weights``: ``w_b`` of each batch; default ``n_b / N`` over these batches.
    """

    def __init__(self, model: nn.Module, criterion: Criterion, batches: Iterable[Batch], *,
                 train: bool, max_retained_batches: int | None, retain_fraction: float,
                 weights: Sequence[float] | None = None):
        self.named = trainable_parameters(model)
        check_finite_parameters(model)
        self.model, self.criterion, self.train = model, criterion, bool(train)
        self.device = model_device(model)
        self.data = materialize(batches, self.device)
        self.weights = batch_weights(self.data) if weights is None else [float(w) for w in weights]
        if len(self.weights) != len(self.data):
            raise LandscapeError(f"{len(self.weights)} batch weights for {len(self.data)} batches")
        self.params = [p for _, p in self.named]
        self.max_retained = max_retained_batches
        self.retain_fraction = retain_fraction
        self.retained: dict[int, tuple[torch.Tensor, tuple]] = {}
        self.graph_bytes: int | None = None      # saved-tensor bytes of batch 0's graph
        self.auto_retain: int | None = None
        self.loss: float | None = None
        self.n_graph_builds = 0
        self.output_grad: torch.Tensor | None = None   # J^T 1 / N over all trainable parameters

    def build(self, b: int, measure: bool = False) -> tuple[torch.Tensor, tuple]:
        """Forward + first backward (``create_graph=True``) of batch ``b``: ``(loss_b, grads)``."""
        x, y = self.data[b]
        ctx = contextlib.nullcontext()
        seen: dict[int, int] = {}
        if measure:
            skip = {p.untyped_storage().data_ptr() for p in self.params}
            skip |= {t.untyped_storage().data_ptr() for t in (x, y)}

            def pack(t: torch.Tensor) -> torch.Tensor:
                s = t.untyped_storage()
                if s.data_ptr() not in skip:
                    seen[s.data_ptr()] = s.nbytes()
                return t

            ctx = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        with ctx:
            loss = self.criterion(self.model(x), y)
            if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
                shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
                raise LandscapeError(f"criterion returned {shape}: a mean-reduced scalar loss is required")
            if loss.requires_grad:
                grads = torch.autograd.grad(loss, self.params, create_graph=True, allow_unused=True)
            else:
                grads = (None,) * len(self.params)
        self.n_graph_builds += 1
        if measure:
            self.graph_bytes = int(sum(seen.values()))
        return loss.detach(), grads

    def n_retain(self) -> int:
        """How many leading batches keep their graph between calls.

        Auto (``max_retained_batches=None``): ``retain_fraction`` of the free memory at the
        first product divided by batch 0's graph size (its saved tensors, measured by
        saved-tensor hooks, times 1.3 for the gradients and workspace they do not count).
        """
        if self.max_retained is not None:
            return max(0, int(self.max_retained))
        if self.graph_bytes is None:
            return 0
        if self.auto_retain is None:
            per_batch = max(1, int(1.3 * self.graph_bytes))
            self.auto_retain = int(self.retain_fraction * _available_bytes(self.device) // per_batch)
        return self.auto_retain

    def graph(self, b: int) -> tuple[torch.Tensor, tuple, bool]:
        """``(loss_b, grads, retained)``: the kept graph of batch ``b`` or a fresh one."""
        if b in self.retained:
            return (*self.retained[b], True)
        measure = self.max_retained is None and self.graph_bytes is None
        loss, grads = self.build(b, measure=measure)
        if b == len(self.retained) and b < self.n_retain():
            self.retained[b] = (loss, grads)
            return loss, grads, True
        return loss, grads, False


class HessianOperator:
    """``H @ V`` for the Hessian of the full-data loss (see module docstring).

    Per batch, one forward and one first backward with ``create_graph=True`` give
    ``g_b = grad loss_b``; each probe column ``v`` then costs one double backward
    ``grad_theta (g_b . v)`` by ``torch.autograd.grad`` (nothing is written to ``.grad``).
    The graph is shared by the ``m`` columns of a call; the first ``max_retained_batches``
    batches keep it between calls, so later products skip their forward and first backward
    (default None: as many as fit in ``retain_fraction`` of the free memory, measured from
    batch 0's saved tensors; 0: none). Graphs are freed by :meth:`release` or on leaving a
    ``with`` block. No host synchronisation per batch; the full-data loss is checked for
    NaN/inf once (:class:`~landscape.errors.NumericsError`).

    ``train=True``: BatchNorm uses batch statistics (its running statistics are put back after
    each product); dropout would make H random, so use train mode only without it.
    ``params``: restrict to these trainable parameter names (a diagonal block of H);
    ``weight_decay``: adds ``wd * V``. Products are counted in ``n_matvecs`` (columns).

    Subclass hooks: :meth:`_reduce` (finish the weighted local sums), :attr:`n_samples`,
    :meth:`data_hash`, :attr:`engine_provenance`.
    """

    def __init__(self, model: nn.Module, criterion: Criterion, batches: Iterable[Batch], *,
                 train: bool = False, weight_decay: float = 0.0, params: Sequence[str] | None = None,
                 max_retained_batches: int | None = None, retain_fraction: float = 0.3,
                 _graphs: _Graphs | None = None, block: str | None = None):
        self._g = _graphs or _Graphs(model, criterion, batches, train=train,
                                     max_retained_batches=max_retained_batches,
                                     retain_fraction=retain_fraction)
        self.weight_decay = float(weight_decay)
        self.n_matvecs = 0
        self._select(params, block)

    def _select(self, params: Sequence[str] | None, block: str | None) -> None:
        """Index, offsets, size, dtype and device of the parameters ``params`` (None: all)."""
        names = [n for n, _ in self._g.named]
        if params is None:
            self.index = list(range(len(names)))
        else:
            where = {n: i for i, n in enumerate(names)}
            missing = [p for p in params if p not in where]
            if missing:
                raise LandscapeError(f"parameter '{missing[0]}' is not a trainable parameter of the model")
            if not params:
                raise LandscapeError(f"parameter block {block!r} is empty")
            self.index = sorted({where[p] for p in params})
        self.param_names = [names[i] for i in self.index]
        self.block = block
        sizes = [self._g.params[i].numel() for i in self.index]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int).tolist()
        self.n = int(self.offsets[-1])
        first = self._g.params[self.index[0]]
        self.dtype, self.device = first.dtype, first.device

    # -- views and lifetime
    def restrict(self, params: Sequence[str], block: str | None = None) -> HessianOperator:
        """Operator of the diagonal block ``H[params, params]`` (a copy of this one, same class),
        sharing data, batch weights and kept graphs."""
        view = copy.copy(self)
        view.n_matvecs = 0
        view._select(params, block)
        return view

    @property
    def model(self) -> nn.Module:
        return self._g.model

    @property
    def mode(self) -> str:
        return "train" if self._g.train else "eval"

    @property
    def loss(self) -> float | None:
        """Full-data loss ``sum_b w_b loss_b`` at the current parameters (known after the first product)."""
        return self._g.loss

    @property
    def n_samples(self) -> int:
        """``N``: examples in the full data."""
        return sum(int(x.shape[0]) for x, _ in self._g.data)

    @property
    def n_retained(self) -> int:
        return len(self._g.retained)

    @property
    def engine_provenance(self) -> dict[str, Any]:
        """Fields :func:`landscape.hessian.analyze_hessian` records about the engine (none here)."""
        return {}

    def parameters(self) -> list[torch.Tensor]:
        """The operator's parameter tensors, in the order of the flat vectors."""
        return [self._g.params[i] for i in self.index]

    def flat_parameters(self) -> torch.Tensor:
        """``theta`` over the operator's parameters, flat (a detached copy)."""
        params = self.parameters()
        return _flat(params, params)

    def data_hash(self) -> str:
        """:func:`landscape.provenance.hash_batches` of the full data (inputs and targets, in order)."""
        return hash_batches(self._g.data)

    def release(self) -> None:
        """Free the kept graphs."""
        self._g.retained.clear()

    def __enter__(self) -> HessianOperator:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    # -- the reduction hook
    @contextlib.contextmanager
    def _session(self) -> Iterator[None]:
        """The analysis mode for one pass over the data; flags and buffers restored after."""
        # train mode: forward passes update BatchNorm running statistics; put them back
        buffers = [(b, b.detach().clone()) for b in self._g.model.buffers()] if self._g.train else []
        try:
            with evaluation_mode(self._g.model, self._g.train):
                yield
        finally:
            # through .data: kept graphs saved these buffers (BatchNorm's backward signature)
            # but do not use their values in train mode; the version counter must not move
            for b, saved in buffers:
                b.data.copy_(saved)

    def _reduce(self, local: Callable[[], LocalSums]) -> torch.Tensor:
        """The full-data value from ``local()`` = ``(sum_b w_b loss_b, sum_b w_b value_b)`` over the
        operator's batches, run in the analysis mode. Here the local sums are the full-data ones;
        records the full-data loss on first use (NaN/inf: :class:`~landscape.errors.NumericsError`)."""
        with self._session():
            loss, value = local()
        if self._g.loss is None:
            self._g.loss = finite_or_raise(loss, "Hessian: full-data loss")
        return value

    # -- products
    def _double_backward(self, grads: tuple, rows: torch.Tensor, keep: bool) -> torch.Tensor:
        params = [self._g.params[i] for i in self.index]
        live = [pos for pos, i in enumerate(self.index)
                if grads[i] is not None and grads[i].requires_grad]
        out = rows.new_zeros(rows.shape)
        if not live:
            return out
        outputs = [grads[self.index[pos]] for pos in live]
        off = self.offsets
        m = rows.shape[0]
        for c in range(m):
            go = [rows[c, off[pos]:off[pos + 1]].view_as(params[pos]) for pos in live]
            hv = torch.autograd.grad(outputs, params, grad_outputs=go,
                                     retain_graph=keep or c < m - 1, allow_unused=True)
            for pos, t in enumerate(hv):
                if t is not None:
                    out[c, off[pos]:off[pos + 1]] = t.reshape(-1)
        return out

    def _batch_terms(self, rows: torch.Tensor) -> Iterator[tuple[float, torch.Tensor, torch.Tensor]]:
        for b, w in enumerate(self._g.weights):
            loss_b, grads, kept = self._g.graph(b)
            yield w, loss_b, self._double_backward(grads, rows, keep=kept)

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """``H @ V`` for ``V`` of shape ``[n, m]`` (or ``[n]``), in the parameters' dtype."""
        vec = V.dim() == 1
        if vec:
            V = V[:, None]
        if V.dim() != 2 or V.shape[0] != self.n:
            raise LandscapeError(f"probe block has shape {tuple(V.shape)}, expected ({self.n}, m)")
        rows = V.T.to(device=self.device, dtype=self.dtype).contiguous()
        HV = self._reduce(lambda: weighted_batch_sum(self._batch_terms(rows)))
        if self.weight_decay:
            HV.add_(rows, alpha=self.weight_decay)
        self.n_matvecs += rows.shape[0]
        out = HV.T
        return out[:, 0] if vec else out

    def gradient(self) -> torch.Tensor:
        """Full-data gradient ``grad L + wd * theta`` over the operator's parameters, flat.

        Builds the per-batch graphs (keeping those that fit), so a following product on
        kept batches costs no extra forward pass.
        """
        params = self.parameters()

        def terms():
            for b, w in enumerate(self._g.weights):
                loss_b, grads, _ = self._g.graph(b)
                yield w, loss_b, _flat([grads[i] for i in self.index], params)

        g = self._reduce(lambda: weighted_batch_sum(terms()))
        if self.weight_decay:
            g.add_(self.flat_parameters(), alpha=self.weight_decay)
        return g

    def output_gradient(self) -> torch.Tensor:
        """``J^T 1 / N``: gradient of the model's outputs summed over output entries and averaged
        over the ``N`` samples, flat over the operator's parameters (no weight-decay term).

        For a Gauss-Newton-dominated Hessian (MSE, cross-entropy near the data) the top outlier
        eigenvector lies close to this mean-output gradient. One forward and one plain backward
        per batch, cached for the blocks; also sets the full-data loss (NaN check).
        Error if the model's output is not a single tensor.
        """
        g = self._g
        if g.output_grad is None:
            def terms():
                for (x, y), w in zip(g.data, g.weights):
                    out = g.model(x)
                    if not isinstance(out, torch.Tensor):
                        raise LandscapeError(f"the model returns {type(out).__name__}, not a tensor: "
                                             "use start='random' or 'gradient'")
                    loss_b = g.criterion(out, y)
                    og = torch.autograd.grad(out.sum() / x.shape[0], g.params, allow_unused=True)
                    yield w, loss_b.detach(), _flat(og, g.params)

            g.output_grad = self._reduce(lambda: weighted_batch_sum(terms()))
        sizes = [p.numel() for p in g.params]
        full = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        return torch.cat([g.output_grad[full[i]:full[i + 1]] for i in self.index])

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.matmat(v)

    def dense(self) -> torch.Tensor:
        """The full ``n x n`` matrix (``n`` products; for tests on tiny models)."""
        return self.matmat(torch.eye(self.n, device=self.device, dtype=self.dtype))
