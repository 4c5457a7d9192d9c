"""Dataset records, the format registry and train/val/test splitting.

A dataset is a list of :class:`ImageRecord` (absolute image path, quality score,
split, group). Every format loader (``landscape/data/formats/``) returns a
:class:`RawTable` (rows with optional official split); this module checks scores
against the declared range, checks that the image files exist, assigns splits and
builds an :class:`IQADataset`.

Splits
- ``split_mode="auto"`` (default): the official split when the format has one
  (KonIQ ``set``, pyiqa ``official_split``, a ``split`` column of a CSV), else a
  seeded split.
- ``"official"``: the official split or a :class:`DataError`.
- ``"random"``: always the seeded split (e.g. "paper mode": 10 seeds, ratios 0.8/0/0.2).
- Seeded split: the sorted distinct groups (reference image, or the image itself
  where there is none) are permuted by ``numpy.random.default_rng(split_seed)``;
  the first ``round(G*r_train)`` groups go to train, up to ``round(G*(r_train+r_val))``
  to val, the rest to test. No group is ever in two splits.
"""
from __future__ import annotations

import csv
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from landscape.errors import DataError

FORMATS = ("synthetic", "koniq10k", "kadid10k", "livec", "spaq", "csv", "pyiqa")
SPLITS = ("train", "val", "test")
SPLIT_MODES = ("auto", "official", "random")

_SPLIT_ALIASES = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}


@dataclass(frozen=True)
class ImageRecord:
    """One labelled image: absolute ``path``, ``score`` (higher is better), ``split``
    (``train``/``val``/``test``) and ``group`` (reference/content id; splits never share one)."""

    path: str
    score: float
    split: str
    group: str


@dataclass(frozen=True)
class LoadOptions:
    """Options every format loader receives (see :func:`load_dataset`)."""

    score_column: str | None = None
    annotation: str | None = None
    image_dir: str | None = None
    pyiqa_split_column: str | None = None
    score_range: tuple[float, float] | None = None


@dataclass
class RawRow:
    """A row of an annotation file before splitting (``split`` = official split or None)."""

    path: Path
    score: float
    group: str
    split: str | None = None
    where: str = ""


@dataclass
class RawTable:
    """What a format loader returns: rows plus what was read and how.

    ``official`` names the source of the official split (e.g. ``"koniq10k_distributions_sets.csv:set"``)
    or is None; ``score_range`` is the declared range (``range_source`` says where it came from).
    """

    rows: list[RawRow]
    annotation: Path
    score_column: str
    score_range: tuple[float, float] | None
    range_source: str = "declared"
    official: str | None = None
    resize_short: int | None = None
    excluded: int = 0
    group_kind: str = "image"


@dataclass
class IQADataset:
    """A loaded dataset: records with their split, and how they were obtained.

    ``annotation``: the label file read; ``score_column``: the column used;
    ``score_range``: declared range, with ``range_source`` ``declared`` (by the format),
    ``meta.json``, ``given`` (argument) or ``observed`` (min/max of the scores);
    ``split_rule``: how splits were made; ``resize_short``: shorter image side (px) the
    patch sampler resizes to before cropping (None: native; SPAQ defaults to 512);
    ``excluded``: rows left out for an empty split value (pyiqa).
    """

    format: str
    root: str
    score_column: str
    score_range: tuple[float, float]
    records: list[ImageRecord]
    split_rule: str
    annotation: str = ""
    range_source: str = "declared"
    resize_short: int | None = None
    excluded: int = 0

    def split(self, name: str) -> list[ImageRecord]:
        """Records of split ``name`` (``train``, ``val`` or ``test``), in file order."""
        if name not in SPLITS:
            raise DataError(f"unknown split '{name}' (valid: {', '.join(SPLITS)})")
        return [r for r in self.records if r.split == name]

    def split_sizes(self) -> dict[str, int]:
        """Number of images per split."""
        return {s: sum(r.split == s for r in self.records) for s in SPLITS}

    def relative(self, record: ImageRecord) -> str:
        """Path of ``record`` relative to the dataset root folder (POSIX), absolute if outside it."""
        base = Path(self.root)
        if base.is_file():  # csv/pyiqa roots may name the annotation file itself
            base = base.parent
        try:
            return Path(record.path).relative_to(base).as_posix()
        except ValueError:
            return record.path

    def split_hash(self, name: str) -> str:
        """SHA-256 of the sorted lines ``relative_path<TAB>score!r`` of one split."""
        lines = sorted(f"{self.relative(r)}\t{r.score!r}" for r in self.split(name))
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()

    def identity(self) -> dict:
        """JSON-serialisable identity: format, root, annotation, score column and range,
        split sizes, per-split SHA-256 of the sorted (path, score) lists, split rule, resize."""
        return {
            "format": self.format,
            "root": self.root,
            "annotation": self.annotation,
            "score_column": self.score_column,
            "score_range": list(self.score_range),
            "range_source": self.range_source,
            "split_rule": self.split_rule,
            "split_sizes": self.split_sizes(),
            "split_sha256": {s: self.split_hash(s) for s in SPLITS},
            "resize_short": self.resize_short,
            "excluded": self.excluded,
        }


# ---------------------------------------------------------------- registry

Loader = Callable[[Path, LoadOptions], RawTable]
LOADERS: dict[str, Loader] = {}


def register_format(name: str) -> Callable[[Loader], Loader]:
    """Decorator registering ``loader(root, options) -> RawTable`` under ``name``."""
    if name not in FORMATS:
        raise ValueError(f"format '{name}' is not one of {FORMATS}")

    def deco(fn: Loader) -> Loader:
        LOADERS[name] = fn
        return fn

    return deco


def _ensure_registered() -> None:
    from landscape.data import formats  # noqa: F401  (registers every loader)


def check_format(name: str) -> str:
    """Return ``name`` if it is a known format, else a :class:`DataError` listing them."""
    if name not in FORMATS:
        raise DataError(f"unknown dataset format '{name}' (valid: {', '.join(FORMATS)})")
    return name


def parse_dataset_spec(spec: str) -> tuple[str, str]:
    """Split ``"FORMAT:ROOT"`` into ``(format, root)``; the error lists the valid formats."""
    fmt, sep, root = spec.partition(":")
    if not sep or not root:
        raise DataError(f"dataset '{spec}': expected FORMAT:ROOT with FORMAT one of {', '.join(FORMATS)}")
    return check_format(fmt), root


# ---------------------------------------------------------------- helpers for loaders

def normalise_split(value: str, where: str) -> str | None:
    """Map ``train/training/val/valid/validation/test/testing`` (any case) to a split name;
    an empty value gives None (row excluded); anything else is a :class:`DataError`."""
    v = str(value).strip().lower()
    if v in ("", "nan", "none"):
        return None
    if v not in _SPLIT_ALIASES:
        raise DataError(f"{where}: split value '{value}' is not train/val/test")
    return _SPLIT_ALIASES[v]


def read_csv_table(path: Path, required: Sequence[str]) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Read a CSV (comma, or tab when the header has tabs and no commas; UTF-8 with or
    without BOM) into ``(header, [(line_number, row_dict), ...])``.

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


def check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    """Normalised (train, val, test) ratios; non-negative, train > 0."""
    if len(ratios) != 3:
        raise DataError(f"split ratios {tuple(ratios)}: need three numbers (train, val, test)")
    r = [float(x) for x in ratios]
    if any(x < 0 or not math.isfinite(x) for x in r) or r[0] <= 0:
        raise DataError(f"split ratios {tuple(ratios)}: need finite values >= 0 with train > 0")
    total = sum(r)
    return r[0] / total, r[1] / total, r[2] / total


def seeded_group_split(groups: Iterable[str], seed: int, ratios: Sequence[float]) -> dict[str, str]:
    """Assign each distinct group to a split (see module docstring); deterministic in ``seed``."""
    r = check_ratios(ratios)
    distinct = sorted(set(groups))
    order = np.random.default_rng(seed).permutation(len(distinct))
    g = len(distinct)
    cut1 = int(round(g * r[0]))
    cut2 = int(round(g * (r[0] + r[1])))
    out = {}
    for rank, idx in enumerate(order):
        out[distinct[idx]] = "train" if rank < cut1 else ("val" if rank < cut2 else "test")
    return out


# ---------------------------------------------------------------- load

def load_dataset(
    format: str,
    root: str | Path,
    *,
    score_column: str | None = None,
    split_seed: int = 0,
    split_ratios: Sequence[float] = (0.7, 0.1, 0.2),
    pyiqa_split_column: str | None = None,
    split_mode: str = "auto",
    annotation: str | None = None,
    image_dir: str | None = None,
    resize_short: int | None = None,
    score_range: tuple[float, float] | None = None,
    check_files: bool = True,
) -> IQADataset:
    """Load a dataset of ``format`` (one of :data:`FORMATS`) from ``root``.

    - ``score_column``: column of the annotation to use (default per format/file; recorded).
    - ``split_mode``: ``auto`` | ``official`` | ``random`` (module docstring);
      ``split_seed``/``split_ratios`` (train, val, test) drive the seeded split.
    - ``pyiqa_split_column``: split column of a pyiqa meta CSV (default ``official_split``).
    - ``annotation``: which annotation file (KonIQ has two CSVs; pyiqa/csv a CSV path).
    - ``image_dir``: image folder relative to ``root`` (e.g. ``512x384`` for KonIQ).
    - ``resize_short``: shorter side for the patch sampler (None: format default, SPAQ 512;
      0: native size).
    - ``score_range``: declared range for formats without one (csv, pyiqa); else observed.
    - ``check_files``: verify that every image file exists (``check_dataset`` also decodes them).

    Errors are :class:`DataError` with one line naming the file or column.
    """
    check_format(format)
    if split_mode not in SPLIT_MODES:
        raise DataError(f"split mode '{split_mode}' is not one of {', '.join(SPLIT_MODES)}")
    ratios = check_ratios(split_ratios)
    root_path = Path(root).expanduser().resolve()
    if not root_path.exists():
        hint = f" (create it with: landscape data synth --out {root})" if format == "synthetic" else ""
        raise DataError(f"{root_path}: dataset root not found{hint}")
    _ensure_registered()
    opts = LoadOptions(score_column=score_column, annotation=annotation, image_dir=image_dir,
                       pyiqa_split_column=pyiqa_split_column,
                       score_range=tuple(score_range) if score_range is not None else None)
    table = LOADERS[format](root_path, opts)
    if not table.rows:
        raise DataError(f"{table.annotation}: no images listed")

    # score range: declared (checked) or observed
    scores = np.array([r.score for r in table.rows])
    if opts.score_range is not None and table.score_range is None:
        table.score_range, table.range_source = opts.score_range, "given"
    if table.score_range is None:
        rng = (float(scores.min()), float(scores.max()))
        range_source = "observed"
    else:
        rng = (float(table.score_range[0]), float(table.score_range[1]))
        range_source = table.range_source
        lo, hi = rng
        for row in table.rows:
            if not (lo <= row.score <= hi):
                raise DataError(f"{row.where or table.annotation}: score {row.score:g} in column "
                                f"'{table.score_column}' is outside the declared range [{lo:g}, {hi:g}]")

    # split
    has_official = table.official is not None and any(r.split is not None for r in table.rows)
    if split_mode == "official" and not has_official:
        raise DataError(f"{table.annotation}: format '{format}' has no official split here; "
                        f"use split_mode='auto' or 'random'")
    if has_official and split_mode != "random":
        splits = [r.split for r in table.rows]
        if None in splits:
            bad = table.rows[splits.index(None)]
            raise DataError(f"{bad.where or table.annotation}: no split value for this image")
        rule = f"official ({table.official})"
    else:
        assign = seeded_group_split((r.group for r in table.rows), split_seed, ratios)
        splits = [assign[r.group] for r in table.rows]
        rule = (f"seeded by {table.group_kind}: seed={split_seed} "
                f"ratios={ratios[0]:.3g}/{ratios[1]:.3g}/{ratios[2]:.3g}")

    if check_files:
        missing = [r.path for r in table.rows if not r.path.is_file()]
        if missing:
            more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
            raise DataError(f"{missing[0]}: image file not found{more}")

    records = [ImageRecord(str(r.path), float(r.score), s, r.group) for r, s in zip(table.rows, splits)]
    resize = table.resize_short if resize_short is None else (int(resize_short) or None)
    return IQADataset(
        format=format, root=str(root_path), score_column=table.score_column, score_range=rng,
        records=records, split_rule=rule, annotation=str(table.annotation), range_source=range_source,
        resize_short=resize, excluded=table.excluded,
    )


def records_by_split(records: Iterable[ImageRecord]) -> Mapping[str, list[ImageRecord]]:
    """Group records by split name (keys ``train``, ``val``, ``test``)."""
    out: dict[str, list[ImageRecord]] = {s: [] for s in SPLITS}
    for r in records:
        out[r.split].append(r)
    return out
