"""Progress bars of the analysis jobs: one tqdm bar over grid cells, on stderr."""
from __future__ import annotations

import sys
from typing import Any, Callable


def cell_progress(total: int, label: str, enabled: bool = True) -> tuple[Callable[[int, dict], None],
                                                                         Callable[[], Any]]:
    """A tqdm bar over ``total`` grid cells: returns ``(callback(cell, row), close())``.

    Each callback advances the bar by one cell and shows the first ``*_loss`` value of the
    cell's row; ``enabled=False`` gives a disabled bar (other ranks, ``--no-progress``).
    """
    from tqdm import tqdm

    bar = tqdm(total=total, desc=label, unit="cell", file=sys.stderr, dynamic_ncols=True, leave=False,
               disable=not enabled)

    def callback(cell, row):
        bar.update(1)
        loss = next((v for k, v in row.items() if k.endswith("_loss")), None)
        if loss is not None:
            bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
    return callback, bar.close
