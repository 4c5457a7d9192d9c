"""Generic CSV (``csv``).

ROOT is a CSV file, or a folder holding ``scores.csv`` (or exactly one ``*.csv``);
``annotation=`` names the file. Columns ``path,score`` are required; ``split``
(train/val/test) and a group column (``group`` or ``reference``) are optional. Paths are
relative to the CSV's folder (absolute paths allowed). The score range is
``score_range=`` if given, else ``score_range`` from a ``meta.json`` beside the CSV, else
the observed range. (Rows are read by :func:`landscape.data.formats._reading.read_score_csv`,
shared with the ``synthetic`` format.)
"""
from __future__ import annotations

from pathlib import Path

from landscape.data.formats._base import LoadOptions, RawTable, register_format
from landscape.data.formats._reading import read_score_csv, resolve_under
from landscape.errors import DataError


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


@register_format("csv")
def load_csv(root: Path, opts: LoadOptions) -> RawTable:
    return read_score_csv(_find_csv(root, opts), opts)
