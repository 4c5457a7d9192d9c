"""Dataset validation: ``check_dataset`` loads the annotation and decodes every image.

The report lists images per split, the observed and declared score ranges, missing
and unreadable files; ``str(report)`` is the summary ``landscape data check`` prints.
``readable_records`` is the same check for a job about to start: it counts the unreadable
images and refuses them in one line, or (``skip_bad``) leaves them out and lists them.
High-bit-depth images are decoded at their true values (:func:`landscape.data.images.unit_grey`);
one whose values cannot be read (a float image outside [0, 1], ...) counts as unreadable.

Split overlap (:func:`split_overlaps`, :func:`check_split_overlap`): the same image (same
path relative to the dataset root, normalised) listed in two splits leaks test data into
training; ``data check`` lists such images (a problem), and a training job refuses them in
one line naming the image and the two splits unless ``allow_overlap`` (recorded in the run's
``config.json``) is given. The check is by path, not by content.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from landscape.data.images import SKIP_HINT, unit_grey
from landscape.data.loading import load_dataset
from landscape.data.records import SPLITS, ImageRecord, IQADataset
from landscape.errors import DataError

MAX_LISTED = 10


@dataclass
class DataCheckReport:
    """Result of :func:`check_dataset`. ``ok`` is True when no file is missing or unreadable."""

    format: str
    root: str
    annotation: str
    score_column: str
    declared_range: tuple[float, float]
    range_source: str
    split_rule: str
    split_counts: dict[str, int]
    score_min: float
    score_max: float
    score_mean: float
    score_std: float
    n_images: int
    missing: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    excluded: int = 0
    overlap: list[str] = field(default_factory=list)   # "PATH (split, split)" of images in two splits

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unreadable and not self.overlap

    def __str__(self) -> str:
        lo, hi = self.declared_range
        row = "{:<11}{}".format
        lines = [
            row("dataset", f"{self.format}:{self.root}"),
            row("labels", f"{self.annotation} (column '{self.score_column}')"),
            row("images", f"{self.n_images}: " + ", ".join(f"{s} {self.split_counts.get(s, 0)}" for s in SPLITS)),
            row("split", self.split_rule),
            row("scores", f"min {self.score_min:.4g}, max {self.score_max:.4g}, mean {self.score_mean:.4g}, "
                          f"std {self.score_std:.4g}; range [{lo:g}, {hi:g}] ({self.range_source})"),
        ]
        if self.excluded:
            lines.append(row("excluded", f"{self.excluded} rows without a split value"))
        for name, items in (("missing", self.missing), ("unreadable", self.unreadable),
                            ("in 2 splits", self.overlap)):
            lines.append(row(name, len(items)))
            lines += [f"  {p}" for p in items[:MAX_LISTED]]
            if len(items) > MAX_LISTED:
                lines.append(f"  ... and {len(items) - MAX_LISTED} more")
        lines.append(row("status", "OK" if self.ok else "PROBLEMS FOUND"))
        return "\n".join(lines)


def _readable(path: str) -> str | None:
    """None if the image decodes fully (JPEGs at reduced DCT scale, for speed), else the reason."""
    try:
        with Image.open(path) as im:
            if im.format == "JPEG":
                im.draft("RGB", (max(1, im.size[0] // 8), max(1, im.size[1] // 8)))
            im.load()
            unit_grey(im, path)          # high bit depth: values must be readable at their true scale
    except DataError as e:
        return str(e).split(": ", 1)[-1]
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        return f"{type(e).__name__}: {e}"
    return None


def split_overlaps(ds: IQADataset) -> list[tuple[str, list[str]]]:
    """``(path relative to the root, splits)`` of each image listed in more than one split (sorted by path)."""
    import os

    seen: dict[str, list[str]] = {}
    for rec in ds.records:
        rel = os.path.normpath(os.path.relpath(rec.path, ds.root))
        splits = seen.setdefault(rel, [])
        if rec.split not in splits:
            splits.append(rec.split)
    return sorted((rel, s) for rel, s in seen.items() if len(s) > 1)


def check_split_overlap(ds: IQADataset, allow_overlap: bool = False, where: str | None = None) -> None:
    """One :class:`DataError` naming the first image listed in two splits (and the count), unless ``allow_overlap``."""
    found = split_overlaps(ds)
    if found and not allow_overlap:
        rel, splits = found[0]
        more = f" (and {len(found) - 1} more image(s) in two splits)" if len(found) > 1 else ""
        raise DataError(f"{where or ds.annotation}: image {rel} is listed in two splits ({splits[0]} and "
                        f"{splits[1]}){more}; remove it from one split or pass --allow-overlap (recorded)")


def readable_records(records: list[ImageRecord], *, skip_bad: bool = False,
                     where: str = "dataset") -> tuple[list[ImageRecord], list[str]]:
    """Decode every image once (JPEGs at 1/8 scale); return ``(readable records, skipped)`` with
    ``skipped`` the ``"PATH (reason)"`` of each missing or unreadable image.

    Without ``skip_bad`` any bad image raises one :class:`DataError` that counts them:
    ``"<where>: N of M images unreadable (first: PATH (reason)); pass --skip-bad-images ..."``.
    """
    good, bad = [], []
    for rec in records:
        why = "file not found" if not Path(rec.path).is_file() else _readable(rec.path)
        if why is None:
            good.append(rec)
        else:
            bad.append(f"{rec.path} ({why})")
    if bad and not skip_bad:
        raise DataError(f"{where}: {len(bad)} of {len(records)} images unreadable (first: {bad[0]}); {SKIP_HINT}")
    return good, bad


def check_dataset(format: str, root: str | Path, *, decode: bool = True, **load_kwargs) -> DataCheckReport:
    """Load ``format:root`` (same keyword arguments as :func:`load_dataset`) and check every
    image: missing files, and with ``decode`` files that Pillow cannot decode.

    Annotation problems (missing columns, scores out of range) still raise :class:`DataError`.
    """
    load_kwargs["check_files"] = False
    ds = load_dataset(format, root, **load_kwargs)
    missing, unreadable = [], []
    for rec in ds.records:
        if not Path(rec.path).is_file():
            missing.append(rec.path)
        elif decode and (why := _readable(rec.path)) is not None:
            unreadable.append(f"{rec.path} ({why})")
    scores = np.array([r.score for r in ds.records], dtype=np.float64)
    if not len(scores):
        raise DataError(f"{ds.annotation}: no images listed")
    return DataCheckReport(
        format=ds.format, root=ds.root, annotation=ds.annotation, score_column=ds.score_column,
        declared_range=ds.score_range, range_source=ds.range_source, split_rule=ds.split_rule,
        split_counts=ds.split_sizes(), score_min=float(scores.min()), score_max=float(scores.max()),
        score_mean=float(scores.mean()), score_std=float(scores.std()) if math.isfinite(scores.std()) else 0.0,
        n_images=len(ds.records), missing=missing, unreadable=unreadable, excluded=ds.excluded,
        overlap=[f"{rel} ({', '.join(s)})" for rel, s in split_overlaps(ds)],
    )
