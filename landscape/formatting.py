"""Plain-text tables for the terminal: ``value ± se`` cells, aligned columns."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence


def fmt(value: Any, se: Any = None, digits: int = 4) -> str:
    """``1.234e-03 ± 5.0e-05`` style cell; NaN/None as ``-``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, (int,)) and not isinstance(value, bool):
        text = str(value)
    elif isinstance(value, float):
        text = f"{value:.{digits}g}"
    else:
        return str(value)
    if se is not None and isinstance(se, (int, float)) and math.isfinite(se):
        text += f" ± {se:.2g}"
    return text


def render(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], headers: Sequence[str] | None = None) -> str:
    """Left-aligned text table of preformatted or raw cells."""
    headers = list(headers or columns)
    cells = [[r.get(c, "") if isinstance(r.get(c, ""), str) else fmt(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(str(h)), *(len(str(row[i])) for row in cells)) if cells else len(str(h))
              for i, h in enumerate(headers)]
    line = "  ".join(str(h).ljust(w) for h, w in zip(headers, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(str(c).ljust(w) for c, w in zip(row, widths)) for row in cells]
    return "\n".join(out)
