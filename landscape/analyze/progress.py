"""Progress of the analysis jobs on stderr: a tqdm bar over grid cells, and a throttled status
line for the Hessian estimators and the sharpness measures."""
from __future__ import annotations

import math
import sys
import time
from typing import Any, Callable, TextIO


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


def _seconds(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def status_text(label: str, info: dict) -> str:
    """One progress line of a Hessian (``products``/``budget``, eigenvalues) or sharpness
    (``measure``, ``step``/``total``) progress dict, with its ``eta`` in seconds."""
    if "products" in info:
        block = f" [{info['block']}]" if info.get("block") else ""
        text = f"{label} hessian {info['part']}{block}: {info['products']}/{info['budget']} products"
        if info.get("eigenvalues"):
            text += ", lambda " + " ".join(f"{v:.5g}" for v in info["eigenvalues"])
    else:
        text = f"{label} sharpness {info['measure']}: step {info['step']}/{info['total']}"
        if info.get("evaluations"):
            text += f", {info['evaluations']} loss evaluations"
    return f"{text}, eta {_seconds(info.get('eta', float('nan')))}"


def status_progress(label: str, enabled: bool = True, *, stream: TextIO | None = None,
                    interval: float | None = None) -> Callable[[dict], None]:
    """A ``progress(info)`` callback writing :func:`status_text` lines to ``stream`` (stderr).

    On a terminal the line is redrawn in place (``\\r``) at most every 0.2 s; otherwise one line is
    written at most every ``interval`` seconds (default 1 s), and always for the first report of
    each part or measure and for the last step. ``enabled=False`` (other ranks,
    ``--no-progress``) gives a callback that does nothing.
    """
    if not enabled:
        return lambda info: None
    out = stream if stream is not None else sys.stderr
    tty = bool(getattr(out, "isatty", lambda: False)())
    every = interval if interval is not None else (0.2 if tty else 1.0)
    state = {"last": -math.inf, "key": None}

    def callback(info: dict) -> None:
        now = time.monotonic()
        key = (info.get("part"), info.get("block"), info.get("measure"))
        last = info.get("step") is not None and info.get("step") == info.get("total")
        if key == state["key"] and now - state["last"] < every and not last:
            return
        state.update(last=now, key=key)
        out.write(("\r" + status_text(label, info) + "\033[K") if tty else status_text(label, info) + "\n")
        out.flush()
    return callback
