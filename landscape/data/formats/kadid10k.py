"""KADID-10k: ``images/`` (81 references ``I01.png``.., 10,125 distorted ``I01_01_01.png``)
and ``dmos.csv`` with ``dist_img,ref_img,dmos,var``. Scores 1-5, higher is better
despite the name. No official split: seeded split by reference image (``ref_img``).
"""
from __future__ import annotations

from pathlib import Path

from landscape.data.formats._base import LoadOptions, RawRow, RawTable, register_format
from landscape.data.formats._reading import parse_score, read_csv_table, require_dir, resolve_under

ANNOTATION = "dmos.csv"
SCORE_RANGE = (1.0, 5.0)


@register_format("kadid10k")
def load_kadid10k(root: Path, opts: LoadOptions) -> RawTable:
    ann = resolve_under(root, opts.annotation or ANNOTATION)
    image_dir = require_dir(resolve_under(root, opts.image_dir or "images"), "image")
    column = opts.score_column or "dmos"
    _, rows = read_csv_table(ann, ["dist_img", "ref_img", column])
    out = [RawRow(image_dir / r["dist_img"], parse_score(r[column], f"{ann}:{n}", column),
                  r["ref_img"], None, f"{ann}:{n}") for n, r in rows]
    return RawTable(out, ann, column, SCORE_RANGE, group_kind="reference image (ref_img)")
