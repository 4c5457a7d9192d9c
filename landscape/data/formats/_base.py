"""The format loader contract and the open format registry.

A format loader is a function ``loader(root, options) -> RawTable``:

- ``root``: the dataset root as an absolute, resolved :class:`~pathlib.Path` that exists
  (a folder, or for some formats the annotation file itself);
- ``options``: the :class:`LoadOptions` of :func:`landscape.data.loading.load_dataset`;
- returns a :class:`RawTable`: one :class:`RawRow` per image (absolute path, raw score,
  group, official split or None), the annotation file and score column read, and the
  declared score range (None: the caller uses the observed range).

A loader only reads; range checks, splitting and file checks are done once, by
:func:`landscape.data.loading.load_dataset`. Errors are one-line
:class:`~landscape.errors.DataError` naming the file, row or column.

Registry (pyiqa-style, open): ``@register_format("name")`` records a loader under a name
that any code may choose; the built-in loaders (one file per format beside this one)
register themselves when :mod:`landscape.data.formats` is imported. :data:`FORMATS` is a
live, read-only view of the registered names in registration order (for help texts and
errors); :func:`loader_for` returns the loader of a name.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence, overload

from landscape.errors import DataError


@dataclass(frozen=True)
class LoadOptions:
    """Options every format loader receives (see :func:`landscape.data.loading.load_dataset`)."""

    score_column: str | None = None
    annotation: str | None = None
    image_dir: str | None = None
    pyiqa_split_column: str | None = None
    score_range: tuple[float, float] | None = None


@dataclass
class RawRow:
    """A row of an annotation file before splitting (``split`` = official split or None)."""

    path: Path
    score: float
    group: str
    split: str | None = None
    where: str = ""


@dataclass
class RawTable:
    """What a format loader returns: rows plus what was read and how.

    ``official`` names the source of the official split (e.g. ``"koniq10k_distributions_sets.csv:set"``)
    or is None; ``score_range`` is the declared range (``range_source`` says where it came from);
    ``resize_short``: the format's default shorter side (px) for the patch sampler (None: native);
    ``excluded``: rows left out for an empty split value; ``group_kind``: what a group is (for the split rule).
    """

    rows: list[RawRow]
    annotation: Path
    score_column: str
    score_range: tuple[float, float] | None
    range_source: str = "declared"
    official: str | None = None
    resize_short: int | None = None
    excluded: int = 0
    group_kind: str = "image"


Loader = Callable[[Path, LoadOptions], RawTable]
LOADERS: dict[str, Loader] = {}


def register_format(name: str, *, replace: bool = False) -> Callable[[Loader], Loader]:
    """Decorator registering ``loader(root, options) -> RawTable`` under ``name``.

    ``name`` is any non-empty string without ``:`` (a dataset spec is ``FORMAT:ROOT``).
    A name already bound to another loader is refused unless ``replace=True``.
    """
    if not isinstance(name, str) or not name or ":" in name or name != name.strip():
        raise ValueError(f"format name {name!r}: need a non-empty name without ':' or surrounding spaces")

    def deco(fn: Loader) -> Loader:
        old = LOADERS.get(name)
        if old is not None and old is not fn and not replace and _qualname(old) != _qualname(fn):
            raise ValueError(f"format '{name}' is already registered ({_qualname(old)}); "
                             f"pass replace=True to replace it")
        LOADERS[name] = fn
        return fn

    return deco


def _qualname(fn: Callable) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


class FormatNames(Sequence[str]):
    """Read-only, live view of the registered format names, in registration order.

    Behaves like a tuple of names (``in``, iteration, indexing, ``len``, ``', '.join``) and
    compares equal to the tuple of the names registered at the time of comparison.
    """

    def __len__(self) -> int:
        return len(LOADERS)

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(LOADERS))

    @overload
    def __getitem__(self, i: int) -> str: ...

    @overload
    def __getitem__(self, i: slice) -> tuple[str, ...]: ...

    def __getitem__(self, i):
        return tuple(LOADERS)[i]

    def __contains__(self, name: object) -> bool:
        return name in LOADERS

    def __eq__(self, other: object) -> bool:
        if isinstance(other, FormatNames):
            return True
        if isinstance(other, (tuple, list)):
            return tuple(LOADERS) == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  (mutable view)

    def __repr__(self) -> str:
        return repr(tuple(LOADERS))


FORMATS = FormatNames()


def check_format(name: str) -> str:
    """Return ``name`` if it is a registered format, else a :class:`DataError` listing them."""
    if name not in LOADERS:
        raise DataError(f"unknown dataset format '{name}' (valid: {', '.join(FORMATS)})")
    return name


def loader_for(name: str) -> Loader:
    """The loader registered under ``name`` (:func:`check_format` errors otherwise)."""
    return LOADERS[check_format(name)]
