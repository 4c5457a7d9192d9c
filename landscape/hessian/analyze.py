"""Hessian of the full-data loss: a block Hessian-vector-product operator and its spectrum.

The loss is the size-weighted mean over a fixed list of batches,
``L(theta) = sum_b (n_b / N) * criterion(f(x_b; theta), y_b)`` (mean-reduced criterion),
evaluated in eval mode by default (train mode on request; the mode used is recorded and
every submodule's flag restored). ``H = d^2 L / d theta^2`` over the trainable parameters
(or a block of them), plus ``weight_decay * I`` when asked (the Hessian of
``L + wd/2 ||theta||^2``).

- :class:`HessianOperator`: ``H @ V`` for ``V`` of shape ``[n, m]`` by double backward.
- :func:`top_eigenvalues` (Lanczos), :func:`hessian_trace` (Hutch++/Hutchinson),
  :func:`spectral_density` (stochastic Lanczos quadrature): results as dataclasses.
- :func:`analyze_hessian`: all of them, per block on request, each part stored in the run's
  analysis HDF5 under ``hessian/<part>`` as soon as it is done and skipped when already
  stored with the same content key (resumable).
- :func:`pyhessian_top_eigenvalues`: the PyHessian package on the same model and data.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from landscape import distributed as dist
from landscape import linalg
from landscape.batches import Batch, Criterion, batch_weights, finite_or_raise, materialize, model_device
from landscape.errors import LandscapeError
from landscape.params import check_finite_parameters, evaluation_mode, preserved_parameters, trainable_parameters
from landscape.provenance import content_key, hash_state
from landscape.provenance import provenance as make_provenance
from landscape.store import attrs_from_h5, attrs_to_h5, open_h5, update_h5

H5_GROUP = "hessian"


# ----------------------------------------------------------------------------- operator

def weighted_batch_sum(terms: Iterable[tuple[float, torch.Tensor, torch.Tensor]]
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum_b w_b loss_b, sum_b w_b HV_b)`` over per-batch terms ``(w_b, loss_b, HV_b)``.

    The one place where per-batch contributions are reduced: a data-parallel version sums
    its shard here and all-reduces both sums (``w_b = n_b / N`` with the global ``N``).
    No host synchronisation.
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
    """Model, data and the per-batch gradient graphs shared by an operator and its blocks."""

    def __init__(self, model: nn.Module, criterion: Criterion, batches: Iterable[Batch], *,
                 train: bool, max_retained_batches: int | None, retain_fraction: float):
        self.named = trainable_parameters(model)
        check_finite_parameters(model)
        self.model, self.criterion, self.train = model, criterion, bool(train)
        self.device = model_device(model)
        self.data = materialize(batches, self.device)
        self.weights = batch_weights(self.data)
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
    """

    def __init__(self, model: nn.Module, criterion: Criterion, batches: Iterable[Batch], *,
                 train: bool = False, weight_decay: float = 0.0, params: Sequence[str] | None = None,
                 max_retained_batches: int | None = None, retain_fraction: float = 0.3,
                 _graphs: _Graphs | None = None, block: str | None = None):
        self._g = _graphs or _Graphs(model, criterion, batches, train=train,
                                     max_retained_batches=max_retained_batches,
                                     retain_fraction=retain_fraction)
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
        self.weight_decay = float(weight_decay)
        sizes = [self._g.params[i].numel() for i in self.index]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int).tolist()
        self.n = int(self.offsets[-1])
        first = self._g.params[self.index[0]]
        self.dtype, self.device = first.dtype, first.device
        self.n_matvecs = 0

    # -- views and lifetime
    def restrict(self, params: Sequence[str], block: str | None = None) -> "HessianOperator":
        """Operator of the diagonal block ``H[params, params]``, sharing data and kept graphs."""
        return HessianOperator(self._g.model, self._g.criterion, (), params=params, block=block,
                               weight_decay=self.weight_decay, _graphs=self._g)

    @property
    def model(self) -> nn.Module:
        return self._g.model

    @property
    def mode(self) -> str:
        return "train" if self._g.train else "eval"

    @property
    def loss(self) -> float | None:
        """Full-data loss at the current parameters (known after the first product)."""
        return self._g.loss

    @property
    def n_samples(self) -> int:
        return sum(int(x.shape[0]) for x, _ in self._g.data)

    @property
    def n_retained(self) -> int:
        return len(self._g.retained)

    def parameters(self) -> list[torch.Tensor]:
        """The operator's parameter tensors, in the order of the flat vectors."""
        return [self._g.params[i] for i in self.index]

    def flat_parameters(self) -> torch.Tensor:
        """``theta`` over the operator's parameters, flat (a detached copy)."""
        params = self.parameters()
        return _flat(params, params)

    def data_hash(self) -> str:
        """``hash_state`` of the operator's batches (inputs and targets, in order)."""
        data = {}
        for i, (x, y) in enumerate(self._g.data):
            data[f"{i}.x"], data[f"{i}.y"] = x, y
        return hash_state(data)

    def release(self) -> None:
        """Free the kept graphs."""
        self._g.retained.clear()

    def __enter__(self) -> "HessianOperator":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

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

    def _check_loss(self, loss: torch.Tensor) -> None:
        if self._g.loss is None:
            self._g.loss = finite_or_raise(loss, "Hessian: full-data loss")

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """``H @ V`` for ``V`` of shape ``[n, m]`` (or ``[n]``), in the parameters' dtype."""
        vec = V.dim() == 1
        if vec:
            V = V[:, None]
        if V.dim() != 2 or V.shape[0] != self.n:
            raise LandscapeError(f"probe block has shape {tuple(V.shape)}, expected ({self.n}, m)")
        rows = V.T.to(device=self.device, dtype=self.dtype).contiguous()
        with self._session():
            loss, HV = weighted_batch_sum(self._batch_terms(rows))
        self._check_loss(loss)
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

        with self._session():
            loss, g = weighted_batch_sum(terms())
        self._check_loss(loss)
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

            with self._session():
                loss, g.output_grad = weighted_batch_sum(terms())
            self._check_loss(loss)
        sizes = [p.numel() for p in g.params]
        full = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        return torch.cat([g.output_grad[full[i]:full[i + 1]] for i in self.index])

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.matmat(v)

    def dense(self) -> torch.Tensor:
        """The full ``n x n`` matrix (``n`` products; for tests on tiny models)."""
        return self.matmat(torch.eye(self.n, device=self.device, dtype=self.dtype))


def parameter_groups(model: nn.Module, groups: str | Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Named blocks of trainable parameter names.

    ``"stages"``: one block per timm Swin stage, ``layers.0``, ``layers.1``, ... (names
    starting with ``layers.<i>.``). A mapping ``block -> entries``: each entry is a parameter
    name or a module prefix (matching ``entry.*``).
    """
    names = [n for n, _ in trainable_parameters(model)]
    if isinstance(groups, str):
        if groups != "stages":
            raise LandscapeError(f"blocks={groups!r}: use 'stages' or a mapping name -> parameter names")
        out: dict[str, list[str]] = {}
        for n in names:
            m = re.match(r"^(layers\.\d+)\.", n)
            if m:
                out.setdefault(m.group(1), []).append(n)
        if not out:
            raise LandscapeError("blocks='stages': the model has no timm Swin stages (parameters 'layers.<i>.*')")
        return dict(sorted(out.items(), key=lambda kv: int(kv[0].split(".")[1])))
    out = {}
    for block, entries in groups.items():
        if isinstance(entries, str):
            entries = [entries]
        picked: list[str] = []
        for e in entries:
            hit = [n for n in names if n == e or n.startswith(e + ".")]
            if not hit:
                raise LandscapeError(f"block {block!r}: '{e}' matches no trainable parameter")
            picked += [n for n in hit if n not in picked]
        if not picked:
            raise LandscapeError(f"block {block!r} is empty")
        out[str(block)] = picked
    return out


def block_operators(op: HessianOperator, groups: str | Mapping[str, Sequence[str]]) -> dict[str, HessianOperator]:
    """Diagonal-block operators ``{name: H[block, block]}`` sharing ``op``'s data and graphs."""
    return {name: op.restrict(names, block=name)
            for name, names in parameter_groups(op.model, groups).items()}


# ----------------------------------------------------------------------------- results

@dataclass
class HessianEigen:
    """Top-k eigenvalues (float64, most wanted first) with residual norms and convergence flags.

    ``residuals[i] = ||H v_i - eigenvalues[i] v_i||`` for the unit Ritz vector ``v_i`` (a
    guaranteed bound on the eigenvalue error); ``error_estimates[i] = min(r, r^2/gap)``
    (:func:`linalg.error_estimates`). ``converged[i]``: ``residuals[i] <= tol * |eigenvalues[i]|``
    (``stop='residual'``, default) or ``error_estimates[i] <= tol * |eigenvalues[i]|``
    (``stop='eigenvalue'``). ``eigenvectors``: ``[n, k]`` array or None.
    ``method``: ``lanczos`` or ``pyhessian``.
    """

    eigenvalues: np.ndarray
    residuals: np.ndarray
    error_estimates: np.ndarray
    converged: np.ndarray
    which: str
    tol: float
    stop: str
    max_iter: int
    n_matvecs: int
    n_restarts: int
    seconds: float
    mode: str
    n_params: int
    weight_decay: float
    seed: int
    method: str = "lanczos"
    block: str = ""
    start: str = "random"
    eigenvectors: np.ndarray | None = None


@dataclass
class HessianTrace:
    """``trace +- stderr`` of H; ``samples``: quadratic forms of the stochastic part.

    Hutch++: ``trace = exact_part + mean(samples)``, ``stderr`` of the Hutchinson part on the
    deflated residual only (the sketch part ``exact_part`` is exact given the sketch).
    """

    trace: float
    stderr: float
    method: str
    n_matvecs: int
    exact_part: float
    samples: np.ndarray
    seconds: float
    mode: str
    n_params: int
    weight_decay: float
    seed: int
    block: str = ""


@dataclass
class HessianDensity:
    """Spectral density by SLQ: per-run Gauss rules and the Gaussian-smoothed curve.

    ``nodes``/``weights``: ``[n_runs, steps]`` (NaN/0 padding after ``lengths[r]``);
    ``density`` on ``grid`` integrates to 1 (kernel width ``sigma``, default 1% of the node
    span). ``mean_eigenvalue = mean_r sum_i w_ri node_ri`` estimates ``trace / n_params``;
    ``trace = n_params * mean_eigenvalue`` with ``trace_stderr`` from the spread of the runs.
    """

    nodes: np.ndarray
    weights: np.ndarray
    lengths: np.ndarray
    grid: np.ndarray
    density: np.ndarray
    sigma: float
    n_runs: int
    steps: int
    mean_eigenvalue: float
    trace: float
    trace_stderr: float
    n_matvecs: int
    seconds: float
    mode: str
    n_params: int
    weight_decay: float
    seed: int
    block: str = ""


PART_TYPES: dict[str, type] = {"topk": HessianEigen, "trace": HessianTrace, "density": HessianDensity}


@dataclass
class HessianAnalysis:
    """What :func:`analyze_hessian` computed or loaded, for the whole model and per block.

    ``loaded``: parts (``"topk"``, ``"blocks/layers.0/trace"``, ...) taken from storage;
    ``n_matvecs``: Hessian-vector products done in this call.
    """

    topk: HessianEigen | None = None
    trace: HessianTrace | None = None
    density: HessianDensity | None = None
    blocks: dict[str, "HessianAnalysis"] = field(default_factory=dict)
    loss: float | None = None
    mode: str = "eval"
    n_params: int = 0
    n_matvecs: int = 0
    loaded: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------- estimators

def _meta(op: HessianOperator, seed: int) -> dict[str, Any]:
    return dict(mode=op.mode, n_params=op.n, weight_decay=op.weight_decay, seed=int(seed),
                block=op.block or "")


STARTS = ("auto", "output", "gradient", "random")
START_NOISE = 0.1


def start_vector(op: HessianOperator, start: str, which: str, seed: int) -> tuple[torch.Tensor, str]:
    """Lanczos start vector on the model's device and the rule used.

    ``'random'``: seeded Gaussian ``z``. ``'output'``: ``u/|u| + 0.1 z/|z|`` with ``u = J^T 1 / N``
    the mean-output gradient (:meth:`HessianOperator.output_gradient`, about one gradient's
    cost): close to the top eigenvector when the Gauss-Newton part dominates (MSE: the
    "mean" outlier of the spectrum). ``'gradient'``: the same with the full-data loss gradient
    ``g`` (:meth:`HessianOperator.gradient`, which also builds the graphs the first product
    needs). The random part keeps every eigenvector reachable; a zero ``u`` or ``g`` falls back
    to ``z``. ``'auto'``: ``'output'`` for ``which`` LA/LM (``'random'`` if the model's output is
    not a single tensor), ``'random'`` for SA. Any start gives the same eigenvalues; a good one
    needs fewer products.
    """
    if start not in STARTS:
        raise LandscapeError(f"start={start!r}: choose one of {', '.join(STARTS)}")
    rule = ("random" if which == "SA" else "output") if start == "auto" else start
    z = torch.randn(op.n, generator=linalg.generator(op.device, seed), device=op.device, dtype=op.dtype)
    if rule == "random":
        return z, rule
    try:
        u = op.output_gradient() if rule == "output" else op.gradient()
    except LandscapeError:
        if start != "auto":
            raise
        return z, "random"
    un = float(u.norm())
    if un > 0 and math.isfinite(un):
        return u / un + START_NOISE * z / z.norm(), rule
    return z, "random"


def top_eigenvalues(op: HessianOperator, k: int = 5, *, which: str = "LA", tol: float = 1e-3,
                    stop: str = "residual", max_iter: int = 200, max_basis: int | None = None,
                    seed: int = 0, start: str = "auto", eigenvectors: bool = False,
                    callback=None) -> HessianEigen:
    """Top-``k`` eigenpairs of ``op`` by :func:`landscape.linalg.lanczos` (``which``: LA/SA/LM).

    Start vector by :func:`start_vector` (seeded, on the model's device); ``max_iter`` caps
    products; ``stop``: ``'residual'`` (``||Hv - lambda v|| <= tol |lambda|``) or ``'eigenvalue'``
    (estimated eigenvalue error ``<= tol |lambda|``). ``seconds`` includes the start vector.
    """
    t0, mv0 = time.perf_counter(), op.n_matvecs
    if which not in linalg.WHICH:
        raise LandscapeError(f"which={which!r}: choose one of {', '.join(linalg.WHICH)}")
    if isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k > op.n:
        raise LandscapeError(f"top_k={k} exceeds the number of parameters ({op.n})")
    q0, rule = start_vector(op, start, which, seed)
    r = linalg.lanczos(op.matmat, op.n, k, which=which, tol=tol, stop=stop,
                       max_iter=max_iter, max_basis=max_basis, seed=seed, start=q0, device=op.device,
                       dtype=op.dtype, eigenvectors=eigenvectors, callback=callback)
    vecs = r.eigenvectors.cpu().numpy() if r.eigenvectors is not None else None
    return HessianEigen(r.eigenvalues, r.residuals, r.error_estimates, r.converged, which, float(tol),
                        stop, int(max_iter), op.n_matvecs - mv0, r.n_restarts,
                        time.perf_counter() - t0, start=rule, eigenvectors=vecs, **_meta(op, seed))


TRACE_METHODS = ("hutch++", "hutchinson")


def hessian_trace(op: HessianOperator, *, method: str = "hutch++", n_matvecs: int = 60,
                  seed: int = 0, block_size: int | None = None) -> HessianTrace:
    """Trace of ``op`` by Hutch++ (default) or Hutchinson with a fixed budget of products.

    ``block_size`` caps the probe columns per :meth:`HessianOperator.matmat` call (memory).
    """
    if method not in TRACE_METHODS:
        raise LandscapeError(f"trace method {method!r}: choose one of {', '.join(TRACE_METHODS)}")
    fn = linalg.hutchpp if method == "hutch++" else linalg.hutchinson
    t0, mv0 = time.perf_counter(), op.n_matvecs
    r = fn(op.matmat, op.n, n_matvecs, seed=seed, device=op.device, dtype=op.dtype, block_size=block_size)
    return HessianTrace(r.trace, r.stderr, r.method, op.n_matvecs - mv0, r.exact_part, r.samples,
                        time.perf_counter() - t0, **_meta(op, seed))


def spectral_density(op: HessianOperator, *, n_runs: int = 4, steps: int = 60, seed: int = 0,
                     sigma: float | None = None, sigma_rel: float = 0.01,
                     n_grid: int = 1024) -> HessianDensity:
    """Spectral density of ``op`` by SLQ (:func:`linalg.slq`) smoothed by :func:`linalg.gaussian_density`.

    Kernel width ``sigma`` (absolute), default ``sigma_rel * (max node - min node)``.
    """
    t0, mv0 = time.perf_counter(), op.n_matvecs
    r = linalg.slq(op.matmat, op.n, n_runs, steps, seed=seed, device=op.device, dtype=op.dtype)
    grid, dens, sig = linalg.gaussian_density(r.nodes, r.weights, sigma=sigma, sigma_rel=sigma_rel,
                                              n_grid=n_grid)
    per_run = np.nansum(r.nodes * r.weights, axis=1)
    mean = float(per_run.mean())
    se = float(per_run.std(ddof=1) / math.sqrt(n_runs)) if n_runs > 1 else float("inf")
    return HessianDensity(r.nodes, r.weights, r.lengths, grid, dens, sig, int(n_runs),
                          int(r.nodes.shape[1]), mean, op.n * mean, op.n * se,
                          op.n_matvecs - mv0, time.perf_counter() - t0, **_meta(op, seed))


# ----------------------------------------------------------------------------- storage

def _part_path(part: str, block: str | None, group: str) -> str:
    if part not in PART_TYPES:
        raise LandscapeError(f"Hessian part {part!r}: choose one of {', '.join(PART_TYPES)}")
    if block and "/" in block:
        raise LandscapeError(f"block name {block!r} must not contain '/'")
    return f"{group}/blocks/{block}/{part}" if block else f"{group}/{part}"


def _part_of(result: Any) -> str:
    for part, cls in PART_TYPES.items():
        if isinstance(result, cls):
            return part
    raise LandscapeError(f"cannot store a {type(result).__name__} as a Hessian result")


def save_hessian_result(h5_path: str | Path, result: HessianEigen | HessianTrace | HessianDensity,
                        provenance: Mapping[str, Any] | None = None, *, key: str = "",
                        group: str = H5_GROUP) -> str:
    """Write ``result`` to ``<group>/<part>`` (or ``<group>/blocks/<block>/<part>``) atomically.

    Arrays become datasets, the other fields attributes, plus ``key`` (content key of the
    inputs), ``kind`` and ``provenance`` (JSON). Replaces an earlier result of the same part.
    Returns the HDF5 path of the group.
    """
    part = _part_of(result)
    path = _part_path(part, result.block or None, group)
    with update_h5(h5_path) as f:
        if path in f:
            del f[path]
        g = f.create_group(path)
        attrs: dict[str, Any] = {"kind": part, "key": key, "provenance": dict(provenance or {})}
        for fl in dataclasses.fields(result):
            value = getattr(result, fl.name)
            if isinstance(value, np.ndarray):
                g.create_dataset(fl.name, data=value)
            elif value is None:
                continue
            else:
                attrs[fl.name] = value
        attrs_to_h5(g, attrs)
    return path


def load_hessian_result(h5_path: str | Path, part: str, *, block: str | None = None,
                        group: str = H5_GROUP) -> tuple[Any, str, dict] | None:
    """``(result, key, provenance)`` stored for ``part`` (and ``block``), or None if absent."""
    path = _part_path(part, block, group)
    if not Path(h5_path).exists():
        return None
    with open_h5(h5_path) as f:
        if path not in f:
            return None
        g = f[path]
        attrs = attrs_from_h5(g)
        cls = PART_TYPES[part]
        kwargs = {}
        for fl in dataclasses.fields(cls):
            if fl.name in g:
                kwargs[fl.name] = g[fl.name][()]
            elif fl.name in attrs:
                kwargs[fl.name] = attrs[fl.name]
        return cls(**kwargs), str(attrs.get("key", "")), attrs.get("provenance") or {}


def stored_key(h5_path: str | Path, part: str, *, block: str | None = None, group: str = H5_GROUP) -> str | None:
    """Content key of a stored part, or None."""
    path = _part_path(part, block, group)
    if not Path(h5_path).exists():
        return None
    with open_h5(h5_path) as f:
        if path not in f:
            return None
        return str(f[path].attrs.get("key", ""))


# ----------------------------------------------------------------------------- driver

_VOLATILE = {"created_utc", "versions"}


def analyze_hessian(model: nn.Module, criterion: Criterion, batches: Iterable[Batch], *,
                    top_k: int = 5, which: str = "LA", tol: float = 1e-3, stop: str = "residual",
                    max_iter: int = 200, max_basis: int | None = None, start: str = "auto",
                    eigenvectors: bool = False,
                    trace: bool = True, trace_method: str = "hutch++", trace_matvecs: int = 60,
                    density: bool = False, density_runs: int = 4, density_steps: int = 60,
                    sigma: float | None = None, sigma_rel: float = 0.01, n_grid: int = 1024,
                    blocks: str | Mapping[str, Sequence[str]] | None = None,
                    weight_decay: float = 0.0, train: bool = False, seed: int = 0,
                    max_retained_batches: int | None = None, block_size: int | None = None,
                    h5_path: str | Path | None = None, provenance: Mapping[str, Any] | None = None,
                    group: str = H5_GROUP, operator: Any = None) -> HessianAnalysis:
    """Top-k eigenvalues, trace and density of the full-data Hessian (and per block on request).

    ``top_k=0`` skips the eigenvalues. With ``h5_path`` each part is written to
    ``<group>/<part>`` (blocks: ``<group>/blocks/<name>/<part>``) as soon as it finishes, keyed
    by ``content_key`` of its settings, the model state hash, the data hash and the stable
    fields of ``provenance``; a part already stored with the same key is loaded, not recomputed.
    The model's mode flags and parameters are unchanged on return.

    ``operator``: a prebuilt operator to use instead of building a :class:`HessianOperator`
    from ``batches``/``train``/``weight_decay``/``max_retained_batches`` (which are then
    ignored), e.g. :class:`landscape.distributed.DataParallelHessian`. Under a process group
    rank 0 alone reads and writes ``h5_path`` and tells the other ranks what it found.
    """
    if top_k and which not in linalg.WHICH:
        raise LandscapeError(f"which={which!r}: choose one of {', '.join(linalg.WHICH)}")
    if top_k and stop not in linalg.STOP_RULES:
        raise LandscapeError(f"stop={stop!r}: choose one of {', '.join(linalg.STOP_RULES)}")
    if top_k and start not in STARTS:
        raise LandscapeError(f"start={start!r}: choose one of {', '.join(STARTS)}")
    if trace and trace_method not in TRACE_METHODS:
        raise LandscapeError(f"trace method {trace_method!r}: choose one of {', '.join(TRACE_METHODS)}")
    op = operator if operator is not None else HessianOperator(
        model, criterion, batches, train=train, weight_decay=weight_decay,
        max_retained_batches=max_retained_batches)
    if top_k and top_k > op.n:
        raise LandscapeError(f"top_k={top_k} exceeds the number of parameters ({op.n})")
    targets: list[tuple[str | None, Any]] = [(None, op)]
    if blocks is not None:
        targets += [(name, b) for name, b in block_operators(op, blocks).items()]
    for name, o in targets[1:]:
        if top_k and top_k > o.n:
            raise LandscapeError(f"top_k={top_k} exceeds the number of parameters of block {name!r} ({o.n})")
    engine = dict(getattr(op, "engine_provenance", {}))     # e.g. data-parallel: engine, world_size
    base: dict[str, Any] = {}
    prov = {k: v for k, v in (provenance or {}).items() if k not in _VOLATILE}
    if h5_path is not None:
        base = {"model": hash_state(model.state_dict()), "data": op.data_hash(),
                "mode": op.mode, "weight_decay": op.weight_decay, "user": prov}
        if "engine" in engine:
            base["engine"] = engine["engine"]
    specs = {
        "topk": dict(k=top_k, which=which, tol=tol, stop=stop, max_iter=max_iter, max_basis=max_basis, start=start,
                     seed=seed, eigenvectors=eigenvectors) if top_k else None,
        "trace": dict(method=trace_method, n_matvecs=trace_matvecs, seed=seed) if trace else None,
        "density": dict(n_runs=density_runs, steps=density_steps, seed=seed, sigma=sigma,
                        sigma_rel=sigma_rel, n_grid=n_grid) if density else None,
    }
    runners = {
        "topk": lambda o: top_eigenvalues(o, top_k, which=which, tol=tol, stop=stop, max_iter=max_iter,
                                          max_basis=max_basis, seed=seed, start=start,
                                          eigenvectors=eigenvectors),
        "trace": lambda o: hessian_trace(o, method=trace_method, n_matvecs=trace_matvecs, seed=seed,
                                         block_size=block_size),
        "density": lambda o: spectral_density(o, n_runs=density_runs, steps=density_steps, seed=seed,
                                              sigma=sigma, sigma_rel=sigma_rel, n_grid=n_grid),
    }
    top = HessianAnalysis(mode=op.mode, n_params=op.n)
    total = 0
    writer = h5_path is not None and dist.is_main()
    with op:
        for name, o in targets:
            res = top if name is None else HessianAnalysis(mode=o.mode, n_params=o.n)
            for part, spec in specs.items():
                if spec is None:
                    continue
                key = ""
                if h5_path is not None:
                    key = content_key({**base, "part": part, "block": name or "",
                                       "params": o.param_names if name else "all", **spec})
                    stored = None
                    if writer and stored_key(h5_path, part, block=name, group=group) == key:
                        stored = load_hessian_result(h5_path, part, block=name, group=group)[0]
                    stored = dist.broadcast_object(stored)
                    if stored is not None:
                        setattr(res, part, stored)
                        top.loaded.append(f"blocks/{name}/{part}" if name else part)
                        continue
                value = runners[part](o)
                total += value.n_matvecs
                setattr(res, part, value)
                if writer:
                    ours = dict(method=f"hessian/{part}", settings=spec, model_hash=base["model"],
                                data_hash=base["data"], n_samples=op.n_samples, loss=op.loss,
                                mode=op.mode, weight_decay=op.weight_decay, block=name or "", **engine)
                    info = make_provenance(**{**prov, **ours})
                    save_hessian_result(h5_path, value, info, key=key, group=group)
            if name is not None:
                top.blocks[name] = res
    top.loss = op.loss
    top.n_matvecs = total
    return top


# ----------------------------------------------------------------------------- PyHessian

def pyhessian_top_eigenvalues(model: nn.Module, criterion: Criterion, batches: Iterable[Batch],
                              top_n: int = 1, tol: float = 1e-3, max_iter: int = 100, *,
                              seed: int = 0, residuals: bool = True,
                              eigenvectors: bool = False) -> HessianEigen:
    """Top eigenvalues by the PyHessian package (power iteration, largest *magnitude* first).

    Same model and data (full-dataset mode, eval mode as PyHessian forces); the model's mode
    flags, parameters and ``.grad`` fields are restored afterwards (PyHessian leaves graph-holding
    gradients in ``.grad``). ``seed`` seeds torch's global RNG for PyHessian's start vectors
    (the global RNG state is restored). ``seconds`` times PyHessian alone; with ``residuals``
    the residual norms ``||H v - lambda v||`` of its eigenpairs are then computed by our
    operator (``top_n`` extra products, not counted in ``n_matvecs``).
    """
    try:
        from pyhessian import hessian as PyHessian
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise LandscapeError(f"engine 'pyhessian' needs the pyhessian package ({e})") from None
    named = trainable_parameters(model)
    device = model_device(model)
    data = materialize(batches, device)
    if top_n > sum(p.numel() for _, p in named):
        raise LandscapeError(f"top_n={top_n} exceeds the number of parameters")
    saved_grads = [p.grad for _, p in named]
    dtype = named[0][1].dtype
    old_dtype = torch.get_default_dtype()
    calls = [0]
    rng_devices = [device] if device.type == "cuda" else []
    try:
        with evaluation_mode(model, False), preserved_parameters(model), \
                torch.random.fork_rng(devices=rng_devices), warnings.catch_warnings():
            torch.manual_seed(seed)
            if dtype in (torch.float32, torch.float64):
                torch.set_default_dtype(dtype)
            # PyHessian's backward(create_graph=True) warns about the .grad cycle we break below
            warnings.filterwarnings("ignore", message="Using backward\\(\\) with create_graph=True")
            t0 = time.perf_counter()
            h = PyHessian(model, criterion, dataloader=data, cuda=device.type == "cuda")
            inner = h.dataloader_hv_product

            def counted(v):
                calls[0] += 1
                return inner(v)

            h.dataloader_hv_product = counted
            values, vectors = h.eigenvalues(maxIter=max_iter, tol=tol, top_n=top_n)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            seconds = time.perf_counter() - t0
    finally:
        torch.set_default_dtype(old_dtype)
        for (_, p), g in zip(named, saved_grads):
            p.grad = g
    lam = np.asarray(values, dtype=np.float64)
    V = torch.stack([torch.cat([t.detach().reshape(-1) for t in vec]) for vec in vectors], dim=1)
    V = V / V.norm(dim=0, keepdim=True)
    res = np.full(len(lam), np.nan)
    if residuals:
        with HessianOperator(model, criterion, data, max_retained_batches=0) as op:
            HV = op.matmat(V.to(op.dtype))
            # PyHessian's eigenvalue is the Rayleigh quotient of the vector before its last
            # product; measure the residual at the Rayleigh quotient of the returned vector
            rq = (V.to(op.dtype) * HV).sum(0)
            res = (HV - rq * V.to(op.dtype)).norm(dim=0).double().cpu().numpy()
    converged = res <= tol * np.abs(lam)
    errors = linalg.error_estimates(lam, np.arange(len(lam)), res)
    return HessianEigen(lam, res, errors, converged, "LM", float(tol), "residual", int(max_iter),
                        calls[0], 0, seconds, "eval", int(V.shape[0]), 0.0, int(seed), method="pyhessian",
                        eigenvectors=V.cpu().numpy() if eigenvectors else None)
