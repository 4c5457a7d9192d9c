"""LIVE In the Wild Image Quality Challenge (CLIVE).

``Data/AllImages_release.mat`` (key ``AllImages_release``: 1169x1 cell of file names)
and ``Data/AllMOS_release.mat`` (key ``AllMOS_release``: 1x1169 doubles, MOS 0-100);
images in ``Images/``. The first 7 entries are the training images (in
``Images/trainingImages/``) and are dropped, leaving 1162. No official split:
seeded split by image.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from landscape.data.formats._base import LoadOptions, RawRow, RawTable, register_format
from landscape.data.formats._reading import parse_score, require_dir, resolve_under
from landscape.errors import DataError

NAMES_MAT = "Data/AllImages_release.mat"
MOS_MAT = "Data/AllMOS_release.mat"
DROP_FIRST = 7
SCORE_RANGE = (0.0, 100.0)


def _loadmat(path: Path, key: str) -> np.ndarray:
    import scipy.io

    if not path.is_file():
        raise DataError(f"{path}: annotation file not found")
    try:
        data = scipy.io.loadmat(str(path))
    except Exception as e:  # scipy raises several types on corrupt files
        raise DataError(f"{path}: unreadable .mat file ({e})") from None
    if key not in data:
        keys = ", ".join(k for k in data if not k.startswith("__"))
        raise DataError(f"{path}: missing key '{key}' (found: {keys or 'none'})")
    return np.asarray(data[key])


def _name(item: object) -> str:
    """A MATLAB cell entry (nested 1x1 arrays of a string) as a Python string."""
    while isinstance(item, np.ndarray):
        if item.size == 0:
            return ""
        item = item.ravel()[0]
    return str(item)


@register_format("livec")
def load_livec(root: Path, opts: LoadOptions) -> RawTable:
    names_path, mos_path = root / NAMES_MAT, root / MOS_MAT
    image_dir = require_dir(resolve_under(root, opts.image_dir or "Images"), "image")
    names = [_name(x) for x in _loadmat(names_path, "AllImages_release").ravel()]
    column = opts.score_column or "AllMOS_release"
    mos = _loadmat(mos_path, column).ravel()
    if len(names) != len(mos):
        raise DataError(f"{mos_path}: {len(mos)} scores for {len(names)} images in {names_path.name}")
    out = []
    for i in range(DROP_FIRST, len(names)):
        where = f"{mos_path} entry {i + 1} ({names[i]})"
        out.append(RawRow(image_dir / names[i], parse_score(mos[i], where, column), names[i], None, where))
    return RawTable(out, mos_path, column, SCORE_RANGE)
