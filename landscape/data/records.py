"""Dataset records and splits: what a loaded dataset is.

A dataset is a list of :class:`ImageRecord` (absolute image path, quality score,
split, group) in an :class:`IQADataset`, with how it was obtained (annotation file,
score column and range, split rule). Loading a ``FORMAT:ROOT`` spec into one is
:mod:`landscape.data.loading`; the format loaders are :mod:`landscape.data.formats`.

- :data:`SPLITS`: the split names ``train``, ``val``, ``test``.
- :data:`SPLIT_MODES`: how :func:`landscape.data.loading.load_dataset` assigns them:
  ``auto`` (the official split when the format has one, else seeded), ``official``
  (official or an error), ``random`` (always seeded; :mod:`landscape.data.splits`).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from landscape.errors import check_choice

SPLITS = ("train", "val", "test")
SPLIT_MODES = ("auto", "official", "random")


@dataclass(frozen=True)
class ImageRecord:
    """One labelled image: absolute ``path``, ``score`` (higher is better), ``split``
    (``train``/``val``/``test``) and ``group`` (reference/content id; splits never share one)."""

    path: str
    score: float
    split: str
    group: str


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
        check_choice("split", name, SPLITS)
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
