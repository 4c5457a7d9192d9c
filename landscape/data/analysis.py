"""Fixed evaluation subsets and batches for the analyzers (Hessian, sharpness, surfaces).

A sample is an image: each chosen image gives one deterministic centre crop of
``S x S`` pixels (after the decoding of :func:`landscape.data.images.decode_image`:
``resize_short``, then up-scaling so the shorter side is at least ``S``), normalised with
the ImageNet mean/std; no augmentation, so per-sample SRCC is per-image SRCC.

Subset: all records when ``n_images`` is None or at least their number, else the sorted
``numpy.random.default_rng(seed).choice(len(records), n_images, replace=False)`` -- the
same images for every run of a dataset and seed. The returned indices (into the split's
records) are what provenance hashes (:func:`landscape.provenance.hash_indices`).

- :func:`analysis_batches`: records -> batches with raw scores as targets;
- :func:`split_analysis_batches`: a split of an :class:`~landscape.data.records.IQADataset`
  -> batches with targets normalised as in training (:func:`landscape.data.targets.normalise`).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from landscape.data.images import decode_image, normalize_patches
from landscape.data.records import ImageRecord, IQADataset
from landscape.data.targets import normalise
from landscape.errors import DataError, check_positive_int

Batches = list[tuple[torch.Tensor, torch.Tensor]]


def analysis_indices(n_records: int, n_images: int | None, seed: int = 0) -> list[int]:
    """Sorted indices of the evaluation subset (module docstring)."""
    if n_images is None or n_images >= n_records:
        return list(range(n_records))
    check_positive_int("n_images", n_images)
    return sorted(int(k) for k in np.random.default_rng(seed).choice(n_records, int(n_images), replace=False))


def analysis_batches(records: Sequence[ImageRecord], n_images: int | None, batch_size: int, patch_size: int,
                     seed: int = 0, *, resize_short: int | None = None,
                     skip_bad: bool = False) -> tuple[Batches, list[int]]:
    """Fixed evaluation batches: one centre crop per image of the seeded subset of ``records``.

    Returns ``([(inputs (b, 3, S, S) float32, targets (b,) float32 raw scores), ...], indices)``
    with ``b <= batch_size``. Unreadable images raise :class:`DataError`, or with
    ``skip_bad`` are left out of the batches and the indices.
    """
    check_positive_int("batch_size", batch_size)
    check_positive_int("patch_size", patch_size)
    if len(records) == 0:
        raise DataError("analysis_batches: no images")
    crops, targets, used = [], [], []
    for k in analysis_indices(len(records), n_images, seed):
        try:
            img = decode_image(records[k].path, resize_short=resize_short, min_side=patch_size)
        except DataError:
            if skip_bad:
                continue
            raise
        h, w = img.shape[:2]
        top, left = (h - patch_size) // 2, (w - patch_size) // 2
        crops.append(img[top:top + patch_size, left:left + patch_size])
        targets.append(records[k].score)
        used.append(k)
    if not used:
        raise DataError("analysis_batches: every image was unreadable")
    x = normalize_patches(np.stack(crops))
    y = torch.tensor(targets, dtype=torch.float32)
    batches = [(x[j:j + batch_size], y[j:j + batch_size]) for j in range(0, len(used), batch_size)]
    return batches, used


def split_analysis_batches(dataset: IQADataset, split: str, samples: int | None, batch_size: int,
                           patch_size: int, seed: int = 0) -> tuple[Batches, list[int]]:
    """:func:`analysis_batches` of ``samples`` seeded images of one split, targets normalised
    to [0, 1] by the dataset's score range (as in training); indices into ``dataset.split(split)``."""
    batches, indices = analysis_batches(dataset.split(split), samples, batch_size, patch_size, seed,
                                        resize_short=dataset.resize_short)
    return [(x, normalise(y, dataset.score_range)) for x, y in batches], indices
