"""The cell loop shared by planes, 1-D slices, interpolations and trajectory planes.

``run_cells`` evaluates ``params_at(x, y)`` for every grid cell that this worker
owns (:func:`~landscape.surface.grid.cells_for_rank`) and that is not yet done
in the result file, under an exclusive lock on that file and in eval mode
(recorded). Finished cells are kept in memory and flushed atomically every
``flush_every`` cells or ``flush_seconds`` seconds, whichever comes first, and
once more when the loop ends or raises; a killed process therefore loses at most
the cells computed since the last flush. The origin cell (the unperturbed model),
if on the grid, is computed first and its loss must be finite. Other cells may be
non-finite (far from the minimum, or a broken interpolation): they are stored as they
are and counted in the file's ``nonfinite`` / ``nonfinite_cells`` attributes, set after
every completed run (:func:`~landscape.surface.storage.flag_nonfinite`).

Sharded (``world > 1``): worker ``rank`` writes only its own shard file
(:func:`~landscape.surface.storage.shard_path`) and never waits on another worker; cells
already done in the merged file ``path`` (an earlier run, with any number of workers) are
skipped too. :func:`~landscape.surface.storage.merge_rank_shards` combines the shards.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

import landscape.surface.storage as storage
from landscape.batches import finite_or_raise
from landscape.params import check_finite_parameters, evaluation_mode
from landscape.store import exclusive
from landscape.surface.evaluate import Evaluator
from landscape.surface.grid import cell_coordinates, cells_for_rank, origin_cell

ParamsAt = Callable[[float, float], Mapping[str, torch.Tensor]]
CellCallback = Callable[[int, Mapping[str, float]], None]


def run_cells(path: Path, key: str, kind: str, x: np.ndarray, y: np.ndarray | None, attrs: Mapping[str, Any],
              evaluator: Evaluator, params_at: ParamsAt, *, extra: Mapping[str, np.ndarray] | None = None,
              must_match: tuple[str, ...] = (),
              rank: int = 0, world: int = 1, flush_every: int = 16, flush_seconds: float = 30.0,
              max_cells: int | None = None, callback: CellCallback | None = None) -> storage.SurfaceResult:
    """Compute the missing cells of ``path`` owned by ``rank``; return the file's contents.

    ``params_at(a, b)`` maps grid coordinates to the tensors given to
    :func:`torch.func.functional_call` (1-D slices get ``b = 0``). ``max_cells``
    stops after that many cells (the result is then partial and can be resumed);
    ``callback(cell, metrics)`` runs after each cell (an exception in it stops the
    loop after flushing). ``must_match`` names attributes an existing file must share.
    """
    t0 = time.perf_counter()
    main_path = Path(path)
    path = storage.shard_path(main_path, rank, world)
    shape = storage.grid_shape(x, y)
    n_cells = int(np.prod(shape))
    check_finite_parameters(evaluator.model)
    computed = 0
    with exclusive(path):
        with evaluation_mode(evaluator.model, train=False) as mode:
            attrs = {**attrs, "mode": mode, "shard": None if world == 1 else {"rank": rank, "world": world}}
            storage.create_or_check(path, key, kind, x, y, evaluator.metric_names, attrs, extra, must_match)
            done = storage.load_surface(path).done.reshape(-1)
            if world > 1 and main_path.exists():
                done = done | storage.done_in(main_path, key, kind, x, y).reshape(-1)
            todo = [int(c) for c in cells_for_rank(n_cells, rank, world) if not done[c]]
            origin = origin_cell(x, y)
            if origin is not None and origin in todo:
                todo.remove(origin)
                todo.insert(0, origin)
            if max_cells is not None:
                todo = todo[:max(0, int(max_cells))]
            evaluator.expect_cells(len(todo))
            pending_cells: list[int] = []
            pending_rows: list[dict[str, float]] = []
            last_flush = time.monotonic()
            try:
                for cell in todo:
                    a, b = cell_coordinates(cell, x, y)
                    row = evaluator(params_at(a, b))
                    if cell == origin:
                        for name in row:
                            if name.endswith("_loss"):
                                finite_or_raise(row[name], f"{path.name}: {name} of the unperturbed model")
                    pending_cells.append(cell)
                    pending_rows.append(row)
                    computed += 1
                    if callback is not None:
                        callback(cell, row)
                    if len(pending_cells) >= flush_every or time.monotonic() - last_flush >= flush_seconds:
                        storage.write_cells(path, pending_cells, pending_rows)
                        pending_cells, pending_rows = [], []
                        last_flush = time.monotonic()
            finally:
                # provenance of the last run's forward pass (eager or torch.compile; storage.py)
                storage.write_cells(path, pending_cells, pending_rows,
                                    attrs={"forward": evaluator.forward_info} if computed else None)
            storage.flag_nonfinite(path)  # attributes nonfinite / nonfinite_cells (storage.py)
    result = storage.load_surface(path)
    result.computed_now = computed
    result.seconds = time.perf_counter() - t0
    return result
