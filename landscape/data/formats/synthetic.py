"""The embedded synthetic dataset (``synthetic``).

A folder written by :func:`landscape.data.synthetic.generate_synthetic`: ``scores.csv``
(``path,score,split,reference,...``) and ``meta.json`` (``score_range``), read like the
generic CSV; groups are reference images, and the split column is the split made by
reference image at generation.
"""
from __future__ import annotations

from pathlib import Path

from landscape.data.formats._base import LoadOptions, RawTable, register_format
from landscape.data.formats._reading import read_score_csv
from landscape.errors import DataError


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
