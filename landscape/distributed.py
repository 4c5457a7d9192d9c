"""torch.distributed (launched by ``torchrun``): process group, collectives, work units, sharded data.

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
- :func:`map_units`: independent work units (m-sharpness chunks, noise-scale repeats)
  round-robin over ranks, results gathered in unit order.

No analyzer code lives here (the data-parallel Hessian is :mod:`landscape.hessian.parallel`).
"""
from __future__ import annotations

import datetime
import os
from typing import Any, Callable, Iterable, Sequence, TypeVar

import torch
import torch.distributed as tdist

from landscape.errors import LandscapeError

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
    """DistributedDataParallel around ``model`` when a group is initialised.

    BatchNorm (the micro preset's conv stem): on CUDA the layers become ``SyncBatchNorm`` (in
    place, same state-dict keys), so statistics are taken over the global batch as in one process;
    torch has no SyncBatchNorm on CPU, so under gloo each rank normalises its own per-rank batch
    (as gradient accumulation normalises each micro-batch), and DDP then equals one process with
    the global batch only for models without BatchNorm."""
    if not is_initialized():
        return model
    if device.type == "cuda":
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
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
              full: Sequence[Batch] | None) -> ShardedBatches:
        return ShardedBatches(local, index, sizes, full)

    def to(self, device: torch.device | str | None) -> ShardedBatches:
        """Local batches moved to ``device`` (``full`` stays where it is)."""
        if device is None:
            return self
        local = [(x.to(device, non_blocking=True), y.to(device, non_blocking=True)) for x, y in self]
        return self._like(local, self.index, self.sizes, self.full)

    def take(self, limit: int) -> ShardedBatches:
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
