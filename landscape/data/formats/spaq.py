"""SPAQ: 11,125 smartphone JPEGs in ``TestImage/``; labels in
``Annotations/MOS and Image attribute scores.xlsx`` (header ``Image name``, ``MOS``,
``Brightness``, ..., MOS 0-100), read with openpyxl. No official split: seeded by image.

The photos are large (about 4000x3000), so the dataset's ``resize_short`` defaults
to 512: the patch sampler resizes each image so its shorter side is 512 px before
cropping (``load_dataset(..., resize_short=0)`` keeps the native size).
"""
from __future__ import annotations

from pathlib import Path

from landscape.data.formats._base import LoadOptions, RawRow, RawTable, register_format
from landscape.data.formats._reading import parse_score, require_dir, resolve_under
from landscape.errors import DataError

ANNOTATION = "Annotations/MOS and Image attribute scores.xlsx"
SCORE_RANGE = (0.0, 100.0)
RESIZE_SHORT = 512


def read_xlsx(path: Path, required: list[str]) -> tuple[list[str], list[tuple[int, dict]]]:
    """First sheet of an .xlsx as ``(header, [(row_number, {column: value})])``."""
    import openpyxl

    if not path.is_file():
        raise DataError(f"{path}: annotation file not found")
    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as e:  # openpyxl raises zipfile/KeyError/InvalidFileException
        raise DataError(f"{path}: unreadable .xlsx file ({e})") from None
    try:
        it = wb.worksheets[0].iter_rows(values_only=True)
        header = [str(h).strip() if h is not None else "" for h in next(it, ())]
        missing = [c for c in required if c not in header]
        if missing:
            names = ", ".join(f"'{c}'" for c in missing)
            raise DataError(f"{path}: missing column(s) {names} (found: {', '.join(h for h in header if h)})")
        rows = []
        for n, values in enumerate(it, start=2):
            if values is None or all(v is None for v in values):
                continue
            rows.append((n, dict(zip(header, values))))
    finally:
        wb.close()
    return header, rows


@register_format("spaq")
def load_spaq(root: Path, opts: LoadOptions) -> RawTable:
    ann = resolve_under(root, opts.annotation or ANNOTATION)
    image_dir = require_dir(resolve_under(root, opts.image_dir or "TestImage"), "image")
    column = opts.score_column or "MOS"
    _, rows = read_xlsx(ann, ["Image name", column])
    out = []
    for n, r in rows:
        name = str(r["Image name"]).strip()
        where = f"{ann}:row {n}"
        out.append(RawRow(image_dir / name, parse_score(r[column], where, column), name, None, where))
    return RawTable(out, ann, column, SCORE_RANGE, resize_short=RESIZE_SHORT)
