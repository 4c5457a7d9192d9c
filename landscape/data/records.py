"""Dataset records and splits: what a loaded dataset is.

A dataset is a list of :class:`ImageRecord` (absolute image path, quality score,
split, group) in an :class:`IQADataset`, with how it was obtained (annotation file,
score column and range, split rule). Loading a ``FORMAT:ROOT`` spec into one is
:mod:`landscape.data.loading`; the format loaders are :mod:`landscape.data.formats`.

- :data:`SPLITS`: the split names ``train``, ``val``, ``test``.
- :data:`SPLIT_MODES`: how :func:`landscape.data.loading.load_dataset` assigns them:
  ``auto`` (the official split when the format has one, else seeded), ``official``
  (official or an error), ``random`` (always seeded; :mod:`landscape.data.splits`).

Identity: :meth:`IQADataset.identity` is what a run records (``dataset.json`` and every
checkpoint's meta): format, resolved absolute root, score column and range, and per split
the image count and the SHA-256 of its sorted ``relative_path<TAB>score`` lines (paths
relative to the root, so a dataset copied elsewhere keeps its hashes; any changed score,
added, removed or renamed image, or image moved to another split changes them).
:func:`verify_identity` compares such a record with a loaded dataset and refuses a
difference in one line (resume and every analysis call it).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from landscape.errors import DataError, check_choice
from landscape.provenance import hash_lines

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
        return hash_lines(sorted(f"{self.relative(r)}\t{r.score!r}" for r in self.split(name)))

    @property
    def spec(self) -> str:
        """``FORMAT:ROOT`` with the resolved absolute root (what runs record)."""
        return f"{self.format}:{self.root}"

    def identity(self) -> dict:
        """JSON-serialisable identity: format, resolved absolute root, annotation, score column and
        range, split sizes, per-split SHA-256 of the sorted (path, score) lists (``labels_sha256``;
        also under ``split_sha256``, which a run's ``dataset.json`` may replace with its split
        record's hash), split rule, resize (module docstring); :func:`verify_identity` checks a
        loaded dataset against it."""
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
            "labels_sha256": {s: self.split_hash(s) for s in SPLITS},
            "resize_short": self.resize_short,
            "excluded": self.excluded,
        }


SHORT_HASH = 12       # hex digits of a hash shown in a message


def verify_identity(recorded: Mapping[str, Any] | None, dataset: IQADataset, source: str) -> None:
    """Refuse ``dataset`` if it is not the one ``recorded`` (an :meth:`IQADataset.identity`) describes.

    Compared, in this order: format, score column, per split (train, val, test) the image
    count and the SHA-256 of its (path, score) lines, then the score range (it sets the target
    normalisation); the first difference raises one :class:`~landscape.errors.DataError` line
    naming ``source`` (the run or checkpoint), the dataset and what changed, e.g.
    ``"RUN: dataset synthetic:/data/ds differs from the one the run recorded: split 'train'
    hash was 3f2a5c01d9e4, now 9b1c77e0a2f3 (same 126 images: scores or file names changed)"``
    (hashes shortened to :data:`SHORT_HASH` hex digits). The root is not compared (a moved or copied
    dataset is the same dataset); fields missing from an old record are not checked; an
    empty or missing record (runs made before datasets were recorded) passes.
    """
    if not recorded:
        return
    now = dataset.identity()
    where = f"{source}: dataset {dataset.spec} differs from the one the run recorded"
    for key, label in (("format", "format"), ("score_column", "score column")):
        if key in recorded and recorded[key] != now[key]:
            raise DataError(f"{where}: {label} was '{recorded[key]}', now '{now[key]}'")
    sizes, hashes = recorded.get("split_sizes") or {}, recorded.get("labels_sha256")
    if not isinstance(hashes, Mapping):                 # older records: the per-split dict of split_sha256
        hashes = recorded.get("split_sha256")
        hashes = hashes if isinstance(hashes, Mapping) else {}
    for split in SPLITS:
        if split in sizes and int(sizes[split]) != now["split_sizes"][split]:
            raise DataError(f"{where}: split '{split}' has {now['split_sizes'][split]} images, "
                            f"was {int(sizes[split])}")
        if split in hashes and hashes[split] != now["labels_sha256"][split]:
            raise DataError(f"{where}: split '{split}' hash was {hashes[split][:SHORT_HASH]}, now "
                            f"{now['labels_sha256'][split][:SHORT_HASH]} (same {now['split_sizes'][split]} "
                            f"images: scores or file names changed)")
    if "score_range" in recorded and [float(v) for v in recorded["score_range"]] != now["score_range"]:
        lo, hi = recorded["score_range"]
        raise DataError(f"{where}: score range was [{lo:g}, {hi:g}], now "
                        f"[{now['score_range'][0]:g}, {now['score_range'][1]:g}]")
