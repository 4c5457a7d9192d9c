"""Load a dataset: a ``FORMAT:ROOT`` spec -> format loader -> checked, split :class:`IQADataset`.

:func:`load_dataset` asks the registered loader of the format
(:mod:`landscape.data.formats`) for its :class:`~landscape.data.formats._base.RawTable`,
then, once for every format:

1. score range: the declared range (by the format, ``meta.json`` or ``score_range=``),
   every score checked to lie in ``[lo, hi]``; else the observed ``[min, max]``;
2. splits (``split_mode``): ``auto`` (default) takes the official split when the format
   has one (KonIQ ``set``, pyiqa ``official_split``, a ``split`` column of a CSV), else
   the seeded split by group of :mod:`landscape.data.splits`; ``official`` requires the
   official split; ``random`` always uses the seeded split;
3. files: every image file must exist (``check_files``; decoding is
   :func:`landscape.data.check.check_dataset`).

Errors are one-line :class:`~landscape.errors.DataError` naming the file or column.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from landscape.data.formats import FORMATS, LoadOptions, check_format, loader_for  # registers the built-in formats
from landscape.data.records import SPLIT_MODES, ImageRecord, IQADataset
from landscape.data.splits import DEFAULT_RATIOS, check_ratios, seeded_group_split
from landscape.errors import DataError, check_choice


def parse_dataset_spec(spec: str) -> tuple[str, str]:
    """Split ``"FORMAT:ROOT"`` into ``(format, root)``; the error lists the registered formats."""
    fmt, sep, root = spec.partition(":")
    if not sep or not root:
        raise DataError(f"dataset '{spec}': expected FORMAT:ROOT with FORMAT one of {', '.join(FORMATS)}")
    return check_format(fmt), root


def absolute_spec(spec: str) -> str:
    """``FORMAT:ROOT`` with ``ROOT`` resolved to an absolute path (``~`` expanded, against the
    current directory), the form a run records; the root need not exist."""
    fmt, root = parse_dataset_spec(spec)
    return f"{fmt}:{Path(root).expanduser().resolve()}"


def load_dataset_spec(spec: str, *, score_column: str | None = None, split_seed: int = 0,
                      split_mode: str = "auto", split_ratios: Sequence[float] = DEFAULT_RATIOS) -> IQADataset:
    """:func:`load_dataset` of a ``FORMAT:ROOT`` spec (as stored in a run's ``config.json``: its
    ``split``, ``split_seed`` and ``split_ratio`` keys are ``split_mode``, ``split_seed`` and ``split_ratios``)."""
    fmt, root = parse_dataset_spec(spec)
    return load_dataset(fmt, root, score_column=score_column, split_seed=split_seed, split_mode=split_mode,
                        split_ratios=split_ratios)


def load_dataset(
    format: str,
    root: str | Path,
    *,
    score_column: str | None = None,
    split_seed: int = 0,
    split_ratios: Sequence[float] = DEFAULT_RATIOS,
    pyiqa_split_column: str | None = None,
    split_mode: str = "auto",
    annotation: str | None = None,
    image_dir: str | None = None,
    resize_short: int | None = None,
    score_range: tuple[float, float] | None = None,
    check_files: bool = True,
) -> IQADataset:
    """Load a dataset of ``format`` (one of :data:`~landscape.data.formats._base.FORMATS`) from ``root``.

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
    """
    loader = loader_for(format)
    check_choice("split_mode", split_mode, SPLIT_MODES)
    ratios = check_ratios(split_ratios)
    root_path = Path(root).expanduser().resolve()
    if not root_path.exists():
        hint = f" (create it with: landscape data synth --out {root})" if format == "synthetic" else ""
        raise DataError(f"{root_path}: dataset root not found{hint}")
    opts = LoadOptions(score_column=score_column, annotation=annotation, image_dir=image_dir,
                       pyiqa_split_column=pyiqa_split_column,
                       score_range=tuple(score_range) if score_range is not None else None)
    table = loader(root_path, opts)
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
                        f"use --split random (or auto)")
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
