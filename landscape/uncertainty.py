"""The mean of repeated measurements and its uncertainty: one implementation for the whole package.

For the ``n`` finite values ``x_1 ... x_n`` of a sample:

- mean ``m = (1/n) sum_i x_i``;
- sample standard deviation ``s = sqrt(sum_i (x_i - m)^2 / (n - 1))`` (ddof = 1, unbiased
  variance): the spread of the values themselves (e.g. seed to seed);
- standard error of the mean ``se = s / sqrt(n)``: the uncertainty of ``m``
  (``scipy.stats.sem`` with its default ddof = 1).

:func:`mean_se` returns ``(m, se)``; :func:`mean_std` returns ``(m, s)``. Use the first
when the mean is the reported number (a Monte Carlo estimate, an average over probes or
starts), the second when the spread itself is reported (seed-to-seed variation).

Conventions, the same in every caller:

- Non-finite values (NaN, +-inf) are dropped before anything is computed: they mark a
  missing or failed sample, not a measurement. ``n`` counts the finite values only
  (:func:`finite_values` gives them).
- ``n = 0``: ``(nan, nan)``.
- ``n = 1``: ``(x_1, nan)``: a spread or standard error cannot be estimated from one
  value, so it is NaN ("unknown"), never ``inf`` or 0; formatters print no ``±`` part for it.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from landscape.errors import LandscapeError


def finite_values(values: Any) -> np.ndarray:
    """``values`` as a flat float64 array with NaN and +-inf removed."""
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    return arr[np.isfinite(arr)]


def mean_std(values: Any) -> tuple[float, float]:
    """``(mean, sample standard deviation with ddof = 1)`` of the finite ``values``.

    ``(nan, nan)`` for no finite value, ``(x, nan)`` for one (see the module docstring).
    """
    arr = finite_values(values)
    if arr.size == 0:
        return float("nan"), float("nan")
    std = float(arr.std(ddof=1)) if arr.size > 1 else float("nan")
    return float(arr.mean()), std


def mean_se(values: Any) -> tuple[float, float]:
    """``(mean, standard error of the mean)`` of the finite ``values``: ``se = std(ddof=1) / sqrt(n)``.

    Equals ``(numpy.mean, scipy.stats.sem)`` of the finite values; ``(nan, nan)`` for no
    finite value, ``(x, nan)`` for one (see the module docstring).
    """
    arr = finite_values(values)
    mean, std = mean_std(arr)
    return mean, std / math.sqrt(arr.size) if arr.size > 1 else float("nan")


__all__ = ["finite_values", "mean_se", "mean_std"]


def as_vector(values: Any, name: str, n: int | None = None) -> np.ndarray:
    """``values`` as a 1-D float64 array (of length ``n`` when given); a one-line error naming ``name`` otherwise."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise LandscapeError(f"{name}: not a sequence of numbers") from None
    if arr.ndim != 1:
        raise LandscapeError(f"{name}: expected a 1-D sequence, got shape {arr.shape}")
    if n is not None and arr.size != n:
        raise LandscapeError(f"{name}: has {arr.size} values, expected {n}")
    return arr
