"""The data-parallel Hessian: the batches split across the ranks of a process group.

``H V = sum_r sum_{b on r} (n_b / N) H_b V`` with ``N`` the global number of examples: each
rank sums its own batches with the *global* weights ``n_b / N`` (the one per-batch loop of
:class:`~landscape.hessian.HessianOperator`), then one all-reduce adds the ranks' sums,
carrying the loss and a NaN flag along; ``weight_decay * V`` is added once, after it. All
ranks receive the same numbers, so Lanczos, Hutch++ and SLQ take the same path on every rank
and the result equals the single-process one up to the order of the float summation.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from landscape import distributed as dist
from landscape.batches import Batch, Criterion, materialize
from landscape.distributed import ShardedBatches
from landscape.errors import LandscapeError, NumericsError
from landscape.hessian.analyze import HessianConfig, analyze_hessian
from landscape.hessian.operator import HessianOperator, LocalSums, _Graphs
from landscape.hessian.results import HessianAnalysis
from landscape.hessian.storage import H5_GROUP
from landscape.provenance import hash_batches


class DataParallelHessian(HessianOperator):
    """``H @ V`` of the full-data loss with the batches split across ranks (module docstring).

    ``batches``: this rank's batches (a :class:`~landscape.distributed.ShardedBatches`, or a
    plain list: ``N`` is then the all-reduced count and the global list the ranks' lists in
    rank order). Same options as :class:`~landscape.hessian.HessianOperator`, of which it
    overrides only the reduction (:meth:`_reduce`), ``n_samples`` (global ``N``),
    :meth:`data_hash` (of the global list) and ``engine_provenance``. Every product is a
    collective: all ranks must call it with the same ``V``. A non-finite loss on any rank
    raises :class:`NumericsError` on every rank.
    """

    def __init__(self, model: nn.Module, criterion: Criterion, batches: Sequence[Batch], *,
                 train: bool = False, weight_decay: float = 0.0, params: Sequence[str] | None = None,
                 max_retained_batches: int | None = None, retain_fraction: float = 0.3):
        if not len(batches):
            raise LandscapeError(f"rank {dist.rank()} holds no batch: data parallelism needs one batch per rank")
        local = materialize(batches)
        if isinstance(batches, ShardedBatches):
            n_total, weights = batches.n_total, batches.weights()
        else:
            n_local = sum(int(x.shape[0]) for x, _ in local)
            n_total = int(dist.all_reduce_sum(torch.tensor(float(n_local), dtype=torch.float64)).item())
            weights = [int(x.shape[0]) / n_total for x, _ in local]
        graphs = _Graphs(model, criterion, local, train=train, max_retained_batches=max_retained_batches,
                         retain_fraction=retain_fraction, weights=weights)
        super().__init__(model, criterion, (), weight_decay=weight_decay, params=params, _graphs=graphs)
        self._n_total = int(n_total)
        self._batches = batches
        self._hash: dict[str, str] = {}          # shared with the blocks (restrict copies)

    @property
    def n_samples(self) -> int:
        """``N``: examples over all ranks."""
        return self._n_total

    @property
    def engine_provenance(self) -> dict[str, Any]:
        """What :func:`landscape.hessian.analyze_hessian` records about this engine."""
        return {"engine": "data-parallel", "world_size": dist.world_size()}

    def data_hash(self) -> str:
        """:func:`landscape.provenance.hash_batches` of the global batch list, as one process sees it.

        A collective when the global list is not on this rank (gathered once).
        """
        if "data" not in self._hash:
            if isinstance(self._batches, ShardedBatches):
                full = self._batches.gathered()
            else:
                full = [b for part in dist.all_gather_objects([(x.cpu(), y.cpu()) for x, y in self._batches])
                        for b in part]
            self._hash["data"] = hash_batches(full)
        return self._hash["data"]

    def _reduce(self, local: Callable[[], LocalSums]) -> torch.Tensor:
        """``sum_r local_r()`` in one all-reduce, with the loss and a NaN flag riding along.

        The flag (1 on a rank whose loss is not finite) is sent until the loss is known.
        """
        with self._session():
            loss, part = local()
        first = self._g.loss is None
        loss = loss.detach().reshape(1).to(part.dtype)
        bad = (~torch.isfinite(loss)).to(part.dtype) if first else loss.new_zeros(1)
        buf = torch.cat([part.reshape(-1), loss, bad])
        dist.all_reduce_sum(buf)
        n_bad = int(buf[-1].item())
        if n_bad > 0:
            raise NumericsError(f"Hessian: the loss is not finite on {n_bad} rank(s)")
        if first:
            self._g.loss = float(buf[-2])
        return buf[:-2].view(part.shape)


def parallel_hessian(model: nn.Module, criterion: Criterion, batches: Sequence[Batch],
                     config: HessianConfig | None = None, *, h5_path: Any = None,
                     provenance: Mapping[str, Any] | None = None, group: str = H5_GROUP,
                     **options: Any) -> HessianAnalysis:
    """Top-k eigenvalues, trace and density of the full-data Hessian, data-parallel over ranks.

    ``batches``: this rank's shard (:func:`landscape.distributed.shard_batches` of the global
    list). :func:`~landscape.hessian.analyze_hessian` (``config`` or its options) on a
    :class:`DataParallelHessian`, on every rank with the same seeds, so every rank holds the
    same :class:`~landscape.hessian.HessianAnalysis`; it equals the single-process result
    within float summation error. Parts are stored by rank 0 (same layout, keyed with the
    global data hash and ``engine='data-parallel'``) and resumed like the single-process ones.
    """
    cfg = HessianConfig.resolve(config, options)
    op = DataParallelHessian(model, criterion, batches, train=cfg.train, weight_decay=cfg.weight_decay,
                             max_retained_batches=cfg.max_retained_batches)
    return analyze_hessian(model, criterion, (), cfg, operator=op, h5_path=h5_path, provenance=provenance,
                           group=group)
