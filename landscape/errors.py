"""User-facing errors: one line naming the file or value and the problem.

The CLI prints ``str(err)`` and exits with code 2; library users catch
:class:`LandscapeError` (a ``ValueError``) like any other bad-input error.
"""
from __future__ import annotations

import math
import numbers
from typing import Iterable


class LandscapeError(ValueError):
    """Bad input, bad file or refused operation, explained in one line."""


class DataError(LandscapeError):
    """A dataset folder, annotation file or image is missing or malformed."""


class CheckpointError(LandscapeError):
    """A checkpoint is missing, corrupt, unsafe or of another architecture."""


class InUseError(LandscapeError):
    """Another process holds the output file."""


class NumericsError(LandscapeError):
    """A loss or a weight is NaN or infinite."""


# ----------------------------------------------------------------------------- named validation helpers
# One implementation of each argument check; the message names the option and its value.

def check_choice(name: str, value: object, choices: Iterable[object]) -> object:
    """``value`` if it is one of ``choices``, else ``LandscapeError("name='x': choose one of a, b, c")``."""
    options = tuple(choices)
    if value not in options:
        raise LandscapeError(f"{name}={value!r}: choose one of {', '.join(map(str, options))}")
    return value


def check_choices(name: str, values: Iterable[object], choices: Iterable[object]) -> list:
    """Every item of ``values`` passes :func:`check_choice`; returns them as a list."""
    options = tuple(choices)
    return [check_choice(name, v, options) for v in values]


def check_positive_int(name: str, value: object, *, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` as an int in ``[minimum, maximum]`` (bools refused), else a one-line error that states the limit."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise LandscapeError(f"{name}={value!r}: need an integer >= {minimum}")
    if value < minimum or (maximum is not None and value > maximum):
        limit = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise LandscapeError(f"{name}={value!r}: need an integer {limit}")
    return int(value)


def check_positive_number(name: str, value: object) -> float:
    """``float(value)`` if it is a finite number > 0, else a one-line :class:`LandscapeError`."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise LandscapeError(f"{name}={value!r} is not a number") from None
    if not math.isfinite(v) or v <= 0:
        raise LandscapeError(f"{name}={value!r} must be a finite number > 0")
    return v
