"""Generic CSV (``csv``) and the embedded synthetic dataset (``synthetic``).

``csv``: ROOT is a CSV file, or a folder holding ``scores.csv`` (or exactly one
``*.csv``). Columns ``path,score`` are required; ``split`` (train/val/test) and a
group column (``group`` or ``reference``) are optional. Paths are relative to the
CSV's folder (absolute paths allowed). The score range is ``score_range=`` if given,
else ``score_range`` from a ``meta.json`` beside the CSV, else the observed range.

``synthetic``: a folder written by :func:`landscape.data.synthetic.generate_synthetic`
(``scores.csv`` + ``meta.json``), read by the same code; groups are reference images.
"""
from __future__ import annotations

import json
from pathlib import Path

from landscape.errors import DataError
from landscape.data.records import (LoadOptions, RawRow, RawTable, normalise_split, parse_score, read_csv_table,
                       register_format, resolve_under)

GROUP_COLUMNS = ("group", "reference")


def _find_csv(root: Path, opts: LoadOptions) -> Path:
    if opts.annotation is not None:
        return resolve_under(root if root.is_dir() else root.parent, opts.annotation)
    if root.is_file():
        return root
    if (root / "scores.csv").is_file():
        return root / "scores.csv"
    found = sorted(root.glob("*.csv"))
    if len(found) != 1:
        raise DataError(f"{root}: expected scores.csv or exactly one *.csv, found {len(found)}")
    return found[0]


def _meta_range(folder: Path) -> tuple[float, float] | None:
    meta = folder / "meta.json"
    if not meta.is_file():
        return None
    try:
        lo, hi = json.loads(meta.read_text())["score_range"]
        return float(lo), float(hi)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DataError(f"{meta}: no valid 'score_range' ({e})") from None


def read_score_csv(ann: Path, opts: LoadOptions, *, group_kind_default: str = "image") -> RawTable:
    """Rows of a ``path,score[,split][,group|reference]`` CSV (shared by csv and synthetic)."""
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
    declared = opts.score_range or _meta_range(base)
    source = "given" if opts.score_range else "meta.json"
    return RawTable(out, ann, column, declared, range_source=source,
                    official=f"{ann.name}:split" if has_split else None,
                    group_kind=f"{group_col} column" if group_col else group_kind_default)


@register_format("csv")
def load_csv(root: Path, opts: LoadOptions) -> RawTable:
    return read_score_csv(_find_csv(root, opts), opts)


@register_format("synthetic")
def load_synthetic(root: Path, opts: LoadOptions) -> RawTable:
    ann = root / "scores.csv"
    if not root.is_dir() or not ann.is_file() or not (root / "meta.json").is_file():
        raise DataError(f"{root}: no synthetic dataset here (scores.csv/meta.json missing); "
                        f"create it with: landscape data synth --out {root}")
    table = read_score_csv(ann, opts)
    if "reference" not in table.group_kind:
        raise DataError(f"{ann}: missing column 'reference'")
    table.group_kind = "reference image"
    if table.official is not None:
        table.official += ", by reference image at generation"
    return table
