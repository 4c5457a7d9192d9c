"""Resumable loss grids over ranks: each rank computes its own cells, rank 0 merges the shards.

Cell ``c`` of ``n`` belongs to rank ``c mod world`` (the surface package's ``rank=``/``world=``
arguments); a rank writes only its own shard file, so no rank waits on another per cell.
"""
from __future__ import annotations

from typing import Any, Callable

from landscape import distributed as dist
from landscape.analyze.progress import cell_progress


def sharded_grid(compute: Callable[..., Any], n_cells: int, label: str, progress: bool = True) -> Any:
    """Run a resumable grid: ``compute(rank=, world=, callback=)`` on this rank's cells.

    One process: the result file itself. Under torchrun each rank computes and writes its
    own shard (no rank waits on another per cell); after the last cell the ranks meet once,
    rank 0 merges the shards into the one result file (cells of an earlier merge kept), and
    every rank returns the merged contents (``computed_now`` summed over ranks).
    """
    import torch

    from landscape.surface import load_surface
    from landscape.surface.storage import main_path, merge_rank_shards

    world, rank = dist.world_size(), dist.rank()
    cb, close = cell_progress(len(range(rank, n_cells, world)), label, progress and dist.is_main())
    try:
        res = compute(rank=rank, world=world, callback=cb)
    finally:
        close()
    if world == 1:
        return res
    dist.barrier()
    path = main_path(res.path)
    if dist.is_main():
        merge_rank_shards(path, world)
    dist.barrier()
    merged = load_surface(path)
    merged.computed_now = int(dist.all_reduce_sum(torch.tensor([float(res.computed_now)]))[0].item())
    merged.seconds = res.seconds
    return merged
