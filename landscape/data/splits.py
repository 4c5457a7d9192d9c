"""Seeded train/val/test splits by group (reference image, or the image itself).

The sorted distinct groups (``G`` of them) are permuted by
``numpy.random.default_rng(seed)``; with normalised ratios ``(r_train, r_val, r_test)``
the first ``round(G * r_train)`` groups of the permutation go to train, those up to
``round(G * (r_train + r_val))`` to val, the rest to test. No group is ever in two splits,
and the assignment depends only on the set of groups, the seed and the ratios (default
:data:`DEFAULT_RATIOS` 0.7/0.1/0.2; HyperIQA "paper mode": 10 seeds, ratios 0.8/0/0.2, written
``TRAIN:VAL:TEST`` on the command line, :func:`parse_ratios`).
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

from landscape.errors import DataError

DEFAULT_RATIOS = (0.7, 0.1, 0.2)


def check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    """Normalised (train, val, test) ratios ``r / sum(r)``; finite, non-negative, train > 0."""
    if len(ratios) != 3:
        raise DataError(f"split ratios {tuple(ratios)}: need three numbers (train, val, test)")
    r = [float(x) for x in ratios]
    if any(x < 0 or not math.isfinite(x) for x in r) or r[0] <= 0:
        raise DataError(f"split ratios {tuple(ratios)}: need finite values >= 0 with train > 0")
    total = sum(r)
    return r[0] / total, r[1] / total, r[2] / total


def parse_ratios(text: str, name: str = "--split-ratio") -> tuple[float, float, float]:
    """``"TRAIN:VAL:TEST"`` (e.g. ``0.8:0:0.2``) -> the three numbers as given, checked by :func:`check_ratios`."""
    parts = str(text).split(":")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(parts) != 3 or len(values) != 3:
        raise DataError(f"{name} {text!r}: expected TRAIN:VAL:TEST, e.g. 0.7:0.1:0.2 or 0.8:0:0.2")
    try:
        check_ratios(values)
    except DataError:
        raise DataError(f"{name} {text!r}: need finite values >= 0 with TRAIN > 0") from None
    return values


def seeded_group_split(groups: Iterable[str], seed: int, ratios: Sequence[float]) -> dict[str, str]:
    """Assign each distinct group to a split (module docstring); deterministic in ``seed``."""
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
