"""Reading helpers shared by the format loaders: CSV tables, scores, split values, paths.

- :func:`read_csv_table`: a comma- or tab-separated file (UTF-8, with or without BOM) as
  ``(header, [(line_number, row), ...])``, required columns checked.
- :func:`parse_score`: a finite float score or a one-line error naming row and column.
- :func:`normalise_split`: ``train/training/val/valid/validation/test/testing`` (any case)
  to a split name of :data:`landscape.data.records.SPLITS`.
- :func:`read_score_csv`: the ``path,score[,split][,group|reference]`` CSV shared by the
  ``csv`` and ``synthetic`` formats (score range from ``meta.json`` beside it, if any).
- :func:`require_dir`, :func:`resolve_under`: folders and relative paths.

Every error is a one-line :class:`~landscape.errors.DataError` naming the file.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Sequence

from landscape.data.formats._base import LoadOptions, RawRow, RawTable
from landscape.errors import DataError

SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}
GROUP_COLUMNS = ("group", "reference")


def normalise_split(value: str, where: str) -> str | None:
    """Map ``train/training/val/valid/validation/test/testing`` (any case) to a split name;
    an empty value gives None (row excluded); anything else is a :class:`DataError`."""
    v = str(value).strip().lower()
    if v in ("", "nan", "none"):
        return None
    if v not in SPLIT_ALIASES:
        raise DataError(f"{where}: split value '{value}' is not train/val/test")
    return SPLIT_ALIASES[v]


def read_csv_table(path: Path, required: Sequence[str]) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Read a CSV (comma, or tab when the header has tabs and no commas; UTF-8 with or
    without BOM) into ``(header, [(line_number, row_dict), ...])``; blank rows are dropped.

    A missing file or missing required columns give a :class:`DataError` naming them.
    """
    if not path.is_file():
        raise DataError(f"{path}: annotation file not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            first = f.readline()
            delimiter = "\t" if ("\t" in first and "," not in first) else ","
            f.seek(0)
            reader = csv.DictReader(f, delimiter=delimiter)
            header = [h.strip() for h in (reader.fieldnames or [])]
            reader.fieldnames = header
            rows = [(i + 2, {k: (v or "").strip() for k, v in row.items() if k is not None})
                    for i, row in enumerate(reader)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: unreadable CSV ({e})") from None
    missing = [c for c in required if c not in header]
    if missing:
        names = ", ".join(f"'{c}'" for c in missing)
        raise DataError(f"{path}: missing column(s) {names} (found: {', '.join(header) or 'none'})")
    rows = [(n, r) for n, r in rows if any(r.values())]
    return header, rows


def parse_score(value: object, where: str, column: str) -> float:
    """Float score, finite; else a :class:`DataError` naming the row and column."""
    try:
        s = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise DataError(f"{where}: column '{column}' has non-numeric score '{value}'") from None
    if not math.isfinite(s):
        raise DataError(f"{where}: column '{column}' has non-finite score {value}")
    return s


def require_dir(path: Path, what: str) -> Path:
    """Return ``path`` if it is a folder, else a :class:`DataError` naming it."""
    if not path.is_dir():
        raise DataError(f"{path}: {what} folder not found")
    return path


def resolve_under(base: Path, name: str) -> Path:
    """``name`` as an absolute path (relative names are taken under ``base``)."""
    p = Path(name).expanduser()
    return p if p.is_absolute() else base / p


def meta_score_range(folder: Path) -> tuple[float, float] | None:
    """``score_range`` of ``folder/meta.json`` (None without that file)."""
    meta = folder / "meta.json"
    if not meta.is_file():
        return None
    try:
        lo, hi = json.loads(meta.read_text())["score_range"]
        return float(lo), float(hi)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{meta}: no valid 'score_range' ({e})") from None


def read_score_csv(ann: Path, opts: LoadOptions, *, group_kind_default: str = "image") -> RawTable:
    """Rows of a ``path,score[,split][,group|reference]`` CSV (shared by csv and synthetic).

    Paths are relative to the CSV's folder (absolute allowed); the group is the ``group`` or
    ``reference`` column, else the path; the range is ``opts.score_range``, else ``meta.json``.
    """
    column = opts.score_column or "score"
    header, rows = read_csv_table(ann, ["path", column])
    base = ann.parent
    group_col = next((c for c in GROUP_COLUMNS if c in header), None)
    has_split = "split" in header
    out = []
    for n, r in rows:
        where = f"{ann}:{n}"
        rel = r["path"]
        if not rel:
            raise DataError(f"{where}: empty 'path'")
        split = normalise_split(r["split"], where) if has_split else None
        if has_split and split is None:
            raise DataError(f"{where}: empty 'split' value")
        group = r[group_col] if group_col and r[group_col] else rel
        out.append(RawRow(resolve_under(base, rel), parse_score(r[column], where, column), group, split, where))
    declared = opts.score_range or meta_score_range(base)
    source = "given" if opts.score_range else "meta.json"
    return RawTable(out, ann, column, declared, range_source=source,
                    official=f"{ann.name}:split" if has_split else None,
                    group_kind=f"{group_col} column" if group_col else group_kind_default)
