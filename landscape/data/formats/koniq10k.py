"""KonIQ-10k: 10,073 JPEGs in ``1024x768/`` (or ``512x384/``) and two CSV files.

- ``koniq10k_distributions_sets.csv``: ``image_name,c1..c5,c_total,MOS,SD,set``;
  ``MOS`` on 0-100; ``set`` = official split (training 7058 / validation 1000 / test 2015).
- ``koniq10k_scores_and_distributions.csv``: ``image_name,c1..c5,c_total,MOS,SD,MOS_zscore``;
  ``MOS`` on 1-5, ``MOS_zscore`` on 0-100; no split column.

The same column name ``MOS`` has two scales, so the file and column are explicit and
recorded. Defaults: the sets file with ``MOS`` when it exists, else the scores file
with ``MOS_zscore``. ``score_column="MOS_zscore"`` selects the scores file. The
official split is taken from the sets file (joined on ``image_name``) whenever that
file exists, whichever file the scores come from.
"""
from __future__ import annotations

from pathlib import Path

from landscape.data.formats._base import LoadOptions, RawRow, RawTable, register_format
from landscape.data.formats._reading import normalise_split, parse_score, read_csv_table, require_dir, resolve_under
from landscape.errors import DataError

SETS_CSV = "koniq10k_distributions_sets.csv"
SCORES_CSV = "koniq10k_scores_and_distributions.csv"
IMAGE_DIRS = ("1024x768", "512x384")
# (file, column) -> declared range
RANGES = {
    (SETS_CSV, "MOS"): (0.0, 100.0),
    (SCORES_CSV, "MOS"): (1.0, 5.0),
    (SCORES_CSV, "MOS_zscore"): (0.0, 100.0),
}


def _pick_annotation(root: Path, opts: LoadOptions) -> Path:
    if opts.annotation is not None:
        return resolve_under(root, opts.annotation)
    sets, scores = root / SETS_CSV, root / SCORES_CSV
    if opts.score_column == "MOS_zscore":
        return scores
    if sets.is_file():
        return sets
    if scores.is_file():
        return scores
    raise DataError(f"{root}: neither {SETS_CSV} nor {SCORES_CSV} found")


def _image_dir(root: Path, opts: LoadOptions) -> Path:
    if opts.image_dir is not None:
        return require_dir(resolve_under(root, opts.image_dir), "image")
    for name in IMAGE_DIRS:
        if (root / name).is_dir():
            return root / name
    raise DataError(f"{root}: image folder not found (expected {' or '.join(IMAGE_DIRS)}/)")


def _official_sets(path: Path) -> dict[str, str | None]:
    _, rows = read_csv_table(path, ["image_name", "set"])
    return {r["image_name"]: normalise_split(r["set"], f"{path}:{n}") for n, r in rows}


@register_format("koniq10k")
def load_koniq10k(root: Path, opts: LoadOptions) -> RawTable:
    ann = _pick_annotation(root, opts)
    image_dir = _image_dir(root, opts)
    header, rows = read_csv_table(ann, ["image_name"])
    default = "MOS" if "MOS" in header and ann.name != SCORES_CSV else "MOS_zscore"
    column = opts.score_column or default
    if column not in header:
        raise DataError(f"{ann}: missing column '{column}' (found: {', '.join(header)})")
    declared = RANGES.get((ann.name, column))
    if declared is None:
        allowed = ", ".join(f"{f}:{c}" for f, c in RANGES)
        raise DataError(f"{ann}: '{column}' is not a KonIQ score column (valid: {allowed})")

    sets_path = ann if "set" in header else root / SETS_CSV
    official = _official_sets(sets_path) if sets_path.is_file() else None
    out = []
    for n, r in rows:
        where = f"{ann}:{n}"
        name = r["image_name"]
        split = None
        if official is not None:
            if name not in official:
                raise DataError(f"{sets_path}: image '{name}' (from {ann.name}) has no 'set' entry")
            split = official[name]
        out.append(RawRow(image_dir / name, parse_score(r[column], where, column), name, split, where))
    return RawTable(out, ann, column, declared,
                    official=f"{sets_path.name}:set" if official is not None else None)
