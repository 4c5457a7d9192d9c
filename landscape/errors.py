"""User-facing errors: one line naming the file or value and the problem.

The CLI prints ``str(err)`` and exits with code 2; library users catch
:class:`LandscapeError` (a ``ValueError``) like any other bad-input error.
"""
from __future__ import annotations


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
