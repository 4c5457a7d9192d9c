"""torch.distributed (launched by ``torchrun``): process group, collectives, data-parallel analysis.

Every function is a no-op returning the single-process answer when no process group is
initialised, so library code calls them unconditionally. Backend: NCCL on GPUs, gloo on
CPU. Collectives on CPU tensors also work under NCCL (they travel through the rank's GPU).

Data parallelism of the analyzers (one model replica per rank; the data split by batch,
never inside a batch, so a pairwise ranking term sees the same pairs as in one process):

- :class:`ShardedBatches`: rank ``r``'s batches ``b`` with ``b % world == r`` of a global
  list of ``B`` batches, with every batch size known on every rank. A full-data mean
  ``L = sum_b (n_b / N) l_b`` is ``all_reduce(sum_{b on r} (n_b / N) l_b)``; gradients and
  Hessian-vector products likewise (one all-reduce per evaluation). All ranks receive the
  same reduced numbers, so iterative methods (Lanczos, L-BFGS-B, bisections) take the same
  path on every rank, and the result equals the single-process one up to the order of the
  float summation.
- :class:`DataParallelHessian`: ``H V = sum_r (N_r / N) H_r V`` with ``H_r`` the Hessian
  of the mean loss over rank ``r``'s ``N_r`` examples (a local
  :class:`landscape.hessian.HessianOperator`); ``weight_decay * V`` added once.
- :func:`parallel_hessian`: top-k eigenvalues, trace and density on that operator, stored
  by rank 0 and resumed like :func:`landscape.hessian.analyze_hessian`.
- :func:`map_units`: independent work units (m-sharpness chunks, noise-scale repeats)
  round-robin over ranks, results gathered in unit order.
"""
from __future__ import annotations

import datetime
import os
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

import torch
import torch.distributed as tdist

from landscape.errors import LandscapeError, NumericsError

T = TypeVar("T")
Batch = tuple[torch.Tensor, torch.Tensor]
TIMEOUT_ENV = "LANDSCAPE_DIST_TIMEOUT_S"


# ----------------------------------------------------------------------------- process group

def is_initialized() -> bool:
    return tdist.is_available() and tdist.is_initialized()


def init_from_env(device: str = "auto") -> bool:
    """Initialise the default group when launched by torchrun (``WORLD_SIZE`` > 1).

    NCCL when CUDA is available and ``device`` is not ``cpu`` (each rank on GPU
    ``LOCAL_RANK``), else gloo. Collective timeout: ``$LANDSCAPE_DIST_TIMEOUT_S`` seconds
    when set, else torch's default. Returns whether a group is initialised.
    """
    if is_initialized() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return is_initialized()
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    kw: dict[str, Any] = {}
    if os.environ.get(TIMEOUT_ENV):
        try:
            kw["timeout"] = datetime.timedelta(seconds=float(os.environ[TIMEOUT_ENV]))
        except ValueError:
            raise LandscapeError(f"{TIMEOUT_ENV}={os.environ[TIMEOUT_ENV]!r} is not a number of seconds") from None
    tdist.init_process_group(backend="nccl" if use_cuda else "gloo", **kw)
    return True


def world_size() -> int:
    return tdist.get_world_size() if is_initialized() else 1


def rank() -> int:
    return tdist.get_rank() if is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_initialized():
        tdist.barrier()


def _comm_device() -> torch.device:
    """Where collectives need their tensors: the rank's GPU under NCCL, else the CPU."""
    if is_initialized() and tdist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum over ranks, in place; returns the tensor (every rank gets the same values)."""
    if not is_initialized():
        return tensor
    dev = _comm_device()
    if tensor.device == dev or (dev.type == "cuda" and tensor.device.type == "cuda"):
        tdist.all_reduce(tensor, op=tdist.ReduceOp.SUM)
    else:
        moved = tensor.to(dev)
        tdist.all_reduce(moved, op=tdist.ReduceOp.SUM)
        tensor.copy_(moved)
    return tensor


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s ``obj`` (any picklable object) on every rank."""
    if not is_initialized():
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, ...]`` on every rank (picklable objects)."""
    if not is_initialized():
        return [obj]
    out: list[Any] = [None] * world_size()
    tdist.all_gather_object(out, obj)
    return out


def wrap_ddp(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel around ``model`` when a group is initialised."""
    if not is_initialized():
        return model
    ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)


# ----------------------------------------------------------------------------- work units

def units_for_rank(n_units: int, rank_: int | None = None, world: int | None = None) -> range:
    """Units ``{i < n_units : i % world == rank}`` (round-robin: balanced when cost drifts with i)."""
    r, w = rank() if rank_ is None else rank_, world_size() if world is None else world
    return range(r, n_units, w)


def map_units(n_units: int, fn: Callable[[int], T]) -> list[T]:
    """``[fn(0), ..., fn(n_units - 1)]`` with the units split round-robin over ranks.

    Each rank computes its units, then one all-gather (pickled results) gives every rank the
    full list in unit order. ``fn`` must not use collectives. An exception on one rank is
    raised on every rank (the others as :class:`LandscapeError` naming the rank), so no rank
    is left waiting.
    """
    mine: dict[int, Any] = {}
    error: BaseException | None = None
    try:
        for i in units_for_rank(n_units):
            mine[i] = fn(i)
    except Exception as e:  # re-raised below, after the others know
        error = e
    gathered = all_gather_objects((mine, None if error is None else f"{type(error).__name__}: {error}"))
    if error is not None:
        raise error
    for r, (_, msg) in enumerate(gathered):
        if msg is not None:
            raise LandscapeError(f"rank {r} failed: {msg}")
    merged: dict[int, Any] = {}
    for part, _ in gathered:
        merged.update(part)
    return [merged[i] for i in range(n_units)]


# ----------------------------------------------------------------------------- sharded data

class ShardedBatches(list):
    """This rank's batches (the list's items) of a global list of ``(inputs, targets)`` batches.

    ``index[j]``: global position of local batch ``j``; ``sizes``: the size of every global
    batch (the same on all ranks), so ``N = sum(sizes)`` and the full-data weight of a local
    batch ``n_b / N`` are known without communication. ``full``: the global list when this
    rank holds it (:func:`shard_batches`), else gathered on first use (:meth:`gathered`).
    A rank may hold no batch (it then adds zeros to the reductions).
    """

    def __init__(self, local: Iterable[Batch], index: Sequence[int], sizes: Sequence[int],
                 full: Sequence[Batch] | None = None):
        super().__init__(local)
        self.index = [int(i) for i in index]
        self.sizes = [int(s) for s in sizes]
        self.full = None if full is None else list(full)
        if len(self.index) != len(self):
            raise LandscapeError(f"ShardedBatches: {len(self)} local batches but {len(self.index)} indices")
        if self.n_total <= 0:
            raise LandscapeError("no data: the global batch list is empty")

    @property
    def n_total(self) -> int:
        """``N``: examples over all ranks."""
        return sum(self.sizes)

    @property
    def n_local(self) -> int:
        return sum(self.sizes[i] for i in self.index)

    def offsets(self) -> list[int]:
        """Global position of the first example of each local batch."""
        starts, acc = [], 0
        for s in self.sizes:
            starts.append(acc)
            acc += s
        return [starts[i] for i in self.index]

    def weights(self) -> list[float]:
        """``n_b / N`` of each local batch (global ``N``)."""
        n = self.n_total
        return [self.sizes[i] / n for i in self.index]

    def _like(self, local: Iterable[Batch], index: Sequence[int], sizes: Sequence[int],
              full: Sequence[Batch] | None) -> "ShardedBatches":
        return ShardedBatches(local, index, sizes, full)

    def to(self, device: torch.device | str | None) -> "ShardedBatches":
        """Local batches moved to ``device`` (``full`` stays where it is)."""
        if device is None:
            return self
        local = [(x.to(device, non_blocking=True), y.to(device, non_blocking=True)) for x, y in self]
        return self._like(local, self.index, self.sizes, self.full)

    def take(self, limit: int) -> "ShardedBatches":
        """The first ``limit`` examples of the global list (batch boundaries kept)."""
        starts = [sum(self.sizes[:i]) for i in range(len(self.sizes))]
        sizes = [max(0, min(s, limit - a)) for s, a in zip(self.sizes, starts)]
        keep = sum(1 for s in sizes if s > 0)
        local, index = [], []
        for (x, y), i in zip(self, self.index):
            if i < keep:
                k = sizes[i]
                local.append((x[:k], y[:k]) if k < x.shape[0] else (x, y))
                index.append(i)
        full = None
        if self.full is not None:
            full = [(x[:k], y[:k]) if k < x.shape[0] else (x, y) for (x, y), k in zip(self.full, sizes) if k > 0]
        return self._like(local, index, sizes[:keep], full)

    def assemble(self, parts: Sequence[torch.Tensor] | None) -> torch.Tensor | None:
        """One value per example of each local batch -> the global ``[N]`` vector (float64, CPU), on every rank.

        Each rank writes its examples at their global positions of a zero vector; the
        all-reduced sum is exact (every position has one nonzero term). ``parts=None`` on
        any rank (values not available there) gives None on every rank.
        """
        n = self.n_total
        buf = torch.zeros(n + 1, dtype=torch.float64, device=_comm_device())
        if parts is None:
            buf[n] = 1.0
        else:
            for part, start in zip(parts, self.offsets()):
                buf[start:start + part.numel()] = part.reshape(-1).to(buf.device, torch.float64)
        all_reduce_sum(buf)
        return None if buf[n].item() > 0 else buf[:n].cpu()

    def gathered(self) -> list[Batch]:
        """The global batch list on this rank (``full``, or gathered once from all ranks)."""
        if self.full is None:
            parts = all_gather_objects([(i, x.cpu(), y.cpu()) for i, (x, y) in zip(self.index, self)])
            by_index = {i: (x, y) for part in parts for i, x, y in part}
            self.full = [by_index[i] for i in range(len(self.sizes))]
        return self.full


def shard_batches(batches: Sequence[Batch], rank_: int | None = None, world: int | None = None) -> ShardedBatches:
    """Rank ``rank``'s batches ``b % world == rank`` of the global list ``batches`` (the same on every rank).

    Needs at least one batch per rank (fewer batches than ranks would leave a rank idle and
    the split pointless): error otherwise, naming the counts.
    """
    r, w = rank() if rank_ is None else rank_, world_size() if world is None else world
    batches = list(batches)
    if w > 1 and len(batches) < w:
        raise LandscapeError(f"{len(batches)} batches for {w} ranks: data parallelism needs at least one batch "
                             f"per rank (use a smaller --batch-size or more --samples)")
    for i, item in enumerate(batches):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise LandscapeError(f"batch {i} is not an (inputs, targets) pair")
    index = list(range(r, len(batches), w))
    return ShardedBatches([tuple(batches[i]) for i in index], index, [int(x.shape[0]) for x, _ in batches],
                          full=batches)


# ----------------------------------------------------------------------------- Hessian

class DataParallelHessian:
    """``H @ V`` of the full-data loss with the batches split across ranks (module docstring).

    ``batches``: this rank's batches (a :class:`ShardedBatches`, or a plain list: ``N`` is
    then the all-reduced count). Same constructor options as
    :class:`landscape.hessian.HessianOperator`; exposes what its estimators use (``matmat``,
    ``n``, ``dtype``, ``device``, ``mode``, ``weight_decay``, ``block``, ``n_matvecs``,
    ``loss``, ``n_samples``, ``restrict``, ``release``), so
    :func:`~landscape.hessian.top_eigenvalues`, :func:`~landscape.hessian.hessian_trace` and
    :func:`~landscape.hessian.spectral_density` run on it unchanged, on every rank together.
    Every product is a collective: all ranks must call it with the same ``V``.
    A non-finite loss on any rank raises :class:`NumericsError` on every rank.
    """

    def __init__(self, model: torch.nn.Module, criterion: Callable, batches: Sequence[Batch], *,
                 train: bool = False, weight_decay: float = 0.0, params: Sequence[str] | None = None,
                 max_retained_batches: int | None = None, retain_fraction: float = 0.3,
                 _local: Any = None, _share: float | None = None, _n_total: int | None = None,
                 _data_hash: str | None = None):
        from landscape.hessian import HessianOperator

        if _local is None:
            if not len(batches):
                raise LandscapeError(f"rank {rank()} holds no batch: data parallelism needs one batch per rank")
            _local = HessianOperator(model, criterion, list(batches), train=train, weight_decay=0.0,
                                     params=params, max_retained_batches=max_retained_batches,
                                     retain_fraction=retain_fraction)
            n_local = _local.n_samples
            if isinstance(batches, ShardedBatches):
                _n_total = batches.n_total
            else:
                _n_total = int(all_reduce_sum(torch.tensor(float(n_local), dtype=torch.float64)).item())
            _share = n_local / _n_total
        self.local, self.share, self._n_total = _local, float(_share), int(_n_total)
        self._batches, self._data_hash = batches, _data_hash
        self.weight_decay = float(weight_decay)
        self.n, self.dtype, self.device = _local.n, _local.dtype, _local.device
        self.n_matvecs = 0
        self._loss: float | None = None

    @property
    def model(self) -> torch.nn.Module:
        return self.local.model

    @property
    def mode(self) -> str:
        return self.local.mode

    @property
    def engine_provenance(self) -> dict[str, Any]:
        """What :func:`landscape.hessian.analyze_hessian` records about this engine."""
        return {"engine": "data-parallel", "world_size": world_size()}

    def data_hash(self) -> str:
        """Hash of the global batch list (every rank's shard, gathered), as a single process would see it."""
        if self._data_hash is None:
            self._data_hash = _data_hash(self._batches)
        return self._data_hash

    @property
    def block(self) -> str | None:
        return self.local.block

    @property
    def param_names(self) -> list[str]:
        return self.local.param_names

    @property
    def n_samples(self) -> int:
        return self._n_total

    @property
    def loss(self) -> float | None:
        """Full-data loss ``sum_r (N_r / N) L_r`` (known after the first product)."""
        return self._loss

    def restrict(self, params: Sequence[str], block: str | None = None) -> "DataParallelHessian":
        """Diagonal block ``H[params, params]``, sharing data and kept graphs."""
        return DataParallelHessian(None, None, (), weight_decay=self.weight_decay,
                                   _local=self.local.restrict(params, block=block), _share=self.share,
                                   _n_total=self._n_total, _data_hash=self.data_hash())

    def release(self) -> None:
        self.local.release()

    def __enter__(self) -> "DataParallelHessian":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def _reduced(self, local: Callable[[], torch.Tensor], shape: tuple[int, ...]) -> torch.Tensor:
        """``sum_r (N_r / N) local_r()`` in one all-reduce, with the loss and a NaN flag riding along."""
        try:
            part = local()
            loss, bad = float(self.local.loss), 0.0
        except NumericsError:
            part, loss, bad = torch.zeros(shape, dtype=self.dtype, device=self.device), 0.0, 1.0
        buf = torch.cat([part.reshape(-1) * self.share,
                         torch.tensor([loss * self.share, bad], dtype=part.dtype, device=part.device)])
        all_reduce_sum(buf)
        if buf[-1].item() > 0:
            raise NumericsError(f"Hessian: the loss is not finite on {int(buf[-1].item())} rank(s)")
        if self._loss is None:
            self._loss = float(buf[-2])
        return buf[:-2].view(shape)

    def matmat(self, V: torch.Tensor) -> torch.Tensor:
        """``H @ V`` for ``V`` of shape ``[n, m]`` (or ``[n]``): one local product, one all-reduce."""
        vec = V.dim() == 1
        V2 = V[:, None] if vec else V
        out = self._reduced(lambda: self.local.matmat(V2), (self.n, V2.shape[1]))
        if self.weight_decay:
            out.add_(V2.to(device=out.device, dtype=out.dtype), alpha=self.weight_decay)
        self.n_matvecs += V2.shape[1]
        return out[:, 0] if vec else out

    def gradient(self) -> torch.Tensor:
        """Full-data gradient ``sum_r (N_r / N) g_r + wd * theta`` (one all-reduce)."""
        g = self._reduced(self.local.gradient, (self.n,))
        if self.weight_decay:
            g.add_(self.local.flat_parameters(), alpha=self.weight_decay)
        return g

    def output_gradient(self) -> torch.Tensor:
        """Mean-output gradient ``J^T 1 / N = sum_r (N_r / N) u_r`` (one all-reduce)."""
        return self._reduced(self.local.output_gradient, (self.n,))

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.matmat(v)

    def dense(self) -> torch.Tensor:
        """The full ``n x n`` matrix (``n`` products; for tests on tiny models)."""
        return self.matmat(torch.eye(self.n, device=self.device, dtype=self.dtype))


def _data_hash(batches: Sequence[Batch]) -> str:
    from landscape.provenance import hash_state

    full = batches.gathered() if isinstance(batches, ShardedBatches) else batches
    return hash_state({f"{i:06d}.{p}": t for i, (x, y) in enumerate(full) for p, t in (("x", x), ("y", y))})


def parallel_hessian(model: torch.nn.Module, criterion: Callable, batches: Sequence[Batch], *,
                     weight_decay: float = 0.0, train: bool = False, max_retained_batches: int | None = None,
                     **kwargs: Any):
    """Top-k eigenvalues, trace and density of the full-data Hessian, data-parallel over ranks.

    ``batches``: this rank's shard (:func:`shard_batches` of the global list).
    :func:`landscape.hessian.analyze_hessian` (``kwargs``: its options) on a
    :class:`DataParallelHessian`, on every rank with the same seeds, so every rank holds the
    same :class:`~landscape.hessian.HessianAnalysis`; it equals the single-process result
    within float summation error. Parts are stored by rank 0 (same layout, keyed with the
    global data hash and ``engine='data-parallel'``) and resumed like the single-process ones.
    """
    from landscape.hessian import analyze_hessian

    op = DataParallelHessian(model, criterion, batches, train=train, weight_decay=weight_decay,
                             max_retained_batches=max_retained_batches)
    return analyze_hessian(model, criterion, (), operator=op, **kwargs)
