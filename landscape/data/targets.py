"""Training and analysis targets: scores normalised by the dataset's score range.

``t = (s - lo) / (hi - lo)`` with ``(lo, hi)`` the dataset's declared (or observed) score
range, so a target lies in [0, 1] and losses, Hessians and sharpness are comparable across
datasets; SRCC, PLCC and KRCC are invariant to this affine map. The trainer and the
analyzers use this one map, so an analysis sees exactly the targets the model was trained on.
"""
from __future__ import annotations

from typing import TypeVar

from landscape.errors import LandscapeError

T = TypeVar("T")


def normalise(scores: T, score_range: tuple[float, float]) -> T:
    """``(scores - lo) / (hi - lo)`` for a tensor or array of raw scores; ``hi <= lo`` is an error."""
    lo, hi = score_range
    if hi <= lo:
        raise LandscapeError(f"degenerate score range {score_range}")
    return (scores - lo) / (hi - lo)  # type: ignore[operator]
