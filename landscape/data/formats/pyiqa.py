"""pyiqa meta-info CSVs (IQA-PyTorch ``meta_info_*.csv``).

ROOT is the meta CSV, or a folder holding exactly one ``meta_info*.csv`` (or name it
with ``annotation=``). Images are relative to ``image_dir`` (relative to the CSV's
folder) or to the CSV's folder. Columns (comma or tab separated):
- name: ``img_name`` (NR sets) or ``dist_name`` (FR sets, with ``ref_name`` as group);
- score: ``score_column`` or ``mos`` (else ``dmos``, taken as is: pyiqa's KADID
  ``dmos`` is higher-better; flip lower-better DMOS yourself);
- splits: columns whose name contains ``split``, values train/val/test
  (``official_split``, ``ratio802_seed123_split_01``..``_10``). ``pyiqa_split_column``
  picks one; default ``official_split``, else ``split``; none -> seeded split.
  Rows with an empty value in the chosen column are excluded (counted).
"""
from __future__ import annotations

from pathlib import Path

from landscape.data.formats._base import LoadOptions, RawRow, RawTable, register_format
from landscape.data.formats._reading import normalise_split, parse_score, read_csv_table, require_dir, resolve_under
from landscape.errors import DataError

NAME_COLUMNS = ("img_name", "dist_name")
SCORE_COLUMNS = ("mos", "dmos")
DEFAULT_SPLITS = ("official_split", "split")


def _find_meta(root: Path, opts: LoadOptions) -> Path:
    if opts.annotation is not None:
        return resolve_under(root if root.is_dir() else root.parent, opts.annotation)
    if root.is_file():
        return root
    found = sorted(root.glob("meta_info*.csv"))
    if len(found) != 1:
        raise DataError(f"{root}: expected exactly one meta_info*.csv, found {len(found)}")
    return found[0]


@register_format("pyiqa")
def load_pyiqa(root: Path, opts: LoadOptions) -> RawTable:
    ann = _find_meta(root, opts)
    header, rows = read_csv_table(ann, [])
    name_col = next((c for c in NAME_COLUMNS if c in header), None)
    if name_col is None:
        raise DataError(f"{ann}: missing column 'img_name' or 'dist_name' (found: {', '.join(header)})")
    column = opts.score_column or next((c for c in SCORE_COLUMNS if c in header), "mos")
    if column not in header:
        raise DataError(f"{ann}: missing column '{column}' (found: {', '.join(header)})")
    split_cols = [c for c in header if "split" in c]
    if opts.pyiqa_split_column is not None:
        if opts.pyiqa_split_column not in header:
            raise DataError(f"{ann}: missing split column '{opts.pyiqa_split_column}' "
                            f"(split columns: {', '.join(split_cols) or 'none'})")
        split_col = opts.pyiqa_split_column
    else:
        split_col = next((c for c in DEFAULT_SPLITS if c in header), None)
    group_col = "ref_name" if "ref_name" in header else None
    base = ann.parent
    image_dir = require_dir(resolve_under(base, opts.image_dir), "image") if opts.image_dir else base
    out, excluded = [], 0
    for n, r in rows:
        where = f"{ann}:{n}"
        split = normalise_split(r[split_col], where) if split_col else None
        if split_col and split is None:
            excluded += 1
            continue
        name = r[name_col]
        group = r[group_col] if group_col else name
        out.append(RawRow(image_dir / name, parse_score(r[column], where, column), group, split, where))
    return RawTable(out, ann, column, opts.score_range, range_source="given",
                    official=f"{ann.name}:{split_col}" if split_col else None, excluded=excluded,
                    group_kind="reference image (ref_name)" if group_col else "image")
